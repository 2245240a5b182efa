"""GC bitstreams: the quantized latent coded under the model's factorized prior (constriction).

The paper reports the rate ``C * log2(5) / 256`` bpp of the raw symbols. Here the symbols
``[h, w, C]`` (``h, w = ceil(H/16), ceil(W/16)``) are entropy coded under the learned per-channel
categorical prior, or with a uniform model when that is smaller (one flag in the header), so the
payload never exceeds the bound by more than the coder's few bytes. Files go through the shared
container (model fingerprint, payload checksum, numerics, a CRC-32 of the decoded pixels).

The prior's PMFs are computed on the host in numpy from the stored parameters, so the symbols
decode identically everywhere; the generator's pixels are those of the jitted G on this platform,
and the decoder refuses a file written with other numerics (a CRC mismatch otherwise). Noise
channels, if the model has them, are drawn from a key derived from the payload's bytes, so the
same file always decodes to the same image.
"""

from __future__ import annotations

import dataclasses
import os
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.codecs import common
from jaxcomp.codecs.gc.model import FACTOR, GC, LEVELS, GCSpec, centers, spec_from_config, to_pixels

CHECKPOINTS = ("c2", "c4", "c8")
DEFAULT_CHECKPOINT = "c4"
FORMAT = 1  # of the GC payload inside the container


def check_image(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` or ``[H, W]``, at least 16 pixels a side; else a ``ValueError``."""
    image = common.check_image(image, "the GC codec")
    if min(image.shape[:2]) < FACTOR:
        raise ValueError(f"the GC codec needs images of at least {FACTOR}x{FACTOR} pixels, got {image.shape[:2]}")
    return image


class GCCodec:
    """Compress/decompress with a GC generator (``params``: the ``"generator"`` player's tree).

    ``compress(uint8 [H, W, 3] | [H, W]) -> bytes`` and ``decompress(bytes) -> uint8`` image of
    the same shape; ``reconstruct(image)`` gives the decoded image without coding;
    ``bound_bpp`` is the paper's ``C * log2(5) / 256``.
    """

    codec_name = "gc"

    def __init__(self, spec: GCSpec, params: Any):
        if spec.semantic_classes:
            raise ValueError("this is a selective (SC) GC model; GCCodec codes global (GC) models: use "
                             "jaxcomp.codecs.gc.sc_codec.SCCodec, which also codes the label map and the heatmap")
        self.spec = spec
        self.params = jax.tree.map(jnp.asarray, params)
        self.model = GC(spec)
        logits = np.asarray(params["prior_logits"], np.float64)
        if logits.shape != (spec.channels, LEVELS):
            raise ValueError(f"prior_logits has shape {logits.shape}, expected {(spec.channels, LEVELS)}")
        p = np.exp(logits - logits.max(-1, keepdims=True))
        self.pmfs = p / p.sum(-1, keepdims=True)  # [C, 5], float64, host
        from jaxcomp.coding import fingerprint

        self.fingerprint = fingerprint(params, dict(codec="gc", format=FORMAT, **dataclasses.asdict(spec)))
        self.numerics = common.numerics()
        model = self.model

        def analyse(params, x):
            w = model.apply({"params": params}, x, method=GC.encode)
            return model.apply({"params": params}, w, method=GC.quantize)[1]

        def synthesise(params, symbols, noise):
            x_hat = model.apply({"params": params}, centers()[symbols], noise, method=GC.decode)
            return jnp.round(to_pixels(x_hat)).astype(jnp.uint8)

        self._analyse = jax.jit(analyse)
        self._synthesise = jax.jit(synthesise)

    @property
    def bound_bpp(self) -> float:
        return self.spec.bound_bits_per_pixel

    def _pad(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        ph, pw = -h % FACTOR, -w % FACTOR
        return np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode="edge") if ph or pw else rgb

    def analyse(self, image: np.ndarray) -> np.ndarray:
        """The latent symbols of an image, ``int32 [ceil(H/16), ceil(W/16), C]`` in ``0..4``."""
        rgb = common.as_rgb(check_image(image))
        return np.asarray(self._analyse(self.params, self._pad(rgb)[None]))[0]

    def synthesise(self, symbols: np.ndarray, height: int, width: int, seed: int = 0) -> np.ndarray:
        """G's image for ``symbols [h, w, C]``, cropped to ``uint8 [height, width, 3]``; ``seed``
        draws the noise channels (if any)."""
        noise = None
        if self.spec.noise_channels:
            key = jax.random.PRNGKey(seed)
            noise = jax.random.normal(key, (1,) + symbols.shape[:2] + (self.spec.noise_channels,), jnp.float32)
        out = np.asarray(self._synthesise(self.params, jnp.asarray(symbols)[None], noise))[0]
        return out[:height, :width]

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """What :meth:`decompress` of :meth:`compress` gives (no coding), the input's shape."""
        image = check_image(image)
        return common.as_mode(self.synthesise(self.analyse(image), *image.shape[:2]), image.ndim == 2)

    def estimate_bits(self, image: np.ndarray) -> float:
        """Information content of the symbols under the prior, in bits (payload before coding)."""
        from jaxcomp.coding import ideal_bits

        symbols = self.analyse(image)
        return ideal_bits(symbols.reshape(-1), np.tile(self.pmfs, (symbols.shape[0] * symbols.shape[1], 1)))

    def _payload(self, symbols: np.ndarray) -> tuple[str, bytes]:
        from jaxcomp.coding import encode_categorical, encode_uniform

        flat = symbols.reshape(-1)
        pmfs = np.tile(self.pmfs, (symbols.shape[0] * symbols.shape[1], 1)).astype(np.float64)
        prior = encode_categorical(flat, pmfs).tobytes()
        uniform = encode_uniform(flat, LEVELS).tobytes()
        return ("p", prior) if len(prior) <= len(uniform) else ("u", uniform)

    def compress(self, image: np.ndarray) -> bytes:
        """``uint8 [H, W, 3]`` (or ``[H, W]``) -> bitstream ``bytes``."""
        from jaxcomp.coding import pack

        image = check_image(image)
        symbols = self.analyse(image)
        mode, payload = self._payload(symbols)
        seed = zlib.crc32(payload)
        recon = common.as_mode(self.synthesise(symbols, *image.shape[:2], seed=seed), image.ndim == 2)
        meta = dict(h=image.shape[0], w=image.shape[1], m="L" if image.ndim == 2 else "RGB", e=mode,
                    n=self.numerics, c=zlib.crc32(recon.tobytes()))
        return pack(self.codec_name, self.fingerprint, meta, [payload])

    def decompress(self, data: bytes) -> np.ndarray:
        """Bitstream -> ``uint8 [H, W, 3]`` (``[H, W]`` for a grayscale input).

        Raises:
          jaxcomp.coding.BitstreamError: not a GC bitstream of this model, truncated, corrupt,
            written with other numerics, or decoded pixels that differ from the encoder's.
        """
        from jaxcomp.coding import BitstreamError, CodingError, decode_categorical, decode_uniform, unpack

        meta, payloads = unpack(data, self.codec_name, self.fingerprint)
        try:
            h, w, mode, ent, crc = int(meta["h"]), int(meta["w"]), meta["m"], meta["e"], int(meta["c"])
            stream_numerics = str(meta["n"])
        except (KeyError, TypeError, ValueError) as e:
            raise BitstreamError(f"bitstream metadata is incomplete: {e}") from e
        if not (FACTOR <= h <= 1 << 16 and FACTOR <= w <= 1 << 16 and mode in ("L", "RGB") and ent in ("p", "u")
                and len(payloads) == 1):
            raise BitstreamError(f"bitstream metadata is invalid: {meta}")
        if stream_numerics != self.numerics:
            raise BitstreamError(
                f"this file was compressed with {stream_numerics} numerics and this process computes with "
                f"{self.numerics}: the generator's pixels would differ from the encoder's. " + common.NUMERICS_HELP)
        lh, lw = -(-h // FACTOR), -(-w // FACTOR)
        count = lh * lw * self.spec.channels
        words = np.frombuffer(payloads[0], dtype=np.uint32) if len(payloads[0]) % 4 == 0 else None
        if words is None:
            raise BitstreamError("bitstream payload is not a whole number of 32-bit words")
        try:
            if ent == "p":
                flat = decode_categorical(words, np.tile(self.pmfs, (lh * lw, 1)))
            else:
                flat = decode_uniform(words, count, LEVELS)
        except CodingError as e:
            raise BitstreamError(f"bitstream does not decode: {e}") from e
        symbols = flat.reshape(lh, lw, self.spec.channels)
        image = common.as_mode(self.synthesise(symbols, h, w, seed=zlib.crc32(payloads[0])), mode == "L")
        if zlib.crc32(np.ascontiguousarray(image).tobytes()) != crc:
            raise BitstreamError("decoded image does not match the encoder's checksum: the model computed "
                                 "different values here than when compressing (different platform or jaxlib?)")
        return image


def shipped_model(name: str = DEFAULT_CHECKPOINT) -> str:
    """Path of a shipped GC model (``c2``, ``c4``, ``c8``; those present in the package)."""
    from jaxcomp.codecs.pretrained import PRETRAINED_DIR

    if name not in CHECKPOINTS:
        raise ValueError(f"unknown GC model {name!r}; shipped names: {', '.join(CHECKPOINTS)}")
    return os.path.join(PRETRAINED_DIR, f"gc_{name}.msgpack")


def load_codec(checkpoint: str | None = None) -> GCCodec:
    """A :class:`GCCodec` from a shipped model (``None`` = ``"c4"``, ``"c2"``, ``"c8"``), an exported
    ``.msgpack`` or a training workdir of ``config.task = "gc"``."""
    from jaxcomp.modelfile import ModelLoadError, load_model

    if checkpoint is None or checkpoint in CHECKPOINTS:
        checkpoint = shipped_model(checkpoint or DEFAULT_CHECKPOINT)
        if not os.path.isfile(checkpoint):
            raise ModelLoadError(f"no shipped GC model {os.path.basename(checkpoint)} in this jaxcomp; "
                                 "train one (configs/gc.py) and give its workdir or .msgpack")
    config, params, _ = load_model(checkpoint, task="gc")
    if "generator" not in params:
        raise ModelLoadError(f"{checkpoint}: not a GC model (no generator parameters)")
    return GCCodec(spec_from_config(config.model), params["generator"])

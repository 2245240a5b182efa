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
from jaxcomp.codecs.gc import context
from jaxcomp.codecs.gc.model import (
    FACTOR,
    GC,
    LEVELS,
    GCSpec,
    centers,
    check_generator_params,
    spec_from_config,
    to_pixels,
)

CHECKPOINTS = ("c2", "c4", "c8")
DEFAULT_CHECKPOINT = "c4"
FORMAT = 1  # of the GC payload inside the container


def check_image(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W, 3]`` or ``[H, W]``, at least 16 pixels a side; else a ``ValueError``."""
    image = common.check_image(image, "the GC codec")
    if min(image.shape[:2]) < FACTOR:
        raise ValueError(f"the GC codec needs images of at least {FACTOR}x{FACTOR} pixels, got {image.shape[:2]}")
    return image


@common.in_fixed_numerics
class GCCodec:
    """Compress/decompress with a GC generator (``params``: the ``"generator"`` player's tree).

    ``compress(uint8 [H, W, 3] | [H, W]) -> bytes`` and ``decompress(bytes) -> uint8`` image of
    the same shape; ``reconstruct(image)`` gives the decoded image without coding;
    ``bound_bpp`` is the paper's ``C * log2(5) / 256``. ``context_logits`` (``[C, 6, 6, 6, 5]``,
    optional): the fitted latent context model of :mod:`jaxcomp.codecs.gc.context`, stored beside
    the players in a model file by ``experiments/gc_context.py``.
    """

    codec_name = "gc"

    def __init__(self, spec: GCSpec, params: Any, context_logits: Any = None):
        if spec.semantic_classes:
            raise ValueError("this is a selective (SC) GC model; GCCodec codes global (GC) models: use "
                             "jaxcomp.codecs.gc.sc_codec.SCCodec, which also codes the label map and the heatmap")
        self.spec = spec
        self.params = jax.tree.map(jnp.asarray, params)
        self.model = GC(spec)
        self.pmfs = context.prior_pmfs(params["prior_logits"], spec.channels)  # [C, 5], float64, host
        from jaxcomp.coding import fingerprint

        architecture = dict(codec="gc", format=FORMAT, **dataclasses.asdict(spec))
        self.context_pmfs = None
        if context_logits is not None:  # the fitted context model (jaxcomp.codecs.gc.context)
            table = np.asarray(context_logits)
            expected = (spec.channels, context.SIDE, context.SIDE, context.SIDE, LEVELS)
            if table.shape != expected:
                raise ValueError(f"context_logits has shape {table.shape}, expected {expected}")
            self.context_pmfs = context.table_pmfs(table)
            self.fingerprint = fingerprint({"generator": params, "context_logits": table}, architecture)
        else:
            self.fingerprint = fingerprint(params, architecture)
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
        draws the noise channels (if any). ``symbols``: integers in ``0..4``; ``height``, ``width`` at
        most ``16h``, ``16w``."""
        symbols = common.check_symbols(symbols, LEVELS, "the GC codec", channels=self.spec.channels)
        common.check_output_size(height, width, symbols.shape[:2], FACTOR, "the GC codec")
        noise = None
        if self.spec.noise_channels:
            key = jax.random.key(seed, impl="threefry2x32")  # the same bits whatever the process's default PRNG
            noise = jax.random.normal(key, (1,) + symbols.shape[:2] + (self.spec.noise_channels,), jnp.float32)
        out = np.asarray(self._synthesise(self.params, jnp.asarray(symbols)[None], noise))[0]
        return out[:height, :width]

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """What :meth:`decompress` of :meth:`compress` gives (no coding), the input's shape."""
        image = check_image(image)
        return common.as_mode(self.synthesise(self.analyse(image), *image.shape[:2]), image.ndim == 2)

    def estimate_bits(self, image: np.ndarray) -> dict[str, float]:
        """Information content of the image's symbols in bits: ``{"bound": C h w log2(5),
        "factorized": under the prior, "context": under the context model (if fitted)}``."""
        from jaxcomp.coding import ideal_bits

        symbols = self.analyse(image)
        prior = np.tile(self.pmfs, (symbols.shape[0] * symbols.shape[1], 1))
        out = {"bound": symbols.size * float(np.log2(LEVELS)), "factorized": ideal_bits(symbols.reshape(-1), prior)}
        if self.context_pmfs is not None:
            out["context"] = ideal_bits(symbols.reshape(-1), context.symbol_pmfs(self.context_pmfs, symbols))
        return out

    def _payload(self, symbols: np.ndarray) -> tuple[str, bytes]:
        """The smallest of: ``"x"`` the context model (if fitted), ``"p"`` the factorized prior, ``"u"``
        uniform (so a payload never exceeds the raw symbols' ``log2(5)`` bits by more than the coder's
        2 words)."""
        from jaxcomp.coding import encode_categorical, encode_uniform

        flat = symbols.reshape(-1)
        pmfs = np.tile(self.pmfs, (symbols.shape[0] * symbols.shape[1], 1)).astype(np.float64)
        options = [("p", encode_categorical(flat, pmfs).tobytes()), ("u", encode_uniform(flat, LEVELS).tobytes())]
        if self.context_pmfs is not None:
            order = context.coding_order(symbols.shape)
            pm = context.symbol_pmfs(self.context_pmfs, symbols)
            options.insert(0, ("x", encode_categorical(flat[order], pm[order]).tobytes()))
        return min(options, key=lambda o: len(o[1]))

    def compress(self, image: np.ndarray) -> bytes:
        """``uint8 [H, W, 3]`` (or ``[H, W]``) -> bitstream ``bytes``."""
        from jaxcomp.coding import pack

        image = check_image(image)
        symbols = self.analyse(image)
        mode, payload = self._payload(symbols)
        seed = zlib.crc32(payload)
        recon = common.as_mode(self.synthesise(symbols, *image.shape[:2], seed=seed), image.ndim == 2)
        # short keys: height, width, entropy model, numerics, CRC-32 of the pixels; m="L" for grayscale
        meta = dict(h=image.shape[0], w=image.shape[1], e=mode, n=self.numerics, c=zlib.crc32(recon.tobytes()))
        if image.ndim == 2:
            meta["m"] = "L"
        return pack(self.codec_name, self.fingerprint, meta, [payload])

    def decompress(self, data: bytes) -> np.ndarray:
        """Bitstream -> ``uint8 [H, W, 3]`` (``[H, W]`` for a grayscale input).

        Raises:
          jaxcomp.coding.BitstreamError: not a GC bitstream of this model, truncated, corrupt,
            written with other numerics, or decoded pixels that differ from the encoder's.
        """
        from jaxcomp.coding import (
            BitstreamError,
            CategoricalStreamDecoder,
            CodingError,
            decode_categorical,
            decode_uniform,
            unpack,
        )

        meta, payloads = unpack(data, self.codec_name, self.fingerprint)
        try:
            h, w, mode, ent, crc = int(meta["h"]), int(meta["w"]), meta.get("m", "RGB"), meta["e"], int(meta["c"])
            stream_numerics = str(meta["n"])
        except (KeyError, TypeError, ValueError) as e:
            raise BitstreamError(f"bitstream metadata is incomplete: {e}") from e
        if not (FACTOR <= h <= common.MAX_SIDE and FACTOR <= w <= common.MAX_SIDE and mode in ("L", "RGB")
                and ent in ("p", "u", "x") and len(payloads) == 1):
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
        if ent == "x" and self.context_pmfs is None:
            raise BitstreamError("this file was coded with a latent context model that this model does not have")
        # every symbol costs at least -log2(its model's largest probability) bits: a header claiming more
        # symbols than the payload can hold (a forged size) is refused before the generator allocates it
        pmax = {"x": self.context_pmfs, "p": self.pmfs, "u": np.full(LEVELS, 1.0 / LEVELS)}[ent]
        least = count * -np.log2(min(1.0, float(np.max(pmax)) + 1e-6))
        if 32 * len(words) + 64 < least:
            raise BitstreamError(f"bitstream claims a {h}x{w} image, {count} symbols of at least {least:.0f} bits in "
                                 f"all, in a payload of {32 * len(words)} bits")
        shape = (lh, lw, self.spec.channels)
        try:
            if ent == "x":
                symbols = context.decode_symbols(CategoricalStreamDecoder(words), self.context_pmfs, shape)
            elif ent == "p":
                symbols = decode_categorical(words, np.tile(self.pmfs, (lh * lw, 1))).reshape(shape)
            else:
                symbols = decode_uniform(words, count, LEVELS).reshape(shape)
        except CodingError as e:
            raise BitstreamError(f"bitstream does not decode: {e}") from e
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
    from jaxcomp.modelfile import ModelLoadError

    if checkpoint is None or checkpoint in CHECKPOINTS:
        checkpoint = shipped_model(checkpoint or DEFAULT_CHECKPOINT)
        if not os.path.isfile(checkpoint):
            raise ModelLoadError(f"no shipped GC model {os.path.basename(checkpoint)} in this jaxcomp; "
                                 "train one (configs/gc.py) and give its workdir or .msgpack")
    _, spec, params = load_gc_model(checkpoint)
    return GCCodec(spec, params["generator"], params.get("context_logits"))


def load_gc_model(path: str) -> tuple[Any, GCSpec, dict[str, Any]]:
    """``(config, spec, params)`` of a GC model file or workdir (``config.task = "gc"``), whose
    generator parameters are checked against the architecture its config names: what every GC
    loader (codec, SC codec, latent sampler) starts from. Raises ``ModelLoadError``."""
    from jaxcomp.modelfile import ModelLoadError, load_model

    config, params, _ = load_model(path, task="gc")
    if "generator" not in params:
        raise ModelLoadError(f"{path}: not a GC model (no generator parameters)")
    spec = spec_from_config(config.model)
    check_generator_params(params["generator"], spec, path)
    return config, spec, params

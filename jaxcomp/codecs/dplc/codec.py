"""DPLC bitstreams and model files: the stage-2 model (E, B, G) as a codec.

A file holds the encoder's symbols and the seed of the decoder's noise. ``E`` maps the image to
``symbols int32 [g, g, m]`` in ``0 .. L-1`` (``g = S / 16``); they are coded with a uniform
categorical model by constriction's ANS coder (a fixed-rate code: the paper's rate is
``m * g^2 * log2(L)`` bits and nothing smaller is possible without a prior). The decoder computes
``G(B(centres[symbols], u))`` with ``u = map_noise(PRNGKey(seed))``: the seed is stored in the file,
so one file always decodes to the same image; the encoder picks it (by default from the image's
bytes, or the caller's). At 0 bits (``model.code_channels = 0``) the file carries the seed alone
and decodes to a sample of the generator (the paper's 0 bpp point).

Files go through the shared container (:mod:`jaxcomp.coding.container`, codec id ``dplc``): the
model's fingerprint, a CRC-32 of everything, the numerics that computed G and a CRC-32 of the
decoded pixels. Bytes of a file: the container's 26-byte head (magic, version, codec id, 16-byte
fingerprint, meta length), the meta JSON (``{"c": pixel CRC, "n": numerics, "s": seed}``, and
``"d": 2|3``, the input's rank, for grayscale models; at most 45 bytes, 51 for grayscale, with CPU
numerics), 2 bytes payload count, 4 bytes payload size, the payload (``4 * words`` bytes: at most
``ceil(bits / 32) + 1`` words, none at 0 bits) and the container's 4-byte CRC: at most 81 (87) bytes
besides the payload. E.g. MNIST at 16 bits (g = 2, m = 4, L = 2): a payload of at most 8 bytes in a
file of at most 95.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.codecs import common
from jaxcomp.codecs.dplc.model import (
    DPLCSpec,
    Generator,
    RateEncoder,
    StochasticMap,
    map_noise,
    spec_from_config,
    to_model_range,
    to_pixels,
)
from jaxcomp.codecs.pretrained import PRETRAINED_DIR

# shipped DPLC model files (jaxcomp/codecs/pretrained/dplc_<name>.msgpack): stage-1 generators and
# stage-2 codec models
SHIPPED = ("mnist_generator", "mnist")
# the shipped stage-2 models, which the codec can load (the CLI's default is DEFAULT_MODEL)
CODEC_MODELS = ("mnist",)
DEFAULT_MODEL = "mnist"  # 32x32 grayscale MNIST-size images
FORMAT = 1  # of the DPLC payload inside the container
SEED_RANGE = 1 << 32


def shipped_model(name: str) -> str:
    """The path of a shipped DPLC model file ``dplc_<name>.msgpack``."""
    return os.path.join(PRETRAINED_DIR, f"dplc_{name}.msgpack")


def resolve_model(checkpoint: str) -> str:
    """A shipped name (:data:`SHIPPED`) -> its file; anything else is a path (workdir or .msgpack)."""
    return shipped_model(checkpoint) if checkpoint in SHIPPED else checkpoint


def default_seed(image: np.ndarray) -> int:
    """The noise seed the encoder picks for ``image`` (any array): the first 4 bytes of the SHA-256 of
    its bytes, an ``int`` in ``[0, 2^32)``; the same image always gets the same seed."""
    return int.from_bytes(hashlib.sha256(np.ascontiguousarray(image).tobytes()).digest()[:4], "little")


def encode_symbols(symbols: np.ndarray, levels: int) -> bytes:
    """``symbols`` (int, any shape, each in ``[0, levels)``) -> the uniform ANS code's bytes
    (``4 * words``; empty for no symbols)."""
    from jaxcomp.coding import encode_uniform

    return encode_uniform(np.asarray(symbols).reshape(-1), levels).tobytes()


def decode_symbols(payload: bytes, count: int, levels: int) -> np.ndarray:
    """Inverse of :func:`encode_symbols`: ``int32 [count]``. Raises :class:`~jaxcomp.coding.BitstreamError`
    unless ``payload`` is exactly the code of ``count`` symbols (the encoder's code is canonical, so
    any other bytes are a damaged or forged file)."""
    from jaxcomp.coding import BitstreamError, CodingError, decode_uniform

    if len(payload) % 4:
        raise BitstreamError("bitstream payload is not a whole number of 32-bit words")
    try:
        symbols = decode_uniform(np.frombuffer(payload, np.uint32), count, levels)
    except CodingError as e:
        raise BitstreamError(f"bitstream does not decode: {e}") from e
    if encode_symbols(symbols, levels) != payload:
        raise BitstreamError(f"bitstream payload is not the code of {count} symbols of {levels} levels")
    return symbols


@common.in_fixed_numerics
class DPLCCodec:
    """Compress/decompress with a DPLC stage-2 model (``params``: the ``"generator"`` player's tree,
    ``{"encoder": E, "map": B, "decoder": G}``; ``"encoder"`` may be absent at 0 bits).

    ``compress(uint8 [S, S, C]) -> bytes`` and ``decompress(bytes) -> uint8`` image of the shape
    given to ``compress`` (a grayscale model takes ``[S, S]`` or ``[S, S, 1]``); ``reconstruct(image,
    seed)`` is the decoded image without coding; ``bits``/``bpp`` the rate ``m * g^2 * log2(L)``.
    """

    codec_name = "dplc"

    @classmethod
    def from_model(cls, config: Any, params: Any) -> DPLCCodec:
        """The codec of a stage-2 model as :func:`jaxcomp.modelfile.load_model` returns it
        (``config.model``; ``params["generator"]``)."""
        return cls(spec_from_config(config.model), params["generator"])

    def __init__(self, spec: DPLCSpec, params: Any):
        self.spec = spec
        params = dict(params)
        if spec.code_channels == 0:
            params.setdefault("encoder", {})  # E has no parameters at 0 bits (a loaded file may drop the key)
        _check_params(spec, params)
        self.params = jax.tree.map(jnp.asarray, params)
        from jaxcomp.coding import fingerprint

        self.fingerprint = fingerprint(params, dict(codec="dplc", format=FORMAT, **dataclasses.asdict(spec)))
        self.numerics = common.numerics()
        encoder, mapper, generator = RateEncoder(spec), StochasticMap(spec), Generator(spec)

        def analyse(params, image):
            return encoder.apply({"params": params["encoder"]}, to_model_range(image))[1]

        def synthesise(params, symbols, seed):
            code = spec.centers()[symbols]
            noise = map_noise(spec, jax.random.key(seed, impl="threefry2x32"), symbols.shape[0])  # any default PRNG
            z = mapper.apply({"params": params["map"]}, code, noise)
            x_hat = generator.apply({"params": params["decoder"]}, z)
            return jnp.round(to_pixels(x_hat)).astype(jnp.uint8)

        self._analyse = jax.jit(analyse)
        self._synthesise = jax.jit(synthesise)

    @property
    def bits(self) -> float:
        """The rate in bits per image, ``m * g^2 * log2(L)`` (the payload is this, rounded up to
        32-bit words, plus at most one word)."""
        return self.spec.bits

    @property
    def bpp(self) -> float:
        """:attr:`bits` per pixel, ``bits / S^2``."""
        return self.spec.bpp

    @property
    def symbol_shape(self) -> tuple[int, int, int]:
        """``(g, g, m)``: the shape of an image's symbols."""
        return (self.spec.grid, self.spec.grid, self.spec.code_channels)

    def expected_shape(self) -> str:
        """The image shapes this model codes, in words (for messages)."""
        s, c = self.spec.image_size, self.spec.channels
        if c == 1:
            return f"uint8 [{s}, {s}] or [{s}, {s}, 1] (grayscale)"
        return f"uint8 [{s}, {s}, {c}]"

    def check_image(self, image: np.ndarray) -> np.ndarray:
        """``image`` as ``uint8 [S, S, C]`` (C-contiguous); a ``ValueError`` naming the expected shape
        for any other dtype, size or number of channels."""
        image = np.asarray(image)
        s, c = self.spec.image_size, self.spec.channels
        if image.dtype != np.uint8:
            raise ValueError(f"the DPLC codec codes 8-bit images: this model takes {self.expected_shape()}, got "
                             f"dtype {image.dtype} (convert to uint8 in [0, 255] first)")
        ok = image.shape == (s, s, c) or (c == 1 and image.shape == (s, s))
        if not ok:
            raise ValueError(f"this DPLC model takes {self.expected_shape()}, got shape {image.shape}")
        return np.ascontiguousarray(image.reshape(s, s, c))

    def adapt(self, image: np.ndarray) -> np.ndarray:
        """A decoded image file (``uint8 [H, W]`` gray or ``[H, W, 3]``) in this model's channel layout,
        where that loses nothing: a grayscale model takes the channel of an RGB image whose three
        channels are equal, an RGB model repeats a gray image's channel; anything else is returned
        as it is (:meth:`compress` then names what it expects)."""
        image = np.asarray(image)
        if self.spec.channels == 1 and image.ndim == 3 and image.shape[2] == 3:
            if (image == image[..., :1]).all():
                return np.ascontiguousarray(image[..., 0])
        elif self.spec.channels == 3 and image.ndim == 2:
            return common.as_rgb(image)
        return image

    def analyse(self, image: np.ndarray) -> np.ndarray:
        """E's symbols of an image, ``int32 [g, g, m]`` in ``0 .. L-1``."""
        image = self.check_image(image)
        if self.spec.code_channels == 0:
            return np.zeros(self.symbol_shape, np.int32)
        return np.asarray(self._analyse(self.params, image[None]))[0]

    def synthesise(self, symbols: np.ndarray, seed: int) -> np.ndarray:
        """``G(B(centres[symbols], u))`` with ``u`` drawn from ``seed``: ``uint8 [S, S, C]``."""
        symbols = common.check_symbols(symbols, self.spec.levels, "the DPLC codec", ndim=len(self.symbol_shape))
        if symbols.shape != self.symbol_shape:
            raise ValueError(f"symbols of this model are int32 {list(self.symbol_shape)}, got {symbols.shape}")
        seed = _check_seed(seed)
        # a writable array of its own (np.asarray of a JAX array is a read-only view of its buffer)
        return np.array(self._synthesise(self.params, jnp.asarray(symbols)[None], np.uint32(seed))[0])

    def reconstruct(self, image: np.ndarray, seed: int | None = None) -> np.ndarray:
        """What :meth:`decompress` of :meth:`compress` ``(image, seed)`` gives (no coding): ``uint8``
        of the input's shape. ``seed=None``: :func:`default_seed` of the image."""
        checked = self.check_image(image)
        seed = default_seed(checked) if seed is None else seed
        return self.synthesise(self.analyse(checked), seed).reshape(np.shape(image))

    def compress(self, image: np.ndarray, seed: int | None = None) -> bytes:
        """``uint8 [S, S, C]`` (grayscale: ``[S, S]`` or ``[S, S, 1]``) -> bitstream ``bytes``.

        ``seed`` (``int`` in ``[0, 2^32)``) draws the decoder's noise; ``None``: :func:`default_seed`
        of the image, so compressing an image twice gives the same file.
        """
        from jaxcomp.coding import pack

        checked = self.check_image(image)
        seed = _check_seed(default_seed(checked) if seed is None else seed)
        symbols = self.analyse(checked)
        payload = encode_symbols(symbols, self.spec.levels)
        recon = self.synthesise(symbols, seed)
        # short keys: CRC-32 of the decoded pixels, numerics, seed; d: the input's rank (gray models)
        meta: dict[str, Any] = dict(c=zlib.crc32(recon.tobytes()), n=self.numerics, s=seed)
        if self.spec.channels == 1:
            meta["d"] = np.ndim(image)
        return pack(self.codec_name, self.fingerprint, meta, [payload])

    def decompress(self, data: bytes) -> np.ndarray:
        """Bitstream -> ``uint8 [S, S, C]`` (the shape given to :meth:`compress`: ``[S, S]`` or
        ``[S, S, 1]`` for a grayscale model).

        Raises:
          jaxcomp.coding.BitstreamError: not a DPLC bitstream of this model, truncated, corrupt,
            written with other numerics, or decoded pixels that differ from the encoder's.
        """
        from jaxcomp.coding import BitstreamError, unpack

        meta, payloads = unpack(data, self.codec_name, self.fingerprint)
        crc, numerics, seed, rank = meta.get("c"), meta.get("n"), meta.get("s"), meta.get("d", 3)
        ranks = (2, 3) if self.spec.channels == 1 else (3,)
        if not (_is_u32(crc) and _is_u32(seed) and isinstance(numerics, str) and rank in ranks
                and type(rank) is int and len(payloads) == 1):
            raise BitstreamError(f"bitstream metadata is invalid or incomplete: {meta}")
        if numerics != self.numerics:
            raise BitstreamError(
                f"this file was compressed with {numerics} numerics and this process computes with "
                f"{self.numerics}: the generator's pixels would differ from the encoder's. " + common.NUMERICS_HELP)
        symbols = decode_symbols(payloads[0], math.prod(self.symbol_shape), self.spec.levels)
        image = self.synthesise(symbols.reshape(self.symbol_shape), seed)
        if zlib.crc32(image.tobytes()) != crc:
            raise BitstreamError("decoded image does not match the encoder's checksum: the model computed "
                                 "different values here than when compressing (different platform or jaxlib?)")
        return np.ascontiguousarray(image[..., 0]) if rank == 2 else image


def _is_u32(x: Any) -> bool:
    return type(x) is int and 0 <= x < SEED_RANGE


def _check_seed(seed: int) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < SEED_RANGE:
        raise ValueError(f"the noise seed is an integer in [0, 2^32), got {seed!r}")
    return int(seed)


def _check_params(spec: DPLCSpec, params: dict[str, Any]) -> None:
    """:class:`jaxcomp.modelfile.ModelLoadError` (a ``ValueError``) unless ``params`` has E's, B's
    and G's parameters of the shapes ``spec`` gives (:func:`jaxcomp.modelfile.check_params`)."""
    from jaxcomp.modelfile import check_params, param_shapes

    image = jax.ShapeDtypeStruct((1, spec.image_size, spec.image_size, spec.channels), jnp.float32)
    code = jax.ShapeDtypeStruct((1, spec.grid, spec.grid, spec.code_channels), jnp.float32)
    noise = jax.ShapeDtypeStruct((1, spec.grid, spec.grid, spec.noise_channels), jnp.float32)
    expected = {
        "encoder": param_shapes(RateEncoder(spec), image),
        "map": param_shapes(StochasticMap(spec), code, noise),
        "decoder": param_shapes(Generator(spec), jax.ShapeDtypeStruct((1, spec.latent), jnp.float32)),
    }
    check_params(params, expected, "DPLC stage-2 generator", f"config.model ({spec})")


def load_codec(checkpoint: str | None = None) -> DPLCCodec:
    """A :class:`DPLCCodec` from a stage-2 DPLC model (``config.task = "dplc"``): a shipped name
    (``None`` = :data:`DEFAULT_MODEL`), an exported ``.msgpack`` or a training workdir.

    Raises:
      jaxcomp.modelfile.ModelLoadError: no such model, a model of another task (a stage-1
        generator included), or parameters that do not fit the model's config.
    """
    from jaxcomp.modelfile import ModelLoadError, load_model

    name = DEFAULT_MODEL if checkpoint is None else checkpoint
    path = resolve_model(name)
    if name in SHIPPED and not os.path.isfile(path):
        raise ModelLoadError(f"no shipped DPLC model {os.path.basename(path)} is installed in this jaxcomp; train "
                             "one (configs/dplc.py: mnist, then mnist_compress) and give its workdir or exported "
                             ".msgpack (--checkpoint)")
    try:
        config, params, _ = load_model(path, task="dplc")
    except ModelLoadError as e:
        if "model, not 'dplc'" not in str(e):
            raise
        raise ModelLoadError(f"{e}: the DPLC codec needs a stage-2 model (config.task='dplc', trained by "
                             "configs/dplc.py:<data>_compress from a stage-1 generator)") from e
    if "generator" not in params:
        raise ModelLoadError(f"{path}: not a DPLC stage-2 model (no generator parameters)")
    try:
        return DPLCCodec.from_model(config, params)
    except ValueError as e:
        raise ModelLoadError(f"{path}: {e}") from e

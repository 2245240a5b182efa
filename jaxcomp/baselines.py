"""Classical image codecs as baselines: lossless (PNG, WebP, JPEG 2000, JPEG XL, ...) and lossy.

Host-side only (numpy + `imagecodecs <https://pypi.org/project/imagecodecs/>`_, imported when a
codec list is first built, so the package itself does not require imagecodecs).

Every codec maps ``uint8 [H, W, 3]`` RGB to ``bytes`` and back. The lossless settings below were
checked bit-exact against imagecodecs 2026.3 (libpng 1.6, libwebp 1.6, OpenJPEG 2.5, libjxl 0.11,
libavif 1.4); several plausible-looking settings are *silently lossy* and are avoided:

* JPEG 2000: ``level`` is a target PSNR in dB, ``0`` meaning lossless. ``reversible=True``
  (the 5/3 wavelet) with any ``level > 0`` is lossy (``level=100`` already differs by 1);
  ``mct=False`` stays lossless but is ~30% larger (no reversible colour transform).
* JPEG XL: ``level=100`` or ``distance=0`` *without* ``lossless=True`` is near-lossless VarDCT,
  not lossless (errors up to ~18 grey levels). Only ``lossless=True`` is exact.
* WebP: always pass ``lossless=True`` explicitly; ``level`` is the quality / effort (100 = most
  effort in lossless mode). imagecodecs has no ``exact`` option; it only matters for pixels under
  a fully transparent alpha, which RGB input does not have.
* AVIF: ``level=100`` (``AVIF.QUALITY.LOSSLESS``) is exact (libavif switches to lossless, identity
  matrix) even if a chroma-subsampled ``pixelformat`` is requested; any lower level is lossy.

Use :func:`verify_lossless` before trusting a size: it raises :class:`NotLosslessError` if a
codec does not reproduce the image bit-exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxcomp.checks import is_whole

__all__ = [
    "Codec", "CodecError", "LossyCodec", "NotLosslessError", "RateMatch", "assert_bit_exact", "bits_per_pixel",
    "bits_per_subpixel", "check_image", "encode_at_bitrate", "lossless_baselines", "lossless_codec_names",
    "lossy_baselines", "lossy_codec_names", "verify_lossless",
]


class CodecError(ValueError):
    """A bad image for a codec, an unknown codec name, or a codec missing from imagecodecs."""


class NotLosslessError(RuntimeError):
    """A codec that should be lossless did not reproduce its input bit-exactly."""


@dataclasses.dataclass(frozen=True)
class Codec:
    """A lossless image codec.

    Attributes:
      name: short identifier, e.g. ``"png"`` or ``"jpegxl-e9"``.
      encode: ``uint8 [H, W, 3]`` -> ``bytes``.
      decode: ``bytes`` -> ``uint8 [H, W, 3]``.
      estimate: optional ``uint8 [H, W, 3]`` -> estimated total bits (e.g. a learned model's
        cross-entropy), reported next to the real size by the benchmark; ``None`` for baselines.
      description: the settings, for tables and reports.
      warmup: run one untimed encode/decode per image first (jit compilation of a new shape).
    """

    name: str
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[bytes], np.ndarray]
    estimate: Callable[[np.ndarray], float] | None = None
    description: str = ""
    warmup: bool = False


@dataclasses.dataclass(frozen=True)
class LossyCodec:
    """A lossy image codec with one rate knob.

    Attributes:
      name: short identifier, e.g. ``"jpeg"``.
      encode: ``(uint8 [H, W, 3], param) -> bytes``; ``param`` is described by ``param``.
      decode: ``bytes`` -> ``uint8 [H, W, 3]``.
      param: what the knob means: ``"quality"`` (higher = better, larger) or ``"bpsp"`` (a target
        rate in bits per subpixel; the encoding is the largest one not above it when reachable).
      param_range: meaningful range of the knob ``(low, high)``.
      description: the settings.
    """

    name: str
    encode: Callable[[np.ndarray, float], bytes]
    decode: Callable[[bytes], np.ndarray]
    param: str = "quality"
    param_range: tuple[float, float] = (0.0, 100.0)
    description: str = ""


def check_image(image: Any) -> np.ndarray:
    """Returns ``image`` as a C-contiguous ``uint8 [H, W, 3]`` array, or raises :class:`CodecError`."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise CodecError(f"expected a uint8 image, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise CodecError(f"expected an RGB image of shape [H, W, 3], got shape {arr.shape}")
    return np.ascontiguousarray(arr)


def bits_per_subpixel(num_bytes: int, shape: Sequence[int]) -> float:
    """``8 * num_bytes / (H * W * C)`` for an image of ``shape`` ``[H, W, C]``."""
    _check_rate_args(num_bytes, shape, 3)
    return 8.0 * num_bytes / float(np.prod(shape))


def bits_per_pixel(num_bytes: int, shape: Sequence[int]) -> float:
    """``8 * num_bytes / (H * W)`` for one image of ``shape`` ``[H, W]`` or ``[H, W, C]`` (``C <= 4``;
    the lossy papers' bpp). A batch ``[B, H, W, C]`` or a channels-first ``[C, H, W]`` shape is refused
    (its first two axes are not the image's sides)."""
    _check_rate_args(num_bytes, shape, 2)
    if len(shape) > 3 or (len(shape) == 3 and shape[-1] > 4):
        raise ValueError(f"bits_per_pixel takes one image's shape [H, W] or [H, W, C] (C <= 4), got "
                         f"{tuple(shape)!r}: a batch or a channels-first shape would divide by the wrong sides")
    return 8.0 * num_bytes / float(shape[0] * shape[1])


def _check_rate_args(num_bytes: int, shape: Sequence[int], least_axes: int) -> None:
    """A byte count ``>= 0`` and an image shape of positive sides (a negative size gave a negative rate)."""
    if not is_whole(num_bytes) or num_bytes < 0:
        raise ValueError(f"num_bytes must be an integer >= 0, got {num_bytes!r}")
    if len(shape) < least_axes or not all(is_whole(n) and n > 0 for n in shape):
        axes = "[H, W, C]" if least_axes == 3 else "[H, W, ...]"
        raise ValueError(f"shape must be an image shape {axes} of positive sides, got {tuple(shape)!r}")


def verify_lossless(codec: Codec, image: np.ndarray) -> bytes:
    """Encodes and decodes ``image`` (``uint8 [H, W, 3]``) and checks the result is bit-exact.

    Returns the encoded bytes. Raises :class:`NotLosslessError` naming the codec, the shape or
    dtype mismatch or the number of differing subpixels, the largest error and its position.
    """
    image = check_image(image)
    data = codec.encode(image)
    assert_bit_exact(codec.name, image, codec.decode(data))
    return bytes(data)


def assert_bit_exact(name: str, original: np.ndarray, decoded: Any, where: str = "") -> None:
    """Raises :class:`NotLosslessError` unless ``decoded`` equals ``original`` (same shape and dtype).

    ``name`` is the codec and ``where`` (optional) the image, both only for the message.
    """
    decoded = np.asarray(decoded)
    what = f"codec {name!r} is not lossless" + (f" on {where}" if where else "")
    if decoded.shape != original.shape or decoded.dtype != original.dtype:
        raise NotLosslessError(
            f"{what}: decoded {decoded.dtype}{list(decoded.shape)} from {original.dtype}{list(original.shape)}"
        )
    diff = decoded.astype(np.int16) - original.astype(np.int16)
    if np.any(diff):
        bad = np.count_nonzero(diff)
        pos = np.unravel_index(int(np.argmax(np.abs(diff))), diff.shape)
        raise NotLosslessError(
            f"{what}: {bad} of {diff.size} subpixels differ, "
            f"max |error| {int(np.abs(diff).max())} at (y, x, c) = {tuple(int(i) for i in pos)}"
        )


# ----------------------------------------------------------------------------- imagecodecs glue


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the baseline codecs need imagecodecs: pip install imagecodecs") from e
    return imagecodecs


def _available(ic, feature: str) -> bool:
    return bool(getattr(getattr(ic, feature, None), "available", False))


def _wrap_encode(fn: Callable[[np.ndarray], Any]) -> Callable[[np.ndarray], bytes]:
    return lambda image: bytes(fn(check_image(image)))


def _png_best(ic) -> Callable[[np.ndarray], Any]:
    """Smallest PNG over zlib-9 strategies x row-filter choices (an optipng-style search)."""
    strategies = [ic.PNG.STRATEGY.DEFAULT, ic.PNG.STRATEGY.FILTERED, ic.PNG.STRATEGY.RLE]
    filters = [ic.PNG.FILTER.ALL, ic.PNG.FILTER.NONE, ic.PNG.FILTER.SUB, ic.PNG.FILTER.UP,
               ic.PNG.FILTER.AVG, ic.PNG.FILTER.PAETH]

    def encode(image: np.ndarray) -> bytes:
        return min((ic.png_encode(image, level=9, strategy=s, filter=f) for s in strategies for f in filters), key=len)

    return encode


def _lossless_registry(ic) -> dict[str, tuple[str, Callable[[], Codec]]]:
    """name -> (imagecodecs feature that must be available, constructor)."""

    def make(name, enc, dec, description):
        return lambda: Codec(name, _wrap_encode(enc), lambda data: np.asarray(dec(data)), description=description)

    return {
        "png": ("PNG", make("png", lambda x: ic.png_encode(x, level=9), ic.png_decode,
                            "libpng, zlib level 9, adaptive filters")),
        "png-best": ("PNG", make("png-best", _png_best(ic), ic.png_decode,
                                 "libpng, zlib 9, smallest of 3 strategies x 6 filter choices")),
        "webp": ("WEBP", make("webp", lambda x: ic.webp_encode(x, 100, lossless=True, method=6), ic.webp_decode,
                              "libwebp lossless, quality (effort) 100, method 6")),
        "jpeg2000": ("JPEG2K", make("jpeg2000", lambda x: ic.jpeg2k_encode(
            x, level=0, reversible=True, mct=True, codecformat="J2K"), ic.jpeg2k_decode,
            "OpenJPEG J2K codestream, reversible 5/3 wavelet + RCT, level 0 (lossless)")),
        "jpegxl-e7": ("JPEGXL", make("jpegxl-e7", lambda x: ic.jpegxl_encode(x, lossless=True, effort=7),
                                    ic.jpegxl_decode, "libjxl lossless (modular), effort 7")),
        "jpegxl-e9": ("JPEGXL", make("jpegxl-e9", lambda x: ic.jpegxl_encode(x, lossless=True, effort=9),
                                    ic.jpegxl_decode, "libjxl lossless (modular), effort 9")),
        "jpegls": ("JPEGLS", make("jpegls", lambda x: ic.jpegls_encode(x), ic.jpegls_decode,
                                  "CharLS JPEG-LS, near=0 (lossless)")),
        "avif": ("AVIF", make("avif", lambda x: ic.avif_encode(x, 100, speed=6), ic.avif_decode,
                              "libavif lossless (quality 100), speed 6")),
    }


LOSSLESS_NAMES = ("png", "png-best", "webp", "jpeg2000", "jpegxl-e7", "jpegxl-e9", "jpegls", "avif")
LOSSY_NAMES = ("jpeg", "webp", "jpeg2000", "avif", "jpegxl")


def lossless_codec_names() -> list[str]:
    """Names of all lossless baselines, whether or not this imagecodecs build has them."""
    return list(LOSSLESS_NAMES)


def _select(names: Sequence[str] | None, registry: dict, kind: str, ic) -> list:
    if names is None:
        return [make() for feature, make in registry.values() if _available(ic, feature)]
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise CodecError(f"unknown {kind} codec(s) {', '.join(map(repr, unknown))}; known: {', '.join(registry)}")
    missing = [n for n in names if not _available(ic, registry[n][0])]
    if missing:
        raise CodecError(f"{kind} codec(s) {', '.join(missing)} not available in this imagecodecs build")
    return [registry[n][1]() for n in names]


def lossless_baselines(names: Sequence[str] | None = None) -> list[Codec]:
    """The lossless baseline codecs, in a fixed order.

    Args:
      names: which ones (see :func:`lossless_codec_names`); ``None`` means every one this
        imagecodecs build supports. An unknown or unavailable name raises :class:`CodecError`.
    """
    ic = _imagecodecs()
    return _select(names, _lossless_registry(ic), "lossless", ic)


# ----------------------------------------------------------------------------- lossy


def _jpeg2000_at_rate(ic) -> Callable[[np.ndarray, float], bytes]:
    """JPEG 2000 (9/7 wavelet + ICT) at a target rate in bpsp, by bisection on imagecodecs' PSNR level."""

    def encode(image: np.ndarray, bpsp: float) -> bytes:
        image = check_image(image)
        if bpsp <= 0:
            raise CodecError(f"target rate must be > 0 bpsp, got {bpsp}")
        budget = bpsp * image.size / 8.0
        enc = lambda level: bytes(ic.jpeg2k_encode(image, level=level, reversible=False, codecformat="J2K"))
        lo, hi = 10.0, 80.0  # PSNR targets in dB
        best = enc(lo)
        if len(best) > budget:
            return best  # cannot go lower: the smallest encoding we make
        for _ in range(16):
            mid = 0.5 * (lo + hi)
            data = enc(mid)
            if len(data) <= budget:
                lo, best = mid, data
            else:
                hi = mid
        return best

    return encode


def _lossy_registry(ic) -> dict[str, tuple[str, Callable[[], LossyCodec]]]:
    def make(name, enc, dec, description, param="quality", param_range=(0.0, 100.0)):
        return lambda: LossyCodec(
            name, lambda image, q: bytes(enc(check_image(image), q)), lambda data: np.asarray(dec(data)),
            param=param, param_range=param_range, description=description,
        )

    return {
        "jpeg": ("JPEG8", make("jpeg", lambda x, q: ic.jpeg8_encode(x, level=int(round(q)), optimize=True),
                               ic.jpeg8_decode, "libjpeg(-turbo) baseline, optimized Huffman, default 4:2:0")),
        "webp": ("WEBP", make("webp", lambda x, q: ic.webp_encode(x, float(q), lossless=False, method=6),
                              ic.webp_decode, "libwebp lossy, method 6")),
        "jpeg2000": ("JPEG2K", make("jpeg2000", _jpeg2000_at_rate(ic), ic.jpeg2k_decode,
                                    "OpenJPEG 9/7 wavelet at a target rate (bisection on PSNR)",
                                    param="bpsp", param_range=(0.01, 8.0))),
        "avif": ("AVIF", make("avif", lambda x, q: ic.avif_encode(x, int(round(min(q, 99))), speed=6),
                              ic.avif_decode, "libavif (AV1), speed 6; quality capped at 99 (100 = lossless)")),
        "jpegxl": ("JPEGXL", make("jpegxl", lambda x, q: ic.jpegxl_encode(x, float(q), effort=7, lossless=False),
                                  ic.jpegxl_decode, "libjxl VarDCT, effort 7")),
    }


def lossy_codec_names() -> list[str]:
    """Names of all lossy baselines, whether or not this imagecodecs build has them."""
    return list(LOSSY_NAMES)


def lossy_baselines(names: Sequence[str] | None = None) -> list[LossyCodec]:
    """The lossy baseline codecs (``None``: every one this imagecodecs build supports)."""
    ic = _imagecodecs()
    return _select(names, _lossy_registry(ic), "lossy", ic)


@dataclasses.dataclass(frozen=True)
class RateMatch:
    """An encoding chosen by :func:`encode_at_bitrate`.

    Attributes:
      data: the encoded bytes.
      param: the codec's knob that made them (a quality, or the target bpsp).
      bpp: their rate, ``8 * len(data) / (H * W)``.
      reachable: ``bpp <= max_bpp``; ``False`` when even the lowest setting is larger (``data``
        is then that smallest encoding).
    """

    data: bytes
    param: float
    bpp: float
    reachable: bool


def encode_at_bitrate(codec: LossyCodec, image: np.ndarray, max_bpp: float) -> RateMatch:
    """The best encoding of ``image`` (``uint8 [H, W, 3]``) not above ``max_bpp`` bits per pixel.

    "Best" is the highest setting of the codec's knob whose encoding fits: for a ``"quality"``
    knob, a bisection over the integer qualities in ``param_range`` (about 9 encodes for 0..100;
    it assumes the size grows with the quality, which holds for the baselines up to a few bytes
    of noise); for a ``"bpsp"`` knob (JPEG 2000), the codec's own rate control at
    ``max_bpp / 3`` bits per subpixel. This is the usual "at matched bitrate" comparison of a
    learned codec with a classical one on the same image.
    """
    image = check_image(image)
    if not max_bpp > 0:
        raise CodecError(f"target rate must be > 0 bpp, got {max_bpp}")

    def attempt(param: float) -> RateMatch:
        data = bytes(codec.encode(image, param))
        bpp = bits_per_pixel(len(data), image.shape)
        return RateMatch(data, float(param), bpp, bpp <= max_bpp)

    if codec.param == "bpsp":
        return attempt(max_bpp / image.shape[2])
    if codec.param != "quality":
        raise CodecError(f"codec {codec.name!r}: unknown knob {codec.param!r}")
    lo, hi = int(np.ceil(codec.param_range[0])), int(np.floor(codec.param_range[1]))
    best = attempt(lo)
    if not best.reachable:
        return best
    top = attempt(hi)
    if top.reachable:
        return top
    while hi - lo > 1:  # attempt(lo) fits, attempt(hi) does not
        mid = (lo + hi) // 2
        m = attempt(mid)
        if m.reachable:
            lo, best = mid, m
        else:
            hi = mid
    return best

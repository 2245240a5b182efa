"""What every image codec shares: the image check and the numerics a stream records.

A codec computes its probabilities with jitted JAX functions; a stream records which numerics
computed them (:func:`numerics`) and a decoder with other numerics refuses it with
:data:`NUMERICS_HELP` instead of decoding into a checksum error (see :mod:`jaxcomp.xla`). The
process-wide JAX settings that would change a codec's values (64-bit floats, the threefry
variant) are fixed while a codec computes (:func:`fixed_numerics`, :func:`in_fixed_numerics`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from jaxcomp.checks import index_array, is_whole

#: the largest image side a stream's header admits (every codec's decoder refuses larger, so every
#: encoder refuses to write them: a file that cannot be decoded would be lost data)
MAX_SIDE = 1 << 16

NUMERICS_HELP = ("Decode on the same platform; on CPU, 'cpu/xla' is what a process gets that imports jaxcomp "
                 "before running JAX, 'cpu/ynn' what it gets with JAXCOMP_KEEP_YNN=1 (or after JAX started).")


@contextlib.contextmanager
def fixed_numerics() -> Iterator[None]:
    """The JAX settings every codec computes under, whatever the process has set: 32-bit floats
    (``jax_enable_x64`` off) and JAX's default partitionable threefry bits. A file's decoding must
    not depend on settings its stream does not record (a DPLC file written with x64 on decoded to
    other pixels, and failed its checksum, in a process with x64 off; the CPM model did not load)."""
    with jax.enable_x64(False), jax.threefry_partitionable(True):
        yield


def in_fixed_numerics(cls: type) -> type:
    """Class decorator: ``__init__`` and every public method of ``cls`` (not properties, static or
    class methods) run under :func:`fixed_numerics`."""

    def wrap(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with fixed_numerics():
                return method(*args, **kwargs)

        return wrapped

    for name, value in list(vars(cls).items()):
        if (name == "__init__" or not name.startswith("_")) and inspect.isfunction(value):
            setattr(cls, name, wrap(value))
    return cls


def numerics() -> str:
    """What computes this process's probabilities: ``"cpu/xla"``, ``"cpu/ynn"`` or the platform.

    Streams record it; a decoder with other numerics refuses clearly instead of decoding into
    a checksum error (see :mod:`jaxcomp.xla`).
    """
    from jaxcomp.xla import cpu_convolutions

    platform = jax.default_backend()
    return f"cpu/{cpu_convolutions()}" if platform == "cpu" else platform


def check_image(image: np.ndarray, codec: str) -> np.ndarray:
    """Accepts ``uint8 [H, W, 3]`` or ``uint8 [H, W]``; anything else is a ``ValueError`` that
    names ``codec`` and the problem (dtype, RGBA, shape, empty, a side over :data:`MAX_SIDE`).
    Returns it C-contiguous."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"{codec} codes 8-bit images (uint8); got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 4:
        raise ValueError(f"{codec} codes RGB or grayscale images; got 4 channels (RGBA)")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"{codec} expects an image [H, W, 3] or [H, W]; got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if max(image.shape[:2]) > MAX_SIDE:
        raise ValueError(f"{codec} codes images of at most {MAX_SIDE} pixels a side (its streams' limit); got shape "
                         f"{image.shape}: split the image first")
    return np.ascontiguousarray(image)


def check_symbols(symbols: np.ndarray, levels: int, codec: str, ndim: int = 3, channels: int | None = None
                  ) -> np.ndarray:
    """Latent symbols for a codec's ``synthesise`` as ``int32``: an integer array of ``ndim`` axes (its
    last ``channels`` wide, if given) with every entry in ``0 .. levels - 1``; ``ValueError`` naming
    ``codec`` otherwise (an index outside the centres was clamped or wrapped by JAX: an image of other
    symbols, without a word; a float was truncated)."""
    symbols = np.asarray(symbols)
    if symbols.ndim != ndim or (channels is not None and symbols.shape[-1] != channels):
        want = f"{ndim} axes" + (f", the last {channels} wide" if channels is not None else "")
        raise ValueError(f"{codec}: symbols of {want} expected, got shape {symbols.shape}")
    index_array(symbols.reshape(-1), levels, f"{codec}: the symbols", "values")
    return symbols.astype(np.int32)


def check_output_size(height: int, width: int, latent: tuple[int, int], factor: int, codec: str) -> None:
    """``ValueError`` unless ``0 < height <= factor * h`` and ``0 < width <= factor * w`` for a latent
    of ``(h, w)`` positions: a larger image asked of fewer symbols came back smaller, without a word."""
    for name, side, cells in (("height", height, latent[0]), ("width", width, latent[1])):
        if not is_whole(side) or not 0 < side <= factor * cells:
            raise ValueError(f"{codec}: {name} must be an integer in 1..{factor * cells} for symbols of "
                             f"{latent[0]}x{latent[1]} positions (each {factor} pixels), got {side!r}")


def check_tile(tile: int, multiple: int, max_tile: int) -> int:
    """``tile`` as an ``int``: a whole positive multiple of ``multiple`` pixels up to ``max_tile`` (the
    largest a codec's stream header admits; a larger one would write files its decoder refuses);
    ``ValueError`` otherwise."""
    whole = is_whole(tile)
    if not whole or tile % multiple or not 0 < tile <= max_tile:
        raise ValueError(f"tile must be a positive multiple of {multiple} pixels up to {max_tile} (the streams' "
                         f"limit), got {tile!r}")
    return int(tile)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``uint8 [H, W]`` -> ``[H, W, 3]`` (the gray value in every channel); RGB unchanged."""
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


def as_mode(rgb: np.ndarray, gray: bool) -> np.ndarray:
    """A decoded ``uint8 [H, W, 3]`` as the input's mode: ``[H, W]`` (rounded channel mean) if ``gray``;
    a new writable C-contiguous array either way (not a read-only view of JAX's buffer)."""
    if not gray:
        return np.array(rgb, np.uint8, order="C")
    return np.round(rgb.astype(np.float32).mean(-1)).astype(np.uint8)

"""Sliced Wasserstein distance (SWD) between two image sets' Laplacian-pyramid patch distributions.

The metric of Karras et al., "Progressive Growing of GANs" (ICLR 2018, appendix D): a distribution
distance that needs no pretrained network. For each level of a Laplacian pyramid, random 7x7
neighbourhoods are cut from every image of a set; each neighbourhood (7 x 7 x 3 = 147 numbers)
is a descriptor. The descriptors of a set are normalised per colour channel by that set's mean and
standard deviation, and the two sets' descriptor clouds are compared by the sliced Wasserstein
distance: the 1-Wasserstein (earth mover's) distance of their projections on random unit
directions, averaged over directions. Reported, as in the paper, x 1e3 per level and their mean.
Level 0 is the finest (full-resolution detail), the last level the coarsest (the low-pass
residual), so low levels measure texture / sharpness and high levels colour and layout.

Host-side numpy (+ ``scipy.ndimage`` for the pyramid filters): a set of 16 images of 768x512
takes a few seconds on two CPU cores. Deterministic given ``seed``: patch positions depend only
on (seed, level, image index, image shape) and directions only on (seed, level, repeat), so two
sets of equally sized images are sampled at the *same* positions (common random numbers: a set
against itself scores exactly 0, and differences between methods are not masked by sampling
noise), and ``swd(a, b) == swd(b, a)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "NEIGHBOURHOOD", "MIN_LEVEL_SIZE", "auto_levels", "laplacian_pyramid", "patch_descriptors",
    "reconstruct_laplacian_pyramid", "sliced_wasserstein", "swd",
]

NEIGHBOURHOOD = 7  # patch side, as Karras et al.
MIN_LEVEL_SIZE = 16  # default number of levels: halve while the coarsest level keeps >= 16 px a side
# The binomial 5-tap kernel of cv2.pyrDown / pyrUp (Burt & Adelson), applied separably.
_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0


def _check_image(image, what: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{what}: expected uint8 or float pixels, got dtype {arr.dtype}")
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"{what}: expected an RGB image of shape [H, W, 3], got shape {arr.shape}")
    if arr.dtype != np.uint8 and not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: NaN or infinite pixel values")
    if min(arr.shape[:2]) < NEIGHBOURHOOD:
        raise ValueError(f"{what}: {arr.shape[0]}x{arr.shape[1]} is smaller than one "
                         f"{NEIGHBOURHOOD}x{NEIGHBOURHOOD} neighbourhood")
    return arr


def _as_image_list(images, what: str) -> list[np.ndarray]:
    """``[N, H, W, 3]`` array or a sequence of ``[H, W, 3]`` arrays -> a checked list."""
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") and not isinstance(images, (list, tuple)):
        arr = np.asarray(images)
        if arr.ndim != 4:
            raise ValueError(f"{what}: expected [N, H, W, 3] or a list of [H, W, 3] images, got shape {arr.shape}")
        images = list(arr)
    images = list(images)
    if not images:
        raise ValueError(f"{what}: no images")
    return [_check_image(im, f"{what}[{i}]") for i, im in enumerate(images)]


def _filter(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Separable 5-tap filter over the two spatial axes of ``x [H, W, C]``; edges mirrored
    (``d c b | a b c d | c b a``, cv2's BORDER_REFLECT_101)."""
    from scipy.ndimage import correlate1d

    return correlate1d(correlate1d(x, weights, axis=0, mode="mirror"), weights, axis=1, mode="mirror")


def _pyr_down(x: np.ndarray) -> np.ndarray:
    """Blur and keep every second pixel: ``[H, W, C]`` -> ``[ceil(H/2), ceil(W/2), C]``."""
    return _filter(x, _KERNEL)[::2, ::2]


def _pyr_up(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-insert ``x [h, w, C]`` into ``shape`` (``h = ceil(H/2)``) and interpolate with 2x the kernel."""
    up = np.zeros(tuple(shape) + x.shape[2:], np.float32)
    up[::2, ::2] = x
    return _filter(up, 2.0 * _KERNEL)  # 2 per axis: the zeros carry no weight


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """The Laplacian pyramid of one image.

    Args:
      image: ``uint8`` or float ``[H, W, 3]``, or a batch ``[N, H, W, 3]`` (same size) whose
        pyramids are computed together (each level then ``[N, h, w, 3]``).
      levels: number of levels, >= 1; every level must keep at least one pixel a side.

    Returns:
      ``levels`` float32 arrays, finest first. Level ``k < levels - 1`` is the detail
      ``g_k - up(g_{k+1})`` of the Gaussian pyramid ``g_0 = image``, ``g_{k+1} = down(g_k)``
      (5-tap binomial blur, every second pixel kept, so level k is ``ceil(H / 2^k) x ceil(W / 2^k)``);
      the last level is the low-pass ``g_{levels-1}``. :func:`reconstruct_laplacian_pyramid`
      inverts it exactly (up to float32 rounding), for any, also odd, ``H`` and ``W``.
    """
    arr = np.asarray(image)
    if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"expected uint8 or float pixels, got dtype {arr.dtype}")
    if arr.ndim == 4:
        per_image = [laplacian_pyramid(im, levels) for im in arr]
        return [np.stack(level) for level in zip(*per_image)]
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an image [H, W, 3] or a batch [N, H, W, 3], got shape {arr.shape}")
    if not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    if min(arr.shape[:2]) < 2 ** (levels - 1):
        raise ValueError(f"a {arr.shape[0]}x{arr.shape[1]} image has fewer than {levels} pyramid levels")
    gaussian = [arr.astype(np.float32)]
    for _ in range(levels - 1):
        gaussian.append(_pyr_down(gaussian[-1]))
    detail = [g - _pyr_up(coarse, g.shape[:2]) for g, coarse in zip(gaussian[:-1], gaussian[1:])]
    return detail + [gaussian[-1]]


def reconstruct_laplacian_pyramid(pyramid: Sequence[np.ndarray]) -> np.ndarray:
    """The image (float32 ``[H, W, 3]``, or ``[N, H, W, 3]`` for a batch's pyramid) whose
    :func:`laplacian_pyramid` is ``pyramid``: starting from the coarsest level, upsample to the next
    level's size and add its detail."""
    pyramid = [np.asarray(level, np.float32) for level in pyramid]
    if not pyramid or any(level.ndim not in (3, 4) or level.ndim != pyramid[0].ndim for level in pyramid):
        raise ValueError(f"expected laplacian_pyramid's levels ([h, w, 3] each, or [N, h, w, 3]), got shapes "
                         f"{[level.shape for level in pyramid]}")
    if pyramid[0].ndim == 4:
        return np.stack([reconstruct_laplacian_pyramid([level[i] for level in pyramid])
                         for i in range(len(pyramid[0]))])
    image = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        image = _pyr_up(image, detail.shape[:2]) + detail
    return image


def auto_levels(shapes: Sequence[Sequence[int]], min_size: int = MIN_LEVEL_SIZE) -> int:
    """Karras' number of levels for images of ``shapes`` (``[H, W, ...]`` each): from full
    resolution, halving while the smallest side of the coarsest level stays >= ``min_size``
    (1024 px -> 7 levels, 512 -> 6); at least 1."""
    side = min(min(s[0], s[1]) for s in shapes)
    levels = 1
    while -(-side // 2 ** levels) >= min_size:
        levels += 1
    return levels


def _positions(seed: int, level: int, index: int, shape: tuple[int, int], count: int) -> np.ndarray:
    """``count`` neighbourhood centres ``[count, 2]`` (y, x), drawn uniformly so the whole 7x7
    window lies inside ``shape``; a function of its arguments only."""
    rng = np.random.default_rng([seed, 1, level, index, shape[0], shape[1]])
    r = NEIGHBOURHOOD // 2
    y = rng.integers(r, shape[0] - r, size=count)
    x = rng.integers(r, shape[1] - r, size=count)
    return np.stack([y, x], axis=1)


def patch_descriptors(levels_per_image: Sequence[np.ndarray], level: int, patches_per_image: int,
                      seed: int = 0) -> np.ndarray:
    """Normalised 7x7 neighbourhood descriptors of one pyramid level over a set of images.

    Args:
      levels_per_image: that level of each image's pyramid, float32 ``[h_i, w_i, 3]`` each
        (sizes may differ; each at least 7x7).
      level: the level's index (only selects the positions' random stream).
      patches_per_image: neighbourhoods per image.
      seed: positions depend only on (seed, level, image index, level size).

    Returns:
      float32 ``[len(levels_per_image) * patches_per_image, 7 * 7 * 3]`` (row-major y, x, channel),
      each channel shifted and scaled to zero mean and unit standard deviation over the set's
      neighbourhoods (Karras' ``finalize_descriptors``), so the metric compares the shape of the
      patch distributions, not global brightness or contrast.
    """
    r = NEIGHBOURHOOD // 2
    offsets = np.arange(-r, r + 1)
    out = []
    for i, lev in enumerate(levels_per_image):
        lev = np.asarray(lev, np.float32)
        if min(lev.shape[:2]) < NEIGHBOURHOOD:
            raise ValueError(f"image {i}: pyramid level {level} is {lev.shape[0]}x{lev.shape[1]}, smaller than "
                             f"a {NEIGHBOURHOOD}x{NEIGHBOURHOOD} neighbourhood; use fewer levels")
        pos = _positions(seed, level, i, lev.shape[:2], patches_per_image)
        ys = pos[:, 0, None, None] + offsets[None, :, None]  # [P, 7, 1]
        xs = pos[:, 1, None, None] + offsets[None, None, :]  # [P, 1, 7]
        out.append(lev[ys, xs])  # [P, 7, 7, 3]
    desc = np.concatenate(out).astype(np.float64)
    desc -= desc.mean(axis=(0, 1, 2), keepdims=True)
    std = desc.std(axis=(0, 1, 2), keepdims=True)
    desc /= np.where(std > 0, std, 1.0)  # a flat channel stays 0 rather than NaN
    return desc.reshape(desc.shape[0], -1).astype(np.float32)


def _wasserstein_1d(pa: np.ndarray, pb: np.ndarray) -> np.ndarray:
    """W1 between the empirical distributions of each column of ``pa [n, k]`` and ``pb [m, k]``:
    the integral over t in (0, 1) of |F_a^-1(t) - F_b^-1(t)|. Returns ``[k]``."""
    pa, pb = np.sort(pa, axis=0), np.sort(pb, axis=0)
    n, m = len(pa), len(pb)
    if n == m:
        return np.mean(np.abs(pa - pb), axis=0)
    # Unequal sizes: both quantile functions are constant between the merged breakpoints i/n, j/m.
    t = np.union1d(np.arange(n + 1) / n, np.arange(m + 1) / m)
    mid, width = 0.5 * (t[:-1] + t[1:]), np.diff(t)
    qa = pa[np.minimum((mid * n).astype(np.int64), n - 1)]
    qb = pb[np.minimum((mid * m).astype(np.int64), m - 1)]
    return np.sum(np.abs(qa - qb) * width[:, None], axis=0)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: int | np.ndarray,
                       rng: np.random.Generator | int | None = None) -> float:
    """Sliced 1-Wasserstein distance between two point clouds.

    Args:
      a: float ``[n, d]``, one point per row.
      b: float ``[m, d]`` (``m`` may differ from ``n``).
      directions: the number of random directions (unit vectors drawn uniformly on the sphere
        from ``rng``), or the directions themselves, float ``[d, k]`` (each column is normalised).
      rng: a ``numpy.random.Generator`` or an integer seed; unused when ``directions`` is an array.

    Returns:
      The mean over directions of the W1 distance between the projections of ``a`` and ``b``
      (for ``n == m``: the mean absolute difference of the sorted projections). In 1-D (``d = 1``)
      every direction is +-1, so this is exactly W1 of the two samples.
    """
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise ValueError(f"expected non-empty point clouds [n, d] and [m, d], got shapes {a.shape} and {b.shape}")
    if np.ndim(directions) == 0:
        if int(directions) < 1:
            raise ValueError(f"directions must be >= 1, got {directions}")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        dirs = rng.standard_normal((a.shape[1], int(directions)))
    else:
        dirs = np.asarray(directions, np.float64)
        if dirs.ndim != 2 or dirs.shape[0] != a.shape[1]:
            raise ValueError(f"directions must be a count or an array [{a.shape[1]}, k], got shape {dirs.shape}")
    norms = np.linalg.norm(dirs, axis=0, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a direction is the zero vector")
    dirs = (dirs / norms).astype(np.float32)
    return float(np.mean(_wasserstein_1d(a @ dirs, b @ dirs)))


def swd(images_a: np.ndarray | Sequence[np.ndarray], images_b: np.ndarray | Sequence[np.ndarray],
        levels: int | None = None, patches_per_image: int = 128, directions: int = 128, repeats: int = 4,
        seed: int = 0) -> dict[str, float]:
    """Sliced Wasserstein distance between two image sets, per Laplacian-pyramid level (x 1e3).

    Args:
      images_a: ``uint8`` or float ``[N, H, W, 3]``, or a list of ``[H_i, W_i, 3]`` images of any sizes
        (all in the same value range as ``images_b``; the normalisation removes the scale).
      images_b: the other set, likewise; its size may differ from ``images_a``'s.
      levels: pyramid levels (default :func:`auto_levels` of both sets: down to >= 16 px a side).
        Every image's coarsest level must keep at least 7x7 pixels.
      patches_per_image: random 7x7 neighbourhoods per image and level (Karras: 128).
      directions: random projection directions per repeat (Karras: 128).
      repeats: independent draws of directions, averaged (Karras: 4).
      seed: everything random follows from it; equally sized images in the two sets are sampled
        at the same positions.

    Returns:
      ``{"level0": ..., "level1": ..., "mean": ...}``: SWD x 1e3 of level 0 (finest detail) to
      ``levels - 1`` (low-pass), and their mean. 0 for identical sets; symmetric in the two sets.

    Raises:
      ValueError: an empty set, an image that is not ``[H, W, 3]`` uint8/float, or one too small
        for ``levels`` (or for one 7x7 neighbourhood).
    """
    a, b = _as_image_list(images_a, "images_a"), _as_image_list(images_b, "images_b")
    for name, value in (("patches_per_image", patches_per_image), ("directions", directions), ("repeats", repeats)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if levels is None:
        levels = auto_levels([im.shape for im in a + b])
    if not isinstance(levels, (int, np.integer)) or levels < 1:
        raise ValueError(f"levels must be an integer >= 1, got {levels!r}")
    for what, images in (("images_a", a), ("images_b", b)):
        for i, im in enumerate(images):
            coarse = [-(-s // 2 ** (levels - 1)) for s in im.shape[:2]]
            if min(coarse) < NEIGHBOURHOOD:
                raise ValueError(f"{what}[{i}]: a {im.shape[0]}x{im.shape[1]} image is too small for {levels} "
                                 f"levels (the coarsest would be {coarse[0]}x{coarse[1]}, under {NEIGHBOURHOOD}x"
                                 f"{NEIGHBOURHOOD}); use fewer levels")
    pyr_a = [laplacian_pyramid(im, levels) for im in a]
    pyr_b = [laplacian_pyramid(im, levels) for im in b]
    out = {}
    for level in range(levels):
        da = patch_descriptors([p[level] for p in pyr_a], level, patches_per_image, seed)
        db = patch_descriptors([p[level] for p in pyr_b], level, patches_per_image, seed)
        dist = [sliced_wasserstein(da, db, directions, np.random.default_rng([seed, 2, level, r]))
                for r in range(repeats)]
        out[f"level{level}"] = 1e3 * float(np.mean(dist))
    out["mean"] = float(np.mean([out[f"level{k}"] for k in range(levels)]))
    return out

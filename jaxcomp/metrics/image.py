"""PSNR and MS-SSIM (Wang, Simoncelli & Bovik 2003) in JAX.

All are jittable and differentiable; MS-SSIM and the SSIM components in reverse mode only (``grad``,
``vjp``: their Gaussian blur has a hand-written, faster gradient, a ``custom_vjp``; ``jvp`` /
``jacfwd`` raise a TypeError). Data ranges may be traced; MS-SSIM's weights are static.

MS-SSIM follows the definition of the original implementation that the CVPR'18 context-model
paper and much learned-compression work report (Google's ``msssim.py``; ``tf.image.ssim_multiscale``
differs only in how it averages over colour channels, see below):

* an 11x11 Gaussian window with sigma 1.5, applied with 'valid' borders; on a scale smaller than
  the window, the window shrinks to the scale's size and sigma scales with it (so small training
  crops still get all five scales);
* ``K1 = 0.01, K2 = 0.03`` and the data range ``max_val`` (255 for 8-bit images);
* 5 scales with weights ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``, a 2x2 average pool between
  scales (an odd side repeats its last row/column, msssim.py's 'reflect' mode and TF's symmetric
  padding); contrast-structure terms of the first four scales and the full SSIM of the last;
* the mean of each scale's maps is taken over all channels *before* the product over scales.

Checked in ``tests/test_metrics.py`` against reference values (``experiments/msssim_reference.py``)
on real photos under JPEG, noise and blur: MS-SSIM within 2e-6 of a transcription of msssim.py
(on 64x64 and odd-sized crops too), SSIM within 4e-6 of scikit-image, PSNR within 4e-6 dB.
``pytorch_msssim`` (and
``tf.image.ssim_multiscale``) instead average the *per-channel* MS-SSIM over R, G, B: on one channel
the two definitions agree within 5e-6, on RGB photos they differ by up to ~7e-4 (pytorch_msssim
lower); pytorch_msssim also pads odd sides with zeros on both ends, and needs > 160 px a side.

Inputs are ``float [B, H, W, C]`` in ``[0, max_val]``; results are per image, ``float32 [B]``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.checks import finite_number

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _check_pair(name: str, x: jax.Array, y: jax.Array, ndim: int | None = 4) -> None:
    """Raises ValueError unless ``x`` and ``y`` have one shape (with ``ndim`` axes, if given)."""
    if x.shape != y.shape or (ndim is not None and x.ndim != ndim) or x.ndim < 2:
        want = "[B, H, W, C]" if ndim == 4 else "[B, ...]"
        hint = " (one image: x[None]; a gray batch [B, H, W]: x[..., None])" if ndim == 4 and x.shape == y.shape else ""
        raise ValueError(f"{name} expects two images {want} of the same shape, got {x.shape} and {y.shape}{hint}")


def _check_scales(name: str, x: jax.Array, y: jax.Array, max_val: float) -> None:
    """Warns for two concrete images that look like two scales: an integer image above 1 beside a
    float image within ``[0, 1]`` (e.g. ``uint8`` against ``[0, 1]`` floats: PSNR ~6 dB), or two
    float images within ``[0, 1]`` (not all zero) with ``max_val`` above 1 (at 255 a PSNR ~48 dB too
    high). A warning, not an error: a nearly black reconstruction on the 0-255 scale (an untrained
    decoder's) looks the same and is a real, low score. Skipped under ``jax.jit`` (traced values
    have no range to look at)."""
    if any(isinstance(v, jax.core.Tracer) for v in (x, y, max_val)) or x.size == 0:
        return
    top = {k: float(jnp.max(v)) for k, v in (("x", x), ("y", y))}
    ints = {k: jnp.issubdtype(v.dtype, jnp.integer) for k, v in (("x", x), ("y", y))}
    for a, b in (("x", "y"), ("y", "x")):
        if ints[a] and not ints[b] and top[a] > 1 and top[b] <= 1:
            warnings.warn(f"{name}: {a} is {(x if a == 'x' else y).dtype} up to {top[a]:g} but {b} is a float "
                          f"image within [0, 1]; if {b} is on the [0, 1] scale, put both on one scale (e.g. "
                          f"{b} * 255) and set max_val to it", stacklevel=3)
            return
    low = min(float(jnp.min(x)), float(jnp.min(y)))
    if not any(ints.values()) and 0 < max(top.values()) <= 1 < max_val and low >= 0:
        warnings.warn(f"{name}: both images lie within [0, 1] but max_val is {max_val:g}; for images in "
                      "[0, 1] pass max_val=1.0", stacklevel=3)
    elif not any(ints.values()) and max(top.values()) <= 1 < max_val and -1 <= low < -0.05:
        warnings.warn(f"{name}: both images lie within [-1, 1] (a tanh decoder's range) but max_val is "
                      f"{max_val:g}; shift them to [0, 1] ((x + 1) / 2) and pass max_val=1.0", stacklevel=3)


def _check_max_val(name: str, max_val: float) -> None:
    """ValueError for a concrete data range ``max_val <= 0`` (or NaN): PSNRs of -inf or of the wrong sign."""
    if not isinstance(max_val, jax.core.Tracer):
        finite_number(max_val, f"{name}: max_val (the data range)")


def mse(x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error per image: ``[B, ...]`` x2 (e.g. ``[B, H, W, C]``) -> ``float32 [B]``."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_pair("mse", x, y, ndim=None)
    d = x.astype(jnp.float32) - y.astype(jnp.float32)
    return jnp.mean(jnp.square(d), axis=tuple(range(1, d.ndim)))


def psnr(x: jax.Array, y: jax.Array, max_val: float = 255.0) -> jax.Array:
    """PSNR in dB per image: ``[B, H, W, C]`` x2 (any real dtype, in ``[0, max_val]``) -> ``float32 [B]``
    (inf for identical images). One image needs its batch axis (``x[None]``): an ``[H, W, C]`` image
    would otherwise be read as H images. Concrete images that look like two scales (``uint8``
    against ``[0, 1]`` floats, or ``[0, 1]`` floats with ``max_val > 1``) warn. For other shapes,
    :func:`mse` and :func:`psnr_from_mse`."""
    x, y = jnp.asarray(x), jnp.asarray(y)
    _check_pair("psnr", x, y)
    _check_max_val("psnr", max_val)
    _check_scales("psnr", x, y, max_val)
    return 10.0 * jnp.log10(max_val**2 / mse(x, y))


def reconstruction_scores(decoded: np.ndarray, reference: np.ndarray, max_val: float = 255.0) -> dict[str, float]:
    """Host-side (float64) scores of a set of reconstructions, ``[N, ...]`` each (e.g. ``uint8``):
    ``mse``, the mean of the per-image MSEs, and ``psnr``, the mean of the per-image PSNRs (each
    MSE floored at 1e-10), not the PSNR of the mean MSE.

    Raises:
      ValueError: the two sets differ in shape (nothing is broadcast), are empty, or hold NaN or
        infinite values.
    """
    _check_max_val("reconstruction_scores", max_val)
    decoded, reference = np.asarray(decoded, np.float64), np.asarray(reference, np.float64)
    if decoded.shape != reference.shape or decoded.ndim < 2 or decoded.size == 0:
        raise ValueError(f"reconstruction_scores expects two non-empty sets [N, ...] of one shape, got "
                         f"{decoded.shape} and {reference.shape}")
    if not (np.all(np.isfinite(decoded)) and np.all(np.isfinite(reference))):
        raise ValueError("reconstruction_scores: the images hold NaN or infinite values")
    err = np.mean(np.square(decoded - reference), axis=tuple(range(1, reference.ndim)))
    return dict(mse=float(np.mean(err)), psnr=float(np.mean(10 * np.log10(max_val**2 / np.maximum(err, 1e-10)))))


def psnr_from_mse(mse_: jax.Array, max_val: float = 255.0) -> jax.Array:
    """PSNR in dB from a per-image MSE (``[B] -> [B]``), the MSE floored at 1e-10 (finite for exact
    reconstructions, as the training metrics want)."""
    _check_max_val("psnr_from_mse", max_val)
    return 10.0 * jnp.log10(max_val**2 / jnp.maximum(mse_, 1e-10))


def _gaussian(size: int, sigma: float) -> np.ndarray:
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r**2) / (2.0 * sigma**2))
    return (g / g.sum()).astype(np.float32)


def _blur_valid(x: jax.Array, size: int, sigma: float) -> jax.Array:
    g = _gaussian(size, sigma)
    h, w = x.shape[1] - size + 1, x.shape[2] - size + 1
    x = sum(float(g[i]) * x[:, i:i + h] for i in range(size))
    return sum(float(g[i]) * x[:, :, i:i + w] for i in range(size))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _blur(x: jax.Array, size: int, sigma: float) -> jax.Array:
    """Separable Gaussian blur with 'valid' borders on ``[B, H, W, C]``, each channel alone.

    Written as a weighted sum of ``size`` shifted slices per axis: XLA fuses it into one loop,
    ~15x faster on CPU than a depthwise ``conv_general_dilated`` and the same to float32 rounding.
    Its gradient is the same blur of the zero-padded cotangent (the window is symmetric), in
    the same fused form: ~4x faster than differentiating the slices (each slice's transpose is
    a full-size pad).
    """
    return _blur_valid(x, size, sigma)


def _blur_fwd(x: jax.Array, size: int, sigma: float) -> tuple[jax.Array, None]:
    return _blur_valid(x, size, sigma), None


def _blur_bwd(size: int, sigma: float, _: None, ct: jax.Array) -> tuple[jax.Array]:
    p = size - 1
    return (_blur_valid(jnp.pad(ct, ((0, 0), (p, p), (p, p), (0, 0))), size, sigma),)


_blur.defvjp(_blur_fwd, _blur_bwd)


def ssim_components(x: jax.Array, y: jax.Array, max_val: float = 255.0, filter_size: int = 11,
                    filter_sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> tuple[jax.Array, jax.Array]:
    """``(ssim, cs)`` per image, ``float32 [B]`` each: SSIM and its contrast-structure part.

    ``x, y``: ``[B, H, W, C]`` in ``[0, max_val]`` (``max_val > 0``). The maps are averaged over all
    channels; the window is ``min(filter_size, H, W)`` wide with sigma scaled alike.
    """
    _check_max_val("ssim", max_val)
    return _ssim_components(x, y, max_val, filter_size, filter_sigma, k1, k2)


@functools.partial(jax.jit, static_argnames=("filter_size", "filter_sigma"))
def _ssim_components(x: jax.Array, y: jax.Array, max_val: float, filter_size: int, filter_sigma: float,
                     k1: float, k2: float) -> tuple[jax.Array, jax.Array]:
    if filter_size < 1 or not filter_sigma > 0:
        raise ValueError(f"ssim: filter_size must be >= 1 and filter_sigma > 0, got {filter_size}, {filter_sigma}")
    _check_pair("ssim", x, y)
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    size = min(filter_size, x.shape[1], x.shape[2])
    sigma = size * filter_sigma / filter_size
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    # one blur of the five stacked along the channels: a smaller graph, faster to compile
    mu_x, mu_y, exx, eyy, exy = jnp.split(_blur(jnp.concatenate([x, y, x * x, y * y, x * y], axis=-1), size, sigma),
                                          5, axis=-1)
    sxx = exx - mu_x * mu_x
    syy = eyy - mu_y * mu_y
    sxy = exy - mu_x * mu_y
    cs_map = (2.0 * sxy + c2) / (sxx + syy + c2)
    ssim_map = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1) * cs_map
    axes = (1, 2, 3)
    return jnp.mean(ssim_map, axis=axes), jnp.mean(cs_map, axis=axes)


def _downsample(x: jax.Array) -> jax.Array:
    """2x2 mean pool; an odd side repeats its last row/column first (``ceil(H / 2)`` out, as msssim.py)."""
    b, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def ms_ssim(x: jax.Array, y: jax.Array, max_val: float = 255.0, weights: Sequence[float] = MS_SSIM_WEIGHTS
           ) -> jax.Array:
    """Multi-scale SSIM per image.

    Args:
      x, y: ``float/uint8 [B, H, W, C]`` images in ``[0, max_val]``; with 5 scales, H and W
        should be at least 16 (the coarsest scale is ``H / 16``).
      max_val: the data range.
      weights: per-scale exponents (default: the paper's five), concrete numbers: static under
        ``jax.jit`` (each set compiles once).

    Returns:
      ``float32 [B]`` in ``[0, 1]`` (1 for identical images).
    """
    if any(isinstance(v, jax.core.Tracer) for v in (weights if isinstance(weights, (tuple, list)) else [weights])):
        raise TypeError("ms_ssim: weights must be concrete numbers (Python or NumPy; they are compiled into the "
                        "function, one compilation per set), got a traced value; pass them outside jax.jit")
    weights = tuple(float(v) for v in weights)
    if not weights:
        raise ValueError("ms_ssim needs at least one scale weight, got weights=()")
    _check_max_val("ms_ssim", max_val)
    x, y = jnp.asarray(x), jnp.asarray(y)
    if x.shape == y.shape:  # else _ms_ssim names the shapes
        _check_scales("ms_ssim", x, y, max_val)
    return _ms_ssim(x, y, max_val, weights)


@functools.partial(jax.jit, static_argnames=("weights",))
def _ms_ssim(x: jax.Array, y: jax.Array, max_val: float, weights: tuple[float, ...]) -> jax.Array:
    _check_pair("ms_ssim", x, y)
    n = len(weights)
    if min(x.shape[1], x.shape[2]) < 2 ** (n - 1):
        raise ValueError(f"ms_ssim with {n} scales needs images of at least {2 ** (n - 1)} pixels a side, "
                         f"got {x.shape[1]}x{x.shape[2]}")
    x = x.astype(jnp.float32)
    y = y.astype(jnp.float32)
    w = jnp.asarray(weights, jnp.float32)
    values = []
    for scale in range(n):
        ssim, cs = _ssim_components(x, y, max_val, 11, 1.5, 0.01, 0.03)
        # cs can be slightly negative for unrelated images; the original clips nothing, but a
        # negative base with a fractional exponent is NaN, so keep it at a tiny positive value.
        values.append(jnp.maximum(cs if scale < n - 1 else ssim, 1e-6))
        if scale < n - 1:
            x, y = _downsample(x), _downsample(y)
    stacked = jnp.stack(values, axis=-1)  # [B, n]
    return jnp.prod(stacked ** w, axis=-1)

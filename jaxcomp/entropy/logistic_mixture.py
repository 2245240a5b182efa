"""Discretized logistic mixtures over ``L`` evenly spaced levels (PixelCNN++, L3C).

Symbol ``l`` of a channel stands for the value ``c_l = x_min + l * delta`` with
``delta = (x_max - x_min) / (L - 1)``; its probability under one logistic with mean
``mu`` and scale ``s`` is ``sigmoid((c_l + delta/2 - mu)/s) - sigmoid((c_l - delta/2 - mu)/s)``,
with the first and last bins extended to -inf and +inf so the PMF sums to one.
We evaluate ``log(sigmoid(a) - sigmoid(b))`` as
``log_sigmoid(a) + log_sigmoid(-b) + log(-expm1(b - a))``, which is exact and stable
everywhere (no PixelCNN++ density fallback), so training likelihood and coding PMF agree.

For RGB (3 channels with ``autoregressive=True``) the means are conditioned on the
previous channels' values as in PixelCNN++/L3C:
``mu_G = m_G + a(l_a) x_R``, ``mu_B = m_B + a(l_b) x_R + a(l_c) x_G`` with ``a = tanh``
(PixelCNN++) or ``sigmoid`` (the L3C reference code's choice).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.checks import is_whole

LOG_SCALES_MIN = -7.0


class MixtureParams(NamedTuple):
    """Per-pixel mixture parameters, each ``float32 [B, H, W, C, K]``.

    ``coeffs`` is ``[B, H, W, 3, K]`` (RGB conditioning) or ``None``.
    """

    logit_weights: jax.Array
    means: jax.Array
    log_scales: jax.Array
    coeffs: jax.Array | None


def num_mixture_params(channels: int, mixtures: int, autoregressive: bool) -> int:
    """Channels a network must output for :func:`split_mixture_params`."""
    return 3 * channels * mixtures + (3 * mixtures if autoregressive else 0)


def split_mixture_params(
    raw: jax.Array, channels: int, mixtures: int, autoregressive: bool, channels_first: bool = False,
    log_scale_min: float = LOG_SCALES_MIN, coeffs: str = "tanh",
) -> MixtureParams:
    """Splits a network output ``[B, H, W, num_mixture_params]`` into :class:`MixtureParams`.

    With ``channels_first`` the output is ``[num_mixture_params, B, H, W]`` and the parameters
    are ``[C, K, B, H, W]`` (the layout of :func:`mixture_log_prob`'s ``channels_first``).
    Log-scales are clamped below at ``log_scale_min`` (L3C's -7, in the units of the values'
    grid: the reference code clamps RGB at -7 on ``[0, 255]``, which is ``-7 - ln 127.5`` on
    ``[-1, 1]``). ``coeffs``: the RGB coefficients' activation, ``"tanh"`` or ``"sigmoid"``.
    """
    if coeffs not in ("tanh", "sigmoid"):
        raise ValueError(f"coeffs must be 'tanh' or 'sigmoid', not {coeffs!r}")
    for name, value in (("channels", channels), ("mixtures", mixtures)):
        if not is_whole(value) or value < 1:
            raise ValueError(f"split_mixture_params: {name} must be a positive integer, got {value!r}")
    if autoregressive and channels != 3:
        raise ValueError(f"autoregressive mixtures are defined for 3 (RGB) channels, not {channels}")
    expected = num_mixture_params(channels, mixtures, autoregressive)
    got = raw.shape[0] if channels_first else raw.shape[-1]
    if got != expected:
        raise ValueError(f"expected {expected} parameter channels, got {got}")
    n = channels * mixtures
    if channels_first:
        def part(i: int, j: int, c: int) -> jax.Array:
            return raw[i:j].reshape((c, mixtures) + raw.shape[1:])
    else:
        def part(i: int, j: int, c: int) -> jax.Array:
            return raw[..., i:j].reshape(raw.shape[:-1] + (c, mixtures))
    logits = part(0, n, channels)
    means = part(n, 2 * n, channels)
    log_scales = jnp.maximum(part(2 * n, 3 * n, channels), log_scale_min)
    act = jnp.tanh if coeffs == "tanh" else jax.nn.sigmoid
    mixing = act(part(3 * n, expected, 3)) if autoregressive else None
    return MixtureParams(logits, means, log_scales, mixing)


def _check_inputs(name: str, params: MixtureParams, x: jax.Array | None, levels: int,
                  channels_first: bool = False, channel: int | None = None,
                  x_min: float = -1.0, x_max: float = 1.0, conditioning: bool = False) -> None:
    """Trace-time checks (shapes and dtypes are static): ``levels >= 2``, ``x_min < x_max``, ``x``
    float with the parameters' ``[B, H, W, C]`` (``[C, B, H, W]`` channels-first) shape, ``channel``
    an index in range; a concrete ``x`` (outside ``jit``) also finite, on ``[x_min, x_max]`` and, unless it
    only conditions, on its grid points (within 1% of a step: float rounding, not half-way values). With
    ``conditioning`` (``x`` only conditions the PMFs) only the channels read are: those before
    ``channel`` (all but the last without one), none without RGB coefficients; the others may hold
    anything (a decoder's channels not decoded yet)."""
    if not is_whole(levels) or levels < 2:
        raise ValueError(f"{name}: levels must be an integer >= 2, got {levels!r}")
    if not any(isinstance(v, jax.core.Tracer) for v in (x_min, x_max)) and not x_min < x_max:  # also NaN
        raise ValueError(f"{name}: the grid [x_min, x_max] needs x_min < x_max, got [{x_min!r}, {x_max!r}]")
    if channel is not None and not is_whole(channel):
        raise ValueError(f"{name}: channel must be an integer index, got {channel!r}")
    if not isinstance(params, MixtureParams):
        raise TypeError(f"{name}: params must be MixtureParams (split_mixture_params of the network's output), "
                        f"got {type(params).__name__}")
    shape = params.means.shape
    want = (shape[:1] + shape[2:]) if channels_first else shape[:-1]
    if x is not None:
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"{name}: x must be float values on the grid of {levels} levels (e.g. in [-1, 1]), "
                             f"got dtype {x.dtype}; map integer symbols to their values first")
        if tuple(x.shape) != tuple(want):
            raise ValueError(f"{name}: x has shape {tuple(x.shape)}, the mixture parameters are for {tuple(want)}")
        if conditioning:
            read = 0 if params.coeffs is None else (x.shape[-1] - 1 if channel is None else channel)
            x = x[..., :read]
        if not any(isinstance(v, jax.core.Tracer) for v in (x, x_min, x_max)) and x.size:
            half = (float(x_max) - float(x_min)) / (levels - 1) / 2
            xv = np.asarray(x)
            finite = xv[np.isfinite(xv)]
            if finite.size < xv.size:
                raise ValueError(f"{name}: x must be finite values on the grid of {levels} levels, got NaN or inf")
            if finite.min() < x_min - half or finite.max() > x_max + half:
                raise ValueError(f"{name}: x must be values on the grid of {levels} levels in [{x_min:g}, {x_max:g}], "
                                 f"got values in [{finite.min():g}, {finite.max():g}] (e.g. pixels in [0, 255] must "
                                 "be mapped to the grid first)")
            # the values scored must be grid points (up to float rounding); conditioning values only
            # shift the means linearly, so there they need only be in range
            steps = (finite.astype(np.float64) - float(x_min)) / (2 * half)
            off = np.abs(steps - np.round(steps))
            if not conditioning and off.max() > 0.01:
                bad = finite.reshape(-1)[int(np.argmax(off))]
                raise ValueError(f"{name}: x must be values on the grid of {levels} levels in [{x_min:g}, {x_max:g}] "
                                 f"(steps of {2 * half:g}), got {bad:g}, {off.max():.2f} of a step off the grid "
                                 "(quantize first, e.g. round(pixels) mapped to the grid)")
    n_channels = shape[0] if channels_first else shape[-2]
    if channel is not None and not 0 <= channel < n_channels:
        raise ValueError(f"{name}: channel must be in [0, {n_channels - 1}], got {channel}")


def conditioned_means(params: MixtureParams, x: jax.Array | None, channels_first: bool = False) -> jax.Array:
    """Means ``[B, H, W, C, K]``; with RGB coefficients, conditioned on values ``x [B, H, W, 3]``.

    With ``channels_first``: means ``[C, K, B, H, W]`` and ``x [3, B, H, W]``.
    """
    if params.coeffs is None:
        return params.means
    if x is None:
        raise ValueError("autoregressive mixture needs the previous channels' values")
    m, c = params.means, params.coeffs
    if channels_first:
        xr, xg = x[0][None], x[1][None]  # [1, B, H, W] against [K, B, H, W]
        mu_r = m[0]
        mu_g = m[1] + c[0] * xr
        mu_b = m[2] + c[1] * xr + c[2] * xg
        return jnp.stack([mu_r, mu_g, mu_b], axis=0)
    xr, xg = x[..., 0:1], x[..., 1:2]
    mu_r = m[..., 0, :]
    mu_g = m[..., 1, :] + c[..., 0, :] * xr
    mu_b = m[..., 2, :] + c[..., 1, :] * xr + c[..., 2, :] * xg
    return jnp.stack([mu_r, mu_g, mu_b], axis=-2)


def bin_log_prob(
    value: jax.Array, means: jax.Array, log_scales: jax.Array, levels: int, x_min: float, x_max: float
) -> jax.Array:
    """log P(bin of ``value``) under logistics; ``value`` broadcasts against ``means``.

    ``value`` must lie on the grid of ``levels`` values in ``[x_min, x_max]``.
    """
    half = (x_max - x_min) / (levels - 1) / 2
    inv_s = jnp.exp(-log_scales)
    centered = value - means
    upper = inv_s * (centered + half)
    lower = inv_s * (centered - half)
    is_first = value < x_min + half
    is_last = value > x_max - half
    log_cdf_upper = jnp.where(is_last, 0.0, jax.nn.log_sigmoid(upper))
    log_sf_lower = jnp.where(is_first, 0.0, jax.nn.log_sigmoid(-lower))
    # log(1 - exp(-g)) for the bin width g = upper - lower = 2 * half / s, from log g
    # analytically so that very wide logistics (g underflowing) keep finite values and
    # gradients; for edge bins the open side contributes log(1) = 0.
    log_gap = jnp.log(2 * half) - log_scales
    log_width = _log1mexp(jnp.exp(jnp.minimum(log_gap, 30.0)), log_gap)
    return log_cdf_upper + log_sf_lower + jnp.where(is_first | is_last, 0.0, log_width)


def _log1mexp(gap: jax.Array, log_gap: jax.Array) -> jax.Array:
    """``log(1 - exp(-gap))`` for ``gap > 0``, stable for tiny and large ``gap``."""
    safe_small = jnp.minimum(gap, 0.6931)
    safe_large = jnp.maximum(gap, 0.6931)
    small = jnp.where(log_gap < -15.0, log_gap - gap / 2, jnp.log(-jnp.expm1(-jnp.maximum(safe_small, 1e-30))))
    large = jnp.log1p(-jnp.exp(-safe_large))
    return jnp.where(gap < 0.6931, small, large)


def mixture_log_prob(
    params: MixtureParams, x: jax.Array, levels: int, x_min: float = -1.0, x_max: float = 1.0,
    channels_first: bool = False,
) -> jax.Array:
    """log P(x) per channel, ``float32 [B, H, W, C]`` (natural log) for float32 inputs; computed in the
    inputs' dtype (float64 ones give float64). Half precision cannot hold a grid of 256 levels in
    ``[-1, 1]`` (bfloat16 ``x`` is up to 0.24 of a step off it), so such ``x`` is refused by the grid
    check outside jit and scored inaccurately inside it: cast to float32 first.

    Args:
      params: mixture parameters for ``C`` channels.
      x: ``float32 [B, H, W, C]`` values on the grid of ``levels`` values in ``[x_min, x_max]``.
      channels_first: ``params`` are ``[C, K, B, H, W]`` (``split_mixture_params(...,
        channels_first=True)``), ``x`` is ``[C, B, H, W]`` and so is the result. The same
        numbers; on XLA's CPU backend faster for training (elementwise loops over a minor
        dimension of K=10 vectorise poorly; here the minor dimension is W): L3C's loss +
        gradient on 16 crops of 64x64, 0.49 instead of 0.87 s for the mixture part.
    """
    _check_inputs("mixture_log_prob", params, x, levels, channels_first, x_min=x_min, x_max=x_max)
    means = conditioned_means(params, x, channels_first)
    k_axis = 1 if channels_first else -1
    value = x[:, None] if channels_first else x[..., None]
    log_probs = bin_log_prob(value, means, params.log_scales, levels, x_min, x_max)
    log_weights = jax.nn.log_softmax(params.logit_weights, axis=k_axis)
    return jax.nn.logsumexp(log_probs + log_weights, axis=k_axis)


def mixture_log_pmf(
    params: MixtureParams, x: jax.Array | None, levels: int, x_min: float = -1.0, x_max: float = 1.0
) -> jax.Array:
    """log PMF over all levels, ``float32 [B, H, W, C, levels]``.

    For RGB, channel ``c``'s PMF is conditioned on the values of channels ``< c`` in ``x``
    (their entries must be the true values; channels ``>= c`` are ignored), which is what
    a decoder has when it decodes R, then G, then B.
    """
    _check_inputs("mixture_log_pmf", params, x, levels, x_min=x_min, x_max=x_max, conditioning=True)
    means = conditioned_means(params, x)  # [B, H, W, C, K]
    grid = jnp.linspace(x_min, x_max, levels, dtype=jnp.float32)
    log_probs = bin_log_prob(grid[:, None], means[..., None, :], params.log_scales[..., None, :],
                             levels, x_min, x_max)  # [B, H, W, C, L, K]
    log_weights = jax.nn.log_softmax(params.logit_weights, axis=-1)[..., None, :]
    return jax.nn.logsumexp(log_probs + log_weights, axis=-1)


def _channel_params(params: MixtureParams, x: jax.Array | None, channel: int | None):
    """(means, log_scales, logits) ``[B, H, W, C, K]``, or of one channel ``[B, H, W, 1, K]``."""
    means = conditioned_means(params, x)
    log_scales, logits = params.log_scales, params.logit_weights
    if channel is not None:
        sl = slice(channel, channel + 1)
        means, log_scales, logits = means[..., sl, :], log_scales[..., sl, :], logits[..., sl, :]
    return means, log_scales, logits


def mixture_pmf(
    params: MixtureParams, x: jax.Array | None, levels: int, x_min: float = -1.0, x_max: float = 1.0,
    channel: int | None = None,
) -> jax.Array:
    """PMF over all levels for entropy coding, ``float32 [B, H, W, C, levels]``.

    The mixture CDF is evaluated at the ``levels - 1`` bin edges (components on the second
    to last axis so the sum over them runs over contiguous rows of edges, which XLA
    vectorises) and differenced; the first and last bins extend to -inf and +inf. This is
    one sigmoid per (pixel, edge, component), ~3.5x faster than per-bin differences; in
    float32 it agrees with :func:`mixture_log_prob` to ~1e-6 absolute (the far upper tail
    loses relative precision, which costs at most a few bits on symbols the model deems
    nearly impossible). ``channel`` restricts the output to one channel
    (``[B, H, W, 1, levels]``): a decoder of RGB asks for R, then G given R, then B given R
    and G (``x`` holds the decoded values; later channels are ignored).
    """
    _check_inputs("mixture_pmf", params, x, levels, channel=channel, x_min=x_min, x_max=x_max, conditioning=True)
    means, log_scales, logits = _channel_params(params, x, channel)
    delta = (x_max - x_min) / (levels - 1)
    edges = x_min + delta * (jnp.arange(levels - 1, dtype=jnp.float32) + 0.5)  # [L-1]
    t = (edges - means[..., None]) * jnp.exp(-log_scales)[..., None]  # [..., K, L-1]
    weights = jax.nn.softmax(logits, axis=-1)[..., None]
    cdf = jnp.sum(jax.nn.sigmoid(t) * weights, axis=-2)  # [..., L-1]
    zeros = jnp.zeros(cdf.shape[:-1] + (1,), cdf.dtype)
    cdf = jnp.concatenate([zeros, cdf, zeros + 1.0], axis=-1)
    return jnp.maximum(cdf[..., 1:] - cdf[..., :-1], 0.0)


def mixture_pmf_window(
    params: MixtureParams, x: jax.Array | None, levels: int, window: int, x_min: float = -1.0,
    x_max: float = 1.0, channel: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """PMF over a window of ``window`` levels around the mixture's mean, plus an escape bin.

    Returns ``(pmf, lo)``: ``pmf`` is ``float32 [B, H, W, C, window + 1]`` where entry ``j <
    window`` is the probability of level ``lo + j`` and the last entry is the probability
    of all levels outside the window (the *escape*); ``lo`` is ``int32 [B, H, W, C]``, the
    first level of each window, chosen from the mixture mean so the window lies inside
    ``[0, levels)``. A coder codes the level's index in the window, or the escape followed
    by the level itself (see :func:`jaxcomp.coding.encode_windowed`).

    This evaluates ``window + 1`` CDF edges per symbol instead of ``levels - 1`` (4x fewer
    for 64 of 256 levels). The entries are the CDF differences of :func:`mixture_pmf` (to ~1e-6),
    so the escape bin only costs the bits of levels the model deems improbable: for L3C on
    photos a 64-level window adds ~0.15% to the bitstream. ``channel`` as in
    :func:`mixture_pmf`.
    """
    _check_inputs("mixture_pmf_window", params, x, levels, channel=channel, x_min=x_min, x_max=x_max,
                  conditioning=True)
    if not is_whole(window) or not 0 < window < levels:
        raise ValueError(f"window must lie in [1, {levels - 1}] for {levels} levels, got {window}")
    means, log_scales, logits = _channel_params(params, x, channel)
    delta = (x_max - x_min) / (levels - 1)
    weights = jax.nn.softmax(logits, axis=-1)
    centre = (jnp.sum(weights * means, axis=-1) - x_min) / delta  # [..., C] in level units
    centre = jnp.clip(centre, 0.0, levels - 1.0)  # also keeps the int cast in range
    lo = jnp.clip(jnp.round(centre).astype(jnp.int32) - window // 2, 0, levels - window)
    index = lo[..., None] + jnp.arange(window + 1, dtype=jnp.int32)  # [..., C, window+1] level of each edge
    edges = x_min + delta * (index.astype(jnp.float32) - 0.5)
    t = (edges[..., None, :] - means[..., None]) * jnp.exp(-log_scales)[..., None]  # [..., C, K, window+1]
    # sigmoid(t) as 0.5 tanh(t/2) + 0.5: XLA's vectorised tanh makes this ~1.3x faster on CPU
    cdf = jnp.sum((0.5 * jnp.tanh(0.5 * t) + 0.5) * weights[..., None], axis=-2)  # [..., C, window+1]
    cdf = jnp.where(index <= 0, 0.0, jnp.where(index >= levels, 1.0, cdf))
    inside = jnp.maximum(cdf[..., 1:] - cdf[..., :-1], 0.0)
    escape = jnp.maximum(cdf[..., :1] + (1.0 - cdf[..., -1:]), 0.0)
    return jnp.concatenate([inside, escape], axis=-1), lo

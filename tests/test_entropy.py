"""Discretized logistic mixtures: normalisation, brute-force agreement, RGB conditioning."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.entropy import logistic_mixture as lm

# Jitted once here: run eagerly, each of these compiles every operation on its own (seconds each)
mixture_log_pmf = jax.jit(lm.mixture_log_pmf, static_argnums=(2,))
mixture_log_prob = jax.jit(lm.mixture_log_prob, static_argnums=(2,))
mixture_pmf = jax.jit(lm.mixture_pmf, static_argnums=(2,), static_argnames=("channel",))
mixture_pmf_window = jax.jit(lm.mixture_pmf_window, static_argnums=(2, 3), static_argnames=("channel",))


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def brute_force_pmf(weights_logits, means, log_scales, levels, x_min, x_max):
    """float64 numpy PMF [..., L] of one channel's mixture, straight from the definition."""
    delta = (x_max - x_min) / (levels - 1)
    grid = x_min + delta * np.arange(levels)
    s = np.exp(np.maximum(log_scales, lm.LOG_SCALES_MIN))[..., None, :]
    upper = _sigmoid((grid[:, None] + delta / 2 - means[..., None, :]) / s)
    lower = _sigmoid((grid[:, None] - delta / 2 - means[..., None, :]) / s)
    upper[..., -1, :] = 1.0
    lower[..., 0, :] = 0.0
    w = np.exp(weights_logits - weights_logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return ((upper - lower) * w[..., None, :]).sum(-1)


@pytest.mark.parametrize("levels", [25, 256])
def test_pmf_sums_to_one_and_matches_brute_force(levels):
    rng = np.random.default_rng(0)
    b, h, w, c, k = 2, 3, 4, 5, 10
    raw = rng.normal(size=(b, h, w, lm.num_mixture_params(c, k, False))).astype(np.float32)
    raw[..., 2 * c * k:] = rng.uniform(-9, 1, size=(b, h, w, c * k))  # include clamped scales
    p = lm.split_mixture_params(jnp.asarray(raw), c, k, autoregressive=False)
    pmf = np.exp(np.asarray(mixture_log_pmf(p, None, levels), np.float64))
    np.testing.assert_allclose(pmf.sum(-1), 1.0, atol=1e-4)
    ref = brute_force_pmf(np.asarray(p.logit_weights, np.float64), np.asarray(p.means, np.float64),
                          np.asarray(p.log_scales, np.float64), levels, -1.0, 1.0)
    np.testing.assert_allclose(pmf, ref, atol=2e-5, rtol=2e-3)


def test_log_prob_of_symbols_equals_log_pmf_entry():
    rng = np.random.default_rng(1)
    b, h, w, k, levels = 2, 4, 4, 3, 256
    raw = rng.normal(size=(b, h, w, lm.num_mixture_params(3, k, True))).astype(np.float32)
    p = lm.split_mixture_params(jnp.asarray(raw), 3, k, autoregressive=True)
    symbols = rng.integers(0, levels, size=(b, h, w, 3))
    symbols[0, 0, 0] = [0, 255, 0]  # the open edge bins
    x = jnp.asarray(symbols / 127.5 - 1.0, jnp.float32)
    logp = np.asarray(mixture_log_prob(p, x, levels))
    log_pmf = np.asarray(mixture_log_pmf(p, x, levels))
    picked = np.take_along_axis(log_pmf, symbols[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(logp, picked, atol=1e-4)


@pytest.mark.parametrize("channels,autoregressive", [(3, True), (5, False)])
def test_channels_first_layout_gives_the_same_log_probs(channels, autoregressive):
    rng = np.random.default_rng(4)
    b, h, w, k, levels = 2, 3, 4, 3, 256
    raw = rng.normal(size=(b, h, w, lm.num_mixture_params(channels, k, autoregressive))).astype(np.float32)
    x = jnp.asarray(rng.integers(0, levels, size=(b, h, w, channels)) / 127.5 - 1.0, jnp.float32)
    nhwc = np.asarray(mixture_log_prob(lm.split_mixture_params(jnp.asarray(raw), channels, k, autoregressive),
                                       x, levels))
    p_cf = lm.split_mixture_params(jnp.moveaxis(jnp.asarray(raw), -1, 0), channels, k, autoregressive,
                                   channels_first=True)
    assert p_cf.means.shape == (channels, k, b, h, w)
    cf = np.asarray(jax.jit(lm.mixture_log_prob, static_argnums=(2,), static_argnames=("channels_first",))(
        p_cf, jnp.moveaxis(x, -1, 0), levels, channels_first=True))
    np.testing.assert_allclose(np.moveaxis(cf, 0, -1), nhwc, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="expected .* parameter channels"):
        lm.split_mixture_params(jnp.asarray(raw), channels, k, autoregressive, channels_first=True)


def test_rgb_conditioning_uses_previous_channels_only():
    rng = np.random.default_rng(2)
    raw = rng.normal(size=(1, 2, 2, lm.num_mixture_params(3, 4, True))).astype(np.float32)
    p = lm.split_mixture_params(jnp.asarray(raw), 3, 4, autoregressive=True)
    x = jnp.asarray(rng.uniform(-1, 1, (1, 2, 2, 3)), jnp.float32)
    base = np.asarray(mixture_log_pmf(p, x, 256))
    changed_b = np.asarray(mixture_log_pmf(p, x.at[..., 2].set(0.5), 256))
    np.testing.assert_array_equal(base, changed_b)  # B's value conditions nothing
    changed_r = np.asarray(mixture_log_pmf(p, x.at[..., 0].set(0.5), 256))
    np.testing.assert_array_equal(base[..., 0, :], changed_r[..., 0, :])
    assert np.abs(base[..., 1:, :] - changed_r[..., 1:, :]).max() > 1e-3  # G and B depend on R


def test_log_prob_gradients_are_finite_at_extremes():
    def nll(raw):
        p = lm.split_mixture_params(raw, 3, 2, autoregressive=True)
        x = jnp.array([[[[-1.0, 1.0, 0.0]]]])
        return -mixture_log_prob(p, x, 256).sum()

    raw = jnp.concatenate([jnp.zeros((1, 1, 1, 12)), jnp.full((1, 1, 1, 6), -20.0),
                           jnp.zeros((1, 1, 1, 6))], -1)
    g = jax.grad(nll)(raw)
    assert np.isfinite(np.asarray(g)).all()
    assert np.isfinite(float(nll(raw)))


@pytest.mark.parametrize("levels", [25, 256])
def test_coding_pmf_matches_the_training_likelihood(levels):
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(1, 3, 3, lm.num_mixture_params(3, 4, True))).astype(np.float32)
    raw[..., 24:36] = rng.uniform(-7, 0.5, size=(1, 3, 3, 12))
    p = lm.split_mixture_params(jnp.asarray(raw), 3, 4, autoregressive=True)
    x = jnp.asarray(rng.integers(0, levels, (1, 3, 3, 3)) / ((levels - 1) / 2) - 1.0, jnp.float32)
    pmf = np.asarray(mixture_pmf(p, x, levels), np.float64)
    np.testing.assert_allclose(pmf.sum(-1), 1.0, atol=1e-5)
    exact = np.exp(np.asarray(mixture_log_pmf(p, x, levels), np.float64))
    np.testing.assert_allclose(pmf, exact, atol=3e-6, rtol=1e-2)
    for c in range(3):
        np.testing.assert_array_equal(np.asarray(mixture_pmf(p, x, levels, channel=c))[..., 0, :],
                                      np.asarray(mixture_pmf(p, x, levels))[..., c, :])


def test_windowed_pmf_is_the_full_pmf_inside_the_window_and_its_rest_outside():
    rng = np.random.default_rng(3)
    b, h, w, k = 1, 4, 5, 10
    raw = jnp.asarray(rng.normal(size=(b, h, w, lm.num_mixture_params(3, k, True))) * 2, jnp.float32)
    p = lm.split_mixture_params(raw, 3, k, autoregressive=True)
    x = jnp.asarray(rng.uniform(-1, 1, size=(b, h, w, 3)), jnp.float32)
    for channel in range(3):
        full = np.asarray(mixture_pmf(p, x, 256, channel=channel), np.float64).reshape(-1, 256)
        win, lo = mixture_pmf_window(p, x, 256, 64, channel=channel)
        win, lo = np.asarray(win, np.float64).reshape(-1, 65), np.asarray(lo).reshape(-1)
        assert ((0 <= lo) & (lo <= 256 - 64)).all()
        inside = np.stack([full[n, lo[n]:lo[n] + 64] for n in range(len(lo))])
        np.testing.assert_allclose(win[:, :64], inside, atol=1e-5)
        np.testing.assert_allclose(win[:, 64], 1.0 - inside.sum(1), atol=1e-5)
        # the window sits on the mixture's mass: it holds the most probable level
        assert (np.abs(full.argmax(1) - (lo + 32)) <= 64).mean() > 0.5
    # ... centred on the mixture's mean: one component per channel at levels 102, 191.25 and 1.275
    means = np.array([-0.2, 0.5, -0.99], np.float32)
    raw1 = np.zeros((1, 1, 1, lm.num_mixture_params(3, 1, False)), np.float32)
    raw1[..., 3:6], raw1[..., 6:9] = means, -4.0  # [logits | means | log-scales]
    p1 = lm.split_mixture_params(jnp.asarray(raw1), 3, 1, autoregressive=False)
    for channel, expected in enumerate((102 - 32, 191 - 32, 0)):
        _, lo1 = mixture_pmf_window(p1, None, 256, 64, channel=channel)
        assert int(np.asarray(lo1).reshape(-1)[0]) == expected, channel
    # ... and on the weighted mean of several: weights 0.9 / 0.1 of means at levels 51 and 204 -> 66.3
    raw2 = np.zeros((1, 1, 1, lm.num_mixture_params(1, 2, False)), np.float32)
    raw2[..., 0:2] = np.log([0.9, 0.1])  # [logits (K) | means (K) | log-scales (K)]
    raw2[..., 2:4] = (np.array([51.0, 204.0]) * 2 / 255 - 1).astype(np.float32)
    raw2[..., 4:6] = -4.0
    p2 = lm.split_mixture_params(jnp.asarray(raw2), 1, 2, autoregressive=False)
    _, lo2 = mixture_pmf_window(p2, None, 256, 64, channel=0)
    assert int(np.asarray(lo2).reshape(-1)[0]) == round(0.9 * 51 + 0.1 * 204) - 32
    with pytest.raises(ValueError, match="window"):
        lm.mixture_pmf_window(p, x, 256, 256)


def test_mixture_inputs_are_checked_at_trace_time():
    """x of other channels or batch than the parameters is not broadcast, integer symbols are not
    scored as values, fewer than 2 levels and a channel out of range are refused by name."""
    raw = jnp.zeros((1, 2, 2, lm.num_mixture_params(3, 2, True)))
    p = lm.split_mixture_params(raw, 3, 2, True)
    x = jnp.full((1, 2, 2, 3), 1 / 255)  # a grid point of 256 levels on [-1, 1] (0 is not one)
    assert lm.mixture_log_prob(p, x, 256).shape == (1, 2, 2, 3)
    for bad, match in ((jnp.zeros((1, 2, 2, 1)), "shape"), (jnp.zeros((4, 2, 2, 3)), "shape"),
                       (jnp.full((1, 2, 2, 3), 200, jnp.uint8), "must be float")):
        with pytest.raises(ValueError, match=match):
            lm.mixture_log_prob(p, bad, 256)
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        lm.mixture_pmf(p, None, 1)
    with pytest.raises(ValueError, match=r"channel must be in \[0, 2\]"):
        lm.mixture_pmf(p, None, 256, channel=5)

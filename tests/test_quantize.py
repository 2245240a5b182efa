import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.quantize import soft_hard_quantize, uniform_levels


def test_forward_is_nearest_center_and_gradient_is_soft():
    centers = uniform_levels(25)
    x = jnp.array([-1.3, -0.51, 0.0, 0.04, 0.97, 2.0])
    values, symbols = soft_hard_quantize(x, centers, sigma=2.0)
    nearest = np.argmin(np.abs(np.asarray(x)[:, None] - np.asarray(centers)), -1)
    np.testing.assert_array_equal(np.asarray(symbols), nearest)
    np.testing.assert_allclose(np.asarray(values), np.asarray(centers)[nearest], atol=1e-6)
    g = jax.grad(lambda v: soft_hard_quantize(v, centers, 2.0)[0].sum())(x)
    soft = lambda v: jnp.sum(jax.nn.softmax(-2.0 * (v[:, None] - centers) ** 2, -1) * centers, -1).sum()
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.grad(soft)(x)), rtol=1e-5)
    assert np.all(np.asarray(g) > 0)  # gradients flow (a plain round() would give zeros)


def test_levels_and_centres_are_checked():
    import pytest

    for bad in (0, 1, 2.5):
        with pytest.raises(ValueError, match="levels >= 2"):
            uniform_levels(bad)
    for centres in (jnp.zeros((0,)), jnp.zeros((2, 3))):
        with pytest.raises(ValueError, match=r"centres float32 \[L\]"):
            soft_hard_quantize(jnp.zeros(3), centres, 1.0)
    for sigma in (float("inf"), 0.0, -1.0, float("nan")):  # inf made every value NaN
        with pytest.raises(ValueError, match="sigma must be finite and > 0"):
            soft_hard_quantize(jnp.zeros(3), jnp.array([0.0, 1.0]), sigma)
    with pytest.raises(ValueError, match="x_min < x_max"):  # four identical centres before
        uniform_levels(4, 1.0, 1.0)

"""jaxcomp.nn's convolution: nn.Conv's parameters and outputs, and a bias gradient that is a product
with a vector of ones (XLA's CPU backend runs a broadcast's transpose, a large reduce_sum, as a slow
tree of reduce-windows) but the same gradient."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.nn import Conv, add_channel_bias, torch_kernel_init


def _rand(shape, seed, dtype=np.float32):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


def test_add_channel_bias_is_the_broadcast_add_and_its_gradient():
    y, b, g = _rand((3, 5, 4, 6), 0), _rand((6,), 1), _rand((3, 5, 4, 6), 2)
    out, vjp = jax.vjp(add_channel_bias, y, b)
    assert np.array_equal(out, y + b)
    gy, gb = vjp(g)
    assert np.array_equal(gy, g)
    np.testing.assert_allclose(gb, np.asarray(g, np.float64).sum((0, 1, 2)), rtol=1e-5, atol=1e-5)
    # the bias gradient is a product with ones, not the broadcast's reduce_sum (the point of the function)
    jaxpr = str(jax.make_jaxpr(lambda g: jax.vjp(add_channel_bias, y, b)[1](g))(g))
    assert "dot_general" in jaxpr and "reduce_sum" not in jaxpr
    # dtypes promote as for y + b; each gradient has its input's dtype
    yb = y.astype(jnp.bfloat16)
    out, vjp = jax.vjp(add_channel_bias, yb, b)
    assert out.dtype == (yb + b).dtype == jnp.float32 and np.array_equal(out, yb + b)
    gy, gb = vjp(g)
    assert gy.dtype == jnp.bfloat16 and gb.dtype == jnp.float32
    # differentiable twice (a gradient penalty differentiates a gradient)
    hess = jax.grad(lambda b: jnp.sum(jax.grad(lambda y: jnp.sum(add_channel_bias(y, b) ** 2))(y) * g))(b)
    np.testing.assert_allclose(hess, 2 * np.asarray(g, np.float64).sum((0, 1, 2)), rtol=1e-5, atol=1e-4)


def test_strided_and_transposed_convs_take_flax_convs_input_dtypes_and_bias_shape_is_checked():
    """jaxcomp.nn.StridedConv / ConvTranspose promote bf16 and uint8 inputs with the float32 kernel as
    nn.Conv / nn.ConvTranspose do (same output dtype and values); add_channel_bias refuses a bias
    that is not one value per channel (its gradient could not be formed)."""
    from jaxcomp.nn import ConvTranspose, StridedConv

    x = jnp.asarray(np.random.default_rng(5).integers(0, 255, (1, 8, 8, 3)), jnp.uint8)
    pairs = ((StridedConv(4, 3, 2, (1, 1)), nn.Conv(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))),
             (ConvTranspose(4, (3, 3), (2, 2)), nn.ConvTranspose(4, (3, 3), strides=(2, 2), padding="SAME")))
    for ours, ref in pairs:
        params = ref.init(jax.random.PRNGKey(0), x.astype(jnp.float32))
        for xin in (x, x.astype(jnp.bfloat16)):
            got, want = ours.apply(params, xin), ref.apply(params, xin)
            assert got.dtype == want.dtype == jnp.float32
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-4, atol=1e-2)
    for bad in ((1,), (), (6, 1)):
        with pytest.raises(ValueError, match="one per channel"):
            add_channel_bias(_rand((2, 3, 6), 0), jnp.zeros(bad))


class _Net(nn.Module):
    conv: type
    use_bias: bool = True
    dtype: object = None

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, **({} if self.conv is Conv else {"kernel_init": torch_kernel_init}))
        x = nn.relu(self.conv(8, (3, 3), use_bias=self.use_bias, **kw)(x))
        x = self.conv(8, (3, 3), strides=(2, 1), padding=((1, 2), (0, 1)), kernel_dilation=(1, 2), name="down", **kw)(x)
        x = self.conv(4, (2, 2), padding=1, input_dilation=2, feature_group_count=2, **kw)(x)
        return self.conv(2, (1, 1), padding="VALID", **kw)(x)


@pytest.mark.parametrize("use_bias, dtype", [(True, None), (False, None), (True, jnp.bfloat16)])
def test_conv_is_flax_conv_with_the_torch_init(use_bias, dtype):
    x = _rand((2, 9, 9, 3), 3)
    ours, flax_ = _Net(Conv, use_bias, dtype), _Net(nn.Conv, use_bias, dtype)
    params = ours.init(jax.random.PRNGKey(0), x)
    reference = flax_.init(jax.random.PRNGKey(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)))
    assert set(params["params"]) == {"Conv_0", "down", "Conv_1", "Conv_2"}
    assert ("bias" in params["params"]["Conv_0"]) == use_bias
    out = ours.apply(params, x)
    assert out.dtype == flax_.apply(params, x).dtype and np.array_equal(out, flax_.apply(params, x))

    def grads(net):
        return jax.grad(lambda p: jnp.sum(jnp.sin(net.apply(p, x).astype(jnp.float32))))(params)

    if dtype is not None:  # bfloat16: nn.Conv sums the bias gradient in bfloat16, ours in float32
        assert all(a.dtype == b.dtype for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(flax_))))
        return
    for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(flax_))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_conv_one_dimensional_and_refusals():
    x = _rand((2, 11, 3), 4)
    for kw in (dict(kernel_size=(3,), strides=2), dict(kernel_size=3, strides=None, padding=1)):  # nn.Conv's forms
        conv = Conv(5, **kw)
        params = conv.init(jax.random.PRNGKey(1), x)
        reference = nn.Conv(5, kernel_init=torch_kernel_init, **kw)
        assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, reference.init(jax.random.PRNGKey(1), x))
        assert np.array_equal(conv.apply(params, x), reference.apply(params, x)), kw
    with pytest.raises(ValueError, match=r"takes inputs \[B, \*2 spatial, C\], got shape \(11, 3\)"):
        Conv(5, (3, 3)).init(jax.random.PRNGKey(1), x[0])
    with pytest.raises(ValueError, match="CIRCULAR.*use nn.Conv"):
        Conv(5, (3,), padding="CIRCULAR").init(jax.random.PRNGKey(1), x)
    with pytest.raises(ValueError, match="3 input channels are not divisible by feature_group_count=2"):
        Conv(4, (3,), feature_group_count=2).init(jax.random.PRNGKey(1), x)

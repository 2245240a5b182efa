"""Shared Flax (linen) building blocks. All tensors are NHWC ``float32`` unless stated."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# PyTorch's default conv initialisation (kaiming_uniform with a=sqrt(5), i.e. U(+-1/sqrt(fan_in))):
# the reference implementations (L3C, the CVPR'18 context model) train from it, and deep
# residual stacks without normalisation start with much smaller activations than under
# Flax's lecun_normal default.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def Conv(features: int, kernel_size: tuple[int, ...], **kwargs) -> nn.Conv:  # noqa: N802 — a module factory
    """``nn.Conv`` with :data:`torch_kernel_init` unless ``kernel_init`` is given."""
    kwargs.setdefault("kernel_init", torch_kernel_init)
    return nn.Conv(features, kernel_size, **kwargs)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """Depth-to-space: ``[B, H, W, C*f*f] -> [B, H*f, W*f, C]`` (PyTorch's PixelShuffle order)."""
    b, h, w, c = x.shape
    if c % (factor * factor):
        raise ValueError(f"pixel_shuffle: {c} channels not divisible by {factor}^2")
    oc = c // (factor * factor)
    x = x.reshape(b, h, w, oc, factor, factor)
    x = x.transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * factor, w * factor, oc)


class ResBlock(nn.Module):
    """EDSR residual block: ``x + conv(relu(conv(x)))`` with ``kernel x kernel`` convs."""

    features: int
    kernel: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = (self.kernel, self.kernel)
        y = Conv(self.features, k, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(y)
        y = Conv(self.features, k, dtype=self.dtype, name="conv2")(y)
        return x + y


class ResBody(nn.Module):
    """``blocks`` residual blocks and a conv, wrapped in a global skip (EDSR body)."""

    features: int
    blocks: int
    kernel: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        for i in range(self.blocks):
            y = ResBlock(self.features, self.kernel, self.dtype, name=f"block{i}")(y)
        y = Conv(self.features, (self.kernel, self.kernel), dtype=self.dtype, name="conv")(y)
        return x + y


class AtrousHead(nn.Module):
    """Parallel 3x3 convs with the given dilations, concatenated, then a 1x1 conv to ``outputs``."""

    features: int
    outputs: int
    rates: Sequence[int] = (1, 2, 4)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branches = [
            Conv(self.features, (3, 3), kernel_dilation=(r, r), dtype=self.dtype, name=f"atrous{r}")(x)
            for r in self.rates
        ]
        return Conv(self.outputs, (1, 1), dtype=self.dtype, name="out")(jnp.concatenate(branches, -1))

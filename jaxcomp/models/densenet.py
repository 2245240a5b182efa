"""DenseNet-BC for CIFAR (Huang et al., 2017), with the depth/growth pairs of Born-Again Networks.

Inputs ``float32 [B, H, W, C]``, logits ``float32 [B, classes]``; batch statistics in ``batch_stats``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models.layers import ConvFactory, DenseFactory, batch_norm, default_conv, default_dense, pad_same


class DenseNetBC(nn.Module):
    """DenseNet-BC-``depth``-``growth_rate``.

    Three dense blocks of ``n = ceil((depth - 4) / 6)`` bottleneck layers (BN-ReLU-conv1x1 to
    ``4 * growth_rate``, BN-ReLU-conv3x3 to ``growth_rate``, concatenated to the input); a stem
    conv3x3 to ``stem`` channels (default ``2 * growth_rate``, Huang et al.'s DenseNet-BC);
    transitions BN-ReLU-conv1x1 (``compression`` of the channels)-avgpool2; BN-ReLU, global
    average pooling and a dense head. For ``depth = 6n + 4`` this is Huang et al.'s DenseNet-BC
    (DenseNet-BC-100-12: 0.77M parameters, their paper: 0.8M).

    The Born-Again Networks paper's DenseNets have depths that are not ``6n + 4`` (90, 80). Its
    parameter counts (CIFAR-100: DenseNet-90-60 16.1M, 80-80 22.4M, 80-120 50.4M) are matched to
    within 1% by rounding ``n`` **up** (15 and 13 layers per block) with a ``stem`` of 16 channels
    (16.12M, 22.58M, 50.47M); rounding down or a ``2k`` stem is 5-12% off. Its DenseNet-112-33
    (``n = 18`` exactly) then has 6.72M where the paper's table says 6.3M (its text: 6.5M): the
    paper does not give the detail that accounts for that.

    Attributes:
      num_classes, depth, growth_rate, compression (0.5 = "C" of BC), stem (channels of the
      first conv; 0 = ``2 * growth_rate``), dropout (after each conv; needs a ``dropout`` rng
      when training), conv and dense factories (see :mod:`jaxcomp.models.layers`).
    """

    num_classes: int = 100
    depth: int = 100
    growth_rate: int = 12
    compression: float = 0.5
    stem: int = 0
    dropout: float = 0.0
    conv: ConvFactory = default_conv
    dense: DenseFactory = default_dense

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.depth < 10:
            raise ValueError(f"DenseNet-BC depth must be at least 10, got {self.depth}")
        n = -(-(self.depth - 4) // 6)  # ceil
        k = self.growth_rate

        def drop(y):
            return nn.Dropout(self.dropout, deterministic=not train)(y) if self.dropout else y

        x = self.conv(self.stem or 2 * k, (3, 3), strides=(1, 1), padding=pad_same(3), use_bias=False, name="stem")(x)
        for block in range(3):
            for i in range(n):
                name = f"block{block + 1}_layer{i}"
                y = nn.relu(batch_norm(train, f"{name}_bn1")(x))
                y = drop(self.conv(4 * k, (1, 1), strides=(1, 1), padding=((0, 0), (0, 0)), use_bias=False,
                                   name=f"{name}_conv1")(y))
                y = nn.relu(batch_norm(train, f"{name}_bn2")(y))
                y = drop(self.conv(k, (3, 3), strides=(1, 1), padding=pad_same(3), use_bias=False,
                                   name=f"{name}_conv2")(y))
                x = jnp.concatenate([x, y], axis=-1)
            if block < 2:
                features = int(x.shape[-1] * self.compression)
                y = nn.relu(batch_norm(train, f"transition{block + 1}_bn")(x))
                y = drop(self.conv(features, (1, 1), strides=(1, 1), padding=((0, 0), (0, 0)), use_bias=False,
                                   name=f"transition{block + 1}_conv")(y))
                x = nn.avg_pool(y, (2, 2), strides=(2, 2))
        x = nn.relu(batch_norm(train, "final_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return self.dense(self.num_classes, name="head")(x)

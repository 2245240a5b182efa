"""Layer factories shared by the model zoo, and the contract for injecting other layers.

Every network in :mod:`jaxcomp.models` builds its convolutions and dense layers through
factories passed as module attributes, so another system (e.g. StrassenNets' sum-product
layers) can swap them without copying the architecture:

* ``conv(features, kernel_size, strides=..., padding=..., use_bias=..., name=...)`` returns a
  linen module mapping ``float32 [B, H, W, C_in] -> [B, H', W', features]``; the arguments
  mean what they mean for :class:`flax.linen.Conv` (``padding`` is always given explicitly,
  as ``((top, bottom), (left, right))``, PyTorch style).
* ``dense(features, use_bias=..., name=...)`` returns a linen module mapping
  ``[..., D_in] -> [..., features]`` over any number of leading axes (as
  :class:`flax.linen.Dense`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn

from jaxcomp.nn import Conv

# He et al. (2015) normal init on fan_out: what torchvision's ResNets, the WRN reference code and
# the DenseNet reference code use for convolutions followed by batch norm.
he_normal_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

ConvFactory = Callable[..., nn.Module]
DenseFactory = Callable[..., nn.Module]

#: The default convolution of the classifier zoo: the project's :func:`jaxcomp.nn.Conv` with He init.
default_conv: ConvFactory = functools.partial(Conv, kernel_init=he_normal_fan_out)
#: The default dense layer: :class:`flax.linen.Dense` (LeCun-normal kernel, zero bias).
default_dense: DenseFactory = nn.Dense


def pad_same(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Symmetric PyTorch-style padding ``k // 2`` on both sides (odd ``kernel``)."""
    p = kernel // 2
    return ((p, p), (p, p))


def batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
    """Batch norm with PyTorch's defaults (momentum 0.1 of the new batch, eps 1e-5)."""
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)

"""Classifiers and sequence models shared across systems (Born-Again Networks, StrassenNets, ...).

Named variants: :func:`classifier` parses ``"resnet20"``, ``"resnet56"``, ``"wrn-28-10"``,
``"densenet-bc-112-33"`` (any valid depth/width/growth), so configs name architectures the way
the papers do. Convolutions and dense layers are injectable (``conv=`` / ``dense=`` factories,
contract in :mod:`jaxcomp.models.layers`). ImageNet ResNets, the cResNets that read a codec's latent and
their DeepLab segmentation heads (understanding on compressed representations, ICLR'18) are in
:mod:`jaxcomp.models.cresnet` (:func:`understanding_network`).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxcomp.models.charcnn import CharCNNLanguageModel
from jaxcomp.models.cresnet import PAPER_NETWORKS, DeepLab, ImageNetResNet, understanding_network
from jaxcomp.models.densenet import DenseNetBC
from jaxcomp.models.layers import batch_norm, default_conv, default_dense, he_normal_fan_out, pad_same
from jaxcomp.models.lstm import LSTMLanguageModel
from jaxcomp.models.resnet import IMAGENET_RESNETS, BasicBlock, CifarResNet, WideBlock, WideResNet, imagenet_resnet

#: Architectures by the BAN paper's names (CIFAR-100).
PAPER_CLASSIFIERS = ("wrn-28-1", "wrn-28-2", "wrn-28-5", "wrn-28-10", "densenet-bc-112-33", "densenet-bc-90-60",
                     "densenet-bc-80-80", "densenet-bc-80-120", "resnet20", "resnet56")

#: ``(pattern, match -> (module class or factory, its architecture kwargs))``; each is called with
#: ``num_classes=`` and the caller's kwargs. The ImageNet ResNets' names are :data:`resnet.IMAGENET_RESNETS`.
_PATTERNS = (
    (re.compile("(" + "|".join(map(re.escape, IMAGENET_RESNETS)) + ")$"),
     lambda m: (functools.partial(imagenet_resnet, m[1]), {})),
    (re.compile(r"resnet(\d+)$"), lambda m: (CifarResNet, dict(depth=int(m[1])))),
    (re.compile(r"resnet(\d+)x(\d+)$"), lambda m: (CifarResNet, dict(depth=int(m[1]), width=int(m[2])))),
    (re.compile(r"wrn-(\d+)-(\d+)$"), lambda m: (WideResNet, dict(depth=int(m[1]), width=int(m[2])))),
    (re.compile(r"densenet-bc-(\d+)-(\d+)$"), lambda m: (DenseNetBC, dict(depth=int(m[1]), growth_rate=int(m[2])))),
)


def classifier(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """A classifier by name: ``resnet{6n+2}``, ``resnet{6n+2}x{width}``, ``wrn-{6n+4}-{k}``,
    ``densenet-bc-{depth}-{growth}``, or the ImageNet ``resnet18-imagenet`` / ``resnet34-imagenet``
    (:func:`jaxcomp.models.resnet.imagenet_resnet`).

    ``kwargs`` go to the module (e.g. ``dropout=0.3``, ``shortcut="B"``, ``conv=...``,
    ``dense=...``). The module maps ``float32 [B, H, W, C] -> logits [B, num_classes]``.

    Raises:
      ValueError: an unknown name or an invalid depth.
    """
    for pattern, build in _PATTERNS:
        m = pattern.match(name.lower())
        if m:
            cls, arch = build(m)
            model = cls(num_classes=num_classes, **arch, **kwargs)
            _check_depth(model)
            return model
    raise ValueError(f"unknown classifier {name!r}; use resnet<6n+2> (e.g. resnet20), resnet<6n+2>x<width>, "
                     f"wrn-<6n+4>-<k> (e.g. wrn-28-10) or densenet-bc-<6n+4>-<growth> (e.g. densenet-bc-112-33)")


def _check_depth(model: nn.Module) -> None:
    if not isinstance(model, (CifarResNet, WideResNet, DenseNetBC)):
        return  # fixed architectures (the ImageNet ResNets)
    if isinstance(model, DenseNetBC):
        if model.depth < 10:
            raise ValueError(f"DenseNet-BC depth must be at least 10, got {model.depth}")
        return
    offset = 2 if isinstance(model, CifarResNet) else 4
    if (model.depth - offset) % 6 or model.depth < 6 + offset:
        raise ValueError(f"{type(model).__name__} depth must be 6n+{offset} with n >= 1, got {model.depth}")


def count_params(model: nn.Module, input_shape: tuple[int, ...], **call_kwargs: Any) -> int:
    """Number of trainable parameters, from an abstract init (``jax.eval_shape``: no compute)."""
    import jax.numpy as jnp

    dtype = jnp.int32 if isinstance(model, (LSTMLanguageModel, CharCNNLanguageModel)) else jnp.float32  # word ids
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(input_shape, dtype),
                                                  **call_kwargs))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"])))


__all__ = [
    "PAPER_CLASSIFIERS", "PAPER_NETWORKS", "BasicBlock", "CifarResNet", "DeepLab", "DenseNetBC", "ImageNetResNet",
    "understanding_network", "CharCNNLanguageModel", "LSTMLanguageModel", "WideBlock", "WideResNet",
    "batch_norm", "classifier", "count_params", "default_conv", "default_dense", "he_normal_fan_out", "pad_same",
]

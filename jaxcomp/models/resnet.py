"""CIFAR-style residual networks: ResNet-(6n+2) (He et al., 2016) and Wide-ResNet-d-k (Zagoruyko &
Komodakis, 2016). Inputs ``float32 [B, H, W, C]`` (normalised), outputs logits ``float32 [B, classes]``.

Batch statistics live in the ``batch_stats`` collection: call with ``train=True`` and
``mutable=["batch_stats"]`` to train, ``train=False`` to evaluate with the running averages.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models.layers import ConvFactory, DenseFactory, batch_norm, default_conv, default_dense, pad_same


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN, plus shortcut, then ReLU.

    ``shortcut="A"`` (the CIFAR paper's option A): a strided identity padded with zero channels,
    parameter-free; ``"B"``: a 1x1 conv + BN projection when the shape changes.
    """

    features: int
    stride: int = 1
    shortcut: str = "A"
    conv: ConvFactory = default_conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        s = (self.stride, self.stride)
        y = self.conv(self.features, (3, 3), strides=s, padding=pad_same(3), use_bias=False, name="conv1")(x)
        y = nn.relu(batch_norm(train, "bn1")(y))
        y = self.conv(self.features, (3, 3), strides=(1, 1), padding=pad_same(3), use_bias=False, name="conv2")(y)
        y = batch_norm(train, "bn2")(y)
        if self.stride != 1 or x.shape[-1] != self.features:
            if self.shortcut == "A":
                x = x[:, :: self.stride, :: self.stride]
                extra = self.features - x.shape[-1]
                x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
            else:
                x = self.conv(self.features, (1, 1), strides=s, padding=((0, 0), (0, 0)), use_bias=False,
                              name="proj")(x)
                x = batch_norm(train, "proj_bn")(x)
        return nn.relu(x + y)


class CifarResNet(nn.Module):
    """ResNet-``depth`` for 32x32 images: ``depth = 6n + 2`` (20, 32, 44, 56, 110).

    Stages of ``n`` basic blocks with ``16, 32, 64`` (times ``width``) channels, strides 1, 2, 2;
    global average pooling and a dense head. ResNet-20 has 0.27M parameters, ResNet-56 0.85M
    (10 classes, shortcut A).

    Attributes:
      num_classes: outputs of the head.
      depth: ``6n + 2``.
      width: channel multiplier (1 = the paper).
      shortcut: ``"A"`` (zero-padded identity) or ``"B"`` (1x1 conv projection).
      conv: convolution factory (see :mod:`jaxcomp.models.layers`), called as
        ``conv(features, kernel_size, strides=, padding=, use_bias=, name=)``.
      dense: dense factory for the classifier head, ``dense(features, name=)``.
    """

    num_classes: int = 10
    depth: int = 20
    width: int = 1
    shortcut: str = "A"
    conv: ConvFactory = default_conv
    dense: DenseFactory = default_dense

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if (self.depth - 2) % 6 or self.depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 56, ...), got {self.depth}")
        if self.shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {self.shortcut!r}")
        n = (self.depth - 2) // 6
        widths = [16 * self.width, 32 * self.width, 64 * self.width]
        x = self.conv(widths[0], (3, 3), strides=(1, 1), padding=pad_same(3), use_bias=False, name="stem")(x)
        x = nn.relu(batch_norm(train, "stem_bn")(x))
        for stage, features in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                x = BasicBlock(features, stride, self.shortcut, self.conv, name=f"stage{stage + 1}_block{i}")(x, train)
        x = jnp.mean(x, axis=(1, 2))
        return self.dense(self.num_classes, name="head")(x)


class WideBlock(nn.Module):
    """Pre-activation wide block: BN-ReLU-conv3x3-[dropout]-BN-ReLU-conv3x3, 1x1 conv shortcut on change."""

    features: int
    stride: int = 1
    dropout: float = 0.0
    conv: ConvFactory = default_conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        s = (self.stride, self.stride)
        out = nn.relu(batch_norm(train, "bn1")(x))
        project = self.stride != 1 or x.shape[-1] != self.features
        shortcut = (self.conv(self.features, (1, 1), strides=s, padding=((0, 0), (0, 0)), use_bias=False,
                              name="proj")(out) if project else x)
        y = self.conv(self.features, (3, 3), strides=s, padding=pad_same(3), use_bias=False, name="conv1")(out)
        y = nn.relu(batch_norm(train, "bn2")(y))
        if self.dropout:
            y = nn.Dropout(self.dropout, deterministic=not train)(y)
        y = self.conv(self.features, (3, 3), strides=(1, 1), padding=pad_same(3), use_bias=False, name="conv2")(y)
        return shortcut + y


class WideResNet(nn.Module):
    """WRN-``depth``-``width``: ``depth = 6n + 4``; groups of ``n`` wide blocks with ``16k, 32k, 64k``
    channels. WRN-28-10 has 36.5M parameters, WRN-28-2 1.47M (100 classes).

    Attributes:
      num_classes, depth, width (the widening factor k), dropout (between the block's convs;
      needs a ``dropout`` rng when training), conv, dense: as :class:`CifarResNet`.
    """

    num_classes: int = 10
    depth: int = 28
    width: int = 10
    dropout: float = 0.0
    conv: ConvFactory = default_conv
    dense: DenseFactory = default_dense

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if (self.depth - 4) % 6 or self.depth < 10:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1 (10, 16, 28, 40), got {self.depth}")
        n = (self.depth - 4) // 6
        x = self.conv(16, (3, 3), strides=(1, 1), padding=pad_same(3), use_bias=False, name="stem")(x)
        for group, features in enumerate([16 * self.width, 32 * self.width, 64 * self.width]):
            for i in range(n):
                stride = 2 if group > 0 and i == 0 else 1
                x = WideBlock(features, stride, self.dropout, self.conv, name=f"group{group + 1}_block{i}")(x, train)
        x = nn.relu(batch_norm(train, "final_bn")(x))
        x = jnp.mean(x, axis=(1, 2))
        return self.dense(self.num_classes, name="head")(x)


#: ImageNet ResNets with basic blocks (He et al., 2016, Table 1) by the names :func:`jaxcomp.models.classifier`
#: accepts: blocks per stage conv2_x..conv5_x.
IMAGENET_RESNETS: dict[str, tuple[int, ...]] = {"resnet18-imagenet": (2, 2, 2, 2), "resnet34-imagenet": (3, 4, 6, 3)}


def imagenet_resnet(name: str = "resnet18-imagenet", num_classes: int = 1000, shortcut: str = "B",
                    conv: ConvFactory = default_conv, dense: DenseFactory = default_dense) -> nn.Module:
    """The ImageNet ResNet-18 (or -34) of He et al. (2016): ``float32 [B, 224, 224, 3] -> logits [B, num_classes]``.

    The torchvision architecture (11,689,512 parameters for ResNet-18 with 1000 classes, 1.81 G
    multiply-adds at 224x224): 7x7/2 conv-BN-ReLU, 3x3/2 max-pool, four stages of basic blocks with
    64, 128, 256, 512 channels (strides 1, 2, 2, 2; 1x1 conv + BN projection shortcuts where the shape
    changes, the paper's option B), global average pooling, dense head. Built as
    :class:`jaxcomp.models.cresnet.ImageNetResNet` (parameter names ``root_conv``, ``conv{2..5}_block{i}``,
    ``head``), through the zoo's ``conv`` / ``dense`` factories (e.g. StrassenNets' SPN layers).

    Raises:
      ValueError: an unknown name, or ``shortcut`` other than ``"B"`` (the ImageNet ResNets project).
    """
    from jaxcomp.models.cresnet import ImageNetResNet  # cresnet does not import this module

    if name not in IMAGENET_RESNETS:
        raise ValueError(f"unknown ImageNet ResNet {name!r}; use one of {', '.join(IMAGENET_RESNETS)}")
    if shortcut != "B":
        raise ValueError(f"the ImageNet ResNets use projection shortcuts (shortcut='B'), got {shortcut!r}")
    return ImageNetResNet(stage_sizes=IMAGENET_RESNETS[name], bottleneck=False, base_width=64,
                          num_classes=num_classes, conv=conv, dense=dense)

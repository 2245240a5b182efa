"""ImageNet ResNets on RGB images and cResNets on the quantized latent of a learned codec
(Torfason et al., "Towards Image Understanding from Deep Compression without Decoding", ICLR 2018,
arXiv 1803.06131), for classification and, with a DeepLab ASPP head, semantic segmentation.

The codec's encoder maps an image ``[B, H, W, 3]`` to ``ŷ [B, H/8, W/8, C]``. A cResNet ("c" for
compressed representation) is an ImageNet ResNet with everything that works above 1/8 resolution
removed: the root block (7x7/2 conv + 3x3/2 max-pool) and the conv2_x stage; conv3_x takes ``ŷ``
directly, at stride 1, so a 224x224 image's 28x28xC latent meets conv3_x at the 28x28 resolution it
has in the RGB network. The paper then adds bottleneck blocks to the 14x14 stage (conv4_x) to get back
the RGB network's depth and compute.

Block counts (bottleneck blocks per stage; ``k`` in cResNet-k counts the convolutional layers,
3 per bottleneck block, shortcuts and the classifier not counted):

============  ====================  ====================  =====================================
name          conv2_x..conv5_x      input                 source of the counts
============  ====================  ====================  =====================================
resnet-18     2, 2, 2, 2 (basic)    RGB [B, 224, 224, 3]  He et al. (2016), Table 1
resnet-34     3, 4, 6, 3 (basic)    RGB [B, 224, 224, 3]  He et al. (2016), Table 1
resnet-50     3, 4, 6, 3            RGB [B, 224, 224, 3]  the paper's RGB baseline (ResNet-50 V1)
resnet-71     3, 4, 13, 3           RGB [B, 224, 224, 3]  the paper: conv4_x lengthened
resnet-101    3, 4, 23, 3           RGB [B, 224, 224, 3]  He et al. (2016), for reference
cresnet-39    -, 4, 6, 3            ŷ [B, 28, 28, C]      ResNet-50 less root block and conv2_x
cresnet-51    -, 4, 10, 3           ŷ [B, 28, 28, C]      cResNet-39 + 4 conv4_x blocks (~ResNet-50)
cresnet-72    -, 4, 17, 3           ŷ [B, 28, 28, C]      cResNet-39 + 11 conv4_x blocks (~ResNet-71)
============  ====================  ====================  =====================================

Where the counts come from, and what is not certain. The paper's text and Table 1 (the per-stage
block counts) could not be read here: the stored copies of arXiv 1803.06131 give only its abstract and
introduction, and the one detailed summary found (reading notes on the paper in a public GitHub repo)
paraphrases Section 4 with Table 1 as an image. Paraphrased from those notes: ResNet-71 is ResNet-50
with a different number of 14x14 (conv4_x) blocks, between ResNet-50 and ResNet-101; in cResNet-k, k is
the number of convolutional layers; cResNet-39 is ResNet-50 with the root block and the residual layers
above 28x28 removed (its first 11 layers); cResNet-51 and cResNet-72 add 14x14 residual blocks to match
the complexity of ResNet-50 and ResNet-71. With 3 convolutions per bottleneck block: cResNet-39 = 13
blocks = (4, 6, 3); 51 = 17 blocks = (4, 10, 3); 72 = 24 blocks = (4, 17, 3); ResNet-71 = 1 + 3 * 23
+ 1 (fc) = (3, 4, 13, 3). This is the only split consistent with "conv4_x blocks only" and the depths,
and it matches the complexity claims (:mod:`jaxcomp.metrics.flops`, multiply-adds at 224x224 /
28x28x32: ResNet-50 4.09 G vs cResNet-51 3.99 G, ResNet-71 5.62 G vs cResNet-72 5.52 G), but it is a
reconstruction: check it against Table 1 of the paper when the PDF is at hand.

Other choices (ours, where the paper is silent or says otherwise):

* Blocks are torchvision's ("ResNet v1.5"): the stride sits on the bottleneck's 3x3 convolution and
  projection shortcuts (1x1 conv + BN) are used where the shape changes (option B). The paper uses
  TF-slim's ResNet-50 V1 according to the notes, which (as published in TF-slim) downsamples in the
  last block of a stage rather than the first: the same parameters, somewhat different FLOPs.
  Parameters match torchvision's: ResNet-50 25,557,032 and ResNet-18 11,689,512 (1000 classes).
* In a cResNet the first conv3_x block always has a projection shortcut (``C`` latent channels to
  ``4 * 128``), at stride 1.
* Segmentation (:class:`DeepLab`): the paper uses the ResNet-based DeepLab-v2 (the
  ``tensorflow-deeplab-resnet`` port): output stride 8 by atrous convolution (conv4_x at dilation 2
  and conv5_x at dilation 4, both stride 1: the networks "-d", cResNet-d / ResNet-d) and the 1000-way
  classifier replaced by ASPP with four parallel 3x3 atrous branches at rates 6, 12, 18, 24 (the
  notes above; in DeepLab-v2 each branch gives class scores and they are summed); bilinear upsampling
  of the logits. Here the head is DeepLab-v3 style (a 1x1 branch, 3x3 atrous branches, an
  image-pooling branch, each conv + BN + ReLU, concatenated, 1x1 conv + BN + ReLU, 1x1 conv to the
  classes), and the default rates are (1, 2, 3): our feature
  maps are 8x8-12x12 (64-96 pixel crops) rather than DeepLab's 41x41 (321x321 crops), and a 3x3
  atrous convolution whose rate reaches the feature map's size degenerates to its centre tap (the
  other taps read only padding); (6, 12, 18) scaled by 8/41-12/41 is about (1-2, 2-4, 3-5). Pass
  ``rates=(6, 12, 18, 24)`` for the paper's at full resolution. The paper's segmentation training
  and preprocessing details (crop size, upsampling) are in its appendix A.5, not read here;
  :func:`jax.image.resize` uses half-pixel centres (align_corners=False).
* In the dilated networks every block of a dilated stage uses the stage's dilation (DeepLab-v2's
  Caffe ResNet; torchvision keeps the previous dilation in a stage's first block).

Names for :func:`understanding_network`: the paper's (table above), and generic small variants
``resnet-<s2>-<s3>-<s4>-<s5>`` (RGB, basic blocks) and ``cresnet-<s3>-<s4>-<s5>`` (latent, basic
blocks), e.g. ``cresnet-1-1-1``; ``bottleneck=True`` in ``kw`` makes them bottleneck networks.

Batch statistics live in the ``batch_stats`` collection (as :mod:`jaxcomp.models.resnet`): train with
``train=True, mutable=["batch_stats"]``, evaluate with ``train=False``.
"""

from __future__ import annotations

import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxcomp.models.layers import ConvFactory, DenseFactory, batch_norm, default_conv, default_dense, pad_same

#: The paper's networks (and the standard RGB ResNets): (stage_sizes, bottleneck, compressed).
PAPER_NETWORKS: dict[str, tuple[tuple[int, ...], bool, bool]] = {
    "resnet-18": ((2, 2, 2, 2), False, False),
    "resnet-34": ((3, 4, 6, 3), False, False),
    "resnet-50": ((3, 4, 6, 3), True, False),
    "resnet-71": ((3, 4, 13, 3), True, False),
    "resnet-101": ((3, 4, 23, 3), True, False),
    "cresnet-39": ((4, 6, 3), True, True),
    "cresnet-51": ((4, 10, 3), True, True),
    "cresnet-72": ((4, 17, 3), True, True),
}

#: The paper's RGB / compressed pairs of about equal compute.
PAPER_PAIRS = (("resnet-50", "cresnet-51"), ("resnet-71", "cresnet-72"))

_NO_PAD = ((0, 0), (0, 0))


def _conv(conv: ConvFactory, features: int, kernel: int, stride: int = 1, dilation: int = 1,
          name: str | None = None) -> nn.Module:
    """A bias-free ``kernel x kernel`` conv with PyTorch padding ``dilation * (kernel // 2)``.

    ``kernel_dilation`` is passed only when it is not 1, so factories without it (see
    :mod:`jaxcomp.models.layers`) still build the undilated networks.
    """
    p = dilation * (kernel // 2)
    extra = {"kernel_dilation": (dilation, dilation)} if dilation != 1 else {}
    return conv(features, (kernel, kernel), strides=(stride, stride), padding=((p, p), (p, p)), use_bias=False,
                name=name, **extra)


class ResidualBlock(nn.Module):
    """A post-activation ResNet block, torchvision style.

    ``bottleneck``: conv1x1(width)-BN-ReLU-conv3x3(width, stride, dilation)-BN-ReLU-conv1x1(4 width)-BN;
    else (basic): conv3x3(width, stride, dilation)-BN-ReLU-conv3x3(width, dilation)-BN. Plus the
    shortcut (identity, or 1x1 conv with the stride + BN when the shape changes), then ReLU.
    """

    width: int
    stride: int = 1
    dilation: int = 1
    bottleneck: bool = True
    conv: ConvFactory = default_conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        out_features = 4 * self.width if self.bottleneck else self.width
        if self.bottleneck:
            y = _conv(self.conv, self.width, 1, name="conv1")(x)
            y = nn.relu(batch_norm(train, "bn1")(y))
            y = _conv(self.conv, self.width, 3, self.stride, self.dilation, name="conv2")(y)
            y = nn.relu(batch_norm(train, "bn2")(y))
            y = _conv(self.conv, out_features, 1, name="conv3")(y)
            y = batch_norm(train, "bn3")(y)
        else:
            y = _conv(self.conv, self.width, 3, self.stride, self.dilation, name="conv1")(x)
            y = nn.relu(batch_norm(train, "bn1")(y))
            y = _conv(self.conv, self.width, 3, 1, self.dilation, name="conv2")(y)
            y = batch_norm(train, "bn2")(y)
        if self.stride != 1 or x.shape[-1] != out_features:
            x = _conv(self.conv, out_features, 1, self.stride, name="proj")(x)
            x = batch_norm(train, "proj_bn")(x)
        return nn.relu(x + y)


class ImageNetResNet(nn.Module):
    """ImageNet ResNet (He et al., 2016) on RGB images, or cResNet on a codec's latent.

    RGB (``compressed=False``): root block (7x7/2 conv-BN-ReLU, 3x3/2 max-pool), stages conv2_x..conv5_x
    of ``stage_sizes`` blocks with widths ``base_width * (1, 2, 4, 8)`` and strides 1, 2, 2, 2 (output
    stride 32), global average pooling, dense head. ``x``: ``float32 [B, H, W, 3]``.

    cResNet (``compressed=True``): no root block and no conv2_x; ``stage_sizes`` lists conv3_x..conv5_x
    (widths ``base_width * (2, 4, 8)``) with strides 1, 2, 2. ``x``: the latent ``float32 [B, h, w, C]``
    at 1/8 of the image's resolution, so the output stride relative to the image is still 32.

    ``dilate=True`` (segmentation backbones): the stages after 1/8 resolution (conv4_x, conv5_x) use
    stride 1 and dilation 2 and 4: features at 1/8 of the image (output stride 8).

    Parameter names: ``root_conv``, ``root_bn`` and ``conv{s}_block{i}`` (``s`` = 2..5, the paper's
    stage names; blocks from 0), ``head``.

    Attributes:
      stage_sizes: blocks per stage, conv2_x..conv5_x (RGB) or conv3_x..conv5_x (compressed).
      bottleneck: bottleneck blocks (1x1-3x3-1x1, expansion 4) or basic blocks (3x3-3x3).
      base_width: conv2_x's (bottleneck) width; stage ``k`` (conv2_x = 0) has ``base_width * 2**k``.
      num_classes: outputs of the dense head.
      compressed: the cResNet variant (see above).
      dilate: output stride 8 by dilation (see above).
      conv: convolution factory (:mod:`jaxcomp.models.layers`); must take ``kernel_dilation`` when
        ``dilate``.
      dense: dense factory of the head.
    """

    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    bottleneck: bool = True
    base_width: int = 64
    num_classes: int = 1000
    compressed: bool = False
    dilate: bool = False
    conv: ConvFactory = default_conv
    dense: DenseFactory = default_dense

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False, *, return_features: bool = False) -> jax.Array:
        """``x [B, H, W, C]`` -> logits ``float32 [B, num_classes]``, or with ``return_features`` the last
        stage's feature map ``[B, h, w, F]`` (no pooling; the head is then not created)."""
        first_stage = 3 if self.compressed else 2
        if len(self.stage_sizes) != 6 - first_stage or min(self.stage_sizes, default=0) < 1:
            kind = "conv3_x..conv5_x (3 stages) for a cResNet" if self.compressed else "conv2_x..conv5_x (4 stages)"
            raise ValueError(f"stage_sizes must give {kind}, each >= 1 block; got {self.stage_sizes}")
        if not self.compressed:
            x = self.conv(self.base_width, (7, 7), strides=(2, 2), padding=pad_same(7), use_bias=False,
                          name="root_conv")(x)
            x = nn.relu(batch_norm(train, "root_bn")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        dilation = 1
        for stage, blocks in enumerate(self.stage_sizes, start=first_stage):
            # The first stage keeps the resolution: conv2_x after the root's max-pool (1/4), a cResNet's
            # conv3_x on the latent (already 1/8). The later stages halve it, or (dilated, from conv4_x
            # on) keep it and double the dilation.
            stride = 1 if stage == first_stage else 2
            if stage >= 4 and self.dilate:
                stride, dilation = 1, dilation * 2
            width = self.base_width * 2 ** (stage - 2)
            for i in range(blocks):
                x = ResidualBlock(width, stride if i == 0 else 1, dilation, self.bottleneck, self.conv,
                                  name=f"conv{stage}_block{i}")(x, train)
        if return_features:
            return x
        x = jnp.mean(x, axis=(1, 2))
        return self.dense(self.num_classes, name="head")(x)

    def features(self, x: jax.Array, train: bool = False) -> jax.Array:
        """The last stage's feature map ``float32 [B, h, w, F]`` before pooling (``F = 8 * base_width``,
        times 4 with bottlenecks). Use as ``model.apply(variables, x, method="features")``."""
        return self(x, train, return_features=True)


class DeepLab(nn.Module):
    """DeepLab segmentation network: a dilated :class:`ImageNetResNet` backbone (output stride 8) and an
    ASPP head, logits upsampled bilinearly to the image's resolution.

    ``x``: an RGB image ``[B, H, W, 3]`` -> ``[B, H, W, num_classes]``; or (``compressed=True``) a latent
    ``[B, h, w, C]`` -> ``[B, 8h, 8w, num_classes]``.

    ASPP (DeepLab-v3 style, see the module docstring for the paper's DeepLab-v2 head): a 1x1 branch, one
    3x3 atrous branch per rate in ``rates``, and (``image_pooling``) a global-average-pool branch
    broadcast back over the map; each conv-BN-ReLU with ``aspp_features`` channels; concatenated,
    1x1 conv-BN-ReLU, then a 1x1 conv (with bias) to ``num_classes`` at stride 8.

    Attributes: ``stage_sizes``, ``bottleneck``, ``base_width``, ``compressed``, ``conv`` as
    :class:`ImageNetResNet` (the backbone is ``ImageNetResNet(..., dilate=True, name="backbone")``);
    ``num_classes``; ``rates``; ``aspp_features``; ``image_pooling``.
    """

    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    bottleneck: bool = True
    base_width: int = 64
    num_classes: int = 21
    compressed: bool = False
    rates: tuple[int, ...] = (1, 2, 3)
    aspp_features: int = 256
    image_pooling: bool = True
    conv: ConvFactory = default_conv

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b, height, width = x.shape[:3]
        out_hw = (8 * height, 8 * width) if self.compressed else (height, width)
        backbone = ImageNetResNet(self.stage_sizes, self.bottleneck, self.base_width, num_classes=1,
                                  compressed=self.compressed, dilate=True, conv=self.conv, name="backbone")
        f = backbone(x, train, return_features=True)
        n = self.aspp_features

        def branch(y: jax.Array, kernel: int, dilation: int, name: str) -> jax.Array:
            y = _conv(self.conv, n, kernel, 1, dilation, name=f"aspp_{name}")(y)
            return nn.relu(batch_norm(train, f"aspp_{name}_bn")(y))

        branches = [branch(f, 1, 1, "1x1")] + [branch(f, 3, r, f"rate{r}") for r in self.rates]
        if self.image_pooling:
            pooled = branch(jnp.mean(f, axis=(1, 2), keepdims=True), 1, 1, "pool")
            branches.append(jnp.broadcast_to(pooled, f.shape[:3] + (n,)))
        y = branch(jnp.concatenate(branches, axis=-1), 1, 1, "project")
        logits = self.conv(self.num_classes, (1, 1), strides=(1, 1), padding=_NO_PAD, use_bias=True,
                           name="classifier")(y)
        return jax.image.resize(logits, (b, *out_hw, self.num_classes), method="bilinear")


_GENERIC = (
    (re.compile(r"resnet-(\d+)-(\d+)-(\d+)-(\d+)$"), False),
    (re.compile(r"cresnet-(\d+)-(\d+)-(\d+)$"), True),
)


def understanding_network(name: str, num_classes: int, task: str = "classification", width: float = 1.0,
                          **kw: Any) -> nn.Module:
    """A classification (:class:`ImageNetResNet`) or segmentation (:class:`DeepLab`) network by name.

    ``name``: one of :data:`PAPER_NETWORKS` (``resnet-18/34/50/71/101``, ``cresnet-39/51/72``), or a
    generic ``resnet-<s2>-<s3>-<s4>-<s5>`` (RGB) / ``cresnet-<s3>-<s4>-<s5>`` (latent) with basic blocks
    (``bottleneck=True`` in ``kw`` for bottlenecks). ``width`` multiplies ``base_width`` 64 (and the ASPP's
    256 channels), e.g. 0.25 -> 16, for CPU-sized runs. ``task``: ``"classification"`` or
    ``"segmentation"`` (a dilated backbone + ASPP, output at the image's resolution). ``kw`` go to the
    module and override the name's architecture (e.g. ``rates=(6, 12, 18, 24)``, ``conv=...``).

    Raises:
      ValueError: an unknown name or task, a zero stage, or a width that leaves no channels.
    """
    key = name.lower()
    if key in PAPER_NETWORKS:
        stages, bottleneck, compressed = PAPER_NETWORKS[key]
    else:
        for pattern, is_compressed in _GENERIC:
            m = pattern.match(key)
            if m:
                stages, bottleneck, compressed = tuple(int(g) for g in m.groups()), False, is_compressed
                break
        else:
            raise ValueError(f"unknown network {name!r}; use one of {', '.join(PAPER_NETWORKS)}, or "
                             f"resnet-<s2>-<s3>-<s4>-<s5> / cresnet-<s3>-<s4>-<s5> (blocks per stage, e.g. "
                             f"cresnet-1-1-1)")
        if min(stages) < 1:
            raise ValueError(f"{name!r}: every stage needs at least one block")
    base_width = round(64 * width)
    if base_width < 1:
        raise ValueError(f"width {width} leaves {base_width} channels in conv2_x (64 * width must be >= 1)")
    arch: dict[str, Any] = dict(stage_sizes=stages, bottleneck=bottleneck, base_width=base_width,
                                compressed=compressed, num_classes=num_classes)
    if task == "classification":
        return ImageNetResNet(**{**arch, **kw})
    if task == "segmentation":
        arch["aspp_features"] = max(1, round(256 * width))
        return DeepLab(**{**arch, **kw})
    raise ValueError(f"unknown task {task!r}; use 'classification' or 'segmentation'")


__all__ = ["PAPER_NETWORKS", "PAPER_PAIRS", "DeepLab", "ImageNetResNet", "ResidualBlock", "understanding_network"]

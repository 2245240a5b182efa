"""L3C: Practical Full Resolution Learned Lossless Image Compression (Mentzer et al., CVPR'19).

The image ``x = x(0)`` (``uint8 [B, H, W, 3]``) is encoded into a hierarchy of quantized
auxiliary representations ``z(1), ..., z(S)``, each at half the resolution of the one
before. Decoder ``D(s)`` sees ``z(s)`` and the features of ``D(s+1)`` and predicts a
discretized logistic mixture for every symbol of ``x(s-1)`` (``z(s-1)``, or the RGB image at
``s = 1``). ``z(S)`` is coded with a uniform prior (in the training loss, and in the coder
except with ``L3CCodec(top_levels > 0)``, for the subsampled RGB pyramid: x(S) coded from its own
subsample by D(S)). The loss is the total number of bits divided by the number of subpixels
``3HW`` (bits per subpixel, bpsp).

Shapes: with ``S`` scales, ``H`` and ``W`` must be multiples of ``2**S``; ``z(s)`` is
``[B, H/2^s, W/2^s, C]`` with values on ``levels`` points in ``[-1, 1]``.

Variants (``config.model.representation``):
  * ``"learned"`` — the paper's model: encoders ``E(s)`` learn ``z(s)``;
  * ``"rgb"`` — the paper's "RGB" baseline: ``x(s)`` is a bicubic x2 downscaling of
    ``x(s-1)`` rounded to 8 bits, so every scale is an RGB image. With ``share_weights``,
    ``fuse_features=False`` and ``train_scales=1`` it is the paper's "RGB Shared" baseline: ONE
    decoder, trained on the finest scale only (``x(0)`` given ``x(1)``), without feature fusion,
    applied recursively at every scale when coding (configs/l3c.py:rgb_shared).

``encoder_head_conv`` adds the reference encoder's per-scale 3x3 input convolution (``E_in`` of
the paper's Fig. 2) before each ``E(s)``'s stride-2 convolution; the shipped model (RGB pyramid,
no encoders) and models trained before the switch existed have none.

Beyond the paper, ``config.model.subpixel_steps`` 2 or 4 codes each 2x2 block of every scale in
steps, each conditioned on the sub-pixels of the steps before (docs/l3c.md); 1 is the paper's model.
With 4 steps the ``"rgb"`` representation may take ``rgb_pyramid="subsample"``: ``x(s+1)`` is the
top-left pixel of each 2x2 block of ``x(s)``, which is step 0's sub-pixel, so step 0 is known and
never coded (every pixel is coded once, at the coarsest scale that holds it).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.checks import is_whole
from jaxcomp.codecs import common
from jaxcomp.codecs.common import NUMERICS_HELP, check_image, numerics
from jaxcomp.configs import spec_from_section
from jaxcomp.entropy import logistic_mixture as lm
from jaxcomp.nn import AtrousHead, Conv, ResBody, pixel_shuffle
from jaxcomp.quantize import soft_hard_quantize, uniform_levels
from jaxcomp.train import TrainState, make_optimizer
from jaxcomp.xla import CachedFunction

RGB_LEVELS = 256
MAX_TILE = 1 << 14  # the largest tile a stream's header admits
# Coding PMFs cover 64 levels around the mixture mean plus an escape: 4x fewer CDF evaluations
# than all 256, for +0.1-0.2% bits on photos (experiments/bench_codecs.py --windows measures it).
DEFAULT_WINDOW = 64
# Levels of the coarsest scale's own subsampled pyramid that D(S) codes (models with the "subsample"
# RGB pyramid; see L3CCodec's ``top_levels``); 0 codes x(S) uniformly, as the paper does.
DEFAULT_TOP_LEVELS = 2
MAX_TOP_LEVELS = 8
# A tile codes a level of the top's pyramid through D(S) only if the map coded there is at least this
# many pixels on its shorter side; smaller ones cost more than their uniform code (the payloads'
# word alignment and a model that sees mostly padding). Chosen on crops of the validation photos
# (docs/l3c.md): side 8 and 10 cost bits, 12 and more save them. Streams without the key: 1.
DEFAULT_TOP_MIN_SIDE = 12


@dataclasses.dataclass(frozen=True)
class L3CSpec:
    """The architecture; built from ``config.model`` by :func:`spec_from_config`."""

    scales: int = 3
    features: int = 64          # Cf
    blocks: int = 8             # residual blocks per encoder / decoder
    latent_channels: int = 5    # C
    levels: int = 25            # L
    sigma: float = 2.0          # softness of the quantizer
    mixtures: int = 10          # K
    representation: str = "learned"
    share_weights: bool = False
    # Sub-pixel autoregression inside each scale (beyond the paper; the idea of Cao, Wu & Kraehenbuehl,
    # "Lossless Image Compression through Super-Resolution", 2020): every 2x2 block of x(s-1) is coded
    # in 1 (the paper's model), 2 (checkerboard) or 4 steps, step k conditioned on z(s) and on the
    # sub-pixels of steps < k. ``subpixel_head``: "light" (the decoder's head for step 0, a small
    # residual head per later step) or "shared" (one head for all steps, with a step embedding).
    subpixel_steps: int = 1
    subpixel_head: str = "light"
    # How the "rgb" representation's x(s+1) comes from x(s): "bicubic" (the paper's RGB ablation:
    # antialiased x2 downscaling) or "subsample" (beyond the paper: the top-left pixel of each 2x2
    # block, which is the sub-pixel coded in step 0; it needs subpixel_steps=4 and share_weights=False,
    # and step 0 is then known from x(s+1) and never coded: every pixel is coded once, as in interlaced
    # lossless coders).
    rgb_pyramid: str = "bicubic"
    # The reference encoder's per-scale 3x3 input conv E_in (Cin -> Cf) before E(s)'s 5x5 stride-2 conv.
    # False for every model trained before it existed (their configs do not name it); no effect
    # without encoders (the "rgb" representation).
    encoder_head_conv: bool = False
    # D(s) adds D(s+1)'s features to its own head (the paper's feature fusion). False: each scale
    # is predicted from x(s) alone (the reference's dec.skip=False, its "RGB Shared" baseline).
    fuse_features: bool = True
    # RGB mixtures as the reference code's (criterion/logistic_mixture.py works on x in [0, 255]): log-scales
    # clamped at -7 in pixel units (-7 - ln 127.5 on our [-1, 1] grid) and sigmoid channel-mixing coefficients.
    # False for every model trained before 2026-12-06 (their configs do not name it): -7 on the [-1, 1] grid,
    # a floor of ~0.039 bits on every coded RGB subpixel, and PixelCNN++'s tanh coefficients. The latents'
    # mixtures (L levels in [-1, 1], as in the reference) are the same either way.
    reference_rgb_mixture: bool = False
    # Scales the training loss covers, finest first (0: all). 1 with one shared decoder and no
    # fusion: the reference's "RGB Shared", trained on x(0) given x(1) and applied recursively
    # at all ``scales`` when coding. Not part of the architecture (the coder never reads it).
    train_scales: int = 0

    def __post_init__(self):
        if self.representation not in ("learned", "rgb"):
            raise ValueError(f"model.representation must be 'learned' or 'rgb', not {self.representation!r}")
        if self.share_weights and self.representation != "rgb":
            raise ValueError("model.share_weights is defined for the 'rgb' representation only")
        if self.scales < 1:
            raise ValueError(f"model.scales must be >= 1, got {self.scales}")
        if self.subpixel_steps not in (1, 2, 4):
            raise ValueError(f"model.subpixel_steps must be 1, 2 (checkerboard) or 4, got {self.subpixel_steps!r}")
        if self.subpixel_head not in ("light", "shared"):
            raise ValueError(f"model.subpixel_head must be 'light' or 'shared', not {self.subpixel_head!r}")
        if self.rgb_pyramid not in ("bicubic", "subsample"):
            raise ValueError(f"model.rgb_pyramid must be 'bicubic' or 'subsample', not {self.rgb_pyramid!r}")
        if self.rgb_pyramid == "subsample" and (self.representation != "rgb" or self.subpixel_steps != 4
                                                or self.share_weights):
            raise ValueError("model.rgb_pyramid='subsample' needs representation='rgb', subpixel_steps=4 (its "
                             "step 0 is x(s+1), known) and share_weights=False; got "
                             f"representation={self.representation!r}, subpixel_steps={self.subpixel_steps}, "
                             f"share_weights={self.share_weights}")
        if isinstance(self.train_scales, bool) or not 0 <= self.train_scales <= self.scales:
            raise ValueError(f"model.train_scales must be 0 (all) or 1..{self.scales} (model.scales), "
                             f"got {self.train_scales!r}")
        if 0 < self.train_scales < self.scales and (not self.share_weights or self.fuse_features):
            raise ValueError(f"model.train_scales={self.train_scales} < model.scales={self.scales} would leave the "
                             "coarser scales untrained: it needs one shared decoder (model.share_weights=True) "
                             "without feature fusion (model.fuse_features=False)")

    def architecture(self) -> dict[str, Any]:
        """The fields that define the model, for fingerprints: the sub-pixel, encoder-head, fusion and
        RGB-mixture fields and ``rgb_pyramid`` only when they differ from the architecture before
        they existed (so models trained before keep their fingerprint); ``train_scales`` never
        (training only)."""
        fields = dataclasses.asdict(self)
        if self.rgb_pyramid == "bicubic":
            del fields["rgb_pyramid"]
        if self.subpixel_steps == 1:
            del fields["subpixel_steps"], fields["subpixel_head"]
        if not self.encoder_head_conv or self.representation != "learned":  # no encoders: no effect
            del fields["encoder_head_conv"]
        if self.fuse_features:
            del fields["fuse_features"]
        if not self.reference_rgb_mixture:
            del fields["reference_rgb_mixture"]
        del fields["train_scales"]
        return fields

    def known_step0(self) -> bool:
        """Whether the sub-pixels of step 0 of every scale below the top are x(s+1) itself (the
        ``"subsample"`` pyramid): they cost no bits and are never coded."""
        return self.rgb_pyramid == "subsample"

    def coded_steps(self) -> range:
        """The sub-pixel steps the coder codes a payload for, in order (step 0 is left out where
        :meth:`known_step0`); ``range(1)`` without sub-pixel steps."""
        return range(int(self.known_step0()), self.subpixel_steps)

    def loss_scales(self) -> int:
        """How many scales (finest first) the training loss covers."""
        return self.train_scales or self.scales

    def channels(self, s: int) -> int:
        """Channels of ``x(s)`` (``s = 0`` is the image)."""
        return 3 if s == 0 or self.representation == "rgb" else self.latent_channels

    def num_levels(self, s: int) -> int:
        return RGB_LEVELS if s == 0 or self.representation == "rgb" else self.levels


def spec_from_config(model: ml_collections.ConfigDict) -> L3CSpec:
    return spec_from_section(L3CSpec, model, "L3C")


def image_to_unit(x: jax.Array) -> jax.Array:
    """``uint8/float [0, 255] -> float32 [-1, 1]``, the grid of the 256 RGB levels."""
    return x.astype(jnp.float32) / 127.5 - 1.0


class Encoder(nn.Module):
    """E(s): (with ``spec.encoder_head_conv``, the reference's 3x3 input conv E_in,) 5x5 stride-2
    conv, residual body with global skip, 1x1 conv, quantizer."""

    spec: L3CSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``x [B, H, W, Cin]`` (the image in [-1, 1], or E(s-1)'s features) -> ``(features [B,h,w,Cf],
        z_hat [B,h,w,C], symbols int32 [B,h,w,C])`` at ``h, w = H/2, W/2``."""
        s = self.spec
        if s.encoder_head_conv:
            x = Conv(s.features, (3, 3), name="input")(x)  # E_in: Cin -> Cf at the input's resolution
        h = Conv(s.features, (5, 5), strides=(2, 2), padding=((2, 2), (2, 2)), name="head")(x)
        h = ResBody(s.features, s.blocks, name="body")(h)
        z = Conv(s.latent_channels, (1, 1), name="tail")(h)
        z_hat, symbols = soft_hard_quantize(z, uniform_levels(s.levels), s.sigma)
        return h, z_hat, symbols


# The step in which each position (row, column) of a 2x2 block of x(s-1) is coded: the diagonal first,
# so that the checkerboard's two steps are unions of the four steps' ({0, 1} and {2, 3}).
_SUBPIXEL_ORDER = {1: ((0, 0), (0, 0)), 2: ((0, 1), (1, 0)), 4: ((0, 2), (3, 1))}


def subpixel_steps_map(h: int, w: int, steps: int) -> np.ndarray:
    """``int32 [h, w]``: the sub-pixel step (``0 .. steps-1``) in which each position of an ``h x w``
    grid is coded; ``h`` and ``w`` must be even (they are: every scale below the top one)."""
    if steps not in _SUBPIXEL_ORDER:
        raise ValueError(f"subpixel steps must be 1, 2 or 4, got {steps!r}")
    if h % 2 or w % 2:
        raise ValueError(f"sub-pixel steps need an even grid, got {h}x{w}")
    return np.tile(np.asarray(_SUBPIXEL_ORDER[steps], np.int32), (h // 2, w // 2))


def subpixel_index(h: int, w: int, steps: int, step: int) -> np.ndarray:
    """Row-major flat indices ``int [N]`` of the positions of an ``h x w`` grid coded in ``step``."""
    return np.flatnonzero(subpixel_steps_map(h, w, steps).reshape(-1) == step)


def subpixel_context(values: jax.Array, steps: int, step: int) -> jax.Array:
    """What step ``step`` may condition on: ``values [B, H, W, C]`` of x(s-1) where they were coded
    in an earlier step and 0 elsewhere, and that mask as one more channel: ``float32 [B, H, W, C+1]``."""
    known = jnp.asarray(subpixel_steps_map(values.shape[1], values.shape[2], steps) < step)[None, :, :, None]
    return jnp.concatenate([jnp.where(known, values, 0.0), jnp.broadcast_to(known, values.shape[:3] + (1,))
                            .astype(values.dtype)], -1)


class SubpixelHead(nn.Module):
    """A light head for sub-pixel step k > 0: a 3x3 conv on (D(s)'s features, the context of
    :func:`subpixel_context`), ReLU, and a 1x1 conv to a correction of step 0's mixture parameters
    (zero-initialised: an untrained step predicts what step 0 does)."""

    features: int
    outputs: int

    @nn.compact
    def __call__(self, f: jax.Array, context: jax.Array) -> jax.Array:
        """``f [B, H, W, Cf]``, ``context [B, H, W, C+1]`` -> ``[B, H, W, P]``."""
        h = nn.relu(Conv(self.features, (3, 3), name="context")(jnp.concatenate([f, context], -1)))
        return Conv(self.outputs, (1, 1), kernel_init=nn.initializers.zeros, name="out")(h)


class Decoder(nn.Module):
    """D(s): 1x1 head, fusion with coarser features, residual body, x2 pixel-shuffle, atrous head.

    With ``spec.subpixel_steps > 1`` also the heads of the later sub-pixel steps (:meth:`step`).
    """

    spec: L3CSpec
    out_channels: int

    def setup(self) -> None:
        s = self.spec
        self.head = Conv(s.features, (1, 1))
        self.body = ResBody(s.features, s.blocks)
        self.upsample = Conv(4 * s.features, (3, 3))
        p = lm.num_mixture_params(self.out_channels, s.mixtures, self.out_channels == 3)
        self.probability = AtrousHead(s.features, p)
        if s.subpixel_steps > 1 and s.subpixel_head == "shared":
            self.context = Conv(s.features, (3, 3), kernel_init=nn.initializers.zeros)  # starts as step 0
            self.step_embedding = self.param("step_embedding", nn.initializers.zeros, (s.subpixel_steps, s.features))
        elif s.subpixel_steps > 1:
            self.step_heads = [SubpixelHead(s.features, p) for _ in range(1, s.subpixel_steps)]

    def features(self, z: jax.Array, coarser: jax.Array | None) -> jax.Array:
        """``z [B, h, w, C]`` (and the coarser decoder's features ``[B, h, w, Cf]``) -> ``[B, 2h, 2w, Cf]``."""
        h = self.head(z)
        if coarser is not None:
            h = h + coarser
        h = self.body(h)
        return pixel_shuffle(self.upsample(h), 2)

    def __call__(self, z: jax.Array, coarser: jax.Array | None) -> tuple[jax.Array, jax.Array | None]:
        """Returns ``(features [B,2h,2w,Cf], mixture parameters [B,2h,2w,P])``; with sub-pixel steps
        the parameters are step 0's for the light heads (``None`` for the shared head): see :meth:`step`."""
        f = self.features(z, coarser)
        if self.spec.subpixel_steps > 1 and self.spec.subpixel_head == "shared":
            return f, None
        return f, self.probability(f)

    def step(self, f: jax.Array, base: jax.Array | None, context: jax.Array, step: int) -> jax.Array:
        """Raw mixture parameters ``[B, 2h, 2w, P]`` of sub-pixel step ``step`` (used at that step's
        positions only), from the features ``f``, step 0's parameters ``base`` (light heads) and
        ``context`` (:func:`subpixel_context`)."""
        if self.spec.subpixel_head == "shared":
            return self.probability(f + self.context(context) + self.step_embedding[step])
        return base if step == 0 else base + self.step_heads[step - 1](f, context)


def rgb_pyramid(x: jax.Array, scales: int, method: str = "bicubic") -> list[jax.Array]:
    """``[x(0), ..., x(S)]`` in [0, 255], float32, from ``x [B, H, W, C]`` (H, W multiples of
    ``2**scales``): bicubic (antialiased) x2 downscalings rounded to 8 bits, or with
    ``method="subsample"`` the top-left pixel of each 2x2 block (``x(s)[:, ::2, ::2]``)."""
    if x.ndim != 4 or x.shape[1] % 2**scales or x.shape[2] % 2**scales:
        raise ValueError(f"rgb_pyramid: x must be [B, H, W, C] with H and W multiples of 2**scales = {2**scales}, "
                         f"got shape {tuple(x.shape)} (pad the image first)")
    out = [x.astype(jnp.float32)]
    if method == "subsample":
        for _ in range(scales):
            out.append(out[-1][:, ::2, ::2])
        return out
    if method != "bicubic":
        raise ValueError(f"rgb_pyramid method must be 'bicubic' or 'subsample', not {method!r}")
    for _ in range(scales):
        prev = out[-1]
        b, h, w, c = prev.shape
        small = jax.image.resize(prev, (b, h // 2, w // 2, c), "bicubic", antialias=True)
        out.append(jnp.clip(jnp.round(small), 0, 255))
    return out


class L3C(nn.Module):
    """The multiscale model. ``__call__`` returns what the loss and the coder need."""

    spec: L3CSpec

    def setup(self) -> None:
        s = self.spec
        if s.representation == "learned":
            self.encoders = [Encoder(s, name=f"E{i + 1}") for i in range(s.scales)]
        n_dec = 1 if s.share_weights else s.scales
        self.decoders = [Decoder(s, s.channels(i), name=f"D{i + 1}") for i in range(n_dec)]

    def decoder(self, scale: int) -> Decoder:
        """D(scale) for ``scale`` in ``1..S``."""
        return self.decoders[0 if self.spec.share_weights else scale - 1]

    def representations(self, x: jax.Array, num_scales: int | None = None
                        ) -> tuple[list[jax.Array], list[jax.Array]]:
        """``x(0..S)`` as decoder inputs on the unit grid, and their symbols (int32).

        ``x(0)`` is the image mapped to ``[-1, 1]``; symbols of RGB scales are 0..255.
        ``num_scales`` (default ``S``): only ``x(0..num_scales)``.
        """
        s = self.spec
        n = s.scales if num_scales is None else num_scales
        if s.representation == "rgb":
            pyramid = rgb_pyramid(x, n, s.rgb_pyramid)
            return [image_to_unit(p) for p in pyramid], [p.astype(jnp.int32) for p in pyramid]
        values, symbols = [image_to_unit(x)], [x.astype(jnp.int32)]
        features = values[0]
        for encoder in self.encoders[:n]:
            features, z_hat, sym = encoder(features)
            values.append(z_hat)
            symbols.append(sym)
        return values, symbols

    def predict(self, z: jax.Array, coarser: jax.Array | None, scale: int) -> tuple[jax.Array, jax.Array | None]:
        """D(scale) on ``z(scale)``: ``(features, raw mixture parameters for x(scale-1))`` (with
        sub-pixel steps, step 0's or ``None``: see :meth:`predict_step`). ``coarser``: D(scale+1)'s
        features, fused only with ``spec.fuse_features`` (else D(scale) sees ``z(scale)`` alone)."""
        return self.decoder(scale)(z, coarser if self.spec.fuse_features else None)

    def predict_step(self, f: jax.Array, base: jax.Array | None, target: jax.Array, scale: int,
                     step: int) -> jax.Array:
        """Raw mixture parameters ``[B, H, W, P]`` for the sub-pixels of x(scale-1) coded in ``step``.

        ``f, base``: what :meth:`predict` returned; ``target``: the values of x(scale-1)
        ``float32 [B, H, W, C]``, of which only the positions coded in steps ``< step`` are read.
        """
        context = subpixel_context(target, self.spec.subpixel_steps, step)
        return self.decoder(scale).step(f, base, context, step)

    def subpixel_params(self, f: jax.Array, base: jax.Array | None, target: jax.Array, scale: int) -> jax.Array:
        """Every step's parameters at its own positions, ``[B, H, W, P]``, each step conditioned on
        the true values of the steps before it (teacher forcing: what the decoder will have)."""
        steps = self.spec.subpixel_steps
        steps_map = subpixel_steps_map(target.shape[1], target.shape[2], steps)[None, :, :, None]
        raw = self.predict_step(f, base, target, scale, 0)
        for k in range(1, steps):
            raw = jnp.where(jnp.asarray(steps_map == k), self.predict_step(f, base, target, scale, k), raw)
        return raw

    def __call__(self, x: jax.Array, num_scales: int | None = None) -> dict[str, Any]:
        """Forward pass for training.

        Args:
          x: ``uint8 [B, H, W, 3]`` (or float in [0, 255]); H, W multiples of ``2**S``.
          num_scales: only the finest ``n`` scales (default all ``S``): the training loss of
            ``spec.train_scales`` (a model without fusion, where x(n) is then coded uniformly).

        Returns:
          dict with ``values``/``symbols`` (lists over scales 0..n) and ``params``: raw
          mixture parameters ``[B, H/2^s, W/2^s, P]`` predicting ``x(s)``, for s = 0..n-1.
        """
        s = self.spec
        n = s.scales if num_scales is None else num_scales
        if not 1 <= n <= s.scales or (n < s.scales and s.fuse_features):
            raise ValueError(f"num_scales must be 1..{s.scales}, and below {s.scales} only without feature "
                             f"fusion, got {num_scales}")
        values, symbols = self.representations(x, n)
        params: list[jax.Array | None] = [None] * n
        coarser = None
        for scale in range(n, 0, -1):
            coarser, params[scale - 1] = self.predict(values[scale], coarser, scale)
            if s.subpixel_steps > 1:
                params[scale - 1] = self.subpixel_params(coarser, params[scale - 1], values[scale - 1], scale)
        return {"values": values, "symbols": symbols, "params": params}


def mixture_params(spec: L3CSpec, raw: jax.Array, scale: int, channels_first: bool = False) -> lm.MixtureParams:
    """Mixture parameters for ``x(scale)`` from the raw output of ``D(scale+1)`` (``[B, h, w, P]``,
    or ``[P, B, h, w]`` with ``channels_first``)."""
    c = spec.channels(scale)
    reference = c == 3 and spec.reference_rgb_mixture
    return lm.split_mixture_params(
        raw, c, spec.mixtures, autoregressive=(c == 3), channels_first=channels_first,
        log_scale_min=RGB_LOG_SCALES_MIN_REFERENCE if reference else lm.LOG_SCALES_MIN,
        coeffs="sigmoid" if reference else "tanh")


#: The reference's RGB log-scale floor (-7 on [0, 255]) on jaxcomp's [-1, 1] grid of the 256 levels.
RGB_LOG_SCALES_MIN_REFERENCE = lm.LOG_SCALES_MIN - math.log(127.5)


def bits_per_scale(spec: L3CSpec, out: dict[str, Any]) -> list[jax.Array]:
    """Bits of each representation ``x(0..n)`` per example, each ``float32 [B]`` (``n = len(out["params"])``,
    ``S`` for the full model; ``x(n)`` coded uniformly; with ``spec.known_step0()`` the step-0
    sub-pixels of each scale, which are x(s+1), cost nothing).

    Computed channels-first (``[P, B, H, W]`` parameters, see ``lm.mixture_log_prob``): the
    same numbers as in the NHWC layout (a test checks values and gradients), but in NHWC the
    minor dimension is the K=10 mixture components, which XLA's CPU backend vectorises
    poorly. For a cpu_rgb batch (16 x 64x64) the mixture part of loss + gradient went from
    0.87 to 0.49 s, the whole training step (``experiments/bench_train.py``) from 2.17-2.22 to
    2.07-2.09 s, both measured while a training run shared the 2 cores.
    """
    bits = []
    n = len(out["params"])  # spec.scales, or fewer for a loss on the finest scales (spec.train_scales)
    for scale in range(n):
        p = mixture_params(spec, jnp.moveaxis(out["params"][scale], -1, 0), scale, channels_first=True)
        x = jnp.moveaxis(out["values"][scale], -1, 0)
        logp = lm.mixture_log_prob(p, x, spec.num_levels(scale), channels_first=True)  # [C, B, H, W]
        if spec.known_step0():  # step 0's sub-pixels are x(scale+1): known, never coded
            coded = subpixel_steps_map(x.shape[2], x.shape[3], spec.subpixel_steps) != 0
            logp = jnp.where(jnp.asarray(coded), logp, 0.0)
        bits.append(-jnp.sum(logp, axis=(0, 2, 3)) / np.log(2.0))
    top = out["values"][n]
    n_top = np.prod(top.shape[1:])
    bits.append(jnp.full((top.shape[0],), n_top * np.log2(spec.num_levels(n)), jnp.float32))
    return bits


def bpsp_metrics(spec: L3CSpec, out: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, jax.Array]:
    """Per-example ``bpsp`` and ``bpsp_s{s}`` (bits of scale s per subpixel of the image), ``[B]``."""
    subpixels = float(np.prod(image_shape[1:]))
    bits = bits_per_scale(spec, out)
    metrics = {f"bpsp_s{s}": b / subpixels for s, b in enumerate(bits)}
    metrics["bpsp"] = sum(bits) / subpixels
    return metrics


class L3CTask:
    """The trainer's task for L3C: pure init / train_step / eval_step."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.spec = spec_from_config(config.model)
        self.model = L3C(self.spec)
        self.tx, self.schedule = make_optimizer(config.optimizer)

    def check_batch(self, image_shape: tuple[int, ...]) -> None:
        m = 2 ** self.spec.scales
        if len(image_shape) != 4 or image_shape[-1] != 3:
            raise ValueError(f"L3C expects images [B, H, W, 3], got shape {image_shape}")
        if image_shape[1] % m or image_shape[2] % m:
            raise ValueError(f"L3C with {self.spec.scales} scales needs H and W divisible by {m}, "
                             f"got {image_shape[1]}x{image_shape[2]}")

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
        self.check_batch(batch["image"].shape)
        params = self.model.init(rng, batch["image"][:1])["params"]
        return TrainState.create(params, self.tx)

    def loss(self, params: Any, image: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Mean bpsp of the finest ``spec.loss_scales()`` scales (the coarsest of them uniform) and
        their metrics; ``eval_step`` always measures the whole model (what the coder spends)."""
        n = self.spec.loss_scales()
        out = self.model.apply({"params": params}, image, None if n == self.spec.scales else n)
        metrics = {k: jnp.mean(v) for k, v in bpsp_metrics(self.spec, out, image.shape).items()}
        return metrics["bpsp"], metrics

    def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                   ) -> tuple[TrainState, dict[str, jax.Array]]:
        del rng  # L3C training is deterministic given the batch
        (_, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch["image"])
        metrics["learning_rate"] = self.schedule(state.step)
        return state.apply_gradients(grads), metrics

    def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        out = self.model.apply({"params": state.params}, batch["image"])
        return bpsp_metrics(self.spec, out, batch["image"].shape)


# --------------------------------------------------------------------------------------
# Entropy coding: real bitstreams (host side, built on jaxcomp.coding)
# --------------------------------------------------------------------------------------


class _CodecFunctions:
    """The jitted functions shared by encoder and decoder, functions of (params, inputs) only.

    One per :class:`L3CSpec` (:func:`_codec_functions`), so codecs of the same architecture
    (another checkpoint, tile size or window; a codec loaded again by each command) reuse
    the compiled code instead of compiling it again. The coder's four are
    :class:`jaxcomp.xla.CachedFunction`: with a cache folder on (the ``jaxcomp`` command's
    default), a later process loads their executables for a bucket it has not met yet without
    tracing them.
    """

    def __init__(self, spec: L3CSpec):
        self.spec, self.model = spec, L3C(spec)
        key = repr(spec)  # with jaxcomp's source (in the environment's digest): what traces them
        self.symbols = CachedFunction(self._symbols_fn, name="l3c.symbols", key=key)
        self.decode_scale = CachedFunction(self._decode_scale_fn, (3,), name="l3c.decode_scale", key=key)
        self.scale_pmf = CachedFunction(self._scale_pmf_fn, (2, 3, 4), name="l3c.scale_pmf", key=key)
        self.step_raw = CachedFunction(self._step_raw_fn, (4, 5), name="l3c.step_raw", key=key)
        self.forward = jax.jit(lambda params, x: self.model.apply({"params": params}, x))

    def _symbols_fn(self, params, x):
        return self.model.apply({"params": params}, x, method=L3C.representations)[1]

    def _values(self, symbols: jax.Array, scale: int) -> jax.Array:
        if self.spec.num_levels(scale) == RGB_LEVELS:
            return symbols.astype(jnp.float32) / 127.5 - 1.0
        return uniform_levels(self.spec.levels)[symbols]

    def _decode_scale_fn(self, params, symbols, coarser, scale):
        z = self._values(symbols, scale)
        return self.model.apply({"params": params}, z, coarser, scale, method=L3C.predict)

    def _step_raw_fn(self, params, f, base, target, scale, step):
        """Raw mixture parameters ``[1, N, P]`` of the ``N`` sub-pixels of x(scale-1) coded in
        ``step`` (row-major, :func:`subpixel_index`), from D(scale)'s ``(f, base)`` and the symbols
        ``target int32 [1, H, W, C]`` of x(scale-1) (read only where coded in earlier steps)."""
        values = self._values(target, scale - 1)
        raw = self.model.apply({"params": params}, f, base, values, scale, step, method=L3C.predict_step)
        index = subpixel_index(raw.shape[1], raw.shape[2], self.spec.subpixel_steps, step)
        return raw.reshape(-1, raw.shape[-1])[index][None]

    def _scale_pmf_fn(self, raw, symbols, scale, channel, window):
        """PMFs ``[N, levels]`` of x(scale) (one channel of RGB, all channels otherwise), or
        with a window, ``([N, window + 1], lo [N])`` (see :func:`lm.mixture_pmf_window`)."""
        p = mixture_params(self.spec, raw, scale)
        levels = self.spec.num_levels(scale)
        values = self._values(symbols, scale) if p.coeffs is not None else None
        ch = channel if p.coeffs is not None else None
        if window:
            pmf, lo = lm.mixture_pmf_window(p, values, levels, window, channel=ch)
            return pmf.reshape(-1, window + 1), lo.reshape(-1)
        return lm.mixture_pmf(p, values, levels, channel=ch).reshape(-1, levels), None


@functools.lru_cache(maxsize=8)
def _codec_functions(spec: L3CSpec) -> _CodecFunctions:
    return _CodecFunctions(spec)


# --------------------------------------------------------------------------------------
# Tile-shape buckets: the coder computes every tile at one of a few fixed shapes
# --------------------------------------------------------------------------------------


# How a stream names the ladder of :func:`bucket_sides`; a change to that function needs a new name
# (streams name the rule they were written with and must keep decoding).
DEFAULT_BUCKETS = "ladder1"


def bucket_sides(tile: int, scales: int) -> tuple[int, ...]:
    """The default ladder of sides (pixels) the coder computes tiles of at most ``tile`` px at.

    With ``m = 2**scales``: the powers-of-two multiples of ``m`` below ``tile / 2``, then
    ``tile / 2`` and steps of ``tile / 8`` up to ``tile`` (all rounded up to multiples of
    ``m``). For ``tile=512`` and 3 scales: 8, 16, 32, 64, 128, 256, 320, 384, 448, 512. Tiles
    of an image larger than ``tile`` are cut evenly (:func:`_spans`), so their sides are at least
    ``tile / 2 - m`` (up to ~32 tiles a side): a photo larger than the tile both ways meets at
    most 5 x 5 buckets (256-512), small images one per side class. Padding a side to its bucket
    costs compute (at most 25% per side above ``tile / 2``), never bits.
    """
    m = 2**scales
    up = lambda v: -(-v // m) * m  # noqa: E731
    half, step = min(up(tile // 2), tile), max(m, up(tile // 8))
    sides = {tile, half} | set(range(half, tile, step))
    side = m
    while side < half:
        sides.add(side)
        side *= 2
    return tuple(sorted(sides))


def check_buckets(buckets: Any, tile: int, scales: int) -> tuple[int, ...]:
    """``buckets`` as a sorted tuple of ints, or ``ValueError`` naming the problem: positive
    multiples of ``2**scales``, strictly increasing, the largest equal to ``tile``."""
    m = 2**scales
    try:
        sides = tuple(int(b) for b in buckets)
        ok = all(s == b for s, b in zip(sides, buckets, strict=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"buckets must be a list of tile sides in pixels, got {buckets!r}") from e
    if not ok or not sides or len(sides) > 64 or any(s <= 0 or s % m for s in sides):
        raise ValueError(f"buckets must be 1 to 64 positive multiples of {m} (2**scales), got {buckets!r}")
    if list(sides) != sorted(set(sides)) or sides[-1] != tile:
        raise ValueError(f"buckets must increase strictly and end at the tile size {tile}, got {list(sides)}")
    return sides


def _spans(n: int, tile: int, m: int, even: bool) -> list[tuple[int, int]]:
    """``(start, length)`` of the tiles along a side of ``n`` pixels: ``tile`` each and the rest
    (``even=False``, streams without buckets), or ``ceil(n / tile)`` tiles of equal length rounded
    up to a multiple of ``m`` (the last one shorter)."""
    size = tile
    if even:
        per = -(-n // -(-n // tile))  # ceil(n / number of tiles)
        size = min(tile, -(-per // m) * m)
    return [(y, min(size, n - y)) for y in range(0, n, size)]


class _Cropped:
    """The rows of a (still computing) jitted output that belong to the tile: ``np.asarray`` of it
    gives ``array[rows]`` with the rows grouped by position (``[positions * k, ...]`` with ``k``
    symbols per position, e.g. the latent channels), so the caller's coding can overlap the device."""

    def __init__(self, array: Any, keep: np.ndarray):
        self.array, self.keep = array, keep

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.array)
        a = a.reshape((len(self.keep), -1) + a.shape[1:])[self.keep].reshape((-1,) + a.shape[1:])
        return a if dtype is None else a.astype(dtype)


class _StepRaw:
    """A sub-pixel step's raw parameters at the bucket (``[1, N_bucket, P]``) and which of its
    positions lie in the tile (``keep``, bool ``[N_bucket]``)."""

    def __init__(self, array: Any, keep: np.ndarray):
        self.array, self.keep = array, keep


class _Bucketed:
    """The coder's jitted functions, called at the tile's bucket shape instead of its own.

    Same signatures as :class:`_CodecFunctions`'s, on the tile's (padded to ``2**scales``)
    arrays: inputs are padded to the bucket, outputs cropped back, so :meth:`L3CCodec._encode_tile`
    and ``_decode_tile`` code exactly the tile's symbols and never the bucket's padding.
    Encoder and decoder fill the bucket the same way from what both know: the image by edge
    replication before the encoder's pyramid/encoders; each decoded ``x(s)`` by edge replication
    before ``D(s)`` (so the decoder never needs the encoder's values there); channel and sub-pixel
    inputs by zeros (read only at padded positions, whose outputs are dropped). Features passed
    from one scale to the next stay at the bucket's shape. ``sides=None``: no buckets, every
    tile at its own shape (streams written before buckets existed).
    """

    def __init__(self, fns: _CodecFunctions, sides: tuple[int, ...] | None):
        self.fns, self.sides = fns, sides

    def side(self, n: int) -> int:
        """The side a tile side of ``n`` px (a multiple of ``2**scales``) is computed at."""
        if self.sides is None:
            return n
        return next((s for s in self.sides if s >= n), n)

    def _bucket(self, h: int, w: int, scale: int) -> tuple[int, int]:
        """The bucket of ``x(scale)`` of ``h x w`` symbols."""
        return self.side(h << scale) >> scale, self.side(w << scale) >> scale

    @staticmethod
    def _pad(a: Any, h: int, w: int, mode: str) -> np.ndarray:
        a = np.asarray(a)
        pad = ((0, 0), (0, h - a.shape[1]), (0, w - a.shape[2])) + ((0, 0),) * (a.ndim - 3)
        return np.pad(a, pad, mode=mode)

    def symbols(self, params, x):
        _, h, w, _ = x.shape
        bh, bw = self._bucket(h, w, 0)
        if (bh, bw) == (h, w):
            return self.fns.symbols(params, x)
        out = self.fns.symbols(params, self._pad(x, bh, bw, "edge"))
        return [np.asarray(v)[:, :-(-h // 2**s), :-(-w // 2**s)] for s, v in enumerate(out)]

    def decode_scale(self, params, symbols, coarser, scale):
        _, h, w = symbols.shape[:3]
        bh, bw = self._bucket(h, w, scale)
        if (bh, bw) != (h, w):
            symbols = self._pad(symbols, bh, bw, "edge")
        return self.fns.decode_scale(params, symbols, coarser, scale)

    def step_raw(self, params, f, base, target, scale, step):
        _, h, w = target.shape[:3]
        bh, bw = f.shape[1:3]
        if (bh, bw) == (h, w):
            return self.fns.step_raw(params, f, base, target, scale, step)
        raw = self.fns.step_raw(params, f, base, self._pad(target, bh, bw, "constant"), scale, step)
        index = subpixel_index(bh, bw, self.fns.spec.subpixel_steps, step)
        return _StepRaw(raw, (index // bw < h) & (index % bw < w))

    def scale_pmf(self, raw, symbols, scale, channel, window):
        if isinstance(raw, _StepRaw):  # one sub-pixel step's positions: [1, N, C] of the tile's
            keep = raw.keep
            padded = np.zeros((1, len(keep)) + symbols.shape[2:], np.asarray(symbols).dtype)
            padded[0, keep] = np.asarray(symbols)[0]
            pmf, lo = self.fns.scale_pmf(raw.array, padded, scale, channel, window)
        elif np.ndim(symbols) == 3:  # one sub-pixel step's positions [1, N, C] of a tile at its bucket already
            return self.fns.scale_pmf(raw, symbols, scale, channel, window)
        else:
            _, h, w = symbols.shape[:3]
            bh, bw = raw.shape[1:3]
            if (bh, bw) == (h, w):
                return self.fns.scale_pmf(raw, symbols, scale, channel, window)
            pmf, lo = self.fns.scale_pmf(raw, self._pad(symbols, bh, bw, "constant"), scale, channel, window)
            keep = ((np.arange(bh) < h)[:, None] & (np.arange(bw) < w)[None, :]).reshape(-1)
        return _Cropped(pmf, keep), None if lo is None else _Cropped(lo, keep)


def top_pyramid(top: np.ndarray, top_levels: int) -> list[np.ndarray]:
    """``[x(S), x(S+1), ..., x(S+top_levels)]`` from the top's symbols ``x(S)`` (``[1, h, w, C]``):
    each level the top-left pixel of every 2x2 block of the one below (sides halved, rounding up),
    which is that level's sub-pixel step 0."""
    levels = [top]
    for _ in range(top_levels):
        levels.append(levels[-1][:, ::2, ::2])
    return levels


def tile_top_levels(h: int, w: int, scales: int, top_levels: int, min_side: int) -> int:
    """How many levels of the top's pyramid a tile of ``h x w`` px codes through D(S): the first
    ``r <= top_levels`` levels whose coded map, x(S+r-1) (the top x(S) of the tile padded to
    ``2**scales``, its sides halved ``r - 1`` times rounding up, as :func:`top_pyramid` does), is at
    least ``min_side`` px on its shorter side."""
    m = 2**scales
    top = np.empty((1, (h + (-h % m)) >> scales, (w + (-w % m)) >> scales, 0), np.int8)  # x(S)'s shape only
    levels = 0
    for coded in top_pyramid(top, top_levels)[:-1]:  # level r codes x(S+r-1); one halving rule, top_pyramid's
        if min(coded.shape[1:3]) < min_side:
            break
        levels += 1
    return levels


def check_top_min_side(top_min_side: Any) -> int:
    """``top_min_side`` (``None``: :data:`DEFAULT_TOP_MIN_SIDE`), or ``ValueError`` naming the problem."""
    if top_min_side is None:
        return DEFAULT_TOP_MIN_SIDE
    if not is_whole(top_min_side) \
            or not 1 <= top_min_side <= 1 << 14:
        raise ValueError(f"top_min_side must be an int in 1..{1 << 14}, got {top_min_side!r}")
    return int(top_min_side)


def check_top_levels(spec: L3CSpec, top_levels: Any) -> int:
    """``top_levels`` for a codec of ``spec`` (``None``: :data:`DEFAULT_TOP_LEVELS` where the model
    can, else 0), or ``ValueError`` naming the problem."""
    if top_levels is None:
        return DEFAULT_TOP_LEVELS if spec.known_step0() else 0
    if not is_whole(top_levels) \
            or not 0 <= top_levels <= MAX_TOP_LEVELS:
        raise ValueError(f"top_levels must be an int in 0..{MAX_TOP_LEVELS}, got {top_levels!r}")
    if top_levels and not spec.known_step0():
        raise ValueError("top_levels > 0 needs a model whose step 0 is the coarser scale (model.rgb_pyramid="
                         f"'subsample'); this one has rgb_pyramid={spec.rgb_pyramid!r}, "
                         f"representation={spec.representation!r}")
    return int(top_levels)


@common.in_fixed_numerics
class L3CCodec:
    """Lossless compression of ``uint8`` images with a trained L3C model.

    ``compress(image) -> bytes`` and ``decompress(bytes) -> image``. Images are cut into
    tiles of at most ``tile x tile`` pixels that are coded independently (memory stays
    bounded for any image size), of equal size along each side. Each tile is padded by edge
    replication to a multiple of ``2**scales`` (those pixels are coded; very small images work
    the same way) and the model runs on it padded further to a *bucket*: each side rounded up
    to the next of ``buckets`` (default :func:`bucket_sides`: 10 sides for ``tile=512``), so a
    process compiles the coder once per bucket, not once per image size, and the persistent
    compilation cache (:mod:`jaxcomp.xla`) serves buckets compiled by earlier processes. The
    bucket's padding is never coded (:class:`_Bucketed`). ``buckets=None`` runs every tile at
    its own shape (the tiling of streams written before buckets existed, which decode so).
    ``window`` > 0 codes each 256-level subpixel with a PMF over ``window`` levels around the
    mixture's mean plus an escape bin (:func:`jaxcomp.entropy.mixture_pmf_window`); 0 (or 256,
    or any window not below a scale's number of levels) codes with PMFs over all levels; above 256
    is refused. The stream records its window, so any codec decodes it.
    ``top_levels`` (default :data:`DEFAULT_TOP_LEVELS` for models with the subsampled RGB pyramid,
    else 0; :func:`check_top_levels`): x(S) is coded from its own subsample ``x(S)[::2, ::2]``, and so
    on for that many levels, by D(S) without coarser features; only ``x(S + top_levels)`` is coded
    uniformly (0: x(S) uniformly, the paper's code). A tile stops at the first level whose coded
    map is below ``top_min_side`` px on its shorter side (default :data:`DEFAULT_TOP_MIN_SIDE`;
    :func:`tile_top_levels`), so small images keep the uniform code where it is cheaper. The stream
    records them with the fewest keys: ``top_levels`` alone when every tile codes the same number of
    levels (none when that is 0), ``top_min_side`` too only when tiles differ.

    Bit-exactness: the decoder computes every PMF with the jitted functions below, on
    inputs rebuilt from decoded symbols; the encoder calls the *same* functions on the
    *same* inputs (not the fused training forward pass), so both see identical floats.
    The container stores a CRC of the pixels, and a decode that does not reproduce them
    (e.g. a model run on a platform with different numerics) raises instead of returning
    a wrong image.
    """

    codec_name = "l3c"

    def __init__(self, spec: L3CSpec, params: Any, tile: int = 512, window: int = DEFAULT_WINDOW,
                 buckets: Any = "auto", top_levels: int | None = None, top_min_side: int | None = None):
        from jaxcomp.coding import fingerprint

        m = 2**spec.scales
        tile = common.check_tile(tile, m, MAX_TILE)
        if not is_whole(window) or not 0 <= window <= RGB_LEVELS:
            raise ValueError(f"window must be an integer in 0..{RGB_LEVELS} (0 or {RGB_LEVELS}: PMFs over all "
                             f"levels), got {window!r}")
        self.spec, self.tile, self.window = spec, int(tile), window
        self.top_levels = check_top_levels(spec, top_levels)
        self.top_min_side = check_top_min_side(top_min_side)
        # the tile sides the coder computes at (see bucket_sides); None: each tile at its own shape
        if isinstance(buckets, str) and buckets != "auto":
            raise ValueError(f"buckets must be 'auto', None or a list of tile sides, got {buckets!r}")
        self.buckets = (bucket_sides(self.tile, spec.scales) if isinstance(buckets, str)
                        else None if buckets is None else check_buckets(buckets, self.tile, spec.scales))
        self.params = jax.tree.map(jnp.asarray, params)
        fns = _codec_functions(spec)  # compiled once per architecture, for every codec of it
        self.model = fns.model
        self.fingerprint = fingerprint(self.params, spec.architecture())
        self.numerics = numerics()
        self._symbols, self._decode_scale, self._scale_pmf = fns.symbols, fns.decode_scale, fns.scale_pmf
        self._step_raw = fns.step_raw  # sub-pixel steps (model.subpixel_steps > 1)
        self._forward = fns.forward  # estimates only
        self._fns = fns
        self._use_buckets(self.buckets)

    def _use_buckets(self, sides: tuple[int, ...] | None) -> None:
        """Routes the per-tile coding through :class:`_Bucketed` with ``sides`` (None: no buckets)."""
        b = _Bucketed(self._fns, sides)
        self._symbols, self._decode_scale, self._scale_pmf, self._step_raw = (
            b.symbols, b.decode_scale, b.scale_pmf, b.step_raw)

    def _with_buckets(self, sides: tuple[int, ...] | None) -> L3CCodec:
        """This codec, computing at the buckets ``sides`` (a stream's) instead of its own."""
        import copy

        if sides == self.buckets:
            return self
        other = copy.copy(self)
        other.buckets = sides
        other._use_buckets(sides)
        return other

    def _window(self, scale: int, window: int) -> int:
        """The window a stream coded with ``window`` uses at ``scale`` (0: all levels)."""
        return window if 0 < window < self.spec.num_levels(scale) else 0

    def _pmfs(self, raw, symbols: np.ndarray, scale: int, channel: int, window: int):
        pmf, lo = self._scale_pmf(raw, jax.device_put(symbols), scale, channel, self._window(scale, window))
        return np.asarray(pmf), None if lo is None else np.asarray(lo)

    def _encode(self, symbols: np.ndarray, pmf: np.ndarray, lo: np.ndarray | None, scale: int,
                with_bits: bool = True) -> tuple[bytes, np.ndarray | None]:
        """One payload and (``with_bits``) the per-symbol information content ``float64 [N]`` in bits."""
        from jaxcomp.coding import encode_categorical, encode_windowed

        symbols = symbols.reshape(-1)
        if lo is None:
            data = encode_categorical(symbols, pmf).tobytes()
        else:
            data = encode_windowed(symbols, pmf, lo, self.spec.num_levels(scale)).tobytes()
        return data, self._symbol_bits(symbols, pmf, lo, scale) if with_bits else None

    def _symbol_bits(self, symbols: np.ndarray, pmf: np.ndarray, lo: np.ndarray | None, scale: int) -> np.ndarray:
        """The information content ``float64 [N]`` (bits) of ``symbols`` under the coding PMFs."""
        from jaxcomp.coding import ideal_bits_windowed, information_content

        symbols = symbols.reshape(-1)
        if lo is None:
            return information_content(symbols, pmf)
        return ideal_bits_windowed(symbols, pmf, lo, self.spec.num_levels(scale))

    def _decode(self, words: np.ndarray, pmf: np.ndarray, lo: np.ndarray | None, scale: int) -> np.ndarray:
        from jaxcomp.coding import decode_categorical, decode_windowed

        if lo is None:
            return decode_categorical(words, pmf)
        return decode_windowed(words, pmf, lo, self.spec.num_levels(scale))

    # ---- tiles ------------------------------------------------------------------------

    def _tiles(self, h: int, w: int, tile: int | None = None, even: bool | None = None
               ) -> list[tuple[int, int, int, int]]:
        """``(y, x, height, width)`` of the tiles of an ``h x w`` image in stream order. ``even``
        (default: this codec has buckets) cuts each side into equal tiles (see :func:`_spans`)."""
        tile = tile or self.tile
        even = self.buckets is not None if even is None else even
        m = 2**self.spec.scales
        return [(y, x, th, tw) for y, th in _spans(h, tile, m, even) for x, tw in _spans(w, tile, m, even)]

    def _pad(self, tile: np.ndarray) -> np.ndarray:
        m = 2**self.spec.scales
        h, w = tile.shape[:2]
        return np.pad(tile, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")

    @staticmethod
    def _partial(symbols: np.ndarray, channel: int) -> np.ndarray:
        """RGB symbols with the channels from ``channel`` on zeroed (what the decoder has)."""
        out = np.zeros_like(symbols)
        out[..., :channel] = symbols[..., :channel]
        return out

    def _subpixel_steps(self, shape: tuple[int, ...]) -> list[tuple[int, np.ndarray | None]]:
        """``(step, flat indices of its positions)`` for x(s) of ``shape [1, H, W, C]``, in coding
        order; ``[(0, None)]`` (every position at once) without sub-pixel steps; without step 0 where
        it is x(s+1) (``spec.known_step0()``: the decoder copies it, nothing is coded)."""
        steps = self.spec.subpixel_steps
        if steps == 1:
            return [(0, None)]
        flat = self._steps_map(shape).reshape(-1)
        return [(k, np.flatnonzero(flat == k)) for k in self.spec.coded_steps()]

    def _steps_map(self, shape: tuple[int, ...]) -> np.ndarray:
        """:func:`subpixel_steps_map` of x(s) of ``shape [1, H, W, C]``; odd ``H`` or ``W`` (levels
        of the top's pyramid, :meth:`_levels`) crop the map of the next even grid."""
        h, w = shape[1], shape[2]
        return subpixel_steps_map(h + h % 2, w + w % 2, self.spec.subpixel_steps)[:h, :w]

    def _levels(self, top_levels: int) -> list[tuple[int, int]]:
        """``(level, scale)`` in coding order: the level whose symbols are coded from those one level
        up, and the decoder ``D(scale)`` that codes them. Levels ``S+1 .. S+top_levels`` are the top's
        own pyramid (``x(l) = x(l-1)[::2, ::2]``), all coded by ``D(S)`` without coarser features."""
        s = self.spec
        return [(level, min(level, s.scales)) for level in range(s.scales + top_levels, 0, -1)]

    def _tile_symbols(self, tile: np.ndarray, top_levels: int) -> list[np.ndarray]:
        """The symbols ``int32 [1, h_l, w_l, C]`` of every level ``l = 0 .. S + top_levels`` of a tile
        (:meth:`_levels`); the top's pyramid halves each side, rounding up."""
        symbols = [np.asarray(v) for v in self._symbols(self.params, jax.device_put(self._pad(tile)[None]))]
        return symbols[:-1] + top_pyramid(symbols[-1], top_levels)

    def _level_shapes(self, h: int, w: int, top_levels: int) -> list[tuple[int, int, int, int]]:
        """The shapes ``[1, h_l, w_l, C]`` of :meth:`_tile_symbols` for a tile of ``h x w`` px."""
        s = self.spec
        m = 2**s.scales
        ph, pw = h + (-h % m), w + (-w % m)
        shapes = [(1, ph >> lv, pw >> lv, s.channels(lv)) for lv in range(s.scales + 1)]
        top = np.empty(shapes[-1], np.int8)  # the shapes of top_pyramid's levels, from its own rule
        return shapes[:-1] + [level.shape for level in top_pyramid(top, top_levels)]

    def _top_levels_of(self, h: int, w: int, top_levels: int, min_side: int) -> int:
        """The top levels a tile of ``h x w`` px codes (:func:`tile_top_levels`)."""
        return tile_top_levels(h, w, self.spec.scales, top_levels, min_side)

    def _coarser_in(self, level: int, coarser: Any) -> Any:
        """What D(scale) gets as coarser features when coding ``level - 1`` (:meth:`_levels`): those
        of the level above, except for D(S) and the top's own levels, which get none."""
        return coarser if level < self.spec.scales else None

    def _pmf_jobs(self, symbols: list[np.ndarray], levels: list[tuple[int, int]], window: int
                  ) -> Iterator[tuple[int, np.ndarray, tuple[Any, Any], tuple[str, tuple[int, ...], Any]]]:
        """Dispatches each payload's PMFs for ``levels`` (:meth:`_levels`), given every symbol (the
        encoder; JAX returns before computing): yields ``(scale, part, (pmf, lo), where)``, the scale
        whose levels the PMFs are over, the symbols coded, and where they lie (for bit maps)."""
        s = self.spec
        coarser = None
        for level, scale in levels:
            coarser, raw = self._decode_scale(self.params, jax.device_put(symbols[level]),
                                              self._coarser_in(level, coarser), scale)
            target = symbols[level - 1]
            rgb = s.channels(scale - 1) == 3
            steps_map = self._steps_map(target.shape)[None, ..., None] if s.subpixel_steps > 1 else None
            for step, index in self._subpixel_steps(target.shape):
                part, raw_k = target, raw
                if index is not None:  # the decoder has the sub-pixels of the steps before, zeros elsewhere
                    known = np.where(steps_map < step, target, 0)
                    raw_k = self._step_raw(self.params, coarser, raw, jax.device_put(known), scale, step)
                    part = target.reshape(-1, target.shape[-1])[index][None]  # [1, N, C]
                for c in range(3 if rgb else 1):
                    inputs = jax.device_put(self._partial(part, c) if rgb else part)
                    pmf_lo = self._scale_pmf(raw_k, inputs, scale - 1, c, self._window(scale - 1, window))
                    where = (f"x({level - 1}) {'RGB'[c]}" if rgb else f"x({level - 1})", target.shape, index)
                    yield scale - 1, part[..., c] if rgb else part, pmf_lo, where

    def _encode_tile(self, tile: np.ndarray, bit_maps: dict | None = None,
                     with_bits: bool = True) -> tuple[list[bytes], float]:
        from jaxcomp.coding import encode_uniform

        s = self.spec
        top_levels = self._top_levels_of(tile.shape[0], tile.shape[1], self.top_levels, self.top_min_side)
        symbols = self._tile_symbols(tile, top_levels)
        payloads = [encode_uniform(symbols[-1], s.num_levels(s.scales)).tobytes()]
        bits = len(payloads[0]) * 8.0

        def code(scale, part, pmf_lo, where):
            nonlocal bits
            pmf, lo = pmf_lo
            data, symbol_bits = self._encode(part, np.asarray(pmf), None if lo is None else np.asarray(lo), scale,
                                             with_bits or bit_maps is not None)
            payloads.append(data)
            if symbol_bits is not None:
                bits += float(symbol_bits.sum())
                if bit_maps is not None:
                    self._add_bit_map(bit_maps, symbol_bits.astype(np.float32).reshape(part.shape[1:]), *where)

        # The encoder knows every symbol, so the next payload's PMFs compute while this one is coded.
        pending: collections.deque = collections.deque()
        for job in self._pmf_jobs(symbols, self._levels(top_levels), self.window):
            pending.append(job)
            if len(pending) == 2:
                code(*pending.popleft())
        while pending:
            code(*pending.popleft())
        return payloads, bits

    def _decode_tile(self, payloads: list[bytes], h: int, w: int, window: int, top_levels: int) -> np.ndarray:
        from jaxcomp.coding import decode_uniform

        s = self.spec
        words = [np.frombuffer(p, dtype=np.uint32) if len(p) % 4 == 0 else None for p in payloads]
        if any(x is None for x in words):
            from jaxcomp.coding import BitstreamError
            raise BitstreamError("bitstream payload has a length that is not a multiple of 4 bytes")
        shapes = self._level_shapes(h, w, top_levels)
        symbols = decode_uniform(words[0], int(np.prod(shapes[-1])), s.num_levels(s.scales)).reshape(shapes[-1])
        k = 1
        coarser = None
        for level, scale in self._levels(top_levels):
            coarser, raw = self._decode_scale(self.params, jax.device_put(symbols), self._coarser_in(level, coarser),
                                              scale)
            shape = shapes[level - 1]
            target = np.zeros(shape, np.int32)
            if s.known_step0():  # step 0's sub-pixels (the top-left of each 2x2 block) are x(level)
                target[:, ::2, ::2] = symbols
            rgb = shape[-1] == 3
            for step, index in self._subpixel_steps(shape):
                part, raw_k = target, raw
                if index is not None:  # x(level-1) so far: the steps before decoded, zeros elsewhere
                    raw_k = self._step_raw(self.params, coarser, raw, jax.device_put(target), scale, step)
                    part = np.zeros((1, len(index), shape[-1]), np.int32)
                for c in range(3 if rgb else 1):
                    pmf, lo = self._pmfs(raw_k, part, scale - 1, c, window)
                    decoded = self._decode(words[k], pmf, lo, scale - 1)
                    if rgb:
                        part[..., c] = decoded.reshape(part.shape[:-1])
                    else:
                        part = decoded.reshape(part.shape)
                    k += 1
                if index is None:
                    target = part
                else:
                    target.reshape(-1, shape[-1])[index] = part[0]
            symbols = target
        return symbols[0, :h, :w].astype(np.uint8)

    def payload_names(self, top_levels: int | None = None) -> list[str]:
        """What each payload of a tile holds, in stream order (coarsest first; with sub-pixel
        steps, each scale step by step, e.g. ``"x(0) step1 G"``; with ``top_levels`` (default this
        codec's, which a tile with a small top reduces: :func:`tile_top_levels`), the top's pyramid
        first: ``"x(5) uniform"``, ``"x(4) step1 R"``, ...)."""
        s = self.spec
        top = self.top_levels if top_levels is None else check_top_levels(s, top_levels)
        names = [f"x({s.scales + top}) uniform"]
        steps = [""] if s.subpixel_steps == 1 else [f" step{k}" for k in s.coded_steps()]
        for level, scale in self._levels(top):
            for step in steps:
                names += ([f"x({level - 1}){step} {c}" for c in "RGB"] if s.channels(scale - 1) == 3
                          else [f"x({level - 1}){step}"])
        return names

    @staticmethod
    def _add_bit_map(maps: dict, bits: np.ndarray, name: str, shape: tuple[int, ...], index: np.ndarray | None):
        """Puts the per-symbol bits of one payload (``[H, W]``, ``[H, W, C]``, or ``[N]`` / ``[N, C]``
        at the flat positions ``index`` of a sub-pixel step) into the map of its scale and channel."""
        if index is None:
            maps[name] = bits
            return
        full = maps.setdefault(name, np.zeros(shape[1:3] + bits.shape[1:], np.float32))
        full.reshape((-1,) + bits.shape[1:])[index] = bits

    def payloads_per_tile(self, top_levels: int | None = None) -> int:
        """How many payloads a tile's stream holds (:meth:`payload_names`)."""
        return len(self.payload_names(top_levels))

    def bit_maps(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """Per-symbol costs ``-log2 p`` under the coding PMFs, by scale and channel (``"x(0) R"``,
        ``"x(1)"``: the payload names without sub-pixel steps; with them, each map gathers the
        steps' payloads).

        Each map is ``float32 [h_s, w_s]`` (RGB channels) or ``[h_s, w_s, C]`` (latents) of
        the padded image (with ``top_levels``, also ``"x(S) R"`` ... ``"x(S+r-1) B"`` of the top's
        own levels, ``r`` = :func:`tile_top_levels` of the image); ``image`` must fit in one tile.
        """
        image = check_image(image, "L3C")
        rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
        if max(rgb.shape[:2]) > self.tile:
            raise ValueError(f"bit_maps works on one tile (at most {self.tile}px a side), got {rgb.shape[:2]}")
        maps: dict[str, np.ndarray] = {}
        self._encode_tile(rgb, maps)
        return maps

    # ---- public API -------------------------------------------------------------------

    def compress(self, image: np.ndarray, return_bits: bool = False) -> bytes | tuple[bytes, float]:
        """``uint8 [H, W, 3]`` (or ``[H, W]`` grayscale) -> bitstream ``bytes``.

        With ``return_bits``, also returns the ideal information content (bits) of the coded
        symbols under the model's PMFs, for checking the coder's overhead.
        """
        import zlib

        from jaxcomp.coding import MAX_PAYLOADS, pack

        image = check_image(image, "L3C")
        mode = "L" if image.ndim == 2 else "RGB"
        rgb = np.repeat(image[..., None], 3, -1) if mode == "L" else image
        h, w = rgb.shape[:2]
        payloads, bits, tops = [], 0.0, set()
        tiles = list(self._tiles(h, w))
        # tiles of one top-level count code the same number of payloads: then the first tile tells the total
        same = len({self._top_levels_of(th, tw, self.top_levels, self.top_min_side) for _, _, th, tw in tiles}) == 1
        for y, x, th, tw in tiles:
            p, b = self._encode_tile(rgb[y:y + th, x:x + tw], with_bits=return_bits)
            if len(payloads) + len(p) > MAX_PAYLOADS or (same and not payloads and len(p) * len(tiles) > MAX_PAYLOADS):
                raise ValueError(f"{len(tiles)} tiles need more than a stream's {MAX_PAYLOADS} payloads: compress "
                                 f"with a larger tile (now {self.tile}) or split the image")
            payloads += p
            bits += b
            tops.add(self._top_levels_of(th, tw, self.top_levels, self.top_min_side))
        meta = dict(height=h, width=w, mode=mode, tile=self.tile, window=self.window, numerics=self.numerics,
                    pixel_crc=zlib.crc32(image.tobytes()))
        # The fewest keys that tell each tile's levels (each costs bytes that small images feel): streams
        # without top_levels code x(S) uniformly, streams without top_min_side every level of every tile.
        if len(tops) > 1:  # tiles that code different numbers of levels: the decoder applies the rule
            meta["top_levels"], meta["top_min_side"] = self.top_levels, self.top_min_side
        elif max(tops):  # every tile codes the same number of levels (none: no key)
            meta["top_levels"] = max(tops)
        if self.buckets is not None:  # even tiles, computed at these sides (streams without it: neither)
            default = self.buckets == bucket_sides(self.tile, self.spec.scales)
            meta["buckets"] = DEFAULT_BUCKETS if default else list(self.buckets)  # a name: 50 bytes fewer
        data = pack(self.codec_name, self.fingerprint, meta, payloads)
        return (data, bits) if return_bits else data

    def decompress(self, data: bytes) -> np.ndarray:
        """Bitstream -> ``uint8 [H, W, 3]`` (``[H, W]`` if the input was grayscale).

        Raises:
          jaxcomp.coding.BitstreamError: not a bitstream of this codec and model, truncated,
            corrupt, or decoding does not reproduce the encoder's pixel checksum.
        """
        import zlib

        from jaxcomp.coding import BitstreamError, CodingError, unpack

        meta, payloads = unpack(data, self.codec_name, self.fingerprint)
        try:
            h, w, tile, mode, crc = (int(meta["height"]), int(meta["width"]), int(meta["tile"]), meta["mode"],
                                     int(meta["pixel_crc"]))
            window = int(meta.get("window", 0))  # streams written before windows existed code all levels
            stream_numerics = str(meta.get("numerics", "cpu/ynn"))  # ... and ran jaxlib's default convs
            buckets = meta.get("buckets")  # ... and had neither buckets nor even tiles
            top_levels = meta.get("top_levels", 0)  # ... and coded x(S) uniformly
            top_min_side = meta.get("top_min_side", 1)  # ... or, with top levels, every level of every tile
        except (KeyError, TypeError, ValueError) as e:
            raise BitstreamError(f"bitstream metadata is incomplete: {e}") from e
        m = 2**self.spec.scales
        if not (0 < h <= common.MAX_SIDE and 0 < w <= common.MAX_SIDE and 0 < tile <= MAX_TILE and tile % m == 0
                and 0 <= window <= RGB_LEVELS and mode in ("L", "RGB")):
            raise BitstreamError(f"bitstream metadata is invalid: {meta}")
        if type(top_levels) is not int or not 0 <= top_levels <= MAX_TOP_LEVELS or (
                top_levels and not self.spec.known_step0()):
            raise BitstreamError(f"bitstream metadata is invalid: top_levels={top_levels!r} (an int in 0.."
                                 f"{MAX_TOP_LEVELS}, and 0 for models without the subsampled pyramid)")
        try:
            top_min_side = check_top_min_side(top_min_side)
        except ValueError as e:
            raise BitstreamError(f"bitstream metadata is invalid: {e}") from e
        if stream_numerics != self.numerics:
            raise BitstreamError(
                f"this file was compressed with {stream_numerics} numerics and this process computes with "
                f"{self.numerics}: the model's probabilities would differ, so it cannot be decoded here. "
                + NUMERICS_HELP)
        try:
            sides = (None if buckets is None else bucket_sides(tile, self.spec.scales) if buckets == DEFAULT_BUCKETS
                     else check_buckets(buckets, tile, self.spec.scales))
        except ValueError as e:
            raise BitstreamError(f"bitstream metadata is invalid: {e}") from e
        # the tiling and the shapes the model ran at are properties of the stream, not of this codec
        coder = self._with_buckets(sides)
        tiles = coder._tiles(h, w, tile)
        tops = [self._top_levels_of(th, tw, top_levels, top_min_side) for _, _, th, tw in tiles]
        ends = np.cumsum([self.payloads_per_tile(top) for top in tops])
        if len(payloads) != ends[-1]:
            raise BitstreamError(f"bitstream has {len(payloads)} payloads, expected {ends[-1]}")
        out = np.zeros((h, w, 3), np.uint8)
        try:
            for (y, x, th, tw), top, end, start in zip(tiles, tops, ends, [0, *ends[:-1]]):
                out[y:y + th, x:x + tw] = coder._decode_tile(payloads[start:end], th, tw, window, top)
        except CodingError as e:
            raise BitstreamError(f"bitstream does not decode: {e}") from e
        image = np.ascontiguousarray(out[..., 0]) if mode == "L" else out  # not a view of 3x the memory
        if zlib.crc32(image.tobytes()) != crc:
            raise BitstreamError("decoded pixels do not match the encoder's checksum: the model computed different "
                                 "probabilities here than when compressing (different platform or jaxlib?)")
        return image

    def estimate_bits(self, image: np.ndarray) -> float:
        """Cross-entropy (training-loss) estimate of the bits :meth:`compress` spends; with
        ``top_levels``, x(S) costs the information content of its symbols under the coding PMFs
        (computed, not coded) instead of the uniform bits of the training loss."""
        image = check_image(image, "L3C")
        rgb = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image
        h, w = rgb.shape[:2]
        total = 0.0
        for y, x, th, tw in self._tiles(h, w):
            x_in = jax.device_put(self._pad(rgb[y:y + th, x:x + tw])[None])
            out = self._forward(self.params, x_in)
            bits = [float(b[0]) for b in bits_per_scale(self.spec, out)]
            top_levels = self._top_levels_of(th, tw, self.top_levels, self.top_min_side)
            if top_levels:
                bits[-1] = self._top_bits(np.asarray(out["symbols"][-1]), top_levels)
            total += sum(bits)
        return total

    def _top_bits(self, top: np.ndarray, top_levels: int) -> float:
        """Bits of x(S) (symbols ``int32 [1, h, w, C]``) coded through ``top_levels`` of its own pyramid."""
        symbols = [None] * self.spec.scales + top_pyramid(top, top_levels)  # indexed by level
        bits = symbols[-1].size * np.log2(self.spec.num_levels(self.spec.scales))
        for scale, part, (pmf, lo), _ in self._pmf_jobs(symbols, self._levels(top_levels)[:top_levels],
                                                       self.window):
            bits += float(self._symbol_bits(part, np.asarray(pmf), None if lo is None else np.asarray(lo), scale).sum())
        return bits


def load_codec(checkpoint: str | None = None, tile: int = 512, window: int = DEFAULT_WINDOW,
               buckets: Any = "auto", top_levels: int | None = None, top_min_side: int | None = None) -> L3CCodec:
    """An :class:`L3CCodec` from the shipped model (default), an exported ``.msgpack`` or a workdir
    (``buckets``, ``top_levels``, ``top_min_side``: see :class:`L3CCodec`)."""
    from jaxcomp.codecs.pretrained import DEFAULT_L3C
    from jaxcomp.modelfile import check_params, load_model, param_shapes

    path = checkpoint or DEFAULT_L3C
    config, params, _ = load_model(path, task="l3c")
    spec = spec_from_config(config.model)
    side = max(16, 2 ** (spec.scales + 1))  # every scale at least 2x2 pixels
    check_params(params, param_shapes(L3C(spec), jax.ShapeDtypeStruct((1, side, side, 3), jnp.uint8)), path)
    return L3CCodec(spec, params, tile=tile, window=window, buckets=buckets,
                    top_levels=top_levels, top_min_side=top_min_side)

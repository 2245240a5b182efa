"""GC, the global generative compression model of Agustsson et al., "Generative Adversarial
Networks for Extreme Learned Image Compression" (ICCV 2019). NHWC; images ``[-1, 1]`` inside.

Encoder E (``c7s1-60, d120, d240, d480, d960, c3s1-C``): 7x7 and 3x3 convolutions, stride 2 for
the ``dk`` blocks, instance norm and ReLU, so the latent ``w`` is ``[B, H/16, W/16, C]``. It is
quantized to ``L = 5`` fixed centres ``{-2, -1, 0, 1, 2}`` with the straight-through soft/hard
quantizer. Generator G (``c3s1-960, R960 x 9, u480, u240, u120, u60, c7s1-3``) maps ``w_hat`` (and
optional noise channels) back to an image. The paper's widths are scaled by ``width`` (1 = the
paper). Without entropy coding the rate is ``C * log2(5) / 256`` bits per pixel; the model also
learns a factorized prior (a categorical over the 5 centres per channel) that the codec codes the
symbols with, so real files come in under that bound.

Selective compression (SC, ``semantic_classes > 0``; the paper's Fig. 8) adds a semantic label map
``s``: E encodes the image and the one-hot map together (``w = E([x, s])``), an encoder F of the
one-hot map (E's architecture) gives features that G sees beside ``w_hat``, and a binary heatmap at
latent resolution multiplies ``w_hat``, so G synthesises the zeroed regions from ``F(s)`` alone.
The heatmap and the map are sent (:mod:`jaxcomp.codecs.gc.sc_codec`); the modes that draw heatmaps
for training are in :mod:`jaxcomp.codecs.gc.semantic`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxcomp.configs import spec_from_section
from jaxcomp.nn import ConvTranspose, StridedConv
from jaxcomp.quantize import soft_hard_quantize

FACTOR = 16  # the latent is at 1/16 resolution
LEVELS = 5
PAPER_ENCODER = (60, 120, 240, 480, 960)


@dataclasses.dataclass(frozen=True)
class GCSpec:
    """Architecture of a GC model (``config.model``)."""

    channels: int = 4               # C: latent channels (2, 4, 8 in the paper)
    width: float = 1.0              # multiplies the paper's channel counts (60 ... 960)
    res_blocks: int = 9             # residual blocks of G at 1/16 resolution
    sigma: float = 1.0              # softness of the soft quantizer (gradient only)
    noise_channels: int = 0         # Gaussian noise channels concatenated to w_hat before G
    semantic_classes: int = 0       # > 0: SC mode, the label map's number of classes
    disc_features: int = 64         # discriminator: first layer's channels (pix2pixHD: 64)
    disc_scales: int = 3
    disc_layers: int = 3

    def __post_init__(self):
        if self.channels < 1 or self.width <= 0 or self.res_blocks < 0 or self.noise_channels < 0:
            raise ValueError(f"invalid GC model settings: {self}")

    @property
    def features(self) -> tuple[int, ...]:
        """Encoder channels ``c7s1, d1 .. d4`` (G mirrors them)."""
        return tuple(max(1, int(round(f * self.width))) for f in PAPER_ENCODER)

    @property
    def bound_bits_per_pixel(self) -> float:
        """The paper's rate: ``C * log2(L) / 16^2`` bits per pixel (no entropy coding)."""
        return self.channels * math.log2(LEVELS) / FACTOR**2


def spec_from_config(model: ml_collections.ConfigDict) -> GCSpec:
    return spec_from_section(GCSpec, model, "GC")


def centers() -> jax.Array:
    """The 5 fixed quantization centres ``{-2, -1, 0, 1, 2}``, ``float32 [5]``."""
    return jnp.arange(LEVELS, dtype=jnp.float32) - (LEVELS - 1) / 2


def _norm_relu(x: jax.Array, name: str) -> jax.Array:
    return nn.relu(nn.InstanceNorm(name=name)(x))


class Encoder(nn.Module):
    """``[B, H, W, K] -> [B, H/16, W/16, out]`` (``H``, ``W`` multiples of 16)."""

    features: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = nn.Conv(self.features[0], (7, 7), padding="REFLECT", name="c7")(x)
        h = _norm_relu(h, "c7_norm")
        for i, f in enumerate(self.features[1:]):
            h = StridedConv(f, 3, 2, (1, 1), name=f"d{i}")(h)
            h = _norm_relu(h, f"d{i}_norm")
        return nn.Conv(self.out, (3, 3), padding="REFLECT", name="out")(h)


class ResBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = _norm_relu(nn.Conv(self.features, (3, 3), padding="REFLECT", name="conv1")(x), "norm1")
        h = nn.InstanceNorm(name="norm2")(nn.Conv(self.features, (3, 3), padding="REFLECT", name="conv2")(h))
        return x + h


class Generator(nn.Module):
    """``[B, h, w, C (+ noise)] -> [B, 16h, 16w, 3]`` in ``[-1, 1]`` (tanh)."""

    features: tuple[int, ...]
    res_blocks: int

    @nn.compact
    def __call__(self, w: jax.Array) -> jax.Array:
        top = self.features[-1]
        h = _norm_relu(nn.Conv(top, (3, 3), padding="REFLECT", name="c3")(w), "c3_norm")
        for i in range(self.res_blocks):
            h = ResBlock(top, name=f"res{i}")(h)
        for i, f in enumerate(reversed(self.features[:-1])):
            h = _norm_relu(ConvTranspose(f, (3, 3), (2, 2), name=f"u{i}")(h), f"u{i}_norm")
        return jnp.tanh(nn.Conv(3, (7, 7), padding="REFLECT", name="out")(h))


def to_unit(image: jax.Array) -> jax.Array:
    """``uint8``/``float`` ``[0, 255]`` -> ``float32 [-1, 1]``."""
    return image.astype(jnp.float32) / 127.5 - 1.0


def to_pixels(x: jax.Array) -> jax.Array:
    """``float [-1, 1]`` -> ``float32 [0, 255]`` (not rounded)."""
    return (jnp.clip(x, -1.0, 1.0) + 1.0) * 127.5


class GC(nn.Module):
    """Encoder, quantizer, factorized prior and generator (the discriminator is separate).

    ``__call__(image [B, H, W, 3] in [0, 255], noise [B, H/16, W/16, noise_channels] | None,
    semantic int32 [B, H, W] | None, heatmap float32 [B, H/16, W/16] | None)`` (1 = code the
    latent there, 0 = zero it and synthesise) returns a dict:
    ``w`` (float32 ``[B, h, w, C]`` before quantization), ``w_hat`` (quantized, straight-through),
    ``symbols`` (int32 ``[B, h, w, C]`` in ``0..4``), ``x_hat`` (``[-1, 1]``), ``prior_logits``
    (``[C, 5]``).
    """

    spec: GCSpec

    def setup(self) -> None:
        s = self.spec
        self.encoder = Encoder(s.features, s.channels)
        if s.semantic_classes:
            self.map_encoder = Encoder(s.features, s.channels, name="map_encoder")
        self.generator = Generator(s.features, s.res_blocks)
        self.prior_logits = self.param("prior_logits", nn.initializers.zeros, (s.channels, LEVELS))

    def encode(self, image: jax.Array, semantic: jax.Array | None = None) -> jax.Array:
        """``[B, H, W, 3]`` in ``[0, 255]`` (SC: and the label map ``int32 [B, H, W]``) ->
        ``w`` ``float32 [B, H/16, W/16, C]`` (``H``, ``W`` multiples of ``2 ** (len(features) - 1)``, 16
        for the paper's encoder: other sizes are refused, since ``x_hat`` would come back larger)."""
        factor = 2 ** (len(self.spec.features) - 1)
        if image.ndim != 4 or image.shape[1] % factor or image.shape[2] % factor:
            raise ValueError(f"GC encodes images [B, H, W, 3] with H and W multiples of {factor}; got shape "
                             f"{tuple(image.shape)} (pad or crop first)")
        x = to_unit(image)
        if self.spec.semantic_classes:  # SC: E sees the image and the label map (the paper's Fig. 8)
            x = jnp.concatenate([x, self.one_hot(semantic)], -1)
        return self.encoder(x)

    def one_hot(self, semantic: jax.Array | None) -> jax.Array:
        if semantic is None:
            raise ValueError("this GC model is selective (semantic_classes > 0): give the label map")
        return jax.nn.one_hot(semantic, self.spec.semantic_classes, dtype=jnp.float32)

    def quantize(self, w: jax.Array) -> tuple[jax.Array, jax.Array]:
        return soft_hard_quantize(w, centers(), self.spec.sigma)

    def decode(self, w_hat: jax.Array, noise: jax.Array | None = None, semantic: jax.Array | None = None
               ) -> jax.Array:
        """``w_hat [B, h, w, C]`` (+ noise, + the label map in SC mode) -> image ``[-1, 1]``."""
        parts = [w_hat]
        if self.spec.noise_channels:
            if noise is None:
                raise ValueError(f"this GC model takes {self.spec.noise_channels} noise channels")
            parts.append(noise)
        if self.spec.semantic_classes:
            # SC: G sees F(label map), which is not masked, beside the masked w_hat
            parts.append(self.map_encoder(self.one_hot(semantic)))
        return self.generator(jnp.concatenate(parts, -1) if len(parts) > 1 else w_hat)

    def __call__(self, image: jax.Array, noise: jax.Array | None = None, semantic: jax.Array | None = None,
                 heatmap: jax.Array | None = None) -> dict[str, jax.Array]:
        w = self.encode(image, semantic)
        w_hat, symbols = self.quantize(w)
        if heatmap is not None:
            w_hat = w_hat * heatmap[..., None]
        x_hat = self.decode(w_hat, noise, semantic)
        return dict(w=w, w_hat=w_hat, symbols=symbols, x_hat=x_hat, prior_logits=self.prior_logits)


def _check_prior_shapes(name: str, prior_logits: jax.Array, latent: jax.Array) -> None:
    """ValueError unless ``prior_logits`` is ``[C, 5]`` and ``latent`` ends in the same ``C`` (shapes
    only, so also under jit): symbols without their channel axis, or of one channel, broadcast against
    the ``C`` priors silently (the width read as channels, one symbol charged under every prior)."""
    shape, lat = jnp.shape(prior_logits), jnp.shape(latent)
    if len(shape) != 2 or shape[1] != LEVELS or not lat or lat[-1] != shape[0]:
        raise ValueError(f"{name}: the prior is [C, {LEVELS}] and the latent [..., C] with the same C, got "
                         f"shapes {shape} and {lat}")


def prior_bits(prior_logits: jax.Array, symbols: jax.Array) -> jax.Array:
    """Bits of ``symbols [..., C]`` under the factorized prior ``[C, 5]``: ``float32 [...]`` summed
    over channels (NaN where a symbol is outside ``0..4``); other shapes are a ValueError."""
    _check_prior_shapes("prior_bits", prior_logits, symbols)
    logp = jax.nn.log_softmax(prior_logits, axis=-1)
    onehot = jax.nn.one_hot(symbols, LEVELS, dtype=jnp.float32)
    bits = -jnp.sum(onehot * logp, axis=(-2, -1)) / jnp.log(2.0)
    # a symbol outside 0..4 has no one-hot row (0 bits): NaN instead of an underestimated rate
    return jnp.where(jnp.all((symbols >= 0) & (symbols < LEVELS), axis=-1), bits, jnp.nan)


def soft_prior_bits(w: jax.Array, prior_logits: jax.Array, sigma: float) -> jax.Array:
    """Bits of the quantized latent under the factorized prior, differentiable in ``w``.

    ``w`` ``float32 [..., C]`` (the encoder's output, before quantization), ``prior_logits``
    ``[C, 5]`` -> ``float32 [...]`` summed over channels. The value is :func:`prior_bits` of the
    nearest centres; the gradient is that of the expected bits under the quantizer's soft
    assignment ``softmax(-sigma * (w - c)^2)`` (soft-to-hard, as the quantizer's own gradient), so a
    rate term moves each latent towards the centres the prior codes cheaply. The prior itself gets
    no gradient here (it is fitted by its own term). Other shapes are a ValueError."""
    _check_prior_shapes("soft_prior_bits", prior_logits, w)
    d = jnp.square(w[..., None] - centers())
    soft = jax.nn.softmax(-sigma * d, axis=-1)
    hard = jax.nn.one_hot(jnp.argmin(d, axis=-1), LEVELS, dtype=jnp.float32)
    weights = hard + soft - jax.lax.stop_gradient(soft)
    logp = jax.lax.stop_gradient(jax.nn.log_softmax(prior_logits, axis=-1))
    return -jnp.sum(weights * logp, axis=(-2, -1)) / jnp.log(2.0)


def check_generator_params(params: Any, spec: GCSpec, path: str) -> None:
    """Raises :class:`jaxcomp.modelfile.ModelLoadError` unless ``params`` (a model file's
    ``params["generator"]``) is exactly the tree of ``GC(spec)``: a ``.json`` naming another width,
    channel count or number of residual blocks than the parameters is refused by name instead of
    decoding with part of them (or failing inside Flax)."""
    from jaxcomp.modelfile import check_params, param_shapes

    side = 4 * FACTOR
    image = jax.ShapeDtypeStruct((1, side, side, 3), jnp.float32)
    noise = (jax.ShapeDtypeStruct((1, side // FACTOR, side // FACTOR, spec.noise_channels), jnp.float32)
             if spec.noise_channels else None)
    semantic = jax.ShapeDtypeStruct((1, side, side), jnp.int32) if spec.semantic_classes else None
    check_params(params, param_shapes(GC(spec), image, noise, semantic), path)

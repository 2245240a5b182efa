"""The networks of distribution-preserving lossy compression (Tschannen, Agustsson & Lucic, NeurIPS
2018): the DCGAN-style generator G, the WAE encoder F, the rate-constrained encoder E, the stochastic
map B and the image critic, after the authors' ``models.py`` (mitscha/dplc). NHWC ``float32``;
images in ``[-1, 1]``; ``S`` is the image side (a multiple of 16), ``g = S / 16`` the side of the
coarsest feature map, ``f`` the base width (``ngf``).

* ``Generator``: ``z [B, nz] -> [B, S, S, C]``: a dense layer to ``[g, g, 8f]`` (the reference's
  ``g x g`` transposed convolution of a ``1 x 1`` input), then four 4x4 stride-2 transposed
  convolutions to ``4f, 2f, f, f`` channels, a 3x3 convolution to ``C`` and ``tanh``. (The CPU
  configs use ``upsample="resize"``: nearest x2 and a 3x3 convolution, whose gradient XLA's CPU
  backend computes 2x faster: 22 against 49 ms for MNIST's G at batch 64.)
* ``Encoder`` trunk: four 4x4 stride-2 convolutions (``f, 2f, 4f, 8f``) to ``[B, g, g, 8f]``.
* ``WAEEncoder`` F: the trunk and a dense layer to ``nz`` (the reference's ``g x g`` convolution).
* ``RateEncoder`` E: the trunk, a 3x3 convolution to ``m`` channels and the soft-to-hard quantizer
  onto ``L`` centres ``-1 + (2l + 1) / L`` (``[B, g, g, m]``; ``m * g^2 * log2(L)`` bits per image).
* ``StochasticMap`` B: the code and ``k = ceil(nz / g^2)`` channels of uniform noise in
  ``[-1/L, 1/L]`` (half a quantization step) -> a 3x3 convolution to ``8f``, residual blocks, a
  dense layer to ``nz``. With ``m = 0`` (0 bits) B maps noise alone.
* ``Critic``: a 3x3 convolution, four 4x4 stride-2 convolutions with layer norm, a dense score.

One deviation from the reference, on purpose: the generator, encoders and B normalise each example
over ``(H, W, C)`` (layer norm) where the reference uses batch norm, so a decoded image depends on
its own code and noise only, never on the other images of a batch (which a codec needs: the decoder
sees one image at a time), and there are no running statistics to carry; the reference's batch norm
on B's output (``--bnz``) is left to the MMD penalty. Layer norm is also what the reference's
critic uses (a gradient penalty needs per-example critics).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxcomp.configs import spec_from_section
from jaxcomp.nn import ConvTranspose, StridedConv
from jaxcomp.quantize import soft_hard_quantize


@dataclasses.dataclass(frozen=True)
class DPLCSpec:
    """Sizes of a DPLC model. ``code_channels`` (m) and ``levels`` (L) set the rate."""

    image_size: int = 64
    channels: int = 3
    latent: int = 128          # nz, the generator's input
    features: int = 64         # f (ngf)
    critic_features: int = 64  # the critic's f
    code_channels: int = 8     # m
    levels: int = 2            # L
    res_blocks: int = 2        # B's residual blocks (nresenc)
    sigma: float = 1.0         # softness of the soft-to-hard quantizer's backward pass
    prior: str = "gaussian"    # gaussian N(0, prior_var I) | uniform U[-1, 1]^nz
    prior_var: float = 1.0
    upsample: str = "transposed"  # G's x2 stages: transposed (4x4 stride 2, the paper) | resize (nearest + 3x3)

    def __post_init__(self):
        if self.image_size % 16 or self.image_size < 16:
            raise ValueError(f"model.image_size must be a multiple of 16, got {self.image_size}")
        if self.code_channels < 0 or self.levels < 2:
            raise ValueError(f"need code_channels >= 0 and levels >= 2, got {self.code_channels}, {self.levels}")
        if self.prior not in ("gaussian", "uniform"):
            raise ValueError(f"model.prior must be 'gaussian' or 'uniform', got {self.prior!r}")
        if self.upsample not in ("transposed", "resize"):
            raise ValueError(f"model.upsample must be 'transposed' or 'resize', got {self.upsample!r}")

    @property
    def grid(self) -> int:
        """``g``: the side of the code (and of the coarsest feature map)."""
        return self.image_size // 16

    @property
    def noise_channels(self) -> int:
        """``k = ceil(nz / g^2)``: B's noise channels (the reference's ``nfmodelz - ncenc``)."""
        return math.ceil(self.latent / self.grid ** 2)

    @property
    def bits(self) -> float:
        """The rate in bits per image before entropy coding, ``m * g^2 * log2(L)``."""
        return self.code_channels * self.grid ** 2 * math.log2(self.levels)

    @property
    def bpp(self) -> float:
        return self.bits / self.image_size ** 2

    def centers(self) -> jax.Array:
        """The ``L`` quantization centres ``-1 + (2l + 1) / L``, ``float32 [L]``."""
        return (-1.0 + (2.0 * jnp.arange(self.levels, dtype=jnp.float32) + 1.0) / self.levels)


def spec_from_config(model: ml_collections.ConfigDict) -> DPLCSpec:
    """A :class:`DPLCSpec` from ``config.model``; a key it does not have is a ``ConfigError`` naming it."""
    return spec_from_section(DPLCSpec, model, "DPLC")


def sample_prior(spec: DPLCSpec, rng: jax.Array, n: int) -> jax.Array:
    """``n`` draws of the prior, ``float32 [n, nz]``."""
    if spec.prior == "uniform":
        return jax.random.uniform(rng, (n, spec.latent), minval=-1.0, maxval=1.0)
    return jnp.sqrt(spec.prior_var) * jax.random.normal(rng, (n, spec.latent))


def _norm(name: str) -> nn.LayerNorm:
    return nn.LayerNorm(reduction_axes=(-3, -2, -1), feature_axes=-1, name=name)


class Generator(nn.Module):
    """``z float32 [B, nz] -> image float32 [B, S, S, C]`` in ``[-1, 1]``."""

    spec: DPLCSpec

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        s, f, g = self.spec, self.spec.features, self.spec.grid
        x = nn.Dense(g * g * 8 * f, name="project")(z).reshape(z.shape[0], g, g, 8 * f)
        x = nn.relu(_norm("norm0")(x))
        for i, width in enumerate((4 * f, 2 * f, f, f)):
            if s.upsample == "transposed":
                x = ConvTranspose(width, (4, 4), (2, 2), name=f"up{i}")(x)
            else:
                b, h, w, ch = x.shape
                x = nn.Conv(width, (3, 3), name=f"up{i}")(jax.image.resize(x, (b, 2 * h, 2 * w, ch), "nearest"))
            x = nn.relu(_norm(f"norm{i + 1}")(x))
        return jnp.tanh(nn.Conv(s.channels, (3, 3), name="out")(x))


class Encoder(nn.Module):
    """The downsampling trunk: ``[B, S, S, C] -> [B, g, g, 8f]``."""

    spec: DPLCSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        f = self.spec.features
        for i, width in enumerate((f, 2 * f, 4 * f, 8 * f)):
            x = StridedConv(width, 4, 2, (1, 1), name=f"down{i}")(x)
            if i > 0:
                x = _norm(f"norm{i}")(x)
            x = nn.relu(x)
        return x


class WAEEncoder(nn.Module):
    """F: ``image [B, S, S, C] -> latent float32 [B, nz]`` (deterministic, as the paper's WAE)."""

    spec: DPLCSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = Encoder(self.spec, name="trunk")(x)
        return nn.Dense(self.spec.latent, name="latent")(h.reshape(h.shape[0], -1))


class RateEncoder(nn.Module):
    """E: ``image [B, S, S, C] -> (code float32 [B, g, g, m], symbols int32 [B, g, g, m])``: the code
    takes the ``L`` centres' values forward and the soft assignment's gradient backward."""

    spec: DPLCSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        s = self.spec
        if s.code_channels == 0:
            shape = (x.shape[0], s.grid, s.grid, 0)
            return jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.int32)
        h = Encoder(s, name="trunk")(x)
        y = nn.Conv(s.code_channels, (3, 3), name="code")(h)
        return soft_hard_quantize(y, s.centers(), s.sigma)


class BasicBlock(nn.Module):
    """``relu(x + norm(conv(relu(norm(conv(x))))))`` with 3x3 convolutions (ResNet's basic block)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(_norm("norm1")(nn.Conv(self.features, (3, 3), use_bias=False, name="conv1")(x)))
        y = _norm("norm2")(nn.Conv(self.features, (3, 3), use_bias=False, name="conv2")(y))
        return nn.relu(x + y)


class StochasticMap(nn.Module):
    """B: ``(code float32 [B, g, g, m], noise float32 [B, g, g, k]) -> latent float32 [B, nz]``."""

    spec: DPLCSpec

    @nn.compact
    def __call__(self, code: jax.Array, noise: jax.Array) -> jax.Array:
        s = self.spec
        x = nn.Conv(8 * s.features, (3, 3), name="inp")(jnp.concatenate([code, noise], -1))
        for i in range(s.res_blocks):
            x = BasicBlock(8 * s.features, name=f"block{i}")(x)
        return nn.Dense(s.latent, name="latent")(x.reshape(x.shape[0], -1))


def map_noise(spec: DPLCSpec, rng: jax.Array, n: int) -> jax.Array:
    """B's noise: ``float32 [n, g, g, k]`` uniform in half a quantization step, ``[-1/L, 1/L]``."""
    half = 1.0 / spec.levels
    return jax.random.uniform(rng, (n, spec.grid, spec.grid, spec.noise_channels), jnp.float32, minval=-half,
                              maxval=half)


class Critic(nn.Module):
    """``image [B, S, S, C] -> score float32 [B]`` (WGAN critic / GAN discriminator logit)."""

    spec: DPLCSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        f = self.spec.critic_features
        x = nn.leaky_relu(nn.Conv(f, (3, 3), name="inp")(x), 0.2)
        for i, width in enumerate((f, 2 * f, 4 * f, 8 * f)):
            # a plain strided convolution: the gradient penalty's second derivative through it is
            # 2.7x faster on the CPU than through StridedConv's space-to-depth form (80 against 217 ms)
            x = nn.Conv(width, (4, 4), (2, 2), padding=((1, 1), (1, 1)), name=f"down{i}")(x)
            x = nn.leaky_relu(_norm(f"norm{i}")(x), 0.2)
        return nn.Dense(1, name="score")(x.reshape(x.shape[0], -1))[:, 0]


def to_model_range(image: jax.Array) -> jax.Array:
    """``uint8``/``float [0, 255]`` pixels -> ``float32 [-1, 1]``."""
    return image.astype(jnp.float32) / 127.5 - 1.0


def to_pixels(x: jax.Array) -> jax.Array:
    """``[-1, 1]`` -> ``float32 [0, 255]`` (clipped, not rounded)."""
    return jnp.clip((x + 1.0) * 127.5, 0.0, 255.0)

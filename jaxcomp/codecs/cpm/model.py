"""The context-model codec's model: architecture, Flax modules, the 3D context model and the
rate and distortion terms of its loss, all pure functions of the parameters (see
:mod:`jaxcomp.codecs.cpm` for the whole system).
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.configs import spec_from_section
from jaxcomp.nn import Conv, ConvTranspose, torch_kernel_init
from jaxcomp.quantize import soft_hard_quantize

# The reference code's fixed input normalisation (ImageNet-like RGB statistics).
_MEAN = np.array([121.85369873, 113.58860779, 100.63715363], np.float32)
_STD = np.sqrt(np.array([4746.37695312, 4454.13964844, 4812.234375], np.float32) + 1e-10)
FACTOR = 8  # spatial downsampling of the bottleneck
KMAP_SCALE = 30.0  # the importance-map prior's logits are KMAP_SCALE x its parameters


@dataclasses.dataclass(frozen=True)
class CPMSpec:
    """The architecture; built from ``config.model`` by :func:`spec_from_config`."""

    channels: int = 32            # C: bottleneck channels (64 for the paper's high-rate model)
    features: int = 128           # n: feature channels at 1/4 resolution (n/2 at 1/2)
    groups: int = 5               # B: groups of 3 residual blocks (15 blocks)
    centers: int = 6              # L
    sigma: float = 1.0            # softness of the soft assignment
    center_init: tuple = (-2.0, 2.0)
    importance_map: bool = True
    context_features: int = 24    # K of the context model

    def __post_init__(self):
        if self.channels < 1 or self.centers < 2 or self.features < 2:
            raise ValueError(f"invalid model: {self}")


def spec_from_config(model: ml_collections.ConfigDict) -> CPMSpec:
    return spec_from_section(CPMSpec, model, "the context-model codec")


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` (3x3)."""

    features: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = nn.relu(Conv(self.features, (3, 3), name="conv1")(x))
        return x + Conv(self.features, (3, 3), name="conv2")(y)


class ResTrunk(nn.Module):
    """``groups`` x (3 residual blocks + skip), a final residual block, a global skip."""

    features: int
    groups: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for g in range(self.groups):
            inp = h
            for b in range(3):
                h = ResBlock(self.features, name=f"group{g}_block{b}")(h)
            h = h + inp
        return x + ResBlock(self.features, name="final")(h)


class Encoder(nn.Module):
    """``float [B, H, W, 3]`` in [0, 255] -> raw bottleneck ``[B, H/8, W/8, C (+1)]``."""

    spec: CPMSpec

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = self.spec
        h = (x - _MEAN) / _STD
        h = nn.relu(Conv(s.features // 2, (5, 5), strides=(2, 2), name="h1")(h))
        h = nn.relu(Conv(s.features, (5, 5), strides=(2, 2), name="h2")(h))
        h = ResTrunk(s.features, s.groups, name="trunk")(h)
        return Conv(s.channels + int(s.importance_map), (5, 5), strides=(2, 2), name="to_bottleneck")(h)


class Decoder(nn.Module):
    """Quantized bottleneck ``[B, h, w, C]`` -> ``float [B, 8h, 8w, 3]`` clipped to [0, 255].

    ``subpixel``: compute the transposed convolutions as sub-pixel convolutions (the same
    parameters and sums; on XLA's CPU backend the decoder's forward and gradient run 2.7x
    faster) instead of ``nn.ConvTranspose``'s dilated form. The two round differently in the last float bits;
    the codec synthesises with the dilated form, the one its streams' pixel checksums were
    written with.
    """

    spec: CPMSpec
    subpixel: bool = True

    @nn.compact
    def __call__(self, q: jax.Array) -> jax.Array:
        s = self.spec
        if self.subpixel:
            up = functools.partial(ConvTranspose, strides=(2, 2), kernel_init=torch_kernel_init)
        else:
            up = functools.partial(nn.ConvTranspose, strides=(2, 2), padding="SAME", kernel_init=torch_kernel_init)
        h = nn.relu(up(s.features, (3, 3), name="from_bottleneck")(q))
        h = ResTrunk(s.features, s.groups, name="trunk")(h)
        h = nn.relu(up(s.features // 2, (5, 5), name="h12")(h))
        h = up(3, (5, 5), name="h13")(h)
        return jnp.clip(h * _STD + _MEAN, 0.0, 255.0)


def importance_mask(y: jax.Array, channels: int) -> jax.Array:
    """The 3D mask from the importance channel: ``[B, h, w] -> float32 [B, h, w, C]``.

    ``m[c] = clip(sigmoid(y) * C - c, 0, 1)``: 1 for the first channels, 0 after them, one
    fractional channel in between. Symbols with ``m = 0`` are masked (not coded).
    """
    level = jax.nn.sigmoid(y)[..., None] * channels
    return jnp.clip(level - jnp.arange(channels, dtype=jnp.float32), 0.0, 1.0)


# --------------------------------------------------------------------------------------
# The 3D context model
# --------------------------------------------------------------------------------------

def context_masks() -> tuple[np.ndarray, np.ndarray]:
    """Masks ``[2, 3, 3]`` over (previous/current channel, dy, dx) of the first and other layers.

    The previous channel is seen entirely (3x3); in the current channel the rows above and,
    in the centre row, the positions to the left (the first layer), plus the centre itself
    (the other layers, whose centre input is already a function of earlier symbols only).
    """
    first = np.ones((2, 3, 3), np.float32)
    first[1, 1, 1:] = 0
    first[1, 2, :] = 0
    other = first.copy()
    other[1, 1, 1] = 1
    return first, other


_LAYERS = ("conv0", "res1", "res2", "out")


class ContextModel(nn.Module):
    """3D masked CNN: symbol values ``[B, C, h, w]`` -> logits ``[B, C, h, w, L]``.

    ``pad`` is the value seen outside the volume (the reference pads with the first centre).
    """

    features: int
    centers: int

    def setup(self) -> None:
        k, L = self.features, self.centers
        init = nn.initializers.xavier_uniform()
        shapes = dict(conv0=(1, k), res1=(k, k), res2=(k, k), out=(k, L))
        self.kernels = {n: self.param(f"{n}_kernel", init, (2, 3, 3) + io) for n, io in shapes.items()}
        self.biases = {n: self.param(f"{n}_bias", nn.initializers.zeros, (io[1],)) for n, io in shapes.items()}

    def __call__(self, values: jax.Array, pad: jax.Array) -> jax.Array:
        first, other = context_masks()

        def conv(x, name, mask, pad_value):
            # The 2x3x3 masked 3D convolution as one 2D convolution over all (padded) channel
            # planes with the two depth taps side by side in its output: output plane d is
            # (previous tap on plane d - 1) + (current tap on plane d). The same sums as a 3D
            # convolution, which XLA's CPU backend runs 6-11x slower (no fast 3D kernel).
            b, d, h, w, i = x.shape
            x = jnp.pad(x, ((0, 0), (1, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
            kernel = self.kernels[name] * mask[..., None, None]  # [2, 3, 3, I, O]
            o = kernel.shape[-1]
            y = jax.lax.conv_general_dilated(x.reshape(b * (d + 1), h + 2, w + 2, i),
                                             jnp.concatenate([kernel[0], kernel[1]], axis=-1), (1, 1), "VALID",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
            y = y.reshape(b, d + 1, h, w, 2 * o)
            return y[:, :-1, ..., :o] + y[:, 1:, ..., o:] + self.biases[name]

        h0 = nn.relu(conv(values[..., None], "conv0", first, pad))
        h1 = nn.relu(conv(h0, "res1", other, 0.0))
        h2 = h0 + conv(h1, "res2", other, 0.0)
        return conv(h2, "out", other, 0.0)


def wavefronts(channels: int, height: int, width: int) -> list[np.ndarray]:
    """Decoding order: positions ``(c, y, x)`` grouped by ``t = 4c + 2y + x``, each ``int32 [n_t, 3]``.

    A context-model output at ``(c, y, x)`` depends on symbols earlier in raster order within
    (previous, current channel) x 3x3, composed over the layers. Inside a channel that reaches
    ``(y - j, x + j)`` and ``(y, x - 1)``, which lower ``2y + x``; a step to the previous channel
    raises ``2y + x`` by at most 3, so ``t`` strictly decreases along every dependency and all
    symbols of one wavefront can be decoded together.
    """
    c, y, x = np.meshgrid(np.arange(channels), np.arange(height), np.arange(width), indexing="ij")
    t = (4 * c + 2 * y + x).reshape(-1)
    pos = np.stack([c.reshape(-1), y.reshape(-1), x.reshape(-1)], -1).astype(np.int32)
    order = np.argsort(t, kind="stable")
    t_sorted = t[order]
    bounds = np.searchsorted(t_sorted, np.arange(t_sorted[-1] + 2))
    return [pos[order[bounds[i]:bounds[i + 1]]] for i in range(len(bounds) - 1)]


# --------------------------------------------------------------------------------------
# The whole model and its loss
# --------------------------------------------------------------------------------------


class CPM(nn.Module):
    """Autoencoder + importance map + learned centres + context model + importance-map prior.

    ``subpixel_decoder``: see :class:`Decoder` (training: True; the codec: False).
    """

    spec: CPMSpec
    subpixel_decoder: bool = True

    def setup(self) -> None:
        s = self.spec
        self.encoder = Encoder(s)
        self.decoder = Decoder(s, self.subpixel_decoder)
        lo, hi = s.center_init
        self.centers = self.param("centers", lambda rng: jax.random.uniform(rng, (s.centers,), jnp.float32, lo, hi))
        self.context = ContextModel(s.context_features, s.centers)
        # logits of P(k | k_left, k_up); index C + 1 stands for "outside the image". Stored divided
        # by KMAP_SCALE: Adam moves every parameter by ~lr per step, and a table of logits needs
        # steps ~KMAP_SCALE times larger than the network weights to fit in a short run.
        self.kmap_param = self.param("kmap_logits", nn.initializers.zeros, (s.channels + 2, s.channels + 2,
                                                                             s.channels + 1))
        self.kmap_logits = KMAP_SCALE * self.kmap_param

    def encode(self, x: jax.Array) -> dict[str, jax.Array]:
        """``float [B, H, W, 3]`` -> ``q`` (quantized, straight-through), ``symbols`` int32,
        ``mask`` (soft 3D mask, ones without importance map), ``z`` (the masked values before
        quantization), all ``[B, h, w, C]`` with ``h, w = H/8, W/8``: ``H`` and ``W`` must be multiples of 8
        (the codec pads an image to them; other sizes are refused, since ``x_hat`` would come back larger)."""
        return self.bottleneck(self.latent(x))

    def latent(self, x: jax.Array) -> jax.Array:
        """The encoder's raw output ``float32 [B, H/8, W/8, C + 1]`` (``C`` without importance map)."""
        if x.ndim != 4 or x.shape[1] % 8 or x.shape[2] % 8:
            raise ValueError(f"CPM encodes images [B, H, W, 3] with H and W multiples of 8; got shape "
                             f"{tuple(x.shape)} (pad or crop first)")
        return self.encoder(x)

    def bottleneck(self, z: jax.Array) -> dict[str, jax.Array]:
        """The encoder's raw output (:meth:`latent`) -> what :meth:`encode` returns."""
        s = self.spec
        if s.importance_map:
            mask = importance_mask(z[..., 0], s.channels)
            z = z[..., 1:] * mask
        else:
            mask = jnp.ones_like(z)
        q, symbols = soft_hard_quantize(z, self.centers, s.sigma)
        return dict(q=q, symbols=symbols, mask=mask, z=z)

    def decode(self, q: jax.Array) -> jax.Array:
        return self.decoder(q)

    def context_logits(self, q: jax.Array) -> jax.Array:
        """``[B, h, w, C]`` values -> logits ``[B, h, w, C, L]``."""
        vol = jnp.transpose(q, (0, 3, 1, 2))  # [B, C, h, w]
        pad = jax.lax.stop_gradient(self.centers[0])
        return jnp.transpose(self.context(vol, pad), (0, 2, 3, 1, 4))

    def __call__(self, x: jax.Array) -> dict[str, jax.Array]:
        out = self.encode(x)
        out["x_hat"] = self.decode(out["q"])
        # The context model sees the symbols, not a path back into the encoder (as the reference).
        out["logits"] = self.context_logits(jax.lax.stop_gradient(out["q"]))
        out["kmap_logits"] = self.kmap_logits
        return out


def unmasked_count(mask: jax.Array) -> jax.Array:
    """Number of coded channels per position, ``int32 [B, h, w]``, from the 3D mask."""
    return jnp.sum(mask > 0, axis=-1).astype(jnp.int32)


def kmap_neighbours(k: jax.Array, outside: int) -> tuple[jax.Array, jax.Array]:
    """Left and upper neighbours of ``k`` (``[B, h, w]``), ``outside`` across the border."""
    left = jnp.pad(k[:, :, :-1], ((0, 0), (0, 0), (1, 0)), constant_values=outside)
    up = jnp.pad(k[:, :-1, :], ((0, 0), (1, 0), (0, 0)), constant_values=outside)
    return left, up


def kmap_bits(kmap_logits: jax.Array, k: jax.Array) -> jax.Array:
    """Bits of the importance map under ``P(k | left, up)``, per example ``float32 [B]``."""
    outside = kmap_logits.shape[0] - 1
    left, up = kmap_neighbours(k, outside)
    logp = jax.nn.log_softmax(kmap_logits, axis=-1)[left, up, k]
    return -jnp.sum(logp, axis=(1, 2)) / np.log(2.0)


def symbol_bits(logits: jax.Array, symbols: jax.Array) -> jax.Array:
    """``-log2 p(symbol)`` under the context model: ``logits [B, h, w, C, L]``, integer ``symbols
    [B, h, w, C]`` -> ``float32 [B, h, w, C]``; NaN where a symbol is outside ``0..L-1`` (a padding
    value such as -1 would otherwise be scored as the last level)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    bits = -jnp.take_along_axis(logp, symbols[..., None], axis=-1, mode="clip")[..., 0] / np.log(2.0)
    return jnp.where((symbols >= 0) & (symbols < logits.shape[-1]), bits, jnp.nan)


def expected_symbol_bits(logits: jax.Array, z: jax.Array, symbols: jax.Array, centers: jax.Array,
                         sigma: float) -> jax.Array:
    """:func:`symbol_bits` in the forward pass, with the gradient of the bits expected under the
    soft assignment of ``z`` to the centres (so a value can learn to move to a cheaper centre).

    ``logits [B, h, w, C, L]``, ``z`` (values before quantization) and ``symbols`` ``[B, h, w, C]``
    -> ``float32 [B, h, w, C]`` (NaN where a symbol is outside ``0..L-1``, as :func:`symbol_bits`)."""
    per_centre = -jax.nn.log_softmax(logits, axis=-1) / np.log(2.0)
    soft = jax.nn.softmax(-sigma * jnp.square(z[..., None] - centers), axis=-1)
    assign = soft + jax.lax.stop_gradient(jax.nn.one_hot(symbols, centers.shape[0]) - soft)
    bits = jnp.sum(assign * per_centre, axis=-1)  # a symbol without a one-hot row would cost 0 bits
    return jnp.where((symbols >= 0) & (symbols < centers.shape[0]), bits, jnp.nan)


def rate_terms(spec: CPMSpec, out: dict[str, jax.Array], bc: jax.Array | None = None) -> dict[str, jax.Array]:
    """Rates per example (``[B]``): ``bits`` of the code (unmasked symbols + importance map),
    ``H_soft`` (bits per symbol with the soft mask, differentiable in the importance map),
    ``H_real`` (bits per symbol over all symbols, masked or not), ``kmap_bits``.

    ``bc``: bits per symbol ``[B, h, w, C]`` (default: :func:`symbol_bits` of ``out``)."""
    if bc is None:
        bc = symbol_bits(out["logits"], out["symbols"])
    mask = out["mask"]
    hard = (mask > 0).astype(jnp.float32)
    n_sym = float(np.prod(bc.shape[1:]))
    if spec.importance_map:
        kb = kmap_bits(out["kmap_logits"], unmasked_count(jax.lax.stop_gradient(mask)))
    else:
        kb = jnp.zeros(bc.shape[:1])
    axes = (1, 2, 3)
    return dict(
        bits=jnp.sum(bc * hard, axes) + kb,
        H_soft=(jnp.sum(bc * mask, axes) + jax.lax.stop_gradient(kb)) / n_sym,
        H_fit=(jnp.sum(bc * jax.lax.stop_gradient(hard), axes) + kb) / n_sym,
        H_real=jnp.mean(bc, axes),
        kmap_bits=kb,
    )



def rd_objective(w: dict, ms_ssim_: jax.Array, mse_: jax.Array, H: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(distortion, rate penalty)`` of the training loss, batch means: ``w["ms_ssim"] * (1 - MS-SSIM)
    + w["mse"] * MSE`` and ``w["beta"] * max(H - w["H_target"], 0)``; the arguments are ``[B]``."""
    distortion = w["ms_ssim"] * (1.0 - jnp.mean(ms_ssim_)) + w["mse"] * jnp.mean(mse_)
    return distortion, w["beta"] * jnp.maximum(jnp.mean(H) - w["H_target"], 0.0)


def check_model_params(params: dict, spec: CPMSpec, path: str) -> None:
    """Raises :class:`jaxcomp.modelfile.ModelLoadError` unless ``params`` is exactly the tree of
    ``CPM(spec)``: a model file whose ``.json`` names another architecture than its parameters is
    refused by name instead of coding with part of them (or failing inside Flax)."""
    from jaxcomp.modelfile import check_params, param_shapes

    check_params(params, param_shapes(CPM(spec), jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32)), path)

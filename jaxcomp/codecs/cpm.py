"""Lossy compression with a 3D context model (Mentzer et al., CVPR'18).

"Conditional Probability Models for Deep Image Compression": an autoencoder whose bottleneck
``z`` (``[B, h, w, C]``, ``h, w = H/8, W/8``) is masked by a learned *importance map* and
quantized to ``L`` learned centres; a 3D masked CNN over (channel, height, width) predicts
each symbol's distribution over the centres from the symbols before it, and its
cross-entropy is the rate. The loss is ``K * (1 - MS-SSIM) + beta * max(H - H_target, 0)``.

Pieces (all pure functions of the parameters):
  * :class:`Encoder` / :class:`Decoder` — 5x5/2, 5x5/2 convs, ``groups`` groups of 3 residual
    blocks with skips, a final residual block with a global skip, 5x5/2 conv to ``C + 1``
    channels; the decoder mirrors it with transposed convs and clips to [0, 255]; fixed
    input normalisation (the reference code's mean/variance).
  * :func:`importance_mask` — the extra channel ``y -> sigmoid(y) * C``; 3D mask
    ``m[c] = clip(y - c, 0, 1)``; symbols where ``m = 0`` are *masked*: they are not coded.
  * soft-to-hard quantization to ``L`` learned centres (:func:`jaxcomp.quantize.soft_hard_quantize`).
  * :class:`ContextModel` — the 3D masked CNN (reference ``res_shallow``: a masked conv to
    ``K`` features, one residual block, a masked conv to ``L`` logits; kernels span the
    previous and the current channel and 3x3 positions).
  * the importance map itself is coded with a learned table ``P(k | k_left, k_up)`` over the
    number ``k`` of unmasked channels at each position (the decoder needs the mask to know
    which symbols were coded); its bits are part of the rate.

Coding (:class:`CPMCodec`): symbols are decoded in *wavefronts* ``t = 4c + 2y + x``: every
symbol of a wavefront depends only on earlier wavefronts (see :func:`wavefronts`), so each is
one jitted step that evaluates the context model only at the wavefront's positions, reusing
cached activations of earlier ones. The encoder runs the very same steps on the same inputs,
so both sides see identical floats and decoding is exact.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.metrics import ms_ssim, mse
from jaxcomp.nn import Conv, ConvTranspose, torch_kernel_init
from jaxcomp.quantize import soft_hard_quantize
from jaxcomp.train import TrainState, make_optimizer

# The reference code's fixed input normalisation (ImageNet-like RGB statistics).
_MEAN = np.array([121.85369873, 113.58860779, 100.63715363], np.float32)
_STD = np.sqrt(np.array([4746.37695312, 4454.13964844, 4812.234375], np.float32) + 1e-10)
FACTOR = 8  # spatial downsampling of the bottleneck
MIN_REFINE = 16  # latent refinement needs images of at least this many pixels a side (MS-SSIM's 5 scales)
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
    d = model.to_dict()
    d["center_init"] = tuple(d.get("center_init", (-2.0, 2.0)))
    return CPMSpec(**d)


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

    def setup(self):
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


def _context_step(cparams: dict, state: tuple, prev_flat: jax.Array, prev_values: jax.Array,
                  cur_flat: jax.Array, offsets: jax.Array) -> tuple[tuple, jax.Array]:
    """One wavefront of the context model on flattened padded volumes.

    ``state = (values [N], a0 [N, K], a1 [N, K], a2 [N, K])``: symbol values (the pad value
    outside the volume) and cached activations (0 outside). Writes the previous wavefront's
    decoded values, then evaluates every layer at ``cur_flat`` (``int32 [M]``, entries
    ``>= N`` are padding) and returns the PMFs ``float32 [M, L]``.
    """
    values, a0, a1, a2 = state
    values = values.at[prev_flat].set(prev_values, mode="drop")
    first, other = context_masks()
    nb = cur_flat[:, None] + offsets[None, :]  # [M, 18]

    def layer(src, name, mask):
        kernel = cparams[f"{name}_kernel"] * mask[..., None, None]
        kernel = kernel.reshape(18, kernel.shape[-2], kernel.shape[-1])
        gathered = jnp.take(src, nb, axis=0, mode="clip")
        if gathered.ndim == 2:
            gathered = gathered[..., None]
        return jnp.einsum("mfi,fio->mo", gathered, kernel) + cparams[f"{name}_bias"]

    h0 = nn.relu(layer(values, "conv0", first))
    a0 = a0.at[cur_flat].set(h0, mode="drop")
    h1 = nn.relu(layer(a0, "res1", other))
    a1 = a1.at[cur_flat].set(h1, mode="drop")
    h2 = h0 + layer(a1, "res2", other)
    a2 = a2.at[cur_flat].set(h2, mode="drop")
    logits = layer(a2, "out", other)
    return (values, a0, a1, a2), jax.nn.softmax(logits, axis=-1)


# --------------------------------------------------------------------------------------
# The whole model and its loss
# --------------------------------------------------------------------------------------


class CPM(nn.Module):
    """Autoencoder + importance map + learned centres + context model + importance-map prior.

    ``subpixel_decoder``: see :class:`Decoder` (training: True; the codec: False).
    """

    spec: CPMSpec
    subpixel_decoder: bool = True

    def setup(self):
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
        quantization), all ``[B, h, w, C]``."""
        return self.bottleneck(self.encoder(x))

    def latent(self, x: jax.Array) -> jax.Array:
        """The encoder's raw output ``float32 [B, h, w, C + 1]`` (``C`` without importance map)."""
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
    """``-log2 p(symbol)`` under the context model, ``float32 [B, h, w, C]``."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, symbols[..., None], axis=-1)[..., 0] / np.log(2.0)


def expected_symbol_bits(logits: jax.Array, z: jax.Array, symbols: jax.Array, centers: jax.Array,
                         sigma: float) -> jax.Array:
    """:func:`symbol_bits` in the forward pass, with the gradient of the bits expected under the
    soft assignment of ``z`` to the centres (so a value can learn to move to a cheaper centre).

    ``logits [B, h, w, C, L]``, ``z`` (values before quantization) and ``symbols`` ``[B, h, w, C]``
    -> ``float32 [B, h, w, C]``."""
    per_centre = -jax.nn.log_softmax(logits, axis=-1) / np.log(2.0)
    soft = jax.nn.softmax(-sigma * jnp.square(z[..., None] - centers), axis=-1)
    assign = soft + jax.lax.stop_gradient(jax.nn.one_hot(symbols, centers.shape[0]) - soft)
    return jnp.sum(assign * per_centre, axis=-1)


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


def objective_weights(loss: ml_collections.ConfigDict) -> dict[str, float]:
    """``config.loss`` as the weights of one formula (:func:`rd_objective`): ``ms_ssim`` and
    ``mse`` (distortion weights), ``beta`` and ``H_target`` (bits per symbol)."""
    if loss.distortion == "ms_ssim":
        d = dict(ms_ssim=loss.K_ms_ssim, mse=loss.get("mix_mse", 0.0))
    elif loss.distortion == "mse":
        d = dict(ms_ssim=0.0, mse=loss.K_mse)
    else:
        raise ValueError(f"loss.distortion must be 'ms_ssim' or 'mse', not {loss.distortion!r}")
    return dict(d, beta=loss.beta, H_target=loss.H_target)


def rd_objective(w: dict, ms_ssim_: jax.Array, mse_: jax.Array, H: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(distortion, rate penalty)`` of the training loss, batch means: ``w["ms_ssim"] * (1 - MS-SSIM)
    + w["mse"] * MSE`` and ``w["beta"] * max(H - w["H_target"], 0)``; the arguments are ``[B]``."""
    distortion = w["ms_ssim"] * (1.0 - jnp.mean(ms_ssim_)) + w["mse"] * jnp.mean(mse_)
    return distortion, w["beta"] * jnp.maximum(jnp.mean(H) - w["H_target"], 0.0)


class CPMTask:
    """The trainer's task: pure init / train_step / eval_step.

    ``config.loss``: ``distortion`` ("ms_ssim": ``K_ms_ssim * (1 - MS-SSIM) + mix_mse * MSE``;
    "mse": ``K_mse * MSE``), ``beta``, ``H_target`` (bits per symbol; the target bpp is
    ``H_target * C / 64``), ``weight_decay`` (autoencoder kernels), ``center_decay``.
    ``config.init_from`` (read by the trainer): a workdir or exported ``.msgpack`` of a CPM model
    to start from (e.g. a medium-rate model fine-tuned to another operating point).
    """

    def __init__(self, config: ml_collections.ConfigDict):
        self.spec = spec_from_config(config.model)
        self.model = CPM(self.spec)
        self.loss_config = config.loss
        self.weights = objective_weights(config.loss)
        self.tx, self.schedule = make_optimizer(config.optimizer)

    def check_batch(self, image_shape: tuple[int, ...]) -> None:
        if len(image_shape) != 4 or image_shape[-1] != 3:
            raise ValueError(f"the context-model codec expects images [B, H, W, 3], got shape {image_shape}")
        if image_shape[1] % FACTOR or image_shape[2] % FACTOR or min(image_shape[1:3]) < 16:
            raise ValueError(f"training crops must be multiples of {FACTOR} and at least 16 pixels, "
                             f"got {image_shape[1]}x{image_shape[2]}")

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
        self.check_batch(batch["image"].shape)
        params = self.model.init(rng, batch["image"][:1].astype(jnp.float32))["params"]
        return TrainState.create(params, self.tx)

    def metrics(self, params: Any, image: jax.Array) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        x = image.astype(jnp.float32)
        out = self.model.apply({"params": params}, x)
        rates = rate_terms(self.spec, out)
        pixels = float(x.shape[1] * x.shape[2])
        m = dict(ms_ssim=ms_ssim(x, out["x_hat"]), mse=mse(x, out["x_hat"]),
                 bpp=rates["bits"] / pixels, bpp_all=rates["H_real"] * self.spec.channels / FACTOR**2,
                 H_soft=rates["H_soft"], H_real=rates["H_real"], kmap_bpp=rates["kmap_bits"] / pixels,
                 importance=jnp.mean(unmasked_count(out["mask"]), axis=(1, 2)) / self.spec.channels)
        return m, rates

    def loss(self, params: Any, image: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        c = self.loss_config
        m, rates = self.metrics(params, image)
        distortion, rate_penalty = rd_objective(self.weights, m["ms_ssim"], m["mse"], rates["H_soft"])
        fit = jnp.mean(rates["H_fit"])  # trains the context model and the importance-map prior on every step
        ae = {k: v for k, v in params.items() if k in ("encoder", "decoder")}
        wd = sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(ae) if p.ndim > 1) * 0.5 * c.weight_decay
        cd = 0.5 * c.center_decay * jnp.sum(jnp.square(params["centers"]))
        total = distortion + rate_penalty + fit + wd + cd
        metrics = {k: jnp.mean(v) for k, v in m.items()}
        metrics.update(loss=total, distortion=distortion, rate_penalty=rate_penalty)
        metrics["psnr"] = jnp.mean(10.0 * jnp.log10(255.0**2 / jnp.maximum(m["mse"], 1e-10)))
        return total, metrics

    def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        del rng
        (_, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch["image"])
        metrics["learning_rate"] = self.schedule(state.step)
        return state.apply_gradients(grads), metrics

    def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        m, _ = self.metrics(state.params, batch["image"])
        m["psnr"] = 10.0 * jnp.log10(255.0**2 / jnp.maximum(m["mse"], 1e-10))
        return m


# --------------------------------------------------------------------------------------
# Entropy coding: real bitstreams
# --------------------------------------------------------------------------------------

_NB_OFFSETS = [(dc, dy, dx) for dc in (-1, 0) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


class _TilePlan:
    """Wavefront positions of one latent tile ``[C, h, w]`` as flat indices into padded volumes."""

    def __init__(self, channels: int, h: int, w: int):
        self.shape = (channels, h, w)
        self.padded = (channels + 1, h + 2, w + 2)
        self.size = int(np.prod(self.padded))
        ph, pw = self.padded[1], self.padded[2]
        self.offsets = np.array([dc * ph * pw + dy * pw + dx for dc, dy, dx in _NB_OFFSETS], np.int32)
        self.fronts = wavefronts(channels, h, w)
        self.width = max(len(f) for f in self.fronts)
        self.flat = []  # int32 [M] per wavefront, padded with self.size (out of range: dropped)
        for f in self.fronts:
            flat = np.full((self.width,), self.size, np.int32)
            flat[: len(f)] = ((f[:, 0] + 1) * ph + f[:, 1] + 1) * pw + f[:, 2] + 1
            self.flat.append(flat)
        self.flat_device = [jnp.asarray(f) for f in self.flat]  # uploaded once per tile shape, not per call


@functools.lru_cache(maxsize=8)
def _codec_functions(spec: CPMSpec) -> tuple[CPM, Any, Any, Any]:
    """The model and its jitted ``(encode, decode, context_logits)`` of ``(params, inputs)`` for one
    architecture."""
    model = CPM(spec, subpixel_decoder=False)  # the synthesis the streams' checksums were written with
    return (model, jax.jit(lambda p, x: model.apply({"params": p}, x, method=CPM.encode)),
            jax.jit(lambda p, q: model.apply({"params": p}, q, method=CPM.decode)),
            jax.jit(lambda p, q: model.apply({"params": p}, q, method=CPM.context_logits)))


@functools.lru_cache(maxsize=8)
def _refine_functions(spec: CPMSpec) -> tuple[Any, Any, Any]:
    """Jitted ``(latent, bottleneck, step)`` of one architecture for :meth:`CPMCodec.refine`.

    ``step(params, weights, lr, z, adam_state, x) -> (z', adam_state', objective, (MS-SSIM, H))``:
    one Adam step on the encoder's raw output ``z [1, h, w, C + 1]`` for the image
    ``x float32 [1, H, W, 3]``, minimising the training objective (:func:`rd_objective`) with the
    parameters fixed; ``objective`` is that of ``z`` before the step. Computed with the training
    formulation (sub-pixel synthesis); only the symbols it settles on matter to the codec.
    """
    import optax

    model = CPM(spec, subpixel_decoder=True)
    adam = optax.scale_by_adam()

    def objective(params, w, z, x):
        out = model.apply({"params": params}, z, method=CPM.bottleneck)
        x_hat = model.apply({"params": params}, out["q"], method=CPM.decode)
        out["logits"] = model.apply({"params": params}, out["q"], method=CPM.context_logits)
        out["kmap_logits"] = KMAP_SCALE * params["kmap_logits"]
        bc = expected_symbol_bits(out["logits"], out["z"], out["symbols"], params["centers"], spec.sigma)
        H = rate_terms(spec, out, bc)["H_soft"]
        ms = ms_ssim(x, x_hat)
        distortion, rate_penalty = rd_objective(w, ms, mse(x, x_hat), H)
        return distortion + rate_penalty, (ms[0], H[0])

    def step(params, w, lr, z, state, x):
        (value, aux), grad = jax.value_and_grad(objective, argnums=2, has_aux=True)(params, w, z, x)
        update, state = adam.update(grad, state)
        return z - lr * update, state, value, aux

    return (jax.jit(lambda p, x: model.apply({"params": p}, x, method=CPM.latent)),
            jax.jit(lambda p, z: model.apply({"params": p}, z, method=CPM.bottleneck)),
            jax.jit(step))


def _check_refinement(steps: int, lr: float, objective: dict | None) -> None:
    """ValueError unless ``steps`` >= 0, ``lr`` > 0 and, for ``steps`` > 0, an ``objective`` is given."""
    if steps < 0 or lr <= 0:
        raise ValueError(f"refine must be >= 0 steps and refine_lr > 0, got {steps} and {lr}")
    if steps and objective is None:
        raise ValueError("refine needs the model's training objective (objective_weights(config.loss))")


_CONTEXT_STEP = jax.jit(_context_step, donate_argnums=(1,))
_KMAP_TABLE = jax.jit(lambda p: jax.nn.softmax(KMAP_SCALE * p["kmap_logits"], -1))


class CPMCodec:
    """Lossy compression of ``uint8`` images with a trained context-model codec.

    ``compress(image) -> bytes``, ``decompress(bytes) -> image``, ``reconstruct(image)`` (what
    decompress returns, computed without coding) and ``estimate_bits(image)`` (cross-entropy).
    The autoencoder runs on the whole image (padded by edge replication to a multiple of 8);
    the latent is coded in tiles of at most ``tile x tile`` *pixels* (``tile / 8`` latent
    positions a side), each an independent stream (bounded memory for the wavefront caches).
    The container's metadata is kept to a few dozen bytes: at 0.2 bpp a 768x512 image is only
    ~10 kB.

    ``refine``: steps of encoder-side latent refinement (:meth:`refine`; 0: the encoder's
    output as it is). It needs ``objective`` (:func:`objective_weights` of the model's training
    config; :func:`load_codec` passes it). Refinement changes only which symbols are sent: the
    decoder, the format and decoding time are the same, and any codec of the model decodes the file.
    The last image analysed is remembered (by its bytes), so ``compress``, ``reconstruct``,
    ``estimate_bits`` and ``bit_map`` of one image refine it once.
    """

    codec_name = "cpm"

    def __init__(self, spec: CPMSpec, params: Any, tile: int = 1024, refine: int = 0,
                 objective: dict[str, float] | None = None, refine_lr: float = 0.1, progress: bool = False):
        from jaxcomp.codecs.l3c import numerics
        from jaxcomp.coding import fingerprint

        if tile < FACTOR or tile % FACTOR:
            raise ValueError(f"tile must be a positive multiple of {FACTOR} pixels, got {tile}")
        _check_refinement(refine, refine_lr, objective)
        self.refine_steps, self.refine_lr, self.progress = refine, refine_lr, progress
        self.objective = None if objective is None else {k: float(v) for k, v in objective.items()}
        self._memo: tuple[tuple, tuple[np.ndarray, np.ndarray]] | None = None
        self.refine_trace: list[tuple[float, float, float]] = []  # of the last image refined (refine's trace)
        self.spec, self.tile = spec, tile
        self.params = jax.tree.map(jnp.asarray, params)
        self.fingerprint = fingerprint(self.params, dataclasses.asdict(spec))
        self.numerics = numerics()
        centers = np.asarray(self.params["centers"], np.float32)
        self.centers = centers
        self.zero_symbol = int(np.argmin(np.abs(centers)))  # what a masked symbol quantizes to
        # compiled once per architecture, shared by every codec of it (another checkpoint, a reload)
        self.model, self._encode_fn, self._decode_fn, self._logits_fn = _codec_functions(spec)
        self._step = _CONTEXT_STEP
        self.kmap_table = np.asarray(_KMAP_TABLE(self.params))
        self._plans: dict[tuple[int, int], _TilePlan] = {}

    # ---- the bottleneck --------------------------------------------------------------

    def _pad(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        return np.pad(image, ((0, -h % FACTOR), (0, -w % FACTOR), (0, 0)), mode="edge")

    def with_refinement(self, steps: int) -> CPMCodec:
        """This codec with ``steps`` steps of :meth:`refine` (a copy sharing the model and its
        compiled functions; ``0``: none)."""
        _check_refinement(steps, self.refine_lr, self.objective)
        other = copy.copy(self)
        other.refine_steps, other._memo, other.refine_trace = steps, None, []
        return other

    def refine(self, x: jax.Array, z: jax.Array) -> tuple[jax.Array, list[tuple[float, float, float]]]:
        """Encoder-side latent refinement (as in Campos et al., "Content adaptive optimization for
        neural image compression", 2019): ``refine_steps`` Adam steps (``refine_lr``, cosine-decayed to 0) on the
        encoder's raw output ``z float32 [1, h, w, C + 1]`` for this image ``x float32 [1, H, W, 3]``
        (padded), minimising the loss the model was trained with (:func:`rd_objective`): the
        distortion of the decoded image plus ``beta`` times the bits above ``H_target``, with the
        gradient of the expected bits (:func:`expected_symbol_bits`). Returns the ``z`` with the
        lowest objective seen (the encoder's own output included) and the trace
        ``[(objective, MS-SSIM, bits per symbol)]`` of every step.

        :meth:`analyse` refines images of at least ``MIN_REFINE`` (16) pixels a side after padding
        (what MS-SSIM needs) and codes smaller ones from the encoder's output. The gradient holds
        the decoder's activations for the whole image: the process peaked at 0.92 GB for a 768x512
        image with the shipped high model (0.55 GB without refinement).
        """
        import optax
        from tqdm.auto import tqdm

        _, _, step = _refine_functions(self.spec)
        w = {k: jnp.float32(v) for k, v in self.objective.items()}
        state = optax.scale_by_adam().init(z)
        best, best_value, trace = z, np.inf, []
        n = self.refine_steps
        for i in tqdm(range(n), desc="refining latents", unit="step", disable=not self.progress, leave=False):
            lr = jnp.float32(self.refine_lr * 0.5 * (1.0 + np.cos(np.pi * i / n)))  # cosine decay to 0
            new, state, value, (ms, h) = step(self.params, w, lr, z, state, x)
            trace.append((float(value), float(ms), float(h)))
            if trace[-1][0] < best_value:
                best, best_value = z, trace[-1][0]
            z = new
        return best, trace

    def analyse(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``uint8 [H, W, 3]`` -> (symbols ``int32 [h, w, C]`` with masked ones set to the zero
        centre, unmasked channel counts ``k`` ``int32 [h, w]``); with ``refine``, of the refined
        latent (:meth:`refine`)."""
        import hashlib

        rgb = _as_rgb(image)
        key = (rgb.shape, hashlib.blake2b(np.ascontiguousarray(rgb).tobytes(), digest_size=16).digest())
        if self._memo is not None and self._memo[0] == key:
            return self._memo[1]
        x = jnp.asarray(self._pad(rgb), jnp.float32)[None]
        self.refine_trace = []
        if self.refine_steps and min(x.shape[1:3]) >= MIN_REFINE:
            latent, bottleneck, _ = _refine_functions(self.spec)
            z, self.refine_trace = self.refine(x, latent(self.params, x))
            out = bottleneck(self.params, z)
        else:
            out = self._encode_fn(self.params, x)
        symbols = np.asarray(out["symbols"][0])
        k = np.asarray(unmasked_count(out["mask"])[0]) if self.spec.importance_map else \
            np.full(symbols.shape[:2], self.spec.channels, np.int32)
        result = (self._apply_mask(symbols, k), k)
        self._memo = (key, result)
        return result

    def _apply_mask(self, symbols: np.ndarray, k: np.ndarray) -> np.ndarray:
        masked = np.arange(self.spec.channels)[None, None, :] >= k[..., None]
        return np.where(masked, self.zero_symbol, symbols).astype(np.int32)

    def synthesise(self, symbols: np.ndarray, height: int, width: int) -> np.ndarray:
        """Symbols ``[h, w, C]`` -> ``uint8 [height, width, 3]``."""
        q = jnp.asarray(self.centers[symbols])[None]
        x = np.asarray(self._decode_fn(self.params, q)[0])
        return np.round(x[:height, :width]).astype(np.uint8)

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        """What :meth:`decompress` returns for this image, without entropy coding."""
        image = check_image(image)
        symbols, _ = self.analyse(image)
        return _as_mode(self.synthesise(symbols, *image.shape[:2]), image.ndim == 2)

    # ---- tiles and wavefronts ----------------------------------------------------------

    def _tiles(self, h: int, w: int, tile: int) -> list[tuple[int, int, int, int]]:
        return [(y, x, min(tile, h - y), min(tile, w - x)) for y in range(0, h, tile) for x in range(0, w, tile)]

    def _plan(self, h: int, w: int) -> _TilePlan:
        if (h, w) not in self._plans:
            self._plans[(h, w)] = _TilePlan(self.spec.channels, h, w)
        return self._plans[(h, w)]

    def _initial_state(self, plan: _TilePlan) -> tuple:
        k = self.spec.context_features
        values = jnp.full((plan.size,), self.centers[0], jnp.float32)
        zeros = jnp.zeros((plan.size, k), jnp.float32)
        return (values, zeros, zeros + 0.0, zeros + 0.0)

    def _run_fronts(self, plan: _TilePlan, symbols: np.ndarray | None, consume):
        """Runs the wavefront steps. With ``symbols`` (encoder: ``[C, h, w]`` known), PMFs of all
        fronts are dispatched first; without (decoder), ``consume(i, pmf)`` must return the
        decoded symbols ``int32 [n_i]`` of front ``i`` before the next step runs."""
        cparams = self.params["context"]
        offsets = jnp.asarray(plan.offsets)
        state = self._initial_state(plan)
        prev_flat = jnp.full((plan.width,), plan.size, jnp.int32)
        prev_values = jnp.zeros((plan.width,), jnp.float32)
        pending = []
        for i, front in enumerate(plan.fronts):
            state, pmf = self._step(cparams, state, prev_flat, prev_values, plan.flat_device[i], offsets)
            if symbols is not None:
                decoded = symbols[front[:, 0], front[:, 1], front[:, 2]]
                pending.append(pmf)
            else:
                decoded = consume(i, np.asarray(pmf)[: len(front)])
            vals = np.zeros((plan.width,), np.float32)
            vals[: len(front)] = self.centers[decoded]
            prev_flat, prev_values = plan.flat_device[i], jnp.asarray(vals)
        if symbols is not None:
            for i, pmf in enumerate(pending):
                consume(i, np.asarray(pmf)[: len(plan.fronts[i])])

    def _kmap_parts(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Importance map ``[h, w]`` in anti-diagonal order with its PMFs ``[h*w, C+1]``."""
        outside = self.spec.channels + 1
        left = np.pad(k[:, :-1], ((0, 0), (1, 0)), constant_values=outside)
        up = np.pad(k[:-1, :], ((1, 0), (0, 0)), constant_values=outside)
        order = _diagonal_order(*k.shape)
        return k.reshape(-1)[order], self.kmap_table[left.reshape(-1)[order], up.reshape(-1)[order]]

    def _encode_tile(self, symbols: np.ndarray, k: np.ndarray,
                     bit_map: np.ndarray | None = None) -> tuple[bytes, float]:
        """``symbols [h, w, C]``, ``k [h, w]`` of one tile -> (payload, ideal bits)."""
        from jaxcomp.coding import encode_categorical_parts

        s = self.spec
        h, w = k.shape
        plan = self._plan(h, w)
        vol = np.transpose(symbols, (2, 0, 1))  # [C, h, w]
        parts = []
        if s.importance_map:
            parts.append(self._kmap_parts(k))
        coded_syms, coded_pmfs = [], []

        def consume(i, pmf):
            f = plan.fronts[i]
            keep = f[:, 0] < k[f[:, 1], f[:, 2]]
            sym = vol[f[keep, 0], f[keep, 1], f[keep, 2]]
            coded_syms.append(sym)
            coded_pmfs.append(pmf[keep])
            if bit_map is not None:
                p = pmf[keep][np.arange(len(sym)), sym] / pmf[keep].sum(1)
                bit_map[f[keep, 1], f[keep, 2]] += -np.log2(p)
            return vol[f[:, 0], f[:, 1], f[:, 2]]

        self._run_fronts(plan, vol, consume)
        parts.append((np.concatenate(coded_syms), np.concatenate(coded_pmfs)))
        bits = sum(_ideal_bits(sym, pmf) for sym, pmf in parts)
        return encode_categorical_parts(parts).tobytes(), bits

    def _decode_tile(self, payload: bytes, h: int, w: int) -> np.ndarray:
        from jaxcomp.coding import BitstreamError, CategoricalStreamDecoder

        s = self.spec
        if len(payload) % 4:
            raise BitstreamError("bitstream payload has a length that is not a multiple of 4 bytes")
        decoder = CategoricalStreamDecoder(np.frombuffer(payload, np.uint32))
        if s.importance_map:
            k = self._decode_kmap(decoder, h, w)
        else:
            k = np.full((h, w), s.channels, np.int32)
        plan = self._plan(h, w)
        vol = np.full((s.channels, h, w), self.zero_symbol, np.int32)

        def consume(i, pmf):
            f = plan.fronts[i]
            keep = f[:, 0] < k[f[:, 1], f[:, 2]]
            if keep.any():
                vol[f[keep, 0], f[keep, 1], f[keep, 2]] = decoder.decode(pmf[keep])
            return vol[f[:, 0], f[:, 1], f[:, 2]]

        self._run_fronts(plan, None, consume)
        return np.transpose(vol, (1, 2, 0))

    def _decode_kmap(self, decoder, h: int, w: int) -> np.ndarray:
        outside = self.spec.channels + 1
        k = np.full((h + 1, w + 1), outside, np.int32)  # row 0 / column 0: outside
        for d in range(h + w - 1):
            y = np.arange(max(0, d - w + 1), min(h, d + 1))
            x = d - y
            pmf = self.kmap_table[k[y + 1, x], k[y, x + 1]]
            k[y + 1, x + 1] = decoder.decode(pmf)
        return k[1:, 1:]

    # ---- public API -------------------------------------------------------------------

    def compress(self, image: np.ndarray, return_bits: bool = False):
        """``uint8 [H, W, 3]`` (or ``[H, W]``) -> bitstream ``bytes`` (and, with ``return_bits``,
        the ideal information content of the coded symbols in bits)."""
        import zlib

        from jaxcomp.coding import pack

        image = check_image(image)
        symbols, k = self.analyse(image)
        recon = _as_mode(self.synthesise(symbols, *image.shape[:2]), image.ndim == 2)
        payloads, bits = [], 0.0
        for y, x, th, tw in self._tiles(*k.shape, self.tile // FACTOR):
            p, b = self._encode_tile(symbols[y:y + th, x:x + tw], k[y:y + th, x:x + tw])
            payloads.append(p)
            bits += b
        # short keys: height, width, mode, tile (pixels), numerics, CRC-32 of the reconstruction
        meta = dict(h=image.shape[0], w=image.shape[1], m="L" if image.ndim == 2 else "RGB",
                    t=self.tile, n=self.numerics, c=zlib.crc32(recon.tobytes()))
        data = pack(self.codec_name, self.fingerprint, meta, payloads)
        return (data, bits) if return_bits else data

    def decompress(self, data: bytes) -> np.ndarray:
        """Bitstream -> ``uint8 [H, W, 3]`` (``[H, W]`` if the input was grayscale).

        Raises:
          jaxcomp.coding.BitstreamError: not a bitstream of this codec and model, truncated,
            corrupt, or the decoded image does not match the encoder's checksum.
        """
        import zlib

        from jaxcomp.codecs.l3c import _NUMERICS_HELP
        from jaxcomp.coding import BitstreamError, CodingError, unpack

        meta, payloads = unpack(data, self.codec_name, self.fingerprint)
        try:
            h, w, tile, mode, crc = int(meta["h"]), int(meta["w"]), int(meta["t"]), meta["m"], int(meta["c"])
            stream_numerics = str(meta["n"])
        except (KeyError, TypeError, ValueError) as e:
            raise BitstreamError(f"bitstream metadata is incomplete: {e}") from e
        if not (0 < h <= 1 << 16 and 0 < w <= 1 << 16 and 0 < tile <= 1 << 15 and tile % FACTOR == 0
                and mode in ("L", "RGB")):
            raise BitstreamError(f"bitstream metadata is invalid: {meta}")
        if stream_numerics != self.numerics:
            raise BitstreamError(
                f"this file was compressed with {stream_numerics} numerics and this process computes with "
                f"{self.numerics}: the model's probabilities would differ, so it cannot be decoded here. "
                + _NUMERICS_HELP)
        lh, lw = -(-h // FACTOR), -(-w // FACTOR)
        tiles = self._tiles(lh, lw, tile // FACTOR)
        if len(payloads) != len(tiles):
            raise BitstreamError(f"bitstream has {len(payloads)} payloads, expected {len(tiles)}")
        symbols = np.zeros((lh, lw, self.spec.channels), np.int32)
        try:
            for payload, (y, x, th, tw) in zip(payloads, tiles):
                symbols[y:y + th, x:x + tw] = self._decode_tile(payload, th, tw)
        except CodingError as e:
            raise BitstreamError(f"bitstream does not decode: {e}") from e
        image = _as_mode(self.synthesise(symbols, h, w), mode == "L")
        if zlib.crc32(np.ascontiguousarray(image).tobytes()) != crc:
            raise BitstreamError("decoded image does not match the encoder's checksum: the model computed "
                                 "different values here than when compressing (different platform or jaxlib?)")
        return image

    def estimate_bits(self, image: np.ndarray) -> float:
        """Cross-entropy estimate (the training rate, full conv context model per tile) of the
        bits :meth:`compress` spends on the latent and the importance map."""
        image = check_image(image)
        symbols, k = self.analyse(image)
        total = 0.0
        for y, x, th, tw in self._tiles(*k.shape, self.tile // FACTOR):
            sym, kk = symbols[y:y + th, x:x + tw], k[y:y + th, x:x + tw]
            logits = self._logits_fn(self.params, jnp.asarray(self.centers[sym])[None])
            bc = np.asarray(symbol_bits(logits, jnp.asarray(sym)[None]))[0]
            coded = np.arange(self.spec.channels)[None, None] < kk[..., None]
            total += float(bc[coded].sum())
            if self.spec.importance_map:
                total += float(kmap_bits(KMAP_SCALE * self.params["kmap_logits"], jnp.asarray(kk)[None])[0])
        return total

    def bit_map(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-position coding cost: (bits of the latent symbols at each latent position
        ``float32 [h, w]``, the importance map ``k`` ``int32 [h, w]``)."""
        image = check_image(image)
        symbols, k = self.analyse(image)
        out = np.zeros(k.shape, np.float64)
        for y, x, th, tw in self._tiles(*k.shape, self.tile // FACTOR):
            part = np.zeros((th, tw), np.float64)
            self._encode_tile(symbols[y:y + th, x:x + tw], k[y:y + th, x:x + tw], bit_map=part)
            out[y:y + th, x:x + tw] = part
        return out.astype(np.float32), k


def _diagonal_order(h: int, w: int) -> np.ndarray:
    """Flat indices of an ``[h, w]`` map in anti-diagonal order (row-major within a diagonal)."""
    y, x = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.lexsort((y.reshape(-1), (y + x).reshape(-1)))


def _ideal_bits(symbols: np.ndarray, pmfs: np.ndarray) -> float:
    if len(symbols) == 0:
        return 0.0
    p = pmfs[np.arange(len(symbols)), symbols].astype(np.float64) / pmfs.sum(1, dtype=np.float64)
    return float(-np.log2(p).sum())


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image


def _as_mode(rgb: np.ndarray, gray: bool) -> np.ndarray:
    if not gray:
        return rgb
    return np.round(rgb.astype(np.float32).mean(-1)).astype(np.uint8)


def check_image(image: np.ndarray) -> np.ndarray:
    """Accepts ``uint8 [H, W, 3]`` or ``uint8 [H, W]``; anything else is a clear ``ValueError``."""
    from jaxcomp.codecs.l3c import check_image as check_codec_image

    return check_codec_image(image, "the context-model codec")


OPERATING_POINTS = ("low", "med", "high")


def shipped_model(point: str = "med") -> str:
    """Path of the shipped model of an operating point (``low``, ``med``, ``high``)."""
    import os

    from jaxcomp.codecs.pretrained import PRETRAINED_DIR

    if point not in OPERATING_POINTS:
        raise ValueError(f"unknown operating point {point!r}; known: {', '.join(OPERATING_POINTS)}")
    return os.path.join(PRETRAINED_DIR, f"cpm_{point}.msgpack")


def load_codec(checkpoint: str | None = None, tile: int = 1024, refine: int = 0, refine_lr: float = 0.1,
               progress: bool = False) -> CPMCodec:
    """A :class:`CPMCodec` from a shipped operating point (``None``/``"med"``, ``"low"``,
    ``"high"``), an exported ``.msgpack`` or a training workdir; ``refine`` steps of encoder-side
    latent refinement under the model's own training objective (:meth:`CPMCodec.refine`)."""
    from jaxcomp.codecs.pretrained import load_model

    if checkpoint is None or checkpoint in OPERATING_POINTS:
        checkpoint = shipped_model(checkpoint or "med")
    config, params, _ = load_model(checkpoint, task="cpm")
    return CPMCodec(spec_from_config(config.model), params, tile=tile, refine=refine,
                    objective=objective_weights(config.loss), refine_lr=refine_lr, progress=progress)

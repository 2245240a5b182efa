"""Shared Flax (linen) building blocks. All tensors are NHWC ``float32`` unless stated.

:class:`Conv`, :class:`StridedConv` and :class:`ConvTranspose` add their bias with
:func:`add_channel_bias`, a ``custom_vjp`` (a faster bias gradient on the CPU): they support ``jit``,
``vmap`` and reverse-mode derivatives (``grad``, ``vjp``, gradients of gradients), not forward mode
(``jvp``, ``jacfwd``, ``hessian`` raise a TypeError); use Flax's ``nn.Conv`` where those are needed
(the same parameters and outputs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.checks import is_whole

# PyTorch's default conv initialisation (kaiming_uniform with a=sqrt(5), i.e. U(+-1/sqrt(fan_in))):
# the reference implementations (L3C, the CVPR'18 context model) train from it, and deep
# residual stacks without normalisation start with much smaller activations than under
# Flax's lecun_normal default.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def add_channel_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    """``y + bias`` for ``y [..., C]`` and ``bias [C]`` (promoted to their common dtype), whose
    gradient for ``bias`` is the sum of the cotangent over all leading axes computed as one
    matrix-vector product.

    The value is exactly ``y + bias``; only the gradient's form differs from broadcasting.
    XLA's CPU backend rewrites a large ``reduce_sum`` into a slow tree of ``reduce-window`` ops
    (11.7 ms for a ``[8, 64, 64, 64]`` cotangent, against 0.53 ms as a product with a vector of
    ones: ``python -m experiments.bench_conv_grads --bias``, docs/l3c.md); with this form L3C's
    ``:paper`` training step takes a median 6 % less time. The sum is accumulated in at least
    float32. A ``custom_vjp``: reverse mode only (``jax.jvp`` / ``jacfwd`` through it raise;
    use ``nn.Conv`` where forward-mode derivatives are needed).
    """
    if tuple(bias.shape) != (y.shape[-1],):
        raise ValueError(f"add_channel_bias: bias has shape {tuple(bias.shape)}; expected ({y.shape[-1]},), "
                         f"one per channel of y {tuple(y.shape)}")
    dtype = jnp.result_type(y, bias)
    return _add_channel_bias(y.astype(dtype), bias.astype(dtype))


def _promote(x: jax.Array, kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``x`` and ``kernel`` in their common dtype (Flax's ``promote_dtype`` with ``dtype=None``)."""
    dtype = jnp.result_type(x, kernel)
    return jnp.asarray(x, dtype), jnp.asarray(kernel, dtype)


@jax.custom_vjp
def _add_channel_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
    return y + bias


def _add_channel_bias_fwd(y: jax.Array, bias: jax.Array) -> tuple[jax.Array, None]:
    return y + bias, None


def _add_channel_bias_bwd(_: None, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    g2 = g.reshape(-1, g.shape[-1])
    ones = jnp.ones((g2.shape[0],), g.dtype)
    gb = jax.lax.dot_general(ones, g2, (((0,), (0,)), ((), ())),
                             preferred_element_type=jnp.promote_types(g.dtype, jnp.float32))
    return g, gb.astype(g.dtype)


_add_channel_bias.defvjp(_add_channel_bias_fwd, _add_channel_bias_bwd)


class Conv(nn.Module):
    """``nn.Conv`` (channels last, kernel ``[*kernel_size, I / groups, features]``, bias
    ``[features]``) with :data:`torch_kernel_init` unless ``kernel_init`` is given, and the bias
    added by :func:`add_channel_bias` (a faster bias gradient on CPU).

    The fields mean what ``nn.Conv``'s do; the parameter tree (``kernel``, ``bias``), the
    initial values, the auto-names (``Conv_<i>``), the outputs (bit for bit) and the name scopes
    are ``nn.Conv``'s; its derivatives are reverse mode only (the module docstring). Inputs
    ``[B, *spatial, I]``; ``padding`` a ``lax`` string (``"SAME"``, ``"VALID"``), an int or
    per-dimension ints / pairs (``nn.Conv``'s ``"CIRCULAR"``, ``"CAUSAL"`` and ``"REFLECT"``,
    masks and unshared biases are not offered: use ``nn.Conv``).
    """

    features: int
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] | None = 1
    padding: str | int | Sequence[int | tuple[int, int]] = "SAME"
    input_dilation: int | Sequence[int] = 1
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: int = 1
    use_bias: bool = True
    dtype: jnp.dtype | None = None
    param_dtype: jnp.dtype = jnp.float32
    precision: jax.lax.PrecisionLike = None
    kernel_init: Callable = torch_kernel_init
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        from flax.linen.dtypes import promote_dtype
        from flax.linen.linear import canonicalize_padding

        ksize = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        rank = len(ksize)
        if inputs.ndim != rank + 2:
            raise ValueError(f"Conv with a {rank}-D kernel takes inputs [B, *{rank} spatial, C], "
                             f"got shape {inputs.shape}")
        if isinstance(self.padding, str) and self.padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"jaxcomp.nn.Conv: padding {self.padding!r} is nn.Conv's own mode; use nn.Conv")

        def per_dim(v):  # as nn.Conv: an int (or None: 1) for every spatial dimension, or one per dimension
            return (1 if v is None else v,) * rank if v is None or isinstance(v, int) else tuple(v)

        in_features = inputs.shape[-1]
        if in_features % self.feature_group_count:
            raise ValueError(f"{in_features} input channels are not divisible by "
                             f"feature_group_count={self.feature_group_count}")
        kernel = self.param("kernel", self.kernel_init,
                            (*ksize, in_features // self.feature_group_count, self.features),
                            self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) if self.use_bias else None
        inputs, kernel, bias = promote_dtype(inputs, kernel, bias, dtype=self.dtype)
        spec = (0, rank + 1) + tuple(range(1, rank + 1))  # N, C, spatial (nn.Conv's dimension numbers)
        y = jax.lax.conv_general_dilated(
            inputs, kernel, per_dim(self.strides), canonicalize_padding(self.padding, rank),
            lhs_dilation=per_dim(self.input_dilation), rhs_dilation=per_dim(self.kernel_dilation),
            dimension_numbers=jax.lax.ConvDimensionNumbers(spec, (rank + 1, rank) + tuple(range(rank)), spec),
            feature_group_count=self.feature_group_count, precision=self.precision)
        return y if bias is None else add_channel_bias(y, bias)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
    """Depth-to-space: ``[B, H, W, C*f*f] -> [B, H*f, W*f, C]`` (PyTorch's PixelShuffle order)."""
    if not is_whole(factor) or factor < 1:
        raise ValueError(f"pixel_shuffle: factor must be a positive integer, got {factor!r}")
    if x.ndim != 4:
        raise ValueError(f"pixel_shuffle expects [B, H, W, C], got shape {x.shape}")
    b, h, w, c = x.shape
    if c % (factor * factor):
        raise ValueError(f"pixel_shuffle: {c} channels not divisible by {factor}^2")
    oc = c // (factor * factor)
    x = x.reshape(b, h, w, oc, factor, factor)
    x = x.transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * factor, w * factor, oc)


def _subpixel_taps(k: int, s: int) -> tuple[np.ndarray, int, int]:
    """For a stride-``s`` transposed convolution with a ``k``-tap kernel and ``"SAME"`` padding
    (``jax.lax.conv_transpose``'s): ``table [D, s]``, the kernel tap that input offset
    ``dmin + j`` contributes to output phase ``r`` (``k``: none), and ``(dmin, dmax)``.

    The transposed convolution pads the ``s``-dilated input by ``pad_a`` in front, so output
    ``s*m + r`` sums ``x[m + d] * kernel[t]`` over the taps ``t = s*d + pad_a - r`` in ``[0, k)``.
    """
    pad_a = k - 1 if s > k - 1 else math.ceil((k + s - 2) / 2)
    entries = [(r, (r + t - pad_a) // s, t) for r in range(s) for t in range(k) if (r + t - pad_a) % s == 0]
    dmin, dmax = min(min(e[1] for e in entries), 0), max(max(e[1] for e in entries), 0)
    table = np.full((dmax - dmin + 1, s), k, np.int32)
    for r, d, t in entries:
        table[d - dmin, r] = t
    return table, dmin, dmax


def conv_transpose_subpixel(x: jax.Array, kernel: jax.Array, strides: tuple[int, int]) -> jax.Array:
    """``jax.lax.conv_transpose(x, kernel, strides, "SAME")`` (NHWC, HWIO, kernel not flipped, equal
    strides) as one stride-1 convolution to ``O*s*s`` channels followed by :func:`pixel_shuffle`.

    ``x``: ``float [B, H, W, I]``, ``kernel``: ``[kh, kw, I, O]`` -> ``[B, sy*H, sx*W, O]``. The
    same sums without the multiplications by the dilation's zeros. On XLA's CPU backend the
    dilated form's gradients are slow: a 5x5 stride-2 layer of the CPM decoder took 13 ms
    forward and 301 ms forward + gradient.
    """
    (sy, sx), (kh, kw) = strides, kernel.shape[:2]
    if sy != sx:
        raise ValueError(f"conv_transpose_subpixel: strides must be equal, got {strides}")
    ty, ymin, ymax = _subpixel_taps(kh, sy)
    tx, xmin, xmax = _subpixel_taps(kw, sx)
    padded = jnp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # index k: a zero tap
    w = padded[ty[:, None, :, None], tx[None, :, None, :]]  # [Dy, Dx, sy, sx, I, O]
    dy, dx, _, _, i, o = w.shape
    w = w.transpose(0, 1, 4, 5, 2, 3).reshape(dy, dx, i, o * sy * sx)  # pixel_shuffle's channel order
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((-ymin, ymax), (-xmin, xmax)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return pixel_shuffle(y, sy)


class ConvTranspose(nn.Module):
    """``nn.ConvTranspose(features, kernel_size, strides, padding="SAME")``, the same parameters
    (``kernel [kh, kw, I, O]``, ``bias [O]``) and outputs, computed by
    :func:`conv_transpose_subpixel`. ``[B, H, W, I] -> [B, sy*H, sx*W, features]``."""

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (2, 2)
    kernel_init: Callable = torch_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel = _promote(x, kernel)  # as nn.ConvTranspose: bf16/uint8 inputs meet a float32 kernel
        return add_channel_bias(conv_transpose_subpixel(x, kernel, tuple(self.strides)), bias)


class ResBlock(nn.Module):
    """EDSR residual block: ``x + conv(relu(conv(x)))`` with ``kernel x kernel`` convs."""

    features: int
    kernel: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = (self.kernel, self.kernel)
        y = Conv(self.features, k, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(y)
        y = Conv(self.features, k, dtype=self.dtype, name="conv2")(y)
        return x + y


class ResBody(nn.Module):
    """``blocks`` residual blocks and a conv, wrapped in a global skip (EDSR body)."""

    features: int
    blocks: int
    kernel: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = x
        for i in range(self.blocks):
            y = ResBlock(self.features, self.kernel, self.dtype, name=f"block{i}")(y)
        y = Conv(self.features, (self.kernel, self.kernel), dtype=self.dtype, name="conv")(y)
        return x + y


class AtrousHead(nn.Module):
    """Parallel 3x3 convs with the given dilations, concatenated, then a 1x1 conv to ``outputs``."""

    features: int
    outputs: int
    rates: Sequence[int] = (1, 2, 4)
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        branches = [
            Conv(self.features, (3, 3), kernel_dilation=(r, r), dtype=self.dtype, name=f"atrous{r}")(x)
            for r in self.rates
        ]
        return Conv(self.outputs, (1, 1), dtype=self.dtype, name="out")(jnp.concatenate(branches, -1))


def conv_strided_s2d(x: jax.Array, kernel: jax.Array, stride: int, padding: tuple[int, int]) -> jax.Array:
    """A stride-``stride`` convolution ``[B, H, W, I] * [k, k, I, O]`` with explicit zero ``padding``
    ``(before, after)`` on both spatial axes, computed as space-to-depth followed by a stride-1
    convolution with ``ceil(k / stride)`` taps: the same sums (``jax.lax.conv_general_dilated``
    with ``window_strides=(s, s)``), but its gradient with respect to ``x`` is a stride-1
    convolution too. On XLA's CPU backend the strided form's input gradient is a dilated
    transposed convolution, 15-30x slower than its forward pass (pix2pixHD's discriminator).
    """
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        raise ValueError(f"conv_strided_s2d: square kernels [k, k, I, O] only, got {kernel.shape}")
    k, s = kernel.shape[0], stride
    if not is_whole(s) or s < 1:
        raise ValueError(f"conv_strided_s2d: stride must be a positive integer, got {stride!r}")
    if x.ndim != 4 or x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"conv_strided_s2d: input [B, H, W, {kernel.shape[2]}] expected by the kernel, got {x.shape}")
    taps = -(-k // s)
    kernel = jnp.pad(kernel, ((0, taps * s - k), (0, taps * s - k), (0, 0), (0, 0)))
    b, h, w, c = x.shape
    before, after = padding
    out_h = (h + before + after - k) // s + 1
    out_w = (w + before + after - k) // s + 1
    # enough zeros after the input for (out - 1 + taps) whole blocks of s
    need_h, need_w = (out_h - 1 + taps) * s, (out_w - 1 + taps) * s
    x = jnp.pad(x, ((0, 0), (before, max(need_h - h - before, 0)), (before, max(need_w - w - before, 0)), (0, 0)))
    x = x[:, :need_h, :need_w]
    x = x.reshape(b, need_h // s, s, need_w // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, need_h // s, need_w // s, s * s * c)
    o = kernel.shape[-1]
    kernel = kernel.reshape(taps, s, taps, s, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(taps, taps, s * s * c, o)
    return jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))


class StridedConv(nn.Module):
    """``nn.Conv(features, (k, k), strides=(s, s), padding=((p0, p1), (p0, p1)))``: the same
    parameters (``kernel [k, k, I, O]``, ``bias [O]``, Flax's default initialisers) and outputs,
    computed by :func:`conv_strided_s2d` (fast gradients on the CPU)."""

    features: int
    kernel_size: int
    stride: int = 2
    padding: tuple[int, int] = (1, 1)
    kernel_init: Callable = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (self.kernel_size, self.kernel_size, x.shape[-1],
                                                         self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x, kernel = _promote(x, kernel)  # as nn.Conv: bf16/uint8 inputs meet a float32 kernel
        return add_channel_bias(conv_strided_s2d(x, kernel, self.stride, tuple(self.padding)), bias)

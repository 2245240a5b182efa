"""Sum-product networks (SPNs): matrix multiplication and DNN layers with r multiplications.

The 2-layer SPN of StrassenNets (Tschannen, Khanna & Anandkumar, ICML 2018) computes a bilinear map

    vec(C) = W_c [(W_b vec(B)) * (W_a vec(A))],     W_a, W_b in R^{r x nm}, R^{r x mk}, W_c in R^{nk x r},

with exactly ``r`` multiplications (the elementwise product) when the W's are ternary. For a
DNN layer the weight side ``W_a vec(A)`` is replaced by a learned full-precision vector
``a_tilde`` in R^r:

* :class:`SPNDense`: ``y = W_c [BN(W_b x) * a_tilde]`` (+ bias);
* :class:`SPNConv`: a conv with ternary ``W_b`` of kernel ``(p-1)s + k`` and stride ``p s`` to
  ``r`` channels, batch norm, channel-wise multiplication by ``a_tilde``, and a stride-``p``
  transposed conv with ternary ``W_c`` (kernel ``p x p``) back to ``c_out`` channels -- each
  hidden position produces a ``p x p`` block of the ``k x k``, stride-``s`` conv's outputs.

Vectorisation is row-major: ``vec(A)[i * m + j] = A[i, j]`` (``A.reshape(-1)`` in numpy).
The layers compute with the weights they are given; ternarization is a transform of the
parameter tree (:func:`jaxcomp.strassen.ternary.ternarize_params`). Every layer sows its
per-example operation counts into the ``op_counts`` collection when that is mutable
(:mod:`jaxcomp.strassen.counting`).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.strassen import counting

Padding = Sequence[tuple[int, int]]


# --------------------------------------------------------------------------------------
# Matrix multiplication
# --------------------------------------------------------------------------------------


def matmul_tensor(n: int = 2, m: int = 2, k: int = 2) -> np.ndarray:
    """The matrix-multiplication tensor ``T [nm, mk, nk]`` (int64).

    ``vec(AB)_c = sum_ab T[a, b, c] vec(A)_a vec(B)_b``.
    """
    t = np.zeros((n * m, m * k, n * k), np.int64)
    for i in range(n):
        for j in range(m):
            for q in range(k):
                t[i * m + j, j * k + q, i * k + q] = 1
    return t


def _check_spn(wa: jax.Array, wb: jax.Array, wc: jax.Array) -> None:
    """``wa [r, nm]``, ``wb [r, mk]``, ``wc [nk, r]`` with one ``r`` (the hidden width)."""
    if wa.ndim != 2 or wb.ndim != 2 or wc.ndim != 2 or not wa.shape[0] == wb.shape[0] == wc.shape[1]:
        raise ValueError(f"SPN weights must be wa [r, n*m], wb [r, m*k], wc [n*k, r] with one hidden width r; "
                         f"got wa {tuple(wa.shape)}, wb {tuple(wb.shape)}, wc {tuple(wc.shape)}")


def spn_tensor(wa: jax.Array, wb: jax.Array, wc: jax.Array) -> jax.Array:
    """The bilinear map an SPN computes as a tensor ``[nm, mk, nk]``: ``sum_r wa[r,a] wb[r,b] wc[c,r]``."""
    _check_spn(wa, wb, wc)
    return jnp.einsum("ra,rb,cr->abc", wa, wb, wc)


def spn_matmul(wa: jax.Array, wb: jax.Array, wc: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """``vec(C) = W_c[(W_b vec(B)) * (W_a vec(A))]``.

    Args:
      wa: ``[r, n*m]``; wb: ``[r, m*k]``; wc: ``[n*k, r]``.
      a: ``[..., n*m]`` row-major vec(A); b: ``[..., m*k]`` vec(B).

    Returns:
      ``[..., n*k]`` vec(C), same dtype as the inputs.
    """
    _check_spn(wa, wb, wc)
    if a.shape[-1:] != wa.shape[1:] or b.shape[-1:] != wb.shape[1:]:
        raise ValueError(f"spn_matmul: a [..., {wa.shape[1]}] and b [..., {wb.shape[1]}] (the widths of wa and wb), "
                         f"got a {tuple(a.shape)} and b {tuple(b.shape)}")
    return ((a @ wa.T) * (b @ wb.T)) @ wc.T


def strassen_weights() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strassen's (1969) algorithm as ternary ``(W_a [7, 4], W_b [7, 4], W_c [4, 7])`` (int).

    M1 = (A11 + A22)(B11 + B22), M2 = (A21 + A22) B11, M3 = A11 (B12 - B22), M4 = A22 (B21 - B11),
    M5 = (A11 + A12) B22, M6 = (A21 - A11)(B11 + B12), M7 = (A12 - A22)(B21 + B22);
    C11 = M1 + M4 - M5 + M7, C12 = M3 + M5, C21 = M2 + M4, C22 = M1 - M2 + M3 + M6.
    """
    wa = np.array([[1, 0, 0, 1], [0, 0, 1, 1], [1, 0, 0, 0], [0, 0, 0, 1],
                   [1, 1, 0, 0], [-1, 0, 1, 0], [0, 1, 0, -1]])
    wb = np.array([[1, 0, 0, 1], [1, 0, 0, 0], [0, 1, 0, -1], [-1, 0, 1, 0],
                   [0, 0, 0, 1], [1, 1, 0, 0], [0, 0, 1, 1]])
    wc = np.array([[1, 0, 0, 1, -1, 0, 1], [0, 0, 1, 0, 1, 0, 0],
                   [0, 1, 0, 1, 0, 0, 0], [1, -1, 1, 0, 0, 1, 0]])
    return wa, wb, wc


# --------------------------------------------------------------------------------------
# DNN layers
# --------------------------------------------------------------------------------------

#: the reference's batch norm inside its SPN layers: ``mx.nd.BatchNorm(fix_gamma=True)`` with MXNet's
#: defaults (momentum 0.9, eps 1e-3); no scale: ``a_tilde`` follows it.
SPN_BN_EPSILON = 1e-3


def spn_batch_norm(module: nn.Module, hid: jax.Array, train: bool | None) -> jax.Array:
    """The batch norm after ``W_b`` of an SPN layer (submodule ``bn`` of ``module``), over the last axis.

    ``train=None``: batch statistics (and ``batch_stats`` updates) exactly when ``batch_stats`` is
    mutable in this ``apply`` -- the zoo's layer factories pass no ``train`` flag; its tasks train
    with ``mutable=["batch_stats"]`` and evaluate without.
    """
    if train is None:
        train = module.is_mutable_collection("batch_stats")
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=SPN_BN_EPSILON, use_scale=False,
                        name="bn")(hid)  # called inside ``module``'s compact method: its submodule


def _check_sizes(layer: str, **sizes: int) -> None:
    """ValueError unless every size is a whole number >= 1 (``hidden`` = 0 failed as a ZeroDivisionError in
    the initializer, -1 as an MLIR error, 2.5 as a JAX shape TypeError; ``p`` = 0 divided by zero)."""
    from jaxcomp.checks import count

    for name, value in sizes.items():
        count(value, f"{layer}: {name}")


class SPNDense(nn.Module):
    """``y = W_c[BN(W_b x) * a_tilde] + bias``: ``[..., D_in] -> [..., features]`` with ``hidden`` multiplications.

    Params: ``wb [D_in, r]``, ``bn/bias [r]`` (the batch norm's shift), ``a_tilde [r]``, ``wc [r,
    features]`` (ternarized by the task), ``bias``; statistics ``bn/mean``, ``bn/var`` in ``batch_stats``.
    Signature-compatible with the zoo's ``dense(features, use_bias=, name=)`` factories. The batch
    norm normalises each of the ``r`` hidden units over all leading axes (batch, and time for a
    sequence), as the reference's ``SumProdDense`` over its flattened ``(batch * time, r)`` input.

    Attributes:
      features, use_bias: as the zoo's dense factory contract.
      hidden: ``r``, the multiplications per input vector.
      batch_norm: the reference's batch norm after ``W_b`` (``SumProdDense(use_batchnorm=True)``);
        false for the LSTM's projections (its ``SumProdLSTM`` has none) and the bare SPN.
      train: as :class:`SPNConv` (``None``: batch statistics when ``batch_stats`` is mutable).
    """

    features: int
    hidden: int
    use_bias: bool = True
    batch_norm: bool = True
    train: bool | None = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_sizes("SPNDense", features=self.features, hidden=self.hidden)
        d_in = x.shape[-1]
        wb = self.param("wb", nn.initializers.variance_scaling(1.0, "fan_in", "normal"), (d_in, self.hidden))
        hid = x @ wb
        if self.batch_norm:
            hid = spn_batch_norm(self, hid, self.train)
        a_tilde = self.param("a_tilde", nn.initializers.ones, (self.hidden,))
        wc = self.param("wc", nn.initializers.variance_scaling(1.0, "fan_in", "normal"), (self.hidden, self.features))
        y = (hid * a_tilde) @ wc
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        self.sow("op_counts", "ops", counting.spn_dense_counts(d_in, self.features, self.hidden, self.use_bias,
                                                               self.batch_norm))
        return y


class SPNDenseBlocks(nn.Module):
    """``blocks`` independent :class:`SPNDense` layers side by side: ``[..., D_in] -> [..., features]``, block
    ``g`` (params ``block{g}``) maps the whole input to outputs ``[g F/b, (g + 1) F/b)`` with ``hidden``
    multiplications of its own. The authors' SPN LSTM builds each gate's projection this way
    (``SumProdLSTM``: one SPN per gate with ``r = nbr_mul`` each, ternarized and scaled per gate), so
    the gates do not share ``W_c``: ``blocks x hidden`` multiplications, ``W_c`` block-diagonal.

    Attributes:
      features: outputs, divisible by ``blocks``.
      hidden: ``r`` of each block.
      blocks: number of blocks (4 for an LSTM's gates).
      use_bias, batch_norm: as :class:`SPNDense` (per block).
    """

    features: int
    hidden: int
    blocks: int = 4
    use_bias: bool = True
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        _check_sizes("SPNDenseBlocks", features=self.features, hidden=self.hidden, blocks=self.blocks)
        if self.features % self.blocks:
            raise ValueError(f"SPNDenseBlocks: features={self.features} is not divisible by blocks={self.blocks}")
        width = self.features // self.blocks
        return jnp.concatenate([SPNDense(width, self.hidden, self.use_bias, self.batch_norm, name=f"block{g}")(x)
                                for g in range(self.blocks)], axis=-1)


class CountedDense(nn.Dense):
    """:class:`flax.linen.Dense` that sows its full-precision operation counts (for network totals)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        self.sow("op_counts", "ops", counting.dense_counts(x.shape[-1], self.features, self.use_bias))
        return super().__call__(x)


def _out_size(size: int, kernel: int, stride: int, pad: tuple[int, int]) -> int:
    return (size + pad[0] + pad[1] - kernel) // stride + 1


class SPNConv(nn.Module):
    """StrassenNets' convolution: ``[B, H, W, C_in] -> [B, H', W', features]`` as the k x k, stride-s conv it replaces.

    W_b: conv, kernel ``K = (p-1)s + k``, stride ``p s``, ``C_in -> r`` (params ``wb [K, K, C_in, r]``);
    batch norm over the ``r`` channels (:func:`spn_batch_norm`, no scale; statistics in ``batch_stats``);
    times ``a_tilde [r]``;
    W_c: transposed conv, kernel and stride ``p``, ``r -> features`` (``wc [p, p, r, features]``).
    The top/left padding is the replaced conv's, so hidden position ``(u, v)`` computes the
    outputs ``[u p, u p + p) x [v p, v p + p)`` exactly where the ``k x k`` conv would;
    surplus outputs at the bottom/right (when ``p`` does not divide ``H'``) are cropped.

    Attributes:
      features, kernel_size, strides, padding, use_bias: as the zoo's conv factory contract.
      hidden: ``r``, the multiplications per hidden position.
      p: outputs per hidden position along each axis.
      train: batch norm uses batch statistics (and updates ``batch_stats``) when true; ``None``
        (default) infers it from whether ``batch_stats`` is mutable in this ``apply`` -- the zoo's
        conv factory contract passes no ``train`` flag, and its tasks train with
        ``mutable=["batch_stats"]`` and evaluate without.
      batch_norm: the reference's batch norm after W_b (set false for the bare SPN).
      identity_wc: ``W_c`` is the identity, not a parameter (``p = 1``, ``hidden = features``): a ternary
        conv, batch norm and per-channel ``a_tilde``, as the authors' SPN LM's character convolutions
        (their ``train.py`` sets those ``sp_out_weights`` to the identity and freezes them).
    """

    features: int
    kernel_size: Sequence[int]
    hidden: int
    p: int = 1
    strides: Sequence[int] = (1, 1)
    padding: Padding = ((0, 0), (0, 0))
    use_bias: bool = False
    train: bool | None = None
    batch_norm: bool = True
    identity_wc: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"SPNConv expects [B, H, W, C], got shape {x.shape}")
        _check_sizes("SPNConv", features=self.features, hidden=self.hidden, p=self.p)
        if self.identity_wc and (self.p != 1 or self.hidden != self.features):
            raise ValueError(f"SPNConv(identity_wc=True) needs p = 1 and hidden = features, got p={self.p}, "
                             f"hidden={self.hidden}, features={self.features}")
        (kh, kw), (sh, sw), p = tuple(self.kernel_size), tuple(self.strides), self.p
        if isinstance(self.padding, str):
            raise ValueError("SPNConv needs explicit padding ((top, bottom), (left, right)), as the zoo passes it")
        (pt, pb), (pl, pr) = self.padding
        _, h, w, c_in = x.shape
        ho, wo = _out_size(h, kh, sh, (pt, pb)), _out_size(w, kw, sw, (pl, pr))
        hh, wh = -(-ho // p), -(-wo // p)  # hidden positions (ceil)
        kkh, kkw = (p - 1) * sh + kh, (p - 1) * sw + kw
        # bottom/right padding so that the hidden grid covers all outputs
        pad_b, pad_r = (hh - 1) * p * sh + kkh - h - pt, (wh - 1) * p * sw + kkw - w - pl
        x = jnp.pad(x, ((0, 0), (pt, max(pad_b, 0)), (pl, max(pad_r, 0)), (0, 0)))
        init = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
        wb = self.param("wb", init, (kkh, kkw, c_in, self.hidden))
        hid = jax.lax.conv_general_dilated(x, wb.astype(x.dtype), (p * sh, p * sw), "VALID",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, :hh, :wh]
        if self.batch_norm:
            hid = spn_batch_norm(self, hid, self.train)
        hid = hid * self.param("a_tilde", nn.initializers.ones, (self.hidden,))
        if self.identity_wc:  # W_c fixed to the identity: hidden unit o is output channel o
            y = hid[:, :ho, :wo]
        else:
            wc = self.param("wc", nn.initializers.variance_scaling(1.0, "fan_in", "normal"),
                            (p, p, self.hidden, self.features))
            # stride-p transposed conv with a p x p kernel: every hidden position writes its own p x p block
            y = jnp.einsum("bhwr,ijro->bhiwjo", hid, wc.astype(hid.dtype))
            y = y.reshape(y.shape[0], hh * p, wh * p, self.features)[:, :ho, :wo]
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        self.sow("op_counts", "ops", counting.spn_conv_counts(
            hh, wh, ho, wo, c_in, self.features, self.hidden, kkh, kkw, kh, kw, self.use_bias, self.batch_norm,
            self.identity_wc))
        return y


class TWNDense(nn.Module):
    """The ternary-weight (TWN) baseline of a dense layer: ``y = x @ wt + bias`` with ``wt [D_in, features]``
    ternarized by the task (like ``wb``/``wc``); ``[..., D_in] -> [..., features]``. Counts: see
    :func:`~jaxcomp.strassen.counting.twn_dense_counts`."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        wt = self.param("wt", nn.initializers.lecun_normal(), (x.shape[-1], self.features))
        y = x @ wt.astype(x.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        self.sow("op_counts", "ops", counting.twn_dense_counts(x.shape[-1], self.features, self.use_bias))
        return y


class CountedConv(nn.Module):
    """A plain (full-precision) conv with the zoo's signature that sows its operation counts.

    ``float32 [B, H, W, C_in] -> [B, H', W', features]``; parameters ``kernel [kh, kw, C_in, features]``
    (He normal, fan out) and ``bias [features]`` when ``use_bias``. Counts: see
    :func:`~jaxcomp.strassen.counting.conv_counts`. :class:`TWNConv` is this conv with another kernel
    name and counts.
    """

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: Padding = ((0, 0), (0, 0))
    use_bias: bool = False

    #: the kernel's parameter name (not a dataclass field: no annotation)
    kernel_name = "kernel"

    def op_counts(self, h_out: int, w_out: int, c_in: int) -> dict[str, int]:
        """The layer's per-example counts for an ``h_out x w_out x features`` output from ``c_in`` channels."""
        return counting.conv_counts(h_out, w_out, c_in, self.features, *self.kernel_size, self.use_bias)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects [B, H, W, C], got shape {x.shape}")
        kernel = self.param(self.kernel_name, nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                            (*self.kernel_size, x.shape[-1], self.features))
        y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), tuple(self.strides), tuple(self.padding),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        self.sow("op_counts", "ops", self.op_counts(y.shape[1], y.shape[2], x.shape[-1]))
        return y


class TWNConv(CountedConv):
    """The ternary-weight (TWN) baseline of a conv: the zoo's conv with its kernel ``wt [kh, kw, C_in, features]``
    ternarized by the task. ``float32 [B, H, W, C_in] -> [B, H', W', features]``; the factory contract
    of :class:`CountedConv`, whose body it shares (only the kernel's name and the counts differ). Counts: see
    :func:`~jaxcomp.strassen.counting.twn_conv_counts`."""

    kernel_name = "wt"

    def op_counts(self, h_out: int, w_out: int, c_in: int) -> dict[str, int]:
        return counting.twn_conv_counts(h_out, w_out, c_in, self.features, *self.kernel_size, self.use_bias)

"""Matching pursuit (MP) and orthogonal matching pursuit (OMP), jit-compiled and batched.

Conventions: the dictionary ``D`` has shape ``(m, K)`` (columns are atoms), a signal ``y``
has shape ``(m,)`` and a batch of signals ``(B, m)``. Every signal runs in its own
``lax.while_loop`` with a fixed-size state (``max_iter`` support slots), so one compiled
program serves every signal of a given batch shape and the batch is ``vmap``-ed (the
correlations ``D^T r`` of the whole batch become one matrix product).

Stopping rules (any of them ends the pursuit of one signal):

* ``max_iter`` iterations (``s_max`` in Tschannen & Bölcskei);
* the residual norm ``||r||_2 <= tol`` (absolute, the ``tau`` of the paper), and in any case
  ``||r||_2 <= 100 eps ||y||_2`` (``eps`` of the dtype): a residual at the rounding level of the
  signal is fitted exactly, and atoms selected past it would only fit rounding noise (with
  ``tol = 0``, OMP on noiseless subspace data otherwise went on from a float32 residual of ~1e-7
  to atoms of other subspaces with large, cancelling least-squares coefficients);
* the largest normalised correlation ``max_k |<d_k, r>| / (||d_k|| ||r||) <= corr_tol``
  (the residual looks like noise: no atom explains it any more);
* MP only: ``max_nonzeros`` distinct atoms have been selected (``p_max``);
  (with the device functions' static ``raw_selection=True``, atoms are selected by the raw
  ``|<d_k, r>|`` and ``corr_tol`` compares that raw value to ``||r||``; SSC's ``point_norms="raw"``
  uses it with ``corr_tol = 0``)
* OMP only: the selected atom is numerically in the span of the active set.

Two layers: :func:`omp` / :func:`mp` are host functions (they check ``D`` and ``y`` with numpy,
then run the compiled pursuit), so they cannot be traced inside ``jax.jit`` / ``jax.grad``;
:func:`omp_batch` / :func:`mp_batch` are the unvalidated device functions to call from one's own
jitted code. The pursuit's support selection is discrete: gradients through it are not defined.

OMP solves the least-squares problem on the active set with an incremental Cholesky
factorisation of the active Gram matrix (one new row per iteration, padded with the
identity), so an iteration costs ``O(mK + m s + s^2)``.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular
from numpy.typing import ArrayLike

from jaxcomp.checks import is_whole

Array = jax.Array


class PursuitResult(NamedTuple):
    """Output of :func:`mp` / :func:`omp` (leading batch axis ``B`` if ``y`` was batched).

    Attributes:
      coef: ``(..., K)`` dense coefficients, same float dtype as the inputs.
      support: ``(..., S)`` int32 atom indices in order of first selection, ``-1`` padded
        (``S = max_iter`` for OMP, ``min(max_iter, max_nonzeros)`` for MP).
      support_coef: ``(..., S)`` coefficients aligned with ``support`` (0 where padded).
      residual: ``(..., m)`` final residual ``y - D coef``.
      residual_norm: ``(...,)`` its Euclidean norm.
      n_iter: ``(...,)`` int32 iterations performed.
    """

    coef: Array
    support: Array
    support_coef: Array
    residual: Array
    residual_norm: Array
    n_iter: Array


# ----------------------------------------------------------------------------- validation


def norms64(X: ArrayLike, axis: int = -1) -> np.ndarray:
    """Euclidean norms of ``X`` along ``axis`` in float64, without overflow or underflow of the
    squares (each vector is scaled by its largest ``|entry|`` first): ``(..., )`` with ``axis`` removed."""
    X = np.asarray(X, np.float64)
    scale = np.max(np.abs(X), axis=axis, keepdims=True) if X.size else np.ones_like(X)
    safe = np.where(scale > 0, scale, 1.0)
    return np.squeeze(safe, axis=axis) * np.linalg.norm(X / safe, axis=axis)


def norm_range(dtype: Any) -> tuple[float, float]:
    """``(smallest, largest)`` vector norm whose square is a normal, finite number of ``dtype`` with
    room for a few sums and products: ``sqrt(tiny)`` and ``sqrt(max) / 4`` (float32: 1.1e-19, 4.6e18)."""
    info = np.finfo(dtype)
    return float(np.sqrt(info.tiny)), float(np.sqrt(info.max) / 4)


def check_norm_range(norms: ArrayLike, dtype: Any, what: str, item: str, *, small: bool = True, large: bool = True,
                     hint: str = "rescale them") -> None:
    """``ValueError`` when a vector norm in ``norms`` (e.g. :func:`norms64`) lies outside
    :func:`norm_range` of ``dtype`` (the precision the computation runs in): its squared norm would
    underflow to 0 or overflow to inf there, and the pursuit (or NNMP, or SSC) would return an empty
    support or an arbitrary answer without a word. ``what``: the vectors (plural, for the message),
    ``item``: one of them (``"column"``, ``"row"``); ``small`` / ``large``: which side to check.
    Shared by :mod:`jaxcomp.greedy.pursuit`, :mod:`jaxcomp.greedy.nnmp` and :mod:`jaxcomp.cluster.ssc`."""
    norms = np.asarray(norms, np.float64).ravel()
    if not norms.size:
        return
    tiny, huge = norm_range(dtype)
    name = np.dtype(dtype).name
    if small:
        low = np.flatnonzero(norms < tiny)
        if low.size:
            raise ValueError(f"{what}: {low.size} of norm below {tiny:.1e}, e.g. {item} {int(low[0])} (norm "
                             f"{norms[low[0]]:.3g}), whose squared norm underflows in {name}; {hint}")
    if large and norms.max() > huge:
        raise ValueError(f"{what} reach a norm of {norms.max():.3g}, beyond {huge:.1e}, whose square overflows "
                         f"in {name}; {hint}")



def _check_dictionary(D) -> np.ndarray:
    D = np.asarray(D)
    if D.ndim != 2:
        raise ValueError(f"dictionary D must be 2-D (m, K) with atoms as columns, got shape {D.shape}")
    if D.shape[0] == 0 or D.shape[1] == 0:
        raise ValueError(f"dictionary D is empty: shape {D.shape}")
    if not (np.issubdtype(D.dtype, np.number) or D.dtype == bool) or np.iscomplexobj(D):
        raise ValueError(f"dictionary D must be real numbers, got dtype {D.dtype}")
    if not np.issubdtype(D.dtype, np.floating):
        D = D.astype(np.float32)
    if not np.all(np.isfinite(D)):
        raise ValueError("dictionary D contains NaN or infinite entries")
    norms = np.linalg.norm(D, axis=0)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"dictionary D has {zero.size} zero column(s), e.g. column {int(zero[0])}")
    return D


def _check_signals(y, m: int) -> tuple[np.ndarray, bool]:
    y = np.asarray(y)
    if y.ndim not in (1, 2):
        raise ValueError(f"y must be (m,) or (B, m), got shape {y.shape}")
    if y.shape[-1] != m:
        raise ValueError(f"mismatched shapes: y has length {y.shape[-1]} but D has {m} rows")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool) or np.iscomplexobj(y):
        raise ValueError(f"y must be real numbers, got dtype {y.dtype}")
    if not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite entries")
    return y, y.ndim == 1


def _check_common(max_iter, tol, corr_tol, K: int) -> int:
    if not is_whole(max_iter) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    if np.ndim(tol) != 0 or np.asarray(tol).dtype.kind not in "iuf" or not np.isfinite(tol) or tol < 0:
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")
    if np.ndim(corr_tol) != 0 or np.asarray(corr_tol).dtype.kind not in "iuf" or not np.isfinite(corr_tol) \
            or not 0 <= corr_tol < 1:  # a string ("0.1") was a NumPy TypeError naming no parameter
        raise ValueError(f"corr_tol must be a number in [0, 1), got {corr_tol!r}")
    return int(max_iter)


def _check_exclude(exclude, B: int, K: int) -> np.ndarray:
    if exclude is None:
        return np.full((B,), -1, np.int32)
    exclude = np.asarray(exclude)
    if not np.issubdtype(exclude.dtype, np.integer):  # 2.5 is not atom 2
        raise ValueError(f"exclude must hold integer atom indices (-1 for none), got dtype {exclude.dtype}")
    if exclude.ndim == 0:
        exclude = np.full((B,), int(exclude), np.int32)
    if exclude.shape != (B,):
        raise ValueError(f"mismatched shapes: exclude must have one index per signal ({B},), got {exclude.shape}")
    if not np.issubdtype(exclude.dtype, np.integer):
        raise ValueError("exclude must hold integer atom indices (-1 for none)")
    if np.any(exclude >= K) or np.any(exclude < -1):
        raise ValueError(f"exclude indices must lie in [-1, {K}), got range [{exclude.min()}, {exclude.max()}]")
    return exclude.astype(np.int32)


# ----------------------------------------------------------------------------- core (device)


def _scores(D, inv_norms, r, exclude, extra_mask=None):
    """|<d_k, r>| / ||d_k|| with excluded atoms set to -1; also returns raw correlations."""
    c = D.T @ r
    score = jnp.abs(c) * inv_norms
    k_ids = jnp.arange(D.shape[1])
    bad = k_ids == exclude
    if extra_mask is not None:
        bad = bad | extra_mask
    return jnp.where(bad, -1.0, score), c


def _stop_norm(tol: Array, y: Array, dtype: Any) -> Array:
    """The residual norm a pursuit stops at: ``tol``, and in any case the rounding floor
    ``100 eps ||y||_2`` (``eps`` of the dictionary's ``dtype``; module docstring)."""
    return jnp.maximum(tol, 100 * jnp.finfo(dtype).eps * jnp.linalg.norm(y))


def omp_single(D: Array, y: Array, exclude: Array, tol: Array, corr_tol: Array, *, max_iter: int,
               raw_selection: bool = False) -> tuple[Array, Array, Array, Array, Array]:
    """OMP for one signal (device function; see :func:`omp` for the public, validated API).

    Args:
      D: ``(m, K)`` float dictionary, nonzero columns.
      y: ``(m,)`` signal.
      exclude: int32 scalar, an atom never to select (-1: none).
      tol, corr_tol: float scalars, see module docstring.
      max_iter: static int, number of support slots ``S``.
      raw_selection: static; ``True`` selects ``argmax_k |<d_k, r>|`` (favours long atoms: the
        selection of the SSC-OMP reference code on un-normalised data) instead of the normalised
        ``|<d_k, r>|/||d_k||``; ``corr_tol`` then compares that raw correlation to ``||r||``.

    Returns:
      ``(support (S,) int32, support_coef (S,), residual (m,), residual_norm (), n_iter ())``.
    """
    m, K = D.shape
    S = max_iter
    dtype = D.dtype
    norms_sq = jnp.sum(D * D, axis=0)
    inv_norms = jnp.ones_like(norms_sq) if raw_selection else 1.0 / jnp.sqrt(norms_sq)
    slots = jnp.arange(S)
    eps = jnp.asarray(100 * jnp.finfo(dtype).eps, dtype)
    stop_norm = _stop_norm(tol, y, dtype)

    def cond(state):
        return state["active"] & (state["t"] < S)

    def body(state):
        t, r, rnorm = state["t"], state["r"], state["rnorm"]
        score, c = _scores(D, inv_norms, r, exclude, state["selected"])
        k = jnp.argmax(score)
        best = score[k]
        go = (rnorm > stop_norm) & (best > corr_tol * rnorm) & (best > 0)
        dk = D[:, k]
        used = slots < t
        idx_safe = jnp.where(state["idx"] >= 0, state["idx"], 0)
        v = jnp.where(used, D[:, idx_safe].T @ dk, 0.0)
        w = solve_triangular(state["L"], v, lower=True)
        diag2 = norms_sq[k] - jnp.dot(w, w)
        go = go & (diag2 > eps * norms_sq[k])
        diag = jnp.sqrt(jnp.maximum(diag2, eps * norms_sq[k]))
        onehot = slots == t
        L = state["L"].at[t].set(jnp.where(used, w, 0.0) + jnp.where(onehot, diag, 0.0))
        b = state["b"].at[t].set(jnp.dot(dk, y))
        idx = state["idx"].at[t].set(k.astype(jnp.int32))
        z = solve_triangular(L, b, lower=True)
        coef = solve_triangular(L.T, z, lower=False)
        idx_safe = jnp.where(idx >= 0, idx, 0)
        r_new = y - D[:, idx_safe] @ coef
        new = dict(
            t=t + 1,
            r=r_new,
            rnorm=jnp.linalg.norm(r_new),
            L=L,
            b=b,
            idx=idx,
            coef=coef,
            selected=state["selected"].at[k].set(True),
            active=jnp.asarray(True),
        )
        old = dict(state, active=jnp.asarray(False))
        return jax.tree_util.tree_map(lambda a, o: jnp.where(go, a, o), new, old)

    state = dict(
        t=jnp.asarray(0, jnp.int32),
        r=y,
        rnorm=jnp.linalg.norm(y),
        L=jnp.eye(S, dtype=dtype),
        b=jnp.zeros(S, dtype),
        idx=jnp.full((S,), -1, jnp.int32),
        coef=jnp.zeros(S, dtype),
        selected=jnp.zeros(K, bool),
        active=jnp.asarray(True),
    )
    state = lax.while_loop(cond, body, state)
    return state["idx"], state["coef"], state["r"], state["rnorm"], state["t"]


def mp_single(
    D: Array, y: Array, exclude: Array, tol: Array, corr_tol: Array, *, max_iter: int, max_nonzeros: int,
    raw_selection: bool = False,
) -> tuple[Array, Array, Array, Array, Array]:
    """MP for one signal (device function; see :func:`mp`).

    The same atom may be selected repeatedly; its coefficient accumulates in its support
    slot. ``S = min(max_iter, max_nonzeros)`` slots. ``raw_selection`` as in :func:`omp_single`
    (the step stays ``<d_k, r>/||d_k||^2``). Returns the same tuple as :func:`omp_single`.
    """
    m, K = D.shape
    S = min(max_iter, max_nonzeros)
    dtype = D.dtype
    norms_sq = jnp.sum(D * D, axis=0)
    inv_norms = jnp.ones_like(norms_sq) if raw_selection else 1.0 / jnp.sqrt(norms_sq)
    slots = jnp.arange(S)
    stop_norm = _stop_norm(tol, y, dtype)

    def cond(state):
        return state["active"] & (state["t"] < max_iter) & (state["nnz"] < max_nonzeros)

    def body(state):
        r, rnorm = state["r"], state["rnorm"]
        score, c = _scores(D, inv_norms, r, exclude)
        k = jnp.argmax(score)
        best = score[k]
        go = (rnorm > stop_norm) & (best > corr_tol * rnorm) & (best > 0)
        match = state["idx"] == k
        found = jnp.any(match)
        pos = jnp.where(found, jnp.argmax(match), state["nnz"])
        step = c[k] / norms_sq[k]
        coef = state["coef"] + jnp.where(slots == pos, step, 0.0)
        idx = jnp.where(slots == pos, k.astype(jnp.int32), state["idx"])
        r_new = r - step * D[:, k]
        new = dict(
            t=state["t"] + 1,
            r=r_new,
            rnorm=jnp.linalg.norm(r_new),
            idx=idx,
            coef=coef,
            nnz=state["nnz"] + jnp.where(found, 0, 1).astype(jnp.int32),
            active=jnp.asarray(True),
        )
        old = dict(state, active=jnp.asarray(False))
        return jax.tree_util.tree_map(lambda a, o: jnp.where(go, a, o), new, old)

    state = dict(
        t=jnp.asarray(0, jnp.int32),
        r=y,
        rnorm=jnp.linalg.norm(y),
        idx=jnp.full((S,), -1, jnp.int32),
        coef=jnp.zeros(S, dtype),
        nnz=jnp.asarray(0, jnp.int32),
        active=jnp.asarray(True),
    )
    state = lax.while_loop(cond, body, state)
    return state["idx"], state["coef"], state["r"], state["rnorm"], state["t"]


@partial(jax.jit, static_argnames=("max_iter", "raw_selection"))
def omp_batch(D: Array, Y: Array, exclude: Array, tol: Array, corr_tol: Array, *, max_iter: int,
              raw_selection: bool = False) -> tuple[Array, Array, Array, Array, Array]:
    """Batched OMP on device: ``Y`` ``(B, m)``, ``exclude`` ``(B,)`` int32. No validation."""
    fn = partial(omp_single, max_iter=max_iter, raw_selection=raw_selection)
    return jax.vmap(fn, in_axes=(None, 0, 0, None, None))(D, Y, exclude, tol, corr_tol)


@partial(jax.jit, static_argnames=("max_iter", "max_nonzeros", "raw_selection"))
def mp_batch(
    D: Array, Y: Array, exclude: Array, tol: Array, corr_tol: Array, *, max_iter: int, max_nonzeros: int,
    raw_selection: bool = False,
) -> tuple[Array, Array, Array, Array, Array]:
    """Batched MP on device: ``Y`` ``(B, m)``, ``exclude`` ``(B,)`` int32. No validation."""
    fn = partial(mp_single, max_iter=max_iter, max_nonzeros=max_nonzeros, raw_selection=raw_selection)
    return jax.vmap(fn, in_axes=(None, 0, 0, None, None))(D, Y, exclude, tol, corr_tol)


@partial(jax.jit, static_argnames=("K",))
def _densify(support, support_coef, K: int):
    def one(idx, val):
        return jnp.zeros(K, val.dtype).at[jnp.where(idx >= 0, idx, K)].add(val, mode="drop")

    return jax.vmap(one)(support, support_coef)


# ----------------------------------------------------------------------------- public API


def _run(kind, D, y, max_iter, tol, corr_tol, exclude, max_nonzeros=None) -> PursuitResult:
    D = _check_dictionary(D)
    m, K = D.shape
    y, single = _check_signals(y, m)
    max_iter = _check_common(max_iter, tol, corr_tol, K)
    Y = y[None] if single else y
    ex = _check_exclude(exclude, Y.shape[0], K)
    # float64 only when x64 is on and an input is float64; half precision is computed in float32
    wide = any(d.kind == "f" and d.itemsize >= 8 for d in (D.dtype, Y.dtype))
    dtype = jnp.float64 if jax.config.jax_enable_x64 and wide else jnp.float32
    # an atom whose squared norm is not a normal number in the device's precision divides by zero there,
    # and one whose squared norm (or a signal's) overflows gives inf residuals and an empty support
    invariant = "rescale them (the pursuit is invariant to a common scale of D or of y)"
    check_norm_range(norms64(D, axis=0), dtype, "dictionary D's columns", "column", hint=invariant)
    check_norm_range(norms64(Y, axis=-1), dtype, "the signals y", "signal", small=False, hint=invariant)
    Dj, Yj = jnp.asarray(D, dtype), jnp.asarray(Y, dtype)
    tol_j, ctol_j = jnp.asarray(tol, dtype), jnp.asarray(corr_tol, dtype)
    if kind == "omp":
        out = omp_batch(Dj, Yj, jnp.asarray(ex), tol_j, ctol_j, max_iter=max_iter)
    else:
        out = mp_batch(Dj, Yj, jnp.asarray(ex), tol_j, ctol_j, max_iter=max_iter, max_nonzeros=max_nonzeros)
    support, support_coef, r, rnorm, n_iter = out
    coef = _densify(support, support_coef, K)
    res = PursuitResult(coef, support, support_coef, r, rnorm, n_iter)
    if single:
        res = PursuitResult(*(a[0] for a in res))
    return res


def omp(
    D: ArrayLike,
    y: ArrayLike,
    max_iter: int,
    tol: float = 0.0,
    corr_tol: float = 0.0,
    exclude: ArrayLike | None = None,
) -> PursuitResult:
    """Orthogonal matching pursuit of ``y`` over the columns of ``D``.

    Args:
      D: ``(m, K)`` float array, atoms as (nonzero) columns; need not be normalised.
      y: ``(m,)`` or ``(B, m)`` float signals.
      max_iter: maximum number of selected atoms ``s_max`` (static: one compilation per value).
      tol: stop once ``||r||_2 <= tol`` (and in any case at the rounding floor
        ``100 eps ||y||_2``: module docstring).
      corr_tol: stop once ``max_k |<d_k, r>|/(||d_k|| ||r||) <= corr_tol``.
      exclude: ``None``, an int, or ``(B,)`` ints: an atom index each signal may not use.

    Returns:
      A :class:`PursuitResult` (float32 unless x64 is enabled and inputs are float64).

    Raises:
      ValueError: NaNs, zero columns, mismatched shapes or bad parameters.
    """
    return _run("omp", D, y, max_iter, tol, corr_tol, exclude)


def mp(
    D: ArrayLike,
    y: ArrayLike,
    max_iter: int,
    tol: float = 0.0,
    max_nonzeros: int | None = None,
    corr_tol: float = 0.0,
    exclude: ArrayLike | None = None,
) -> PursuitResult:
    """Matching pursuit of ``y`` over the columns of ``D``.

    Each iteration picks ``k = argmax_k |<d_k, r>|/||d_k||`` and updates
    ``coef_k += <d_k, r>/||d_k||^2``, ``r -= <d_k, r>/||d_k||^2 d_k``, so ``||r||`` never
    increases. Arguments as in :func:`omp`, plus ``max_nonzeros`` (``p_max``): stop once
    that many distinct atoms are in the support (default: ``max_iter``).
    """
    if max_nonzeros is None:
        valid = is_whole(max_iter) and max_iter >= 1
        max_nonzeros = max_iter if valid else 1  # an invalid max_iter is reported by _run
    if not is_whole(max_nonzeros) or max_nonzeros < 1:
        raise ValueError(f"max_nonzeros must be a positive integer, got {max_nonzeros!r}")
    return _run("mp", D, y, max_iter, tol, corr_tol, exclude, int(max_nonzeros))

"""Non-negative matching pursuit over the conic hull of an atom set.

Implements the four algorithms of Locatello, Tschannen, Rätsch & Jaggi, "Greedy Algorithms
for Cone Constrained Optimization with Convergence Guarantees" (NeurIPS 2017) for

    min_{x in cone(A)} f(x),   f convex and L-smooth,   cone(A) = {sum_k w_k a_k : w >= 0}.

The iterate is kept as non-negative weights ``w`` on atoms, ``x = A w``; all variants start
at ``x_0 = 0``. With ``g = grad f(x_t)``, the linear minimisation oracle (LMO) returns the
atom ``z_t = argmin_{a in A} <g, a>``. Let ``rho_t = sum_k w_k`` (an upper bound of the
atomic norm ``||x_t||_A``, equal to it when the weights have the smallest sum representing
``x_t``, e.g. for linearly independent atoms); the normalised iterate
``x_t/rho_t`` plays the role of the extra atom ``x_t/||x_t||_A`` of the paper.

* ``"nnmp"`` (NNMP): direction ``z_t`` or the shrink direction ``-x_t/rho_t``,
  whichever has the more negative inner product with ``g``; the shrink step scales every
  weight by ``1 - gamma/rho_t`` (``gamma <= rho_t``).
* ``"away"`` (Away-steps MP): forward ``z_t`` or away ``-v_t``, where ``v_t``
  maximises ``<g, v>`` over the active atoms and ``x_t/rho_t`` (the latter is ours: a shrink
  candidate beside the active atoms); an away step from an atom
  is capped at its weight (a *drop step* when the cap is hit).
* ``"pairwise"`` (Pairwise MP): direction ``z_t - v_t``, capped at the weight of
  ``v_t``. Pairs are formed on ``A ∪ {0}`` (``cone(A) = cone(A ∪ {0})``): ``z_t`` is replaced
  by 0 when ``<g, z_t> >= 0`` and ``v_t`` (the active atom maximising ``<g, v>``) by 0 when
  ``<g, v_t> <= 0``, so a pairwise step can also be a pure forward or a pure away step;
  without this, pairwise steps only move mass between atoms and ``sum w`` could never
  change after the first step.
* ``"fully_corrective"`` (Fully-corrective MP): add ``z_t`` to the active set and
  re-minimise ``f`` over the cone of the active atoms: for quadratics by Lawson-Hanson
  active-set NNLS on the active weights (a masked fixed-size loop that only removes atoms, so
  rarely short of the exact minimum; the next LMO call repairs it), by ``inner_iter``
  accelerated projected-gradient steps (FISTA, step ``1/(L ||A||_2^2)``) otherwise.

Step sizes: exact line search ``gamma = -<g, d>/<d, H d>`` when the objective is quadratic
(it carries a Hessian-vector product), ``gamma = -<g, d>/(L ||d||^2)`` otherwise; then
clipped to ``[0, gamma_max]``.

Precision: the computation follows the input dtype; pass ``x64=True`` to run in float64
inside a ``jax.enable_x64`` context (no global config change) — needed to match
``scipy.optimize.nnls`` to 1e-8 relative.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpy.typing import ArrayLike

from jaxcomp.checks import is_whole
from jaxcomp.greedy.pursuit import check_norm_range, norms64

Array = jax.Array

VARIANTS = ("nnmp", "away", "pairwise", "fully_corrective")


@dataclass(frozen=True)
class Objective:
    """A smooth convex objective ``f: R^m -> R``.

    Attributes:
      f: ``x (m,) -> scalar``, jax-traceable.
      grad: ``x (m,) -> (m,)``; ``jax.grad(f)`` when not given.
      L: smoothness constant (Lipschitz constant of ``grad``); required unless quadratic.
      hvp: for a quadratic ``f``, ``v (m,) -> H v`` (the Hessian is constant); enables exact
        line search and the exact fully-corrective solve.
    """

    f: Callable[[Array], Array]
    grad: Callable[[Array], Array]
    L: float | None = None
    hvp: Callable[[Array], Array] | None = None

    @property
    def quadratic(self) -> bool:
        return self.hvp is not None


def make_objective(
    f: Callable[[Array], Array],
    grad: Callable[[Array], Array] | None = None,
    L: float | None = None,
    hvp: Callable[[Array], Array] | None = None,
) -> Objective:
    """Builds an :class:`Objective` from ``f`` (and optionally ``grad``, ``L``, ``hvp``)."""
    if not callable(f):
        raise ValueError("objective f must be callable")
    if grad is not None and not callable(grad):
        raise ValueError("grad must be callable or None")
    if L is not None and (not np.isfinite(L) or L <= 0):
        raise ValueError(f"smoothness constant L must be a positive finite number, got {L!r}")
    return Objective(f=f, grad=grad if grad is not None else jax.grad(f), L=L, hvp=hvp)


def _check_real_finite(**arrays: np.ndarray) -> None:
    """``ValueError`` naming the first array that is not real numbers or holds NaN/inf."""
    for name, a in arrays.items():
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
            raise ValueError(f"{name} must hold real numbers, got dtype {a.dtype}")
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or infinite entries")


def least_squares_objective(M: ArrayLike, b: ArrayLike) -> Objective:
    """``f(x) = 0.5 ||M x - b||^2`` with ``M`` ``(n, m)``, ``b`` ``(n,)`` (quadratic)."""
    M, b = np.asarray(M), np.asarray(b)
    if M.ndim != 2 or b.shape != (M.shape[0],):
        raise ValueError(f"mismatched shapes: M {M.shape}, b {b.shape}")
    _check_real_finite(M=M, b=b)
    L = float(np.linalg.norm(np.asarray(M), 2) ** 2)
    return Objective(
        f=lambda x: 0.5 * jnp.sum((M @ x - b) ** 2),
        grad=lambda x: M.T @ (M @ x - b),
        L=L,
        hvp=lambda v: M.T @ (M @ v),
    )


def distance_objective(b: ArrayLike) -> Objective:
    """``f(x) = 0.5 ||x - b||^2``: over ``cone(A)`` this is NNLS ``min_w 0.5||A w - b||^2``."""
    b = np.asarray(b)
    _check_real_finite(b=b)
    return Objective(f=lambda x: 0.5 * jnp.sum((x - b) ** 2), grad=lambda x: x - b, L=1.0, hvp=lambda v: v)


def logistic_objective(F: ArrayLike, y: ArrayLike, l2: float = 0.0) -> Objective:
    """Mean logistic loss ``mean_i log(1 + exp(-y_i <F_i, x>)) + l2/2 ||x||^2``.

    ``F`` ``(n, m)`` features, ``y`` ``(n,)`` labels in {-1, +1}. ``L = ||F||_2^2/(4n) + l2``.
    Strongly convex when ``l2 > 0``; a negative ``l2`` (concave penalty: the loss is unbounded below
    over the cone) is refused, as is a NaN or infinite one.
    """
    from jaxcomp.checks import finite_number

    l2 = finite_number(l2, "logistic l2 (the ridge weight)", minimum=0.0, strict=False)
    F, y = np.asarray(F), np.asarray(y)
    if F.ndim != 2 or y.shape != (F.shape[0],):
        raise ValueError(f"mismatched shapes: F {F.shape}, y {y.shape}")
    _check_real_finite(F=F, y=y)
    if not np.isin(y, (-1, 1)).all():  # 0/1 labels would optimise another problem without a word
        raise ValueError(f"logistic labels y must be -1 or +1, got values {np.unique(y)[:5].tolist()}")
    n = F.shape[0]
    L = float(np.linalg.norm(np.asarray(F), 2) ** 2 / (4 * n) + l2)

    def f(x):
        return jnp.mean(jnp.logaddexp(0.0, -y * (F @ x))) + 0.5 * l2 * jnp.sum(x * x)

    return make_objective(f, L=L)


class NNMPResult(NamedTuple):
    """Output of :func:`nnmp`.

    Attributes:
      x: ``(m,)`` final iterate ``A w``.
      weights: ``(K,)`` non-negative weights on the atoms (``K`` = number of atom columns, or
        ``max_iter`` buffer slots when the LMO returns atom vectors).
      atoms: ``(m, K)`` the atoms the weights refer to.
      history: ``(max_iter + 1,)`` objective values ``f(x_t)``, ``t = 0..max_iter``.
      n_active: ``(max_iter + 1,)`` number of atoms with positive weight.
    """

    x: Array
    weights: Array
    atoms: Array
    history: Array
    n_active: Array


def _fc_quadratic(G, q, w, active, max_inner):
    """Lawson-Hanson inner loop: min_{w >= 0, supp(w) in active} 0.5 w^T G w + q^T w.

    Starts from a feasible ``w`` (zero outside ``active``); returns the new weights.
    """
    K = G.shape[0]
    eye = jnp.eye(K, dtype=G.dtype)
    tiny = jnp.asarray(1e3 * jnp.finfo(G.dtype).eps, G.dtype)

    def solve(mask):
        Gm = jnp.where(mask[:, None] & mask[None, :], G, eye)
        rhs = jnp.where(mask, -q, 0.0)
        scale = jnp.maximum(jnp.max(jnp.abs(jnp.diag(G))), 1.0)
        return jnp.linalg.solve(Gm + tiny * scale * jnp.diag(mask.astype(G.dtype)), rhs)

    def cond(state):
        w, mask, it, done = state
        return (~done) & (it < max_inner)

    def body(state):
        w, mask, it, _ = state
        s = solve(mask)
        feasible = jnp.all(jnp.where(mask, s > 0, True))
        # step towards s until the first active weight hits zero
        neg = mask & (s <= 0)
        ratio = jnp.where(neg, w / jnp.maximum(w - s, tiny), jnp.inf)
        alpha = jnp.clip(jnp.min(ratio), 0.0, 1.0)
        w_step = w + alpha * (s - w)
        hit = neg & (ratio <= alpha + tiny)
        w_new = jnp.where(feasible, jnp.where(mask, s, 0.0), jnp.where(hit, 0.0, jnp.maximum(w_step, 0.0)))
        mask_new = jnp.where(feasible, mask, mask & ~hit & (w_new > 0))
        return w_new, mask_new, it + 1, feasible

    w, mask, _, _ = lax.while_loop(cond, body, (w, active, jnp.asarray(0), jnp.asarray(False)))
    return jnp.where(mask, w, 0.0)


def _fc_smooth(obj, A, w, active, L_w, inner_iter):
    """FISTA on the active weights: min_{w >= 0, supp(w) in active} f(A w)."""

    def body(_, state):
        w, v, tk = state
        g = A.T @ obj.grad(A @ v)
        w_new = jnp.where(active, jnp.maximum(v - g / L_w, 0.0), 0.0)
        tk_new = 0.5 * (1 + jnp.sqrt(1 + 4 * tk * tk))
        v_new = w_new + ((tk - 1) / tk_new) * (w_new - w)
        return w_new, v_new, tk_new

    w, _, _ = lax.fori_loop(0, inner_iter, body, (w, w, jnp.asarray(1.0, w.dtype)))
    return w


def _traced_distance(b: Array) -> Objective:
    """``f(x) = 0.5||x - b||^2`` for a traced ``b`` (the batched coder's objective)."""

    def residual(x):
        return x - b

    return Objective(f=lambda x: 0.5 * jnp.sum(residual(x) ** 2), grad=residual, L=1.0, hvp=lambda d: d)


def _make_runner(objective: Objective | None, variant: str, max_iter: int, lmo, lmo_returns_atom: bool,
                 inner_iter: int, jit: bool = True):
    """``run(A)`` for a fixed objective, or ``run(A, b)`` minimising ``0.5||x - b||^2`` when
    ``objective`` is None (so that ``b`` can be traced and ``vmap``-ed); jitted unless
    ``jit=False``."""

    def run(A, b=None):
        obj = objective if b is None else _traced_distance(b)
        m, K = A.shape
        dtype = A.dtype
        quadratic = obj.quadratic
        if variant == "fully_corrective":
            if quadratic:
                G = A.T @ jax.vmap(obj.hvp, in_axes=1, out_axes=1)(A)
                q = A.T @ obj.grad(jnp.zeros(m, dtype))
            else:
                L_w = obj.L * jnp.linalg.norm(A, 2) ** 2
        eps = jnp.asarray(10 * jnp.finfo(dtype).eps, dtype)

        def pick(g, A, t):
            if lmo is None:
                k = jnp.argmin(A.T @ g)
                return k, A
            out = lmo(g)
            if not lmo_returns_atom:
                return jnp.asarray(out, jnp.int32), A
            z = jnp.asarray(out, dtype)
            dist = jnp.linalg.norm(A - z[:, None], axis=0)
            filled = jnp.arange(K) < t
            dist = jnp.where(filled, dist, jnp.inf)
            j = jnp.argmin(dist)
            known = dist[j] <= 1e-6 * jnp.maximum(jnp.linalg.norm(z), 1.0)
            k = jnp.where(known, j, t)
            A = jnp.where(known, A, A.at[:, t].set(z))
            return k, A

        def curvature(d):
            if quadratic:
                return jnp.dot(d, obj.hvp(d))
            return obj.L * jnp.dot(d, d)

        def step(d, g, gmax):
            num = -jnp.dot(g, d)
            den = curvature(d)
            gamma = jnp.where(den > 0, num / jnp.maximum(den, eps), 0.0)
            return jnp.clip(gamma, 0.0, gmax)

        def body(t, state):
            w, A, hist, nact = state
            x = A @ w
            g = obj.grad(x)
            k, A = pick(g, A, t)
            z = A[:, k]
            rho = jnp.sum(w)
            has_x = rho > 0
            xn = jnp.where(has_x, x / jnp.where(has_x, rho, 1.0), 0.0)
            onehot = jnp.arange(A.shape[1]) == k
            if variant == "fully_corrective":
                active = (w > 0) | onehot
                if quadratic:
                    w_new = _fc_quadratic(G_of(A), q_of(A), w, active, 2 * A.shape[1] + 2)
                else:
                    w_new = _fc_smooth(obj, A, w, active, L_of(A), inner_iter)
            else:
                gz = jnp.dot(g, z)
                gx = jnp.where(has_x, jnp.dot(g, xn), -jnp.inf)
                proj = A.T @ g
                away_scores = jnp.where(w > 0, proj, -jnp.inf)
                ka = jnp.argmax(away_scores)
                ga = away_scores[ka]
                # the away candidate: an active atom or x/rho, whichever has larger <g, v>
                use_shrink = gx >= ga
                v = jnp.where(use_shrink, xn, A[:, ka])
                gv = jnp.maximum(gx, ga)
                vmax = jnp.where(use_shrink, rho, w[ka])
                vmax = jnp.where(jnp.isfinite(gv), vmax, 0.0)

                def apply_away(w, gamma):
                    shrunk = w * (1.0 - gamma / jnp.where(has_x, rho, 1.0))
                    single = w - jnp.where(jnp.arange(w.shape[0]) == ka, gamma, 0.0)
                    return jnp.maximum(jnp.where(use_shrink, shrunk, single), 0.0)

                if variant == "nnmp":
                    forward = gz <= -gx  # compare <g, z> with <g, -x/rho>
                    d = jnp.where(forward, z, -xn)
                    gamma = step(d, g, jnp.where(forward, jnp.inf, rho))
                    shrunk = jnp.maximum(w * (1.0 - gamma / jnp.where(has_x, rho, 1.0)), 0.0)
                    w_new = jnp.where(forward, w + jnp.where(onehot, gamma, 0.0), shrunk)
                elif variant == "away":
                    forward = -gz >= gv
                    d = jnp.where(forward, z, -v)
                    gamma = step(d, g, jnp.where(forward, jnp.inf, vmax))
                    w_new = jnp.where(forward, w + jnp.where(onehot, gamma, 0.0), apply_away(w, gamma))
                else:  # pairwise on A ∪ {0}: z -> 0 if <g, z> >= 0, v -> 0 if <g, v> <= 0
                    use_z = gz < 0
                    v_atom = jnp.isfinite(ga) & (ga > 0)
                    d = jnp.where(use_z, z, 0.0) - jnp.where(v_atom, A[:, ka], 0.0)
                    gamma = step(d, g, jnp.where(v_atom, w[ka], jnp.inf))
                    w_new = (w - jnp.where(v_atom & (jnp.arange(w.shape[0]) == ka), gamma, 0.0)
                             + jnp.where(use_z & onehot, gamma, 0.0))
                    w_new = jnp.maximum(w_new, 0.0)
            f_new = obj.f(A @ w_new)
            # never accept an increase (guards rounding in the inner solvers)
            keep = f_new <= hist[t] + eps * jnp.abs(hist[t])
            w_new = jnp.where(keep, w_new, w)
            f_new = jnp.where(keep, f_new, hist[t])
            hist = hist.at[t + 1].set(f_new)
            nact = nact.at[t + 1].set(jnp.sum(w_new > 0).astype(jnp.int32))
            return w_new, A, hist, nact

        # Gram / linear term for the exact fully-corrective solve; recomputed from the atom
        # table when the LMO grows a buffer.
        def G_of(A_):
            return G if lmo is None or not lmo_returns_atom else A_.T @ jax.vmap(
                obj.hvp, in_axes=1, out_axes=1)(A_)

        def q_of(A_):
            return q if lmo is None or not lmo_returns_atom else A_.T @ obj.grad(jnp.zeros(m, dtype))

        def L_of(A_):
            return L_w if lmo is None or not lmo_returns_atom else obj.L * jnp.maximum(
                jnp.linalg.norm(A_, 2) ** 2, eps)

        w0 = jnp.zeros(K, dtype)
        hist = jnp.zeros(max_iter + 1, dtype).at[0].set(obj.f(jnp.zeros(m, dtype)))
        nact = jnp.zeros(max_iter + 1, jnp.int32)
        w, A, hist, nact = lax.fori_loop(0, max_iter, body, (w0, A, hist, nact))
        return NNMPResult(A @ w, w, A, hist, nact)

    return jax.jit(run) if jit else run


def _check_atom_columns(A: np.ndarray, dtype: Any) -> None:
    """Refuses atoms ``A`` ``(m, K)`` with NaN / infinite entries, zero columns (no direction), or
    columns whose squared norm under- or overflows ``dtype`` (the precision of the run: float32
    unless ``x64``), where the line search's ``<a, a>`` is 0 or inf and the result silently wrong."""
    if not np.all(np.isfinite(A)):
        raise ValueError("atoms contain NaN or infinite entries")
    norms = norms64(A, axis=0)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"atoms have {zero.size} zero column(s), e.g. column {int(zero[0])}")
    check_norm_range(norms, dtype, "the atoms (columns)", "column", hint="rescale the atoms (or use x64=True)")


def _check_history(history: np.ndarray, dtype: Any) -> None:
    """Refuses a run whose objective values ``f(x_t)`` are not finite in ``dtype``: a target or an
    objective whose scale overflows there gives inf / NaN histories and a meaningless answer."""
    if not np.all(np.isfinite(history)):
        raise ValueError(f"the objective values overflow in {np.dtype(dtype).name} (non-finite history): "
                         "rescale the problem (targets, features) or use x64=True")


def distance_runner(variant: str, max_iter: int, lmo: Callable[[Array], Array],
                    inner_iter: int = 50) -> Callable[[Array, Array], NNMPResult]:
    """A jitted ``run(A0, b) -> NNMPResult`` minimising ``0.5||x - b||^2`` over the cone of the atoms
    that ``lmo`` returns: the iterates of :func:`nnmp` with ``lmo_returns_atom=True``, but with the
    target ``b`` an argument, so new targets of the same shape and dtype reuse one compiled program.

    Args:
      variant: one of ``VARIANTS``.
      max_iter: iterations (>= 1).
      lmo: ``g (m,) -> atom (m,)`` of ``g``'s dtype, traceable (called inside ``jit``).
      inner_iter: inner iterations of the fully-corrective step (non-quadratic objectives only).

    Returns:
      ``run(A0, b)``: ``A0`` ``(m, max_iter)`` float zeros (the buffer the LMO's atoms fill),
      ``b`` ``(m,)`` of ``A0``'s dtype (float32, or float64 under ``jax.enable_x64``); returns the
      :class:`NNMPResult` (``x`` ``(m,)``, ``atoms`` ``(m, max_iter)``, ``weights`` ``(max_iter,)``).
      A buffer of another shape or a target of another length or dtype raises ``ValueError``
      (under ``jit`` a short buffer would silently drop atoms).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if not callable(lmo):
        raise ValueError("lmo must be callable")
    for name, value, low in (("max_iter", max_iter, 1), ("inner_iter", inner_iter, 1)):
        if not is_whole(value) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    run = _make_runner(None, variant, int(max_iter), lmo, True, int(inner_iter))

    def checked(A0: Array, b: Array) -> NNMPResult:
        A0, b = jnp.asarray(A0), jnp.asarray(b)
        if A0.ndim != 2 or A0.shape[1] != int(max_iter) or not jnp.issubdtype(A0.dtype, jnp.floating):
            raise ValueError(f"A0 must be a float (m, max_iter={int(max_iter)}) buffer, got {A0.shape} {A0.dtype}")
        if b.shape != (A0.shape[0],) or b.dtype != A0.dtype:
            raise ValueError(f"b must be ({A0.shape[0]},) {A0.dtype} like A0's rows, got {b.shape} {b.dtype}")
        return run(A0, b)

    return checked


@functools.lru_cache(maxsize=64)
def _batched_distance_runner(variant: str, max_iter: int):
    """One jitted ``(A (m, K), B (n, m)) -> NNMPResult`` (leading axis n, ``atoms=None``) per
    ``(variant, max_iter)``: ``jax.jit`` then caches one program per shape and dtype."""
    run = _make_runner(None, variant, max_iter, None, False, 0, jit=False)

    def one(A, b):
        return run(A, b)._replace(atoms=None)  # the atoms are shared: do not copy them per target

    return jax.jit(jax.vmap(one, in_axes=(None, 0)))


def nnmp_batch(atoms: ArrayLike, targets: ArrayLike, *, variant: str = "nnmp", max_iter: int = 100,
               x64: bool = False) -> NNMPResult:
    """Non-negative coding of many targets over one atom set: for every row ``b`` of ``targets``,
    ``min_{w >= 0} 0.5 ||A w - b||^2`` by ``max_iter`` steps of ``variant`` from ``w = 0``, i.e.
    :func:`nnmp` with :func:`distance_objective` (exact line search, exact fully-corrective
    solve), ``vmap``-ed over the targets in one compiled program (cached per variant,
    ``max_iter``, shapes and dtype, so repeated calls do not recompile).

    Args:
      atoms: ``(m, K)`` atoms as columns (finite, no zero column).
      targets: ``(n, m)`` signals to code (or one ``(m,)`` signal, then no leading axis).
      variant: one of ``VARIANTS``.
      max_iter: steps per target (at most ``max_iter`` atoms become active, fewer after drops).
      x64: compute in float64 inside ``jax.enable_x64(True)``; else float32.

    Returns:
      :class:`NNMPResult` of numpy arrays with a leading axis ``n``: ``x`` ``(n, m)``,
      ``weights`` ``(n, K)`` (>= 0), ``history`` ``(n, max_iter + 1)`` of ``f(x_t)``,
      ``n_active`` ``(n, max_iter + 1)``; ``atoms`` is the ``(m, K)`` atom matrix (not repeated).

    Raises:
      ValueError: unknown variant, bad ``max_iter``, non-2-D / non-finite / zero atoms, targets
        that are not ``(n, m)`` or not finite, atoms or targets whose squared norm under- or
        overflows the precision (float32 unless ``x64``; :func:`jaxcomp.greedy.pursuit.check_norm_range`),
        or a history that is not finite.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown NNMP variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if not is_whole(max_iter) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    A = np.asarray(atoms)
    if A.ndim != 2 or A.shape[0] < 1 or A.shape[1] < 1:
        raise ValueError(f"atoms must be a non-empty 2-D (m, K) array with atoms as columns, got shape {A.shape}")
    if not np.issubdtype(A.dtype, np.number) or np.iscomplexobj(A):
        raise ValueError(f"atoms must be real numbers, got dtype {A.dtype}")
    _check_atom_columns(A, np.float64 if x64 else np.float32)
    Y = np.asarray(targets)
    single = Y.ndim == 1
    if single:
        Y = Y[None]
    if Y.ndim != 2 or Y.shape[1] != A.shape[0]:
        raise ValueError(f"mismatched shapes: targets must be (n, {A.shape[0]}) for atoms of shape {A.shape}, "
                         f"got {np.shape(targets)}")
    if not np.issubdtype(Y.dtype, np.number) or np.iscomplexobj(Y):
        raise ValueError(f"targets must be real numbers, got dtype {Y.dtype}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("targets contain NaN or infinite entries")
    check_norm_range(norms64(Y, axis=-1), np.float64 if x64 else np.float32, "the targets (rows)", "row", small=False,
                     hint="rescale the targets (or use x64=True)")
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        run = _batched_distance_runner(variant, int(max_iter))
        out = run(jnp.asarray(A, dtype), jnp.asarray(Y, dtype))
        out = jax.tree_util.tree_map(lambda a: np.asarray(a), out)
    _check_history(out.history, np.float64 if x64 else np.float32)
    out = out._replace(atoms=np.asarray(A, np.float64 if x64 else np.float32))
    if single:
        out = out._replace(x=out.x[0], weights=out.weights[0], history=out.history[0], n_active=out.n_active[0])
    return out


def nnmp(
    objective: Objective | Callable[[Array], Array],
    atoms: ArrayLike | None = None,
    *,
    variant: str = "nnmp",
    max_iter: int = 100,
    lmo: Callable[[Array], Array] | None = None,
    lmo_returns_atom: bool = False,
    dim: int | None = None,
    inner_iter: int = 50,
    L: float | None = None,
    x64: bool = False,
) -> NNMPResult:
    """Minimises a smooth convex objective over the conic hull of an atom set.

    Args:
      objective: an :class:`Objective`, or a plain ``f`` (gradient by ``jax.grad``; then
        ``L`` is required).
      atoms: ``(m, K)`` atoms as columns. The default LMO is ``argmin_k <g, a_k>`` over them.
        May be ``None`` when ``lmo`` returns atom vectors (then ``dim`` = m is required).
      variant: one of ``VARIANTS``.
      max_iter: number of outer iterations (fixed-size loop, objective recorded each one).
      lmo: optional callable ``g (m,) -> int32 index`` into ``atoms``, or, with
        ``lmo_returns_atom=True``, ``g -> atom (m,)`` (atoms are then collected in a buffer
        of ``max_iter`` slots, deduplicated).
      inner_iter: FISTA steps per fully-corrective solve for non-quadratic objectives.
      L: smoothness constant when ``objective`` is a plain callable.
      x64: compute in float64 inside ``jax.enable_x64(True)``.

    Returns:
      :class:`NNMPResult` with numpy-convertible jax arrays.

    Raises:
      ValueError: unknown variant, NaNs in atoms, zero atoms, atoms whose squared norm under- or
        overflows the precision (float32 unless ``x64``), shape mismatch, missing ``L``, or objective
        values that are not finite (e.g. a target of norm 1e25 in float32).
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown NNMP variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if not isinstance(objective, Objective):
        if not callable(objective):
            raise ValueError("objective must be an Objective or a callable f(x)")
        objective = make_objective(objective, L=L)
    if not objective.quadratic and objective.L is None:
        raise ValueError("a non-quadratic objective needs its smoothness constant L for the step size")
    for name, value in (("max_iter", max_iter), ("inner_iter", inner_iter)):
        if not is_whole(value) or value < 1:  # inner_iter 0 returned x = 0 for fully-corrective MP
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if lmo is not None and not callable(lmo):
        raise ValueError("lmo must be callable")
    if atoms is None:
        if not (lmo is not None and lmo_returns_atom):
            raise ValueError("atoms is required unless lmo returns atom vectors (lmo_returns_atom=True)")
        if dim is None or dim < 1:
            raise ValueError("dim (the ambient dimension m) is required when atoms is None")
        A = np.zeros((dim, max_iter), np.float64 if x64 else np.float32)
    else:
        A = np.asarray(atoms)
        if A.ndim != 2 or A.shape[1] == 0:
            raise ValueError(f"atoms must be a non-empty 2-D (m, K) array with atoms as columns, got shape {A.shape}")
        if np.iscomplexobj(A) or not np.issubdtype(A.dtype, np.number):
            raise ValueError(f"atoms must be real numbers, got dtype {A.dtype}")
        _check_atom_columns(A, np.float64 if x64 else np.float32)
        if dim is not None and dim != A.shape[0]:
            raise ValueError(f"mismatched shapes: dim={dim} but atoms have {A.shape[0]} rows")
        if lmo_returns_atom:
            raise ValueError("lmo_returns_atom=True requires atoms=None (atoms are collected by the LMO)")
    m = A.shape[0]
    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        probe = jnp.zeros(m, dtype)
        try:
            gshape = jax.eval_shape(objective.grad, probe).shape
        except Exception as e:  # noqa: BLE001 - report the shape problem clearly
            raise ValueError(
                f"mismatched shapes: the objective cannot be evaluated at a point of dimension {m} "
                f"(the number of rows of the atoms): {e}"
            ) from e
        if gshape != (m,):
            raise ValueError(f"mismatched shapes: gradient has shape {gshape}, expected ({m},)")
        run = _make_runner(objective, variant, int(max_iter), lmo, lmo_returns_atom, int(inner_iter))
        out = run(jnp.asarray(A, dtype))
        out = jax.tree_util.tree_map(lambda a: np.asarray(a), out)
        _check_history(out.history, dtype)
        h0, h1 = float(out.history[0]), float(out.history[-1])
        if atoms is not None and not h1 < h0 - 1e-6 * max(abs(h0), 1e-30):  # no progress beyond rounding
            _warn_if_stalled(objective, A, out.x)
        return out


def _warn_if_stalled(objective: Objective, A: np.ndarray, x: np.ndarray) -> None:
    """Warns when a run that never lowered the objective stopped where an atom still descends
    (``<grad f(x), a_k> < 0``): steps of ``1 / L`` with ``L`` below the true smoothness constant
    overshoot, are rejected, and the result looks like a solution."""
    g = np.asarray(objective.grad(jnp.asarray(x)), np.float64)
    slopes = np.asarray(A, np.float64).T @ g / np.maximum(np.linalg.norm(A, axis=0), 1e-30)
    if slopes.min() < -1e-6 * max(float(np.linalg.norm(g)), 1e-30) and np.linalg.norm(g) > 1e-6:
        warnings.warn(f"nnmp made no progress although atom {int(slopes.argmin())} still descends (slope "
                      f"{slopes.min():.3g}): is the smoothness constant L ({objective.L!r}) too small?", stacklevel=3)

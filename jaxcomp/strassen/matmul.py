"""Learning exact matrix-multiplication algorithms (e.g. Strassen's) with a ternary SPN.

The SPN ``vec(C) = W_c[(W_b vec(B)) * (W_a vec(A))]`` is trained on random Gaussian matrices
(fresh ``A, B`` every step; the expected squared error equals the squared Frobenius distance
between the SPN's tensor and the matrix-multiplication tensor). The schedule that works
(see docs/strassen.md for the measured success rates):

1. full precision for ``fp_fraction`` of the steps (Adam);
2. gradual ternarization: ``W = (1 - mix) W + mix q(W)`` with ``q`` the ternary quantizer
   (straight-through), ``mix`` ramping 0 -> 1 over ``ramp_fraction`` of the remaining steps,
   plus a penalty ``lambda ||W - q(W)||^2`` pulling the latent weights onto the ternary grid,
   ``lambda`` ramping 0 -> ``penalty`` over the remaining steps;
3. the result is the ternary ``q(W)``; it is exact iff its tensor equals the
   matrix-multiplication tensor, checked in integer arithmetic (a proof for all matrices).

A *seed* runs ``restarts`` independent initialisations in parallel (``vmap``) and succeeds if
any restart is exact; its wall time counts all restarts. Everything is one jitted ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp.strassen.layers import matmul_tensor, spn_matmul
from jaxcomp.strassen.ternary import ternarize, ternary_pattern


@dataclasses.dataclass(frozen=True)
class MatmulSearch:
    """Hyper-parameters of one seed's search for an ``r``-multiplication algorithm of ``(n x m)(m x k)``."""

    n: int = 2
    m: int = 2
    k: int = 2
    r: int = 7
    steps: int = 12_000
    batch_size: int = 128
    learning_rate: float = 1e-2
    init_std: float = 0.5
    fp_fraction: float = 1 / 3
    ramp_fraction: float = 2 / 3
    penalty: float = 0.05
    restarts: int = 16
    method: str = "round"  # ternary quantizer: "round" (scale 1) or "twn"
    threshold: float = 0.7

    def __post_init__(self):
        if min(self.n, self.m, self.k, self.r, self.steps, self.batch_size, self.restarts) < 1:
            raise ValueError(f"n, m, k, r, steps, batch_size and restarts must be positive: {self}")
        if not 0 <= self.fp_fraction < 1 or not 0 < self.ramp_fraction <= 1:
            raise ValueError("need 0 <= fp_fraction < 1 and 0 < ramp_fraction <= 1")


def _quantize(w: jax.Array, spec: MatmulSearch) -> jax.Array:
    """Ternary value of ``w`` without gradient: :func:`ternarize`'s forward (the pattern times the TWN
    optimal scale for ``twn``, times 1 for ``round``), so the search and the layers share one quantizer."""
    return jax.lax.stop_gradient(ternarize(w, spec.method, spec.threshold))


def _init(key: jax.Array, spec: MatmulSearch) -> dict[str, jax.Array]:
    ka, kb, kc = jax.random.split(key, 3)
    nm, mk, nk = spec.n * spec.m, spec.m * spec.k, spec.n * spec.k
    return {"wa": spec.init_std * jax.random.normal(ka, (spec.r, nm)),
            "wb": spec.init_std * jax.random.normal(kb, (spec.r, mk)),
            "wc": spec.init_std * jax.random.normal(kc, (nk, spec.r))}


def search_schedule(step: jax.Array | int, spec: MatmulSearch) -> tuple[jax.Array, jax.Array]:
    """``(progress, mix)`` at ``step``, float32 scalars: ``progress`` ramps 0 -> 1 over the steps after the
    full-precision phase (it scales the grid penalty), ``mix`` (the blend towards the ternary weights)
    0 -> 1 over the first ``ramp_fraction`` of them."""
    fp_steps = int(spec.fp_fraction * spec.steps)
    rest = max(spec.steps - fp_steps, 1)
    progress = jnp.clip((jnp.asarray(step, jnp.float32) - fp_steps) / rest, 0.0, 1.0)
    return progress, jnp.clip(progress / spec.ramp_fraction, 0.0, 1.0)


def search_loss(p: dict[str, jax.Array], a: jax.Array, b: jax.Array, step: jax.Array | int,
                spec: MatmulSearch) -> jax.Array:
    """The training loss at ``step`` (float32 scalar) of latent weights ``p`` (``wa [r, n*m]``,
    ``wb [r, m*k]``, ``wc [n*k, r]``) on a batch ``a [B, n*m]``, ``b [B, m*k]``: the squared error of
    the SPN with weights ``w + mix (q(w) - w)`` (straight-through) against ``A @ B``, plus
    ``penalty * progress * ||w - q(w)||^2`` (:func:`search_schedule`)."""
    progress, mix = search_schedule(step, spec)
    eff = {k: w + mix * jax.lax.stop_gradient(_quantize(w, spec) - w) for k, w in p.items()}
    c = jnp.einsum("bij,bjl->bil", a.reshape(-1, spec.n, spec.m), b.reshape(-1, spec.m, spec.k))
    err = jnp.mean(jnp.sum((spn_matmul(eff["wa"], eff["wb"], eff["wc"], a, b) - c.reshape(c.shape[0], -1)) ** 2, -1))
    pull = sum(jnp.sum((w - jax.lax.stop_gradient(_quantize(w, spec))) ** 2) for w in p.values())
    return err + spec.penalty * progress * pull


def train_one(key: jax.Array, spec: MatmulSearch) -> tuple[dict[str, jax.Array], jax.Array]:
    """One restart: returns the latent weights and the final ternary-model loss on a fresh batch (pure, jittable)."""
    init_key, data_key = jax.random.split(key)
    params = _init(init_key, spec)
    tx = optax.adam(spec.learning_rate)

    def loss_fn(p, a, b, step):
        return search_loss(p, a, b, step, spec)

    def sample(key):
        ka, kb = jax.random.split(key)
        return (jax.random.normal(ka, (spec.batch_size, spec.n * spec.m)),
                jax.random.normal(kb, (spec.batch_size, spec.m * spec.k)))

    def step(carry, i):
        p, opt_state = carry
        a, b = sample(jax.random.fold_in(data_key, i))
        grads = jax.grad(loss_fn)(p, a, b, i)
        updates, opt_state = tx.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), None

    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(spec.steps))
    a, b = sample(jax.random.fold_in(data_key, spec.steps))
    final = loss_fn(params, a, b, spec.steps) - spec.penalty * sum(
        jnp.sum((w - _quantize(w, spec)) ** 2) for w in params.values())
    return params, final


def make_search(spec: MatmulSearch) -> Callable[[jax.Array], tuple[dict[str, jax.Array], jax.Array]]:
    """A jitted ``key -> (latent params [restarts, ...], ternary loss [restarts])`` over ``spec.restarts`` restarts."""
    def search(key):
        return jax.vmap(lambda k: train_one(k, spec))(jax.random.split(key, spec.restarts))
    return jax.jit(search)


def ternary_weights(params: dict[str, Any], spec: MatmulSearch) -> dict[str, np.ndarray]:
    """The ternary patterns ``{wa, wb, wc}`` (``int64``) of one restart's latent weights."""
    return {k: np.asarray(ternary_pattern(jnp.asarray(v), spec.method, spec.threshold)).astype(np.int64)
            for k, v in params.items()}


def tensor_error(wa: np.ndarray, wb: np.ndarray, wc: np.ndarray, n: int = 2, m: int = 2, k: int = 2) -> int:
    """``sum |T_spn - T|`` in exact integer arithmetic; 0 iff the algorithm is exact for all matrices."""
    t = np.einsum("ra,rb,cr->abc", wa.astype(np.int64), wb.astype(np.int64), wc.astype(np.int64))
    return int(np.abs(t - matmul_tensor(n, m, k)).sum())


def verify_on_integers(wa: np.ndarray, wb: np.ndarray, wc: np.ndarray, n: int = 2, m: int = 2, k: int = 2,
                       trials: int = 1000, seed: int = 0, high: int = 1000) -> bool:
    """Runs the algorithm on ``trials`` random int64 matrices in ``[-high, high]``; true iff it equals ``A @ B``."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-high, high + 1, (trials, n, m))
    b = rng.integers(-high, high + 1, (trials, m, k))
    got = ((a.reshape(trials, -1) @ wa.T.astype(np.int64)) * (b.reshape(trials, -1) @ wb.T.astype(np.int64))
           ) @ wc.T.astype(np.int64)
    return bool(np.array_equal(got, (a @ b).reshape(trials, -1)))


def _linear_form(coeffs: np.ndarray, names: list[str]) -> str:
    terms = []
    for c, name in zip(coeffs, names):
        if c == 0:
            continue
        sign = "-" if c < 0 else "+"
        mag = "" if abs(c) == 1 else f"{abs(c)} "
        terms.append((sign, mag + name))
    if not terms:
        return "0"
    text = ("-" if terms[0][0] == "-" else "") + terms[0][1]
    return text + "".join(f" {s} {t}" for s, t in terms[1:])


def canonical_signs(wa: np.ndarray, wb: np.ndarray, wc: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same algorithm with the first non-zero coefficient of every factor positive (signs moved into W_c)."""
    wa, wb, wc = np.array(wa), np.array(wb), np.array(wc)
    for i in range(wa.shape[0]):
        for w in (wa, wb):
            nz = np.flatnonzero(w[i])
            if len(nz) and w[i, nz[0]] < 0:
                w[i] = -w[i]
                wc[:, i] = -wc[:, i]
    return wa, wb, wc


def describe_algorithm(wa: np.ndarray, wb: np.ndarray, wc: np.ndarray, n: int = 2, m: int = 2,
                       k: int = 2) -> list[str]:
    """Human-readable products ``M1 = (A11 + A22)(B11 + B22)`` and outputs ``C11 = M1 + M4 - ...`` (1-based).

    Signs are normalised first (:func:`canonical_signs`), which does not change the algorithm.
    """
    wa, wb, wc = canonical_signs(wa, wb, wc)
    a_names = [f"A{i + 1}{j + 1}" for i in range(n) for j in range(m)]
    b_names = [f"B{i + 1}{j + 1}" for i in range(m) for j in range(k)]
    c_names = [f"C{i + 1}{j + 1}" for i in range(n) for j in range(k)]
    lines = []
    for i in range(wa.shape[0]):
        fa, fb = _linear_form(wa[i], a_names), _linear_form(wb[i], b_names)
        fa = fa if np.count_nonzero(wa[i]) == 1 and wa[i].max() > 0 else f"({fa})"
        fb = fb if np.count_nonzero(wb[i]) == 1 and wb[i].max() > 0 else f"({fb})"
        lines.append(f"M{i + 1} = {fa} {fb}")
    m_names = [f"M{i + 1}" for i in range(wa.shape[0])]
    for c in range(wc.shape[0]):
        lines.append(f"{c_names[c]} = {_linear_form(wc[c], m_names)}")
    return lines


@dataclasses.dataclass
class SeedResult:
    seed: int
    exact: bool
    restarts_exact: int
    best_error: int          # integer tensor error of the best restart (0 = exact)
    best_relative_mse: float  # E||C - C_hat||^2 / E||C||^2 of the best restart's ternary weights
    seconds: float
    weights: dict[str, np.ndarray]


def relative_mse(wa: np.ndarray, wb: np.ndarray, wc: np.ndarray, n: int = 2, m: int = 2, k: int = 2) -> float:
    """Expected squared error over Gaussian ``A, B`` relative to ``E||AB||^2``: ``||T_spn - T||_F^2 / ||T||_F^2``."""
    t = matmul_tensor(n, m, k)
    d = np.einsum("ra,rb,cr->abc", wa, wb, wc).astype(np.float64) - t
    return float((d ** 2).sum() / (t ** 2).sum())


def run_seed(search: Callable[[jax.Array], tuple[dict[str, jax.Array], jax.Array]], spec: MatmulSearch,
             seed: int) -> SeedResult:
    """Runs one seed (all its restarts) with a compiled ``search`` from :func:`make_search`; timed, blocking."""
    start = time.perf_counter()
    params, _ = search(jax.random.PRNGKey(seed))
    params = jax.device_get(params)
    seconds = time.perf_counter() - start
    best, best_key, exact_count = None, None, 0
    for i in range(spec.restarts):
        w = ternary_weights({k: v[i] for k, v in params.items()}, spec)
        err = tensor_error(w["wa"], w["wb"], w["wc"], spec.n, spec.m, spec.k)
        exact_count += err == 0
        key = (err, sum(int(np.count_nonzero(v)) for v in w.values()))
        if best_key is None or key < best_key:
            best, best_key = w, key
    return SeedResult(seed=seed, exact=best_key[0] == 0, restarts_exact=exact_count, best_error=best_key[0],
                      best_relative_mse=relative_mse(best["wa"], best["wb"], best["wc"], spec.n, spec.m, spec.k),
                      seconds=seconds, weights=best)

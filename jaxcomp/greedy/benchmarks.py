"""Experiment driver for the non-negative MP variants (host code: problems, references, plots).

Problems (all over a cone, starting at 0):

* ``nnls``: ``min_{w >= 0} 0.5 ||M w - b||^2`` as ``f(x) = 0.5||x - b||^2`` over
  ``cone(columns of M)`` (strongly convex in ``x``: linear rates expected for away, pairwise
  and fully-corrective MP). Reference: ``scipy.optimize.nnls`` in float64.
* ``logistic``: mean logistic loss over the non-negative orthant (atoms = unit vectors),
  without ridge (convex, not strongly convex: sublinear O(1/t) rate) and with a ridge
  ``l2 > 0`` (strongly convex: linear rate). Reference: L-BFGS-B with bounds in float64,
  improved by the best iterate found.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence

import ml_collections
import numpy as np
import scipy.optimize as so

from jaxcomp.checks import distinct, finite_number, is_whole
from jaxcomp.greedy.nnmp import VARIANTS, distance_objective, logistic_objective, nnmp
from jaxcomp.greedy.realdata import nnls_reference
from jaxcomp.reporting import write_table

LABELS = {"nnmp": "NNMP", "away": "Away-steps MP", "pairwise": "Pairwise MP", "fully_corrective": "Fully-corrective MP"}


def nnls_problem(m: int, k: int, density: float, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random Gaussian ``M`` ``(m, k)``, ``b = M w0 + noise`` with sparse non-negative ``w0``
    and a negative component so that the solution has zeros."""
    for name, value in (("m", m), ("k", k)):
        if not is_whole(value) or value < 1:
            raise ValueError(f"nnls.{name} must be a positive integer, got {value!r}")
    if not 0 <= density <= 1 or not noise >= 0:
        raise ValueError(f"nnls.density must be in [0, 1] and nnls.noise >= 0, got {density!r}, {noise!r}")
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((m, k)) / np.sqrt(m)
    w0 = np.where(rng.random(k) < density, rng.random(k) + 0.5, 0.0)
    b = M @ w0 + noise * rng.standard_normal(m)
    return M, b


def logistic_problem(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(n, dim)`` and labels in {-1, 1} from a non-negative planted model."""
    rng = np.random.default_rng(seed)
    F = rng.standard_normal((n, dim))
    w0 = np.where(rng.random(dim) < 0.3, rng.random(dim), 0.0)
    y = np.where(F @ w0 + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    return F, y


def logistic_reference(F: np.ndarray, y: np.ndarray, l2: float) -> float:
    """``min_{w >= 0}`` of the mean logistic loss (+ ridge) by L-BFGS-B in float64."""
    n = len(y)

    def fg(w):
        z = -y * (F @ w)
        f = np.mean(np.logaddexp(0.0, z)) + 0.5 * l2 * w @ w
        s = 0.5 * (1 + np.tanh(0.5 * z))  # sigmoid(z), stable
        g = F.T @ (-y * s) / n + l2 * w
        return f, g

    res = so.minimize(fg, np.zeros(F.shape[1]), jac=True, method="L-BFGS-B",
                      bounds=[(0, None)] * F.shape[1], options=dict(maxiter=20000, ftol=1e-16, gtol=1e-12))
    return float(res.fun)


def _plot(histories: dict, fstar: float, title: str, path: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for v, h in histories.items():
        gap = np.maximum(np.asarray(h, np.float64) - fstar, 1e-16)
        ax.semilogy(np.arange(len(gap)), gap, label=LABELS[v])
    ax.set_xlabel("iteration t")
    ax.set_ylabel("f(x_t) - f*")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# f* below this share of f(0) counts as 0: a relative gap to it is rounding noise divided by ~0
ZERO_OPTIMUM = 1e-12


def gaps(final: float, fstar: float, f0: float) -> dict:
    """``absolute_gap`` ``final - f*`` and ``relative_gap`` ``(final - f*) / |f*|``; the relative
    gap is NaN when ``|f*| <= ZERO_OPTIMUM * |f(0)|`` (an exactly solvable problem, e.g. NNLS
    without noise: f* ~ 1e-31 gave relative gaps of 1e28), where only the absolute gap means something."""
    zero = abs(fstar) <= ZERO_OPTIMUM * max(abs(f0), 1e-300)
    relative = float("nan") if zero else float((final - fstar) / abs(fstar))
    return {"absolute_gap": float(final - fstar), "relative_gap": relative}


def check_variants(variants: Sequence[str]) -> list[str]:
    """``variants`` as a list of known, distinct NNMP variants, else a ValueError naming ``variants``
    (a repeated one gave duplicate rows)."""
    variants = distinct(variants, "variants")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"unknown NNMP variant {v!r}; expected one of {', '.join(VARIANTS)}")
    return variants


def _run_variants(obj, atoms, cfg, fstar, problem, workdir, title, rows):
    histories = {}
    for v in check_variants(cfg.variants):
        t0 = time.perf_counter()
        res = nnmp(obj, atoms, variant=v, max_iter=cfg.max_iter, inner_iter=cfg.inner_iter, x64=cfg.x64)
        secs = time.perf_counter() - t0
        h = np.asarray(res.history, np.float64)
        histories[v] = h
        rows.append({"problem": problem, "variant": LABELS[v], "iterations": cfg.max_iter,
                     "final_objective": float(h[-1]), "reference": fstar, **gaps(h[-1], fstar, h[0]),
                     "min_weight": float(np.min(res.weights)), "n_active": int(res.n_active[-1]),
                     "seconds_incl_compile": secs})
    _plot(histories, fstar, title, os.path.join(workdir, f"nnmp_{problem}.png"))
    return histories


def run(cfg: ml_collections.ConfigDict, workdir: str) -> str:
    """Runs the NNLS and logistic problems for every variant; returns the Markdown table (final
    objective, reference f*, ``absolute_gap`` and ``relative_gap``: NaN, with a warning, where f* is
    ~0, see :func:`gaps`). ``variants`` must be distinct and ``logistic.l2`` a finite number >= 0
    (checked before any work)."""
    check_variants(cfg.variants)
    finite_number(cfg.logistic.l2, "logistic.l2", minimum=0.0, strict=False)  # < 0: unbounded below, f* -inf
    os.makedirs(workdir, exist_ok=True)
    rows: list[dict] = []
    p = cfg.nnls
    M, b = nnls_problem(p.m, p.k, p.density, p.noise, cfg.seed)
    W_ref, f_ref, _ = nnls_reference(M, b[None])
    w_ref, fstar = W_ref[0], float(f_ref[0])
    print(f"NNLS m={p.m} k={p.k}: scipy.optimize.nnls objective {fstar:.12g}, {int((w_ref > 0).sum())} active")
    if abs(fstar) <= ZERO_OPTIMUM * 0.5 * float(b @ b):
        warnings.warn(f"the NNLS optimum f* = {fstar:.3g} is ~0 (nnls.noise = {p.noise!r}: b lies in the cone): "
                      "its relative gaps are not defined (NaN in the table); read absolute_gap", stacklevel=2)
    _run_variants(distance_objective(b), M, cfg, fstar, "nnls", workdir,
                  f"NNLS over cone of {p.k} atoms in R^{p.m} (strongly convex)", rows)
    q = cfg.logistic
    F, y = logistic_problem(q.n, q.dim, cfg.seed)
    for l2, name in ((0.0, "logistic"), (q.l2, "logistic_l2")):
        obj = logistic_objective(F, y, l2)
        ref = logistic_reference(F, y, l2)
        start = len(rows)
        hist = _run_variants(obj, np.eye(q.dim), cfg, ref, name, workdir,
                             f"logistic loss, w >= 0, l2={l2:g} ({'strongly ' if l2 else 'not strongly '}convex)",
                             rows)
        best = min(ref, min(float(np.min(h)) for h in hist.values()))
        if best < ref:  # the greedy methods beat L-BFGS-B: use the best value as f*
            for r, h in zip(rows[start:], hist.values()):
                r["reference"] = best
                r.update(gaps(r["final_objective"], best, h[0]))
            _plot(hist, best - 1e-14, f"logistic loss, w >= 0, l2={l2:g}", os.path.join(workdir, f"nnmp_{name}.png"))
        print(f"{name}: reference objective {min(best, ref):.12g}")
    md = write_table(rows, workdir, "nnmp", title="Non-negative matching pursuit")
    with open(os.path.join(workdir, "config.txt"), "w") as f:
        f.write(str(cfg))
    return md

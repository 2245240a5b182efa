"""Real-data experiments for the non-negative MP variants (host code: data, baselines, plots).

Two problems on non-negative images (MNIST digits from ``../shared/data/mnist/mnist.npz``, or
scikit-learn's bundled 8x8 ``load_digits`` when that file is absent; no download either way):

* **Sparse non-negative regression** (:func:`run_regression`): each held-out digit ``b``
  (``(m,)``, pixels in [0, 1]) is written as a non-negative combination of ``K`` training
  digits, ``min_{w >= 0} 0.5 ||A w - b||^2`` with ``A`` ``(m, K)``, i.e. ``0.5||x - b||^2`` over
  ``cone(A)``. Every variant of :mod:`jaxcomp.greedy.nnmp` runs batched over the targets
  (:func:`~jaxcomp.greedy.nnmp.nnmp_batch`, float64); the reference optimum is
  ``scipy.optimize.nnls`` per target and the baselines are scipy's NNLS (active set) and
  scikit-learn's coordinate descent ``Lasso(positive=True)`` with a negligible ``alpha``.
  Suboptimality is relative, summed over the targets: ``(sum_i f_i - sum_i f_i*) / sum_i f_i*``.
* **Non-negative matrix factorisation** (:func:`run_nmf`): ``min_{W, H >= 0} ||Y - W H||_F^2``
  for ``Y`` ``(m, n)`` (``n`` digits as columns) and rank ``r``, by alternating a coding step
  (every column of ``H`` coded over the atoms ``W`` by ``code_iter`` steps of one greedy variant
  from 0, or exactly by ``scipy.optimize.nnls`` = ANLS, the baseline) and a dictionary step
  (``hals_sweeps`` HALS sweeps over the columns of ``W``, the same for every method). A coding
  step never increases the objective: per column, the new code replaces the old one only if it
  fits better. After each dictionary step the columns of ``W`` are scaled to unit norm (``H``
  rescaled, the product unchanged) and an unused (zero) column is replaced by the worst-fitted
  data column. scikit-learn's ``NMF`` (coordinate descent) is an external baseline.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import scipy.optimize as so

from jaxcomp.checks import count, distinct, is_whole, seed_list
from jaxcomp.files import load_npz
from jaxcomp.greedy.nnmp import VARIANTS, NNMPResult, nnmp_batch
from jaxcomp.reporting import write_table

LABELS = {"nnmp": "NNMP", "away": "Away-steps MP", "pairwise": "Pairwise MP", "fully_corrective": "Fully-corrective MP"}
DEFAULT_MNIST = os.path.join("..", "shared", "data", "mnist", "mnist.npz")


# ----------------------------------------------------------------------------- data


def load_images(source: str = "auto", path: str = DEFAULT_MNIST) -> tuple[np.ndarray, np.ndarray, str]:
    """Non-negative digit images as rows.

    Args:
      source: ``"mnist"`` (the npz at ``path``; error if missing), ``"digits"`` (scikit-learn's
        bundled 8x8 digits, 1,797 images, no download) or ``"auto"`` (MNIST if the file exists,
        else digits).
      path: the MNIST ``.npz`` with ``x_train`` / ``x_test`` (uint8 28x28).

    Returns:
      ``(train (N, m) float64 in [0, 1], test (N', m) float64 in [0, 1], name)``; for the
      digits the first 1,297 images are "train" and the last 500 "test".

    Raises:
      ValueError: unknown source. FileNotFoundError: ``source="mnist"`` and no file at ``path``.
    """
    if source not in ("auto", "mnist", "digits"):
        raise ValueError(f"unknown image source {source!r}; expected auto, mnist or digits")
    if source == "mnist" or (source == "auto" and os.path.isfile(path)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"MNIST file not found: {path!r} (use --data digits for sklearn's digits)")
        f = load_npz(path, ["x_train", "x_test"])  # ValueError naming a damaged file
        tr = f["x_train"].reshape(len(f["x_train"]), -1) / 255.0
        te = f["x_test"].reshape(len(f["x_test"]), -1) / 255.0
        return tr.astype(np.float64), te.astype(np.float64), "MNIST 28x28"
    X = _sklearn_digits() / 16.0
    return X[:-500].astype(np.float64), X[-500:].astype(np.float64), "sklearn digits 8x8"


def _sklearn_digits() -> np.ndarray:
    """The ``(1797, 64)`` pixels (0..16) of ``sklearn.datasets.load_digits``, read from the CSV
    that scikit-learn ships (without importing scikit-learn, which takes seconds); falls back to
    ``load_digits`` if that file is not where it is expected."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return np.loadtxt(path, delimiter=",")[:, :-1]
    from sklearn.datasets import load_digits

    return load_digits().data


def _subset(X: np.ndarray, k: int, rng: np.random.Generator, what: str) -> np.ndarray:
    if k < 1 or k > len(X):
        raise ValueError(f"cannot draw {k} {what} from {len(X)} images")
    return X[rng.choice(len(X), k, replace=False)]


# ----------------------------------------------------------------------------- regression


def regression_problem(train: np.ndarray, test: np.ndarray, n_atoms: int, n_targets: int, seed: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """``A (m, n_atoms)``: random training digits as columns (all-zero images skipped);
    ``B (n_targets, m)``: random held-out digits; different draws per ``seed``."""
    rng = np.random.default_rng(seed)
    train = train[np.linalg.norm(train, axis=1) > 0]
    return _subset(train, n_atoms, rng, "atoms").T.copy(), _subset(test, n_targets, rng, "targets")


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def nnls_reference(A: np.ndarray, B: np.ndarray, clock: str = "wall") -> tuple[np.ndarray, np.ndarray, float]:
    """``scipy.optimize.nnls`` per row of ``B``: ``(weights (n, K), f* (n,), seconds)`` (by
    ``clock``: ``"wall"`` or ``"cpu"``, the CPU time of this process, all threads)."""
    tick = CLOCKS[clock]
    t0 = tick()
    W = np.zeros((len(B), A.shape[1]))
    f = np.zeros(len(B))
    for i, b in enumerate(B):
        W[i], rn = so.nnls(A, b, maxiter=50 * A.shape[1])
        f[i] = 0.5 * rn**2
    return W, f, tick() - t0


def relative_gap(f: np.ndarray, fstar: np.ndarray) -> np.ndarray:
    """``(sum_i f_i - sum_i f*_i) / sum_i f*_i`` over the last axis of ``f`` (targets)."""
    return (np.sum(f, axis=-1) - np.sum(fstar)) / np.sum(fstar)


def _objective(A, B, W):
    return 0.5 * np.sum((W @ A.T - B) ** 2, axis=1)


def _timed(fn, repeats: int = 2, clock: str = "wall"):
    fn()  # compile / warm up
    best = np.inf
    for _ in range(repeats):
        t0 = CLOCKS[clock]()
        out = fn()
        best = min(best, CLOCKS[clock]() - t0)
    return out, best


def lasso_curve(A: np.ndarray, B: np.ndarray, fstar: np.ndarray, iters: Iterable[int], alpha: float,
                clock: str = "wall") -> list[tuple[int, float, float]]:
    """scikit-learn ``Lasso(positive=True, alpha)`` coordinate descent stopped after each
    ``max_iter`` in ``iters`` (``tol=0``): ``[(iters, seconds, relative NNLS gap)]``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso

    out = []
    for it in iters:
        model = Lasso(alpha=alpha, positive=True, fit_intercept=False, max_iter=int(it), tol=0.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = CLOCKS[clock]()
            model.fit(A, B.T)
            secs = CLOCKS[clock]() - t0
        W = np.atleast_2d(model.coef_)
        out.append((int(it), secs, float(relative_gap(_objective(A, B, W), fstar))))
    return out


def check_plan(*, max_iter: int, checkpoints: Sequence[int] | None = None, variants: Sequence[str] = (),
               seeds: Sequence[int] = (0,), iter_name: str = "max_iter", variant_name: str = "variants",
               allowed: Sequence[str] = VARIANTS, kind: str = "NNMP variant") -> list[int]:
    """Checks a real-data experiment's plan before any work, a ValueError naming the setting: ``max_iter``
    (``iter_name``) a whole number >= 1, every checkpoint a whole number in ``1..max_iter`` (one past
    it was silently dropped from the table), ``variants`` known and distinct (a repeat gave duplicate
    rows), ``seeds`` whole, >= 0 and distinct. Returns the sorted checkpoints with ``max_iter``."""
    max_iter = count(max_iter, iter_name)
    for v in distinct(variants, variant_name) if variants else ():
        if v not in allowed:
            raise ValueError(f"unknown {kind} {v!r} in {variant_name}; expected one of {', '.join(allowed)}")
    seed_list(seeds, "seeds")
    if checkpoints is None:
        return [max_iter]
    for t in checkpoints:
        if not is_whole(t) or not 1 <= t <= max_iter:
            raise ValueError(f"checkpoints must be whole numbers in 1..{iter_name} = 1..{max_iter}, got {t!r}")
    return sorted({int(t) for t in checkpoints} | {max_iter})


def run_regression(workdir: str, *, data: str = "auto", mnist_path: str = DEFAULT_MNIST, n_atoms: int = 100,
                   n_targets: int = 20, max_iter: int = 200, checkpoints: Sequence[int] = (10, 25, 50, 100),
                   seeds: Sequence[int] = (0, 1, 2), variants: Sequence[str] = VARIANTS,
                   lasso_iters: Sequence[int] = (1, 3, 10, 30, 100, 300), lasso_alpha: float = 1e-8,
                   accuracy: float = 1e-6, clock: str = "cpu", figure: str | None = None) -> str:
    """Non-negative regression of held-out digits on training digits (see the module doc).

    For every seed: the greedy variants' relative gap per iteration (one ``max_iter`` run) and
    their wall time to each checkpoint (a separate compiled run per ``T`` in ``checkpoints`` +
    ``max_iter``, timed after a warm-up call, so JIT compilation is excluded; ``clock="cpu"``:
    CPU seconds of this process, all threads, robust to other jobs on the cores; ``"wall"``:
    wall-clock seconds); scipy's NNLS (time
    to the exact optimum) and the Lasso curve. Writes ``regression.md/.csv`` (per method: gap
    after ``T`` iterations, time, time to a relative gap <= ``accuracy``, mean ± std over seeds),
    ``regression_curves.npz`` and the figure (``workdir/nnmp_regression.png`` unless ``figure``
    is given). Returns the Markdown. Checkpoints outside ``1..max_iter``, repeated variants or seeds
    are refused before any work (:func:`check_plan`).
    """
    Ts = check_plan(max_iter=max_iter, checkpoints=checkpoints, variants=variants, seeds=seeds)
    os.makedirs(workdir, exist_ok=True)
    train, test, name = load_images(data, mnist_path)
    curves: dict[str, list] = {v: [] for v in variants}
    times: dict[str, list] = {v: [] for v in variants}
    per_seed = []
    for seed in seeds:
        A, B = regression_problem(train, test, n_atoms, n_targets, seed)
        Wref, fstar, nnls_secs = nnls_reference(A, B, clock)
        rec = {"seed": seed, "nnls_seconds": nnls_secs, "nnls_active": float(np.mean(np.sum(Wref > 0, axis=1))),
               "lasso": lasso_curve(A, B, fstar, lasso_iters, lasso_alpha, clock)}
        for v in variants:
            res = nnmp_batch(A, B, variant=v, max_iter=max_iter, x64=True)
            if np.any(res.weights < 0):
                raise AssertionError(f"{v}: negative weights")
            gap = relative_gap(res.history.T, fstar)
            curves[v].append(gap)
            tt = []
            for T in Ts:
                _, secs = _timed(lambda T=T, A=A, B=B, v=v: nnmp_batch(A, B, variant=v, max_iter=T, x64=True),
                                 clock=clock)
                tt.append(secs)
            times[v].append(tt)
            rec[v] = {"gap": float(gap[-1]), "active": float(np.mean(res.n_active[:, -1]))}
        per_seed.append(rec)
        print(f"seed {seed}: " + ", ".join(f"{LABELS[v]} gap {rec[v]['gap']:.2e}" for v in variants)
              + f"; scipy nnls {nnls_secs:.3f} s", flush=True)
    rows = []
    for v in variants:
        G = np.array(curves[v])
        Tm = np.array(times[v])
        row = {"method": LABELS[v], "iterations": max_iter}
        for T in Ts[:-1]:
            row[f"gap@{T}"] = _pm(G[:, T])
        row["final gap"] = _pm(G[:, -1])
        row[f"{clock} seconds"] = _pm(Tm[:, -1])
        row[f"{clock} seconds to gap<={accuracy:g}"] = time_to_accuracy(G[:, Ts], Tm, accuracy)
        row["active atoms"] = _pm([r[v]["active"] for r in per_seed])
        rows.append(row)
    nsec = np.array([r["nnls_seconds"] for r in per_seed])
    rows.append({"method": "scipy.optimize.nnls (reference)", "iterations": "exact", "final gap": "0",
                 f"{clock} seconds": _pm(nsec), f"{clock} seconds to gap<={accuracy:g}": _pm(nsec),
                 "active atoms": _pm([r["nnls_active"] for r in per_seed])})
    lasso = np.array([[g for (_, _, g) in r["lasso"]] for r in per_seed])
    lsec = np.array([[s for (_, s, _) in r["lasso"]] for r in per_seed])
    rows.append({"method": f"sklearn Lasso(positive=True, alpha={lasso_alpha:g}) CD", "iterations": lasso_iters[-1],
                 "final gap": _pm(lasso[:, -1]), f"{clock} seconds": _pm(lsec[:, -1]),
                 f"{clock} seconds to gap<={accuracy:g}": time_to_accuracy(lasso, lsec, accuracy), "active atoms": "-"})
    cols = ["method", "iterations"] + [f"gap@{T}" for T in Ts[:-1]] + [
        "final gap", f"{clock} seconds", f"{clock} seconds to gap<={accuracy:g}", "active atoms"]
    title = (f"Non-negative regression on {name}: {n_atoms} training digits as atoms, {n_targets} held-out "
             f"targets per seed, seeds {list(seeds)}; relative gap after T iterations, mean ± std")
    md = write_table(rows, workdir, "regression", columns=cols, title=title)
    np.savez(os.path.join(workdir, "regression_curves.npz"), Ts=np.array(Ts), lasso_gap=lasso, lasso_sec=lsec,
             lasso_iters=np.array(lasso_iters), nnls_sec=np.array([r["nnls_seconds"] for r in per_seed]),
             **{f"gap_{v}": np.array(curves[v]) for v in variants},
             **{f"sec_{v}": np.array(times[v]) for v in variants})
    _plot_regression(curves, times, Ts, lasso, lsec, [r["nnls_seconds"] for r in per_seed],
                     figure or os.path.join(workdir, "nnmp_regression.png"),
                     f"{name}: {n_atoms} digit atoms, {n_targets} targets x {len(seeds)} seeds", clock)
    return md


def time_to_accuracy(G: np.ndarray, S: np.ndarray, accuracy: float) -> str:
    """Wall time of the first checkpoint whose relative gap is <= ``accuracy``, mean ± std over
    the seeds that reach it, as table text (``G``, ``S``: ``(seeds, checkpoints)`` float arrays of
    gaps and seconds; ``"not reached"`` if no seed gets there, ``"(k/n seeds)"`` if only some do)."""
    hit = [s[np.flatnonzero(g <= accuracy)[0]] for g, s in zip(G, S) if np.any(g <= accuracy)]
    if not hit:
        return "not reached"
    return _pm(hit) + ("" if len(hit) == len(G) else f" ({len(hit)}/{len(G)} seeds)")


def _pm(x) -> str:
    x = np.asarray(x, np.float64)
    fmt = (lambda v: f"{v:.2e}") if np.max(np.abs(x)) < 1e-2 or np.max(np.abs(x)) >= 1e4 else (lambda v: f"{v:.3g}")
    return f"{fmt(x.mean())} ± {fmt(x.std())}"


def _band(ax, x, Y, label, **kw):
    Y = np.maximum(np.asarray(Y, np.float64), 1e-16)
    lo, mid, hi = np.exp(np.log(Y).mean(0) - np.log(Y).std(0)), np.exp(np.log(Y).mean(0)), np.exp(
        np.log(Y).mean(0) + np.log(Y).std(0))
    (line,) = ax.plot(x, mid, label=label, **kw)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)


def _plot_regression(curves, times, Ts, lasso, lsec, nnls_sec, path, title, clock="wall"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for v, G in curves.items():
        G = np.array(G)
        _band(a1, np.arange(G.shape[1]), G, LABELS[v])
        sec = np.array(times[v]).mean(0)
        _band(a2, sec, np.array(G)[:, Ts], LABELS[v], marker="o", ms=3)
    _band(a2, lsec.mean(0), lasso, "sklearn Lasso(+) CD", marker="s", ms=3, ls="--", color="k")
    a2.axvline(np.mean(nnls_sec), color="gray", ls=":", label="scipy nnls (exact)")
    _finish_curves(fig, a1, a2, "relative gap (f - f*)/f*", "iteration t",
                   f"{'CPU' if clock == 'cpu' else 'wall'} time (s, JIT excluded)", title, path)


def _finish_curves(fig, a1, a2, ylabel: str, xlabel1: str, xlabel2: str, title: str, path: str) -> None:
    """Log axes, labels, legends and title of an (iterations, time) pair of panels; saves and closes."""
    import matplotlib.pyplot as plt

    for a in (a1, a2):
        a.set_yscale("log")
        a.set_ylabel(ylabel)
        a.grid(alpha=0.3, which="both")
    a1.set_xlabel(xlabel1)
    a2.set_xlabel(xlabel2)
    a2.set_xscale("log")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.suptitle(title + " (geometric mean ± std)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- NMF


def _sklearn_nmf(Y: np.ndarray, rank: int, seed: int, clock: Callable[[], float]):
    """The external baseline of both NMF experiments: scikit-learn's ``NMF(solver="cd",
    init="nndsvda", max_iter=200)`` of ``Y`` ``(p, n)`` at ``rank``. Returns ``(model, W (p, rank),
    seconds by clock)`` (``time.perf_counter`` or ``time.process_time``)."""
    from sklearn.decomposition import NMF

    t0 = clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = NMF(n_components=rank, init="nndsvda", solver="cd", max_iter=200, random_state=seed)
        W = model.fit_transform(Y)
    return model, W, clock() - t0


def nmf_error(Y: np.ndarray, W: np.ndarray, H: np.ndarray) -> float:
    """Relative reconstruction error ``||Y - W H||_F / ||Y||_F``."""
    return float(np.linalg.norm(Y - W @ H) / np.linalg.norm(Y))


def code_columns(W: np.ndarray, Y: np.ndarray, method: str, code_iter: int, x64: bool = False) -> np.ndarray:
    """Non-negative codes ``H (r, n)`` of the columns of ``Y (m, n)`` over the columns of
    ``W (m, r)``: ``method`` a greedy variant (``code_iter`` steps from 0, :func:`nnmp_batch`)
    or ``"anls"`` (exact, ``scipy.optimize.nnls`` per column)."""
    if method == "anls":
        return np.stack([so.nnls(W, y, maxiter=50 * W.shape[1])[0] for y in Y.T], axis=1)
    if method not in VARIANTS:
        raise ValueError(f"unknown coding method {method!r}; expected anls or one of {', '.join(VARIANTS)}")
    res = nnmp_batch(W, Y.T, variant=method, max_iter=code_iter, x64=x64)
    return np.maximum(np.asarray(res.weights, np.float64), 0.0).T


def hals_update(Y: np.ndarray, W: np.ndarray, H: np.ndarray, sweeps: int) -> np.ndarray:
    """``sweeps`` HALS sweeps on ``W`` (``H`` fixed): each column is the exact non-negative
    minimiser of ``||Y - W H||_F`` with the other columns fixed, so the error never increases."""
    W = W.copy()
    YH, HH = Y @ H.T, H @ H.T
    for _ in range(sweeps):
        for k in range(W.shape[1]):
            if HH[k, k] > 0:
                W[:, k] = np.maximum(W[:, k] + (YH[:, k] - W @ HH[:, k]) / HH[k, k], 0.0)
    return W


def keep_better(Y: np.ndarray, W: np.ndarray, H_old: np.ndarray, H_new: np.ndarray) -> np.ndarray:
    """Per column of ``Y (m, n)``, the code (column of ``H_old`` or ``H_new``, ``(r, n)``) with
    the smaller ``||y - W h||^2`` (ties: the new one), so that a coding step never increases
    the NMF objective."""
    better = np.sum((Y - W @ H_new) ** 2, axis=0) <= np.sum((Y - W @ H_old) ** 2, axis=0)
    return np.where(better[None, :], H_new, H_old)


def _normalise(Y, W, H):
    """Unit-norm columns of ``W`` (``H`` rescaled: ``W H`` unchanged); a zero column is replaced
    by the worst-fitted data column (unit norm) with a zero row of ``H``."""
    W, H = W.copy(), H.copy()
    norms = np.linalg.norm(W, axis=0)
    for k in np.flatnonzero(norms == 0):
        j = int(np.argmax(np.linalg.norm(Y - W @ H, axis=0)))
        W[:, k] = Y[:, j] / max(np.linalg.norm(Y[:, j]), 1e-12)
        H[k] = 0.0
        norms[k] = 1.0
    return W / norms, H * norms[:, None]


def nmf(Y: np.ndarray, rank: int, method: str, *, outer_iter: int = 15, code_iter: int = 25, hals_sweeps: int = 3,
        seed: int = 0, x64: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Alternating NMF of ``Y (m, n) >= 0`` (see the module doc).

    Returns:
      ``(W (m, r), H (r, n), errors (outer_iter + 1,), seconds (outer_iter + 1,), coding
      seconds)``: the relative error after each coding step (entry 0: the coding over the
      initial dictionary, ``r`` random data columns; then one per outer iteration = dictionary
      step + coding step; never increasing), the cumulative wall time at each entry and the
      total time spent in coding steps.

    Raises:
      ValueError: negative or non-finite ``Y``, bad rank, unknown method.
    """
    Y = np.asarray(Y, np.float64)
    if Y.ndim != 2 or not np.all(np.isfinite(Y)) or np.any(Y < 0):
        raise ValueError("Y must be a finite, non-negative 2-D array (m, n)")
    if not 1 <= rank <= min(Y.shape):
        raise ValueError(f"rank must be in [1, {min(Y.shape)}], got {rank}")
    rng = np.random.default_rng(seed)
    cols = rng.choice(np.flatnonzero(np.linalg.norm(Y, axis=0) > 0), rank, replace=False)
    W = Y[:, cols] / np.linalg.norm(Y[:, cols], axis=0)
    H = np.zeros((rank, Y.shape[1]))
    errs, secs, code_secs = [], [], 0.0
    t0 = time.perf_counter()
    for it in range(outer_iter + 1):
        if it > 0:  # dictionary step (the first coding uses the initial dictionary)
            W, H = _normalise(Y, hals_update(Y, W, H, hals_sweeps), H)
        tc = time.perf_counter()
        H_new = code_columns(W, Y, method, code_iter, x64=x64)
        code_secs += time.perf_counter() - tc
        H = keep_better(Y, W, H, H_new)
        errs.append(nmf_error(Y, W, H))
        secs.append(time.perf_counter() - t0)
    return W, H, np.array(errs), np.array(secs), code_secs


def run_nmf(workdir: str, *, data: str = "auto", mnist_path: str = DEFAULT_MNIST, n_images: int = 1000,
            rank: int = 25, outer_iter: int = 15, code_iter: int = 25, hals_sweeps: int = 3,
            seeds: Sequence[int] = (0, 1, 2), methods: Sequence[str] = ("anls",) + VARIANTS,
            sklearn_baseline: bool = True, figure: str | None = None) -> str:
    """NMF of ``n_images`` random training digits (columns) for each method and seed; writes
    ``nmf.md/.csv`` (final relative error, code non-zeros per column, seconds: mean ± std),
    ``nmf_curves.npz`` and the figure. Returns the Markdown table. ``outer_iter`` >= 1, distinct
    known ``methods`` and seeds are checked first (:func:`check_plan`)."""
    # outer_iter 0 failed after all the work (the table reports the error after iteration 1)
    check_plan(max_iter=outer_iter, variants=methods, seeds=seeds, iter_name="outer_iter", variant_name="methods",
               allowed=("anls",) + VARIANTS, kind="coding method")
    os.makedirs(workdir, exist_ok=True)
    train, _, name = load_images(data, mnist_path)
    errs: dict[str, list] = {m: [] for m in methods}
    secs: dict[str, list] = {m: [] for m in methods}
    stats: dict[str, list] = {m: [] for m in methods}
    skl = []
    for seed in seeds:
        Y = _subset(train[np.linalg.norm(train, axis=1) > 0], n_images, np.random.default_rng(seed), "images").T
        if any(m != "anls" for m in methods):  # compile the coding programs outside the timed runs
            for mth in methods:
                if mth != "anls":
                    code_columns(Y[:, :rank] / np.linalg.norm(Y[:, :rank], axis=0), Y, mth, code_iter)
        for mth in methods:
            W, H, e, s, cs = nmf(Y, rank, mth, outer_iter=outer_iter, code_iter=code_iter, hals_sweeps=hals_sweeps,
                                 seed=seed)
            if np.any(W < 0) or np.any(H < 0):
                raise AssertionError(f"{mth}: negative factor")
            errs[mth].append(e)
            secs[mth].append(s)
            stats[mth].append((float(np.mean(np.sum(H > 0, axis=0))), cs))
        if sklearn_baseline:
            model, Wk, sec = _sklearn_nmf(Y, rank, seed, time.perf_counter)
            skl.append((nmf_error(Y, Wk, model.components_), sec, int(model.n_iter_),
                        float(np.mean(np.sum(model.components_ > 0, axis=0)))))
        print(f"seed {seed}: " + ", ".join(f"{m} {errs[m][-1][-1]:.4f}" for m in methods)
              + (f", sklearn NMF {skl[-1][0]:.4f}" if skl else ""), flush=True)
    rows = []
    for mth in methods:
        E = np.array(errs[mth])
        label = "scipy nnls (ANLS, exact)" if mth == "anls" else f"{LABELS[mth]}, {code_iter} steps"
        rows.append({"coding step": label,
                     "rel. error after 1 iter": _pm(E[:, 1]), f"rel. error after {outer_iter}": _pm(E[:, -1]),
                     "non-zeros per code": _pm([s[0] for s in stats[mth]]),
                     "coding seconds": _pm([s[1] for s in stats[mth]]),
                     "total seconds": _pm(np.array(secs[mth])[:, -1])})
    if skl:
        S = np.array(skl)
        rows.append({"coding step": "sklearn NMF (cd, nndsvda, max_iter 200)", "rel. error after 1 iter": "-",
                     f"rel. error after {outer_iter}": _pm(S[:, 0]) + f" ({S[:, 2].mean():.0f} iters)",
                     "non-zeros per code": _pm(S[:, 3]), "coding seconds": "-", "total seconds": _pm(S[:, 1])})
    title = (f"NMF of {n_images} {name} digits, rank {rank}, {outer_iter} outer iterations "
             f"(HALS x{hals_sweeps} dictionary step), seeds {list(seeds)}; mean ± std")
    md = write_table(rows, workdir, "nmf", title=title)
    np.savez(os.path.join(workdir, "nmf_curves.npz"), **{f"err_{m}": np.array(errs[m]) for m in methods},
             **{f"sec_{m}": np.array(secs[m]) for m in methods}, sklearn=np.array(skl))
    _plot_nmf(errs, secs, skl, figure or os.path.join(workdir, "nnmp_nmf.png"),
              f"NMF of {n_images} {name} digits, rank {rank}, {len(seeds)} seeds", code_iter)
    return md


def _plot_nmf(errs, secs, skl, path, title, code_iter):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for mth, E in errs.items():
        E = np.array(E)
        label = "ANLS (scipy nnls)" if mth == "anls" else f"{LABELS[mth]} ({code_iter} steps)"
        m, s = E.mean(0), E.std(0)
        for ax, x in ((a1, np.arange(E.shape[1])), (a2, np.array(secs[mth]).mean(0))):
            (line,) = ax.plot(x, m, label=label, marker="o", ms=2)
            ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.2, lw=0)
    if skl:
        S = np.array(skl)
        for ax in (a1, a2):
            ax.axhline(S[:, 0].mean(), color="k", ls=":", label="sklearn NMF (cd)")
        a2.plot([S[:, 1].mean()], [S[:, 0].mean()], "k*")
    a1.set_xlabel("outer iteration")
    a2.set_xlabel("wall time (s)")
    for a in (a1, a2):
        a.set_ylabel("||Y - WH||_F / ||Y||_F")
        a.grid(alpha=0.3)
    a1.legend(fontsize=7)
    fig.suptitle(title + " (mean ± std)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- rank-one cone


def rank1_lmo(shape: tuple[int, int], *, power_iter: int = 50, n_starts: int = 4,
              seed: int = 0) -> Callable[[Any], Any]:
    """Approximate LMO over non-negative rank-one matrices of unit Frobenius norm.

    The atom set is ``{vec(u v^T) : u (p,) >= 0, v (n,) >= 0, ||u|| = ||v|| = 1}``. For a
    gradient ``g`` (``(p * n,)``, row-major ``vec`` of a ``(p, n)`` matrix) the LMO returns
    ``argmin <g, a> = argmax_{u, v} u^T M v`` with ``M = -reshape(g, (p, n))``: a non-convex
    problem (non-negative rank-one approximation), solved here by alternating projected power
    iterations. Each half-step maximises exactly over one factor with the other fixed
    (``u = max(M v, 0) / ||max(M v, 0)||``, or the coordinate vector of the largest entry of
    ``M v`` when it has no positive one), so ``u^T M v`` never decreases. Starts: ``n_starts``
    fixed positive random vectors ``v`` (from ``seed``) and the coordinate vector of the column
    holding the largest entry of ``M``; the best end point is returned. Guarantees: the value is
    at least ``max_ij M_ij`` (exact when ``M <= 0``, the answer then being that coordinate
    matrix); for ``M >= 0`` the projections are inactive and this is the power method, whose
    limit is the top singular pair (Perron–Frobenius), i.e. the exact LMO when the top singular
    value is simple.

    Args:
      shape: ``(p, n)``.
      power_iter: alternating steps per start.
      n_starts: random positive starts (besides the largest-entry start).
      seed: seed of the random starts.

    Returns:
      A jax-traceable ``g (p * n,) -> atom (p * n,)`` (dtype of ``g``), non-negative, unit norm.

    Raises:
      ValueError: non-positive sizes or iteration counts.
    """
    import jax
    import jax.numpy as jnp

    for name, value in (("power_iter", power_iter), ("n_starts", n_starts)):
        if not is_whole(value):
            raise ValueError(f"rank1_lmo: {name} must be an integer, got {value!r}")
    p, n = (int(s) for s in shape)
    if p < 1 or n < 1 or power_iter < 1 or n_starts < 0:
        raise ValueError(f"rank1_lmo needs p, n, power_iter >= 1 and n_starts >= 0; got {shape}, {power_iter}, "
                         f"{n_starts}")
    starts = np.random.default_rng(seed).random((n_starts, n)) + 0.1

    def best_unit(y):  # argmax_{u >= 0, ||u|| = 1} <u, y>
        pos = jnp.maximum(y, 0.0)
        nrm = jnp.linalg.norm(pos)
        e = jax.nn.one_hot(jnp.argmax(y), y.shape[0], dtype=y.dtype)
        return jnp.where(nrm > 0, pos / jnp.where(nrm > 0, nrm, 1.0), e)

    def lmo(g):
        M = -jnp.reshape(g, (p, n))
        j = jnp.argmax(jnp.max(M, axis=0))
        V0 = jnp.concatenate([jnp.asarray(starts, M.dtype), jax.nn.one_hot(j, n, dtype=M.dtype)[None]], axis=0)

        def climb(v0):
            v = v0 / jnp.linalg.norm(v0)
            u = best_unit(M @ v)

            def body(_, uv):
                u, _ = uv
                v = best_unit(M.T @ u)
                return best_unit(M @ v), v

            u, v = jax.lax.fori_loop(0, power_iter, body, (u, v))
            return u, v, u @ (M @ v)

        U, V, S = jax.vmap(climb)(V0)
        k = jnp.argmax(S)
        return jnp.reshape(jnp.outer(U[k], V[k]), (-1,))

    return lmo


@functools.lru_cache(maxsize=64)
def _rank1_runner(variant: str, max_iter: int, shape: tuple[int, int], power_iter: int, n_starts: int, lmo_seed: int):
    """One jitted ``(A0 (p*n, max_iter) zeros, vec(Y) (p*n,)) -> NNMPResult`` per variant /
    ``max_iter`` / shape / LMO settings: the runner of :func:`~jaxcomp.greedy.nnmp.nnmp` for
    ``0.5||x - vec(Y)||^2`` with ``vec(Y)`` traced (so seeds with other data reuse the
    compiled program) and :func:`rank1_lmo` returning atom vectors into the buffer ``A0``."""
    from jaxcomp.greedy.nnmp import distance_runner

    lmo = rank1_lmo(shape, power_iter=power_iter, n_starts=n_starts, seed=lmo_seed)
    return distance_runner(variant, int(max_iter), lmo)


def _rank1_call(Y, variant, max_iter, power_iter, n_starts, lmo_seed, x64):
    """``() -> NNMPResult`` (jax arrays, blocked until ready) for :func:`rank1_nnmp` / timing;
    must be called inside ``jax.enable_x64(x64)``."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.float64 if x64 else jnp.float32
    run = _rank1_runner(variant, int(max_iter), tuple(Y.shape), int(power_iter), int(n_starts), int(lmo_seed))
    A0, b = jnp.zeros((Y.size, int(max_iter)), dtype), jnp.asarray(Y.reshape(-1), dtype)
    return lambda: jax.block_until_ready(run(A0, b))


def rank1_nnmp(Y: np.ndarray, variant: str, max_iter: int, *, power_iter: int = 50, n_starts: int = 4, seed: int = 0,
               x64: bool = True) -> tuple[NNMPResult, np.ndarray]:
    """One greedy variant on ``min 0.5||X - Y||_F^2`` over the cone of non-negative rank-one
    matrices, from ``X = 0``: the algorithm of :func:`~jaxcomp.greedy.nnmp.nnmp` with
    ``lmo=rank1_lmo(Y.shape, ...)``, ``lmo_returns_atom=True`` (atoms collected in a
    ``max_iter``-slot buffer), run through a compiled program cached per variant / ``max_iter``
    / shape / LMO settings (``vec(Y)`` is an argument, so new data does not recompile).

    Args:
      Y: ``(p, n)`` finite, non-negative, not all zero (e.g. ``n`` images as columns).
      variant: one of ``VARIANTS``.
      max_iter: greedy iterations (each adds at most one rank-one atom).
      power_iter, n_starts, seed: settings of :func:`rank1_lmo` (``seed``: its random starts).
      x64: float64 (default) or float32.

    Returns:
      ``(result, rel_err)``: the :class:`~jaxcomp.greedy.nnmp.NNMPResult` as numpy arrays
      (``x`` = row-major ``vec(X)``, atoms ``(p * n, max_iter)``, weights ``(max_iter,)``) and
      ``||X_t - Y||_F / ||Y||_F`` for ``t = 0..max_iter`` (``(max_iter + 1,)`` float64).

    Raises:
      ValueError: ``Y`` not a finite non-negative non-zero 2-D array, unknown variant, bad
        ``max_iter``.
    """
    import jax

    Y = _check_nonneg(Y)
    if variant not in VARIANTS:
        raise ValueError(f"unknown NNMP variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if not is_whole(max_iter) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    with jax.enable_x64(x64):
        res = jax.tree_util.tree_map(np.asarray, _rank1_call(Y, variant, max_iter, power_iter, n_starts, seed, x64)())
    err = np.sqrt(np.maximum(2.0 * np.asarray(res.history, np.float64), 0.0)) / np.linalg.norm(Y)
    return res, err


def _check_nonneg(Y) -> np.ndarray:
    Y = np.asarray(Y, np.float64)
    if Y.ndim != 2 or not np.all(np.isfinite(Y)) or np.any(Y < 0) or not np.any(Y > 0):
        raise ValueError("Y must be a finite, non-negative, non-zero 2-D array (p, n)")
    return Y


def _rank1_seconds(Y, variant, T, power_iter, n_starts, seed, x64, clock="cpu"):
    """CPU (or wall) seconds of ``T`` greedy iterations (the cached compiled program of
    :func:`rank1_nnmp`; a warm-up call first, so compilation is excluded; best of 2)."""
    import jax

    with jax.enable_x64(x64):
        _, secs = _timed(_rank1_call(Y, variant, T, power_iter, n_starts, seed, x64), clock=clock)
    return secs


def svd_floor(Y: np.ndarray, max_rank: int) -> np.ndarray:
    """``min_{rank(X) <= r} ||X - Y||_F / ||Y||_F`` for ``r = 0..max_rank`` (truncated SVD,
    no sign constraint): a lower bound for any non-negative factorisation with ``r`` rank-one
    terms, hence for a greedy iterate with ``r`` active atoms. ``(max_rank + 1,)``."""
    s = np.linalg.svd(np.asarray(Y, np.float64), compute_uv=False)
    tail = np.concatenate([np.cumsum((s**2)[::-1])[::-1], [0.0]])
    r = np.minimum(np.arange(max_rank + 1), len(s))
    return np.sqrt(np.maximum(tail[r], 0.0)) / np.linalg.norm(Y)


def run_rank1(workdir: str, *, data: str = "auto", mnist_path: str = DEFAULT_MNIST, n_images: int = 200,
              max_iter: int = 40, checkpoints: Sequence[int] = (5, 10, 20), seeds: Sequence[int] = (0, 1, 2),
              variants: Sequence[str] = VARIANTS, power_iter: int = 50,
              n_starts: int = 4, accuracy: float = 0.5, x64: bool = True, sklearn_baseline: bool = True,
              figure: str | None = None) -> str:
    """Greedy NMF as optimisation over the cone of non-negative rank-one matrices.

    ``min 0.5||X - Y||_F^2`` over ``X in cone{u v^T : u, v >= 0}`` for ``Y`` = ``n_images``
    random training digits as columns (``(pixels, n_images)``, different per seed), every
    variant from ``X = 0`` with the approximate LMO :func:`rank1_lmo`; after ``t`` iterations
    ``X`` is a sum of at most ``t`` non-negative rank-one terms, i.e. a rank-``t`` NMF. Reports
    the relative error ``||X - Y||_F / ||Y||_F`` per iteration and the CPU time (all threads,
    ``time.process_time``; JIT compilation excluded: one compiled program per ``T`` in
    ``checkpoints`` + ``max_iter``, warm-up call first, best of 2) against two baselines at the
    same rank ``r = T``: the truncated SVD (unconstrained, a floor for every method) and
    scikit-learn's ``NMF(solver="cd", init="nndsvda", max_iter=200)`` (its own CPU time). The
    LMO's random starts are the same for every seed (``seed=0`` of :func:`rank1_lmo`), so the
    compiled programs are shared across seeds; the seeds draw different images.
    Writes ``rank1.md/.csv`` (mean ± std over seeds), ``rank1_curves.npz`` and the figure
    (``workdir/nnmp_rank1.png`` unless ``figure``). Returns the Markdown.
    """
    if not list(seeds) or not list(variants):
        raise ValueError("run_rank1 needs at least one seed and one variant")
    Ts = check_plan(max_iter=max_iter, checkpoints=checkpoints, variants=variants, seeds=seeds)
    if n_images < 1 or not 0 < accuracy < 1:
        raise ValueError(f"run_rank1 needs n_images >= 1 and 0 < accuracy < 1; got {n_images}, {accuracy}")
    os.makedirs(workdir, exist_ok=True)
    train, _, name = load_images(data, mnist_path)
    errs: dict[str, list] = {v: [] for v in variants}
    nact: dict[str, list] = {v: [] for v in variants}
    times: dict[str, list] = {v: [] for v in variants}
    floors, skl_err, skl_sec = [], [], []
    for seed in seeds:
        Y = _subset(train[np.linalg.norm(train, axis=1) > 0], n_images, np.random.default_rng(seed), "images").T
        floors.append(svd_floor(Y, max_iter))
        for v in variants:
            res, e = rank1_nnmp(Y, v, max_iter, power_iter=power_iter, n_starts=n_starts, x64=x64)
            if np.any(np.asarray(res.weights) < 0) or np.any(np.asarray(res.atoms) < 0):
                raise AssertionError(f"{v}: negative weights or atoms")
            errs[v].append(e)
            nact[v].append(np.asarray(res.n_active))
            times[v].append([_rank1_seconds(Y, v, T, power_iter, n_starts, 0, x64) for T in Ts])
        if sklearn_baseline:
            es, ss = [], []
            for r in Ts:
                model, W, sec = _sklearn_nmf(Y, min(r, min(Y.shape)), seed, time.process_time)
                ss.append(sec)
                es.append(nmf_error(Y, W, model.components_))
            skl_err.append(es)
            skl_sec.append(ss)
        print(f"seed {seed}: " + ", ".join(f"{LABELS[v]} {errs[v][-1][-1]:.4f}" for v in variants)
              + f"; SVD floor {floors[-1][max_iter]:.4f}" + (f", sklearn NMF {skl_err[-1][-1]:.4f}" if skl_err else ""),
              flush=True)
    acc_col = f"CPU s to rel. error <= {accuracy:g}"
    rows = []
    for v in variants:
        E, S = np.array(errs[v]), np.array(times[v])
        row = {"method": LABELS[v]}
        for T in Ts:
            row[f"T = {T}"] = _pm(E[:, T])
        row["atoms at T max"] = _pm(np.array(nact[v])[:, -1])
        row["CPU s (T max)"] = _pm(S[:, -1])
        row[acc_col] = time_to_accuracy(E[:, Ts], S, accuracy)
        rows.append(row)
    F = np.array(floors)
    rows.append({"method": "truncated SVD, rank T (floor, no sign constraint)",
                 **{f"T = {T}": _pm(F[:, T]) for T in Ts}, "atoms at T max": str(Ts[-1])})
    if skl_err:
        SE, SS = np.array(skl_err), np.array(skl_sec)
        rows.append({"method": "sklearn NMF (cd, nndsvda, max_iter 200), rank T",
                     **{f"T = {T}": _pm(SE[:, i]) for i, T in enumerate(Ts)}, "atoms at T max": str(Ts[-1]),
                     "CPU s (T max)": _pm(SS[:, -1]), acc_col: time_to_accuracy(SE, SS, accuracy)})
    cols = ["method"] + [f"T = {T}" for T in Ts] + ["atoms at T max", "CPU s (T max)", acc_col]
    title = (f"Cone of non-negative rank-one matrices: {n_images} {name} digits as columns, relative error "
             f"||X - Y||_F / ||Y||_F after T iterations (greedy) or at rank T (baselines), seeds {list(seeds)}; "
             "mean ± std")
    md = write_table(rows, workdir, "rank1", columns=cols, title=title)
    np.savez(os.path.join(workdir, "rank1_curves.npz"), Ts=np.array(Ts), svd_floor=F,
             sklearn_err=np.array(skl_err), sklearn_sec=np.array(skl_sec),
             **{f"err_{v}": np.array(errs[v]) for v in variants},
             **{f"active_{v}": np.array(nact[v]) for v in variants},
             **{f"sec_{v}": np.array(times[v]) for v in variants})
    _plot_rank1(errs, times, Ts, F, skl_err, skl_sec, figure or os.path.join(workdir, "nnmp_rank1.png"),
                f"NMF as a cone problem: {n_images} {name} digits, {len(seeds)} seeds")
    return md


def _plot_rank1(errs, times, Ts, F, skl_err, skl_sec, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for v, E in errs.items():
        E = np.array(E)
        _band(a1, np.arange(E.shape[1]), E, LABELS[v])
        _band(a2, np.array(times[v]).mean(0), E[:, Ts], LABELS[v], marker="o", ms=3)
    _band(a1, np.arange(F.shape[1]), F, "truncated SVD (rank = t)", color="k", ls=":")
    if len(skl_err):
        _band(a1, np.array(Ts), np.array(skl_err), "sklearn NMF (rank = t)", color="k", marker="s", ms=3, ls="--")
        _band(a2, np.array(skl_sec).mean(0), np.array(skl_err), "sklearn NMF (rank T)", color="k", marker="s",
              ms=3, ls="--")
    _finish_curves(fig, a1, a2, "||X - Y||_F / ||Y||_F", "iteration t (= max. rank)", "CPU time (s, JIT excluded)",
                   title, path)

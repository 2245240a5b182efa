"""Experiment drivers for SSC-OMP / SSC-MP (host code: data, timing, tables, plots).

Each ``run_*`` takes a config (see ``configs/ssc.py``) and a ``workdir``; it writes a
Markdown table, a CSV and PNG plots there and returns the table rows.
"""

from __future__ import annotations

import os
import time

import numpy as np

from jaxcomp.cluster.baselines import sklearn_ssc_omp_coefficients
from jaxcomp.cluster.data import load_mnist, mnist_features, union_of_subspaces
from jaxcomp.cluster.estimators import SSCMP, SSCOMP
from jaxcomp.cluster.metrics import all_metrics
from jaxcomp.cluster.spectral import spectral_clustering
from jaxcomp.cluster.ssc import affinity_from_coefficients, check_data, tau_from_noise
from jaxcomp.reporting import write_table

NAMES = {"omp": "SSC-OMP", "mp": "SSC-MP"}


def _tqdm(it, **kw):
    from tqdm.auto import tqdm

    return tqdm(it, **kw)


def tau_for(cfg, sigma: float) -> float:
    """The residual threshold of a config: ``fixed`` -> ``ssc.tau``; ``noise`` ->
    ``max(ssc.tau, tau_from_noise(sigma, m, ssc.tau_subspace_dim))``."""
    if cfg.ssc.tau_mode == "fixed":
        return float(cfg.ssc.tau)
    if cfg.ssc.tau_mode == "noise":
        return max(float(cfg.ssc.tau), tau_from_noise(sigma, cfg.data.ambient_dim, cfg.ssc.tau_subspace_dim))
    raise ValueError(f"unknown ssc.tau_mode {cfg.ssc.tau_mode!r}; expected fixed or noise")


def make_estimator(algorithm: str, cfg, n_clusters, s_max: int, tau: float, verbose: bool = False):
    """``SSCOMP`` or ``SSCMP`` with the config's settings."""
    common = dict(n_clusters=n_clusters, s_max=int(s_max), tau=tau, corr_tol=cfg.ssc.corr_tol,
                  chunk_size=cfg.ssc.chunk_size, random_state=cfg.seed, verbose=verbose)
    if algorithm == "omp":
        return SSCOMP(**common)
    if algorithm == "mp":
        return SSCMP(p_max=cfg.ssc.p_max or None, **common)
    raise ValueError(f"unknown algorithm {algorithm!r}; expected omp or mp")


def _synthetic(cfg, t, rho, sigma, seed):
    d = cfg.data
    return union_of_subspaces(d.ambient_dim, d.subspace_dim, d.n_subspaces, int(t), float(rho), float(sigma), seed)


def run_phase(cfg, workdir: str) -> list[dict]:
    """Clustering error over a grid (``grid.axes`` = ``"t_rho"`` or ``"sigma_rho"``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = cfg.grid.axes
    if axes == "t_rho":
        ylab, yvals = "t", list(cfg.grid.t)
    elif axes == "sigma_rho":
        ylab, yvals = "sigma", list(cfg.grid.sigma)
    else:
        raise ValueError(f"unknown grid.axes {axes!r}; expected t_rho or sigma_rho")
    rhos = list(cfg.grid.rho)
    algos = list(cfg.ssc.algorithms)
    rows = []
    err = {a: np.zeros((len(yvals), len(rhos))) for a in algos}
    cells = [(i, j) for i in range(len(yvals)) for j in range(len(rhos))]
    for i, j in _tqdm(cells, desc=f"phase diagram ({axes})"):
        yv, rho = yvals[i], rhos[j]
        t = yv if axes == "t_rho" else cfg.data.intersection_dim
        sigma = yv if axes == "sigma_rho" else cfg.data.sigma
        tau = tau_for(cfg, sigma)
        for a in algos:
            errs, times, iters = [], [], []
            for trial in range(cfg.grid.trials):
                X, y = _synthetic(cfg, t, rho, sigma, cfg.seed + 1000 * trial + 17 * i + j)
                est = make_estimator(a, cfg, cfg.data.n_subspaces, cfg.ssc.s_max, tau)
                t0 = time.perf_counter()
                lab = est.fit_predict(X)
                times.append(time.perf_counter() - t0)
                errs.append(all_metrics(y, lab)["error"])
                iters.append(float(np.mean(est.n_iter_)))
            err[a][i, j] = np.mean(errs)
            rows.append({"algorithm": NAMES[a], ylab: yv, "rho": rho, "N": len(y), "tau": tau,
                         "clustering_error": float(np.mean(errs)), "mean_iters": float(np.mean(iters)),
                         "seconds": float(np.mean(times))})
    fig, axs = plt.subplots(1, len(algos), figsize=(4.2 * len(algos), 3.6), squeeze=False)
    for ax, a in zip(axs[0], algos):
        im = ax.imshow(err[a], origin="lower", cmap="gray_r", vmin=0, vmax=max(0.5, err[a].max()), aspect="auto")
        ax.set_xticks(range(len(rhos)), [f"{r:g}" for r in rhos])
        ax.set_yticks(range(len(yvals)), [f"{v:g}" for v in yvals])
        ax.set_xlabel("rho (points per dimension)")
        ax.set_ylabel(ylab)
        ax.set_title(f"{NAMES[a]} clustering error")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"m={cfg.data.ambient_dim}, d={cfg.data.subspace_dim}, L={cfg.data.n_subspaces}, "
                 f"s_max={cfg.ssc.s_max}, tau={cfg.ssc.tau_mode}", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f"phase_{axes}.png"), dpi=90)
    plt.close(fig)
    return rows


def run_smax(cfg, workdir: str) -> list[dict]:
    """Clustering error as a function of ``s_max`` (``tau`` as configured, usually 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = cfg.data
    algos = list(cfg.ssc.algorithms)
    tau = tau_for(cfg, d.sigma)
    data = [_synthetic(cfg, d.intersection_dim, d.rho, d.sigma, cfg.seed + 1000 * k) for k in range(cfg.grid.trials)]
    rows = []
    curves = {a: [] for a in algos}
    for s in _tqdm(list(cfg.grid.s_max), desc="s_max sweep"):
        for a in algos:
            errs, times = [], []
            for X, y in data:
                est = make_estimator(a, cfg, d.n_subspaces, s, tau)
                t0 = time.perf_counter()
                lab = est.fit_predict(X)
                times.append(time.perf_counter() - t0)
                errs.append(all_metrics(y, lab)["error"])
            curves[a].append(np.mean(errs))
            rows.append({"algorithm": NAMES[a], "s_max": int(s), "clustering_error": float(np.mean(errs)),
                         "ce_std": float(np.std(errs)), "seconds": float(np.mean(times))})
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for a, mk in zip(algos, "os"):
        ax.plot(list(cfg.grid.s_max), curves[a], marker=mk, label=NAMES[a])
    ax.axvline(d.subspace_dim, color="gray", ls=":", lw=1, label="d")
    ax.set_xlabel("s_max")
    ax.set_ylabel("clustering error")
    ax.set_title(f"m={d.ambient_dim}, d={d.subspace_dim}, L={d.n_subspaces}, t={d.intersection_dim}, "
                 f"rho={d.rho:g}, sigma={d.sigma:g}", fontsize=8)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, "smax.png"), dpi=90)
    plt.close(fig)
    return rows


def run_mnist(cfg, workdir: str) -> list[dict]:
    """SSC-MP, SSC-OMP, sklearn-OMP SSC-OMP, sklearn SpectralClustering and KMeans on MNIST."""
    from sklearn.cluster import KMeans, SpectralClustering

    d = cfg.data
    images, y = load_mnist(d.path, d.num_points, cfg.seed, d.split)
    t0 = time.perf_counter()
    X = mnist_features(images, d.features, d.feature_dim)
    feat_s = time.perf_counter() - t0
    print(f"MNIST: {X.shape[0]} points, features={d.features} dim={X.shape[1]} ({feat_s:.1f}s)")
    k = int(cfg.data.n_clusters)
    Xn = check_data(X)
    rows = []

    def record(name, labels, seconds, extra=""):
        m = all_metrics(y, labels)
        rows.append({"method": name, "accuracy": m["accuracy"], "nmi": m["nmi"], "ari": m["ari"],
                     "seconds": seconds, "notes": extra})
        print(f"  {name}: acc={m['accuracy']:.4f} nmi={m['nmi']:.4f} ari={m['ari']:.4f} time={seconds:.1f}s")

    tau = float(cfg.ssc.tau)
    for a in cfg.ssc.algorithms:
        est = make_estimator(a, cfg, k, cfg.ssc.s_max, tau, verbose=True)
        est.fit(X)  # includes jit compilation
        t = est.timings_
        record(NAMES[a] + " (jaxcomp)", est.labels_, t["coding_s"] + t["spectral_s"],
               f"coding {t['coding_s']:.1f}s + spectral {t['spectral_s']:.1f}s; s_max={cfg.ssc.s_max}")
    if cfg.baselines.sklearn_omp:
        t0 = time.perf_counter()
        C = sklearn_ssc_omp_coefficients(X, cfg.ssc.s_max, tau, progress=True)
        t1 = time.perf_counter()
        lab, _ = spectral_clustering(affinity_from_coefficients(C), k, seed=cfg.seed)
        t2 = time.perf_counter()
        record("SSC-OMP (sklearn orthogonal_mp)", lab, t2 - t0,
               f"coding {t1 - t0:.1f}s + spectral {t2 - t1:.1f}s")
    if cfg.baselines.spectral:
        t0 = time.perf_counter()
        sc = SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=cfg.baselines.n_neighbors,
                                random_state=cfg.seed, assign_labels="kmeans", n_jobs=1)
        lab = sc.fit_predict(Xn)
        record("sklearn SpectralClustering (kNN graph)", lab, time.perf_counter() - t0,
               f"n_neighbors={cfg.baselines.n_neighbors}")
    if cfg.baselines.kmeans:
        t0 = time.perf_counter()
        lab = KMeans(k, n_init=10, random_state=cfg.seed).fit_predict(Xn)
        record("sklearn KMeans", lab, time.perf_counter() - t0, "n_init=10")
    return rows


def run(cfg, workdir: str) -> str:
    """Runs the experiment named by ``cfg.experiment`` and writes ``workdir/<name>.{md,csv}``."""
    os.makedirs(workdir, exist_ok=True)
    exp = cfg.experiment
    if exp == "phase":
        rows, name = run_phase(cfg, workdir), f"phase_{cfg.grid.axes}"
    elif exp == "smax":
        rows, name = run_smax(cfg, workdir), "smax"
    elif exp == "mnist":
        rows, name = run_mnist(cfg, workdir), "mnist"
    else:
        raise ValueError(f"unknown experiment {exp!r}; expected phase, smax or mnist")
    md = write_table(rows, workdir, name, title=name)
    with open(os.path.join(workdir, "config.txt"), "w") as f:
        f.write(str(cfg))
    return md

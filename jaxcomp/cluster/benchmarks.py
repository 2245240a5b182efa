"""Experiment drivers for SSC-OMP / SSC-MP (host code: data, timing, tables, plots).

Each ``run_*`` takes a config (see ``configs/ssc.py``) and a ``workdir``; it writes a
Markdown table, a CSV and PNG plots there and returns the table rows.
"""

from __future__ import annotations

import os
import time
from typing import Any

import ml_collections
import numpy as np

from jaxcomp.checks import count, distinct, is_whole
from jaxcomp.cluster.baselines import sklearn_ssc_omp_coefficients
from jaxcomp.cluster.data import load_mnist, mnist_features, union_of_subspaces
from jaxcomp.cluster.estimators import SSCMP, SSCOMP
from jaxcomp.cluster.metrics import all_metrics
from jaxcomp.cluster.spectral import spectral_clustering
from jaxcomp.cluster.ssc import affinity_from_coefficients, check_data, sparse_coefficients, tau_from_noise
from jaxcomp.files import atomic_file
from jaxcomp.reporting import write_table

NAMES = {"omp": "SSC-OMP", "mp": "SSC-MP"}


def _tqdm(it, **kw):
    from tqdm.auto import tqdm

    return tqdm(it, **kw)


def tau_for(cfg: ml_collections.ConfigDict, sigma: float) -> float:
    """The residual threshold of a config: ``fixed`` -> ``ssc.tau``; ``noise`` ->
    ``max(ssc.tau, tau_from_noise(sigma, m, ssc.tau_subspace_dim))``."""
    if cfg.ssc.tau_mode == "fixed":
        return float(cfg.ssc.tau)
    if cfg.ssc.tau_mode == "noise":
        return max(float(cfg.ssc.tau), tau_from_noise(sigma, cfg.data.ambient_dim, cfg.ssc.tau_subspace_dim))
    raise ValueError(f"unknown ssc.tau_mode {cfg.ssc.tau_mode!r}; expected fixed or noise")


def make_estimator(algorithm: str, cfg: ml_collections.ConfigDict, n_clusters: int | None, s_max: int, tau: float,
                   verbose: bool = False) -> SSCOMP | SSCMP:
    """``SSCOMP`` or ``SSCMP`` with the config's settings."""
    common = dict(n_clusters=n_clusters, s_max=int(s_max), tau=tau, corr_tol=cfg.ssc.corr_tol,
                  chunk_size=cfg.ssc.chunk_size, random_state=cfg.seed, verbose=verbose,
                  affinity_normalization=cfg.ssc.get("affinity_normalization", "none"),
                  point_norms=cfg.ssc.get("point_norms", "unit"))
    if algorithm == "omp":
        return SSCOMP(**common)
    if algorithm == "mp":
        return SSCMP(p_max=cfg.ssc.p_max or None, **common)
    raise ValueError(f"unknown algorithm {algorithm!r}; expected omp or mp")


def _synthetic(cfg, t, rho, sigma, seed):
    d = cfg.data
    return union_of_subspaces(d.ambient_dim, d.subspace_dim, d.n_subspaces, int(t), float(rho), float(sigma), seed)


def phase_cell(cfg: ml_collections.ConfigDict, value: float) -> tuple[int, float, int, float]:
    """The settings of one row of a phase diagram whose y axis (``grid.axes``) is at ``value``:
    ``(t, sigma, s_max, tau)``, the config's own ``data.intersection_dim``, ``data.sigma`` and
    ``ssc.s_max`` except the one on the axis, and ``tau`` (:func:`tau_for`) at that row's noise level."""
    axes = cfg.grid.axes
    if axes not in ("t_rho", "sigma_rho", "smax_rho"):
        raise ValueError(f"unknown grid.axes {axes!r}; expected t_rho, sigma_rho or smax_rho")
    if axes in ("t_rho", "smax_rho"):  # int() of t = 2.5 ran t = 2 in a row reported as 2.5
        _whole_values(f"grid.{'t' if axes == 't_rho' else 's_max'}", [value], minimum=0 if axes == "t_rho" else 1)
    t = int(value) if axes == "t_rho" else int(cfg.data.intersection_dim)
    sigma = float(value) if axes == "sigma_rho" else float(cfg.data.sigma)
    s_max = int(value) if axes == "smax_rho" else int(cfg.ssc.s_max)
    return t, sigma, s_max, tau_for(cfg, sigma)


def run_phase(cfg: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """Clustering error over a grid: ``grid.axes`` = ``"t_rho"`` (intersection dimension),
    ``"sigma_rho"`` (noise level) or ``"smax_rho"`` (pursuit iterations ``s_max``) against ``rho``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = cfg.grid.axes
    if axes == "t_rho":
        ylab, yvals = "t", list(cfg.grid.t)
    elif axes == "sigma_rho":
        ylab, yvals = "sigma", list(cfg.grid.sigma)
    elif axes == "smax_rho":
        ylab, yvals = "s_max", list(cfg.grid.s_max)
    else:
        raise ValueError(f"unknown grid.axes {axes!r}; expected t_rho, sigma_rho or smax_rho")
    rhos = list(cfg.grid.rho)
    algos = list(cfg.ssc.algorithms)
    rows = []
    err = {a: np.zeros((len(yvals), len(rhos))) for a in algos}
    cells = [(i, j) for i in range(len(yvals)) for j in range(len(rhos))]
    for i, j in _tqdm(cells, desc=f"phase diagram ({axes})"):
        yv, rho = yvals[i], rhos[j]
        t, sigma, s_max, tau = phase_cell(cfg, yv)
        for a in algos:
            errs, times, iters = [], [], []
            for trial in range(cfg.grid.trials):
                seed = cfg.seed + 1000 * trial + (17 * i if axes != "smax_rho" else 0) + j  # same data for every s_max
                X, y = _synthetic(cfg, t, rho, sigma, seed)
                est = make_estimator(a, cfg, cfg.data.n_subspaces, s_max, tau)
                t0 = time.perf_counter()
                lab = est.fit_predict(X)
                times.append(time.perf_counter() - t0)
                errs.append(all_metrics(y, lab)["error"])
                iters.append(float(np.mean(est.n_iter_)))
            err[a][i, j] = np.mean(errs)
            rows.append({"algorithm": NAMES[a], ylab: yv, "rho": rho, "N": len(y), "tau": tau,
                         "clustering_error": float(np.mean(errs)), "ce_std": float(np.std(errs)),
                         "mean_iters": float(np.mean(iters)),
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
                 f"sigma={cfg.data.sigma:g}, s_max={cfg.ssc.s_max if axes != 'smax_rho' else 'y'}, "
                 f"tau={cfg.ssc.tau_mode}" + (f" ({tau_for(cfg, cfg.data.sigma):.3f})" if axes != "sigma_rho" else ""),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(workdir, f"phase_{axes}.png"), dpi=90)
    plt.close(fig)
    return rows


def run_smax(cfg: ml_collections.ConfigDict, workdir: str) -> list[dict]:
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


def _mnist_data(cfg, seed: int, return_indices: bool = False):
    """``(features (n, dim) float32, labels (n,), feature seconds)`` of one seed's MNIST sample,
    and with ``return_indices`` the images' positions in the split ``(n,)``."""
    d = cfg.data
    images, y, idx = load_mnist(d.path, d.num_points, seed, d.split, return_indices=True)
    t0 = time.perf_counter()
    X = mnist_features(images, d.features, d.feature_dim, cache_dir=d.cache_dir or None, progress=True)
    return (X, y, time.perf_counter() - t0) + ((idx,) if return_indices else ())


def reorder(before: np.ndarray, after: np.ndarray) -> np.ndarray | None:
    """``perm`` with ``after == before[perm]`` when the two samples hold the same images (``(n,)``
    positions in the split, each without repeats) in another order, else ``None``. For coefficients
    ``C`` of the points in ``before``'s order, ``C[perm][:, perm]`` are the same points' coefficients
    in ``after``'s order."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape or not np.array_equal(np.sort(before), np.sort(after)):
        return None
    position = np.empty(int(before.max()) + 1, np.int64)
    position[before] = np.arange(len(before))
    return position[after]


def aggregate_seeds(rows: list[dict]) -> list[dict]:
    """Per-method mean ± std (over seeds, sample std) of accuracy, NMI, ARI and seconds of
    :func:`run_mnist`'s per-seed rows (``method``, ``seed``, those four, ``notes``), in the order
    the methods first appear; ``notes`` joins the seeds' distinct notes."""
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == name]
        agg = {"method": name, "seeds": len(rs)}
        for k in ("accuracy", "nmi", "ari", "seconds"):
            v = np.array([r[k] for r in rs], np.float64)
            agg[k] = float(v.mean())
            agg[k + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        agg["notes"] = " | ".join(dict.fromkeys(r["notes"] for r in rs))  # e.g. which seeds reused a coding
        out.append(agg)
    return out


def run_mnist(cfg: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """SSC-MP, SSC-OMP, (optionally) scikit-learn-OMP SSC-OMP, scikit-learn SpectralClustering (kNN
    graph) and KMeans on the same MNIST features, for ``cfg.n_seeds`` seeds (each seed draws its
    own ``num_points`` sample and seeds the clusterings). Writes ``mnist_runs.{md,csv}`` (one row per
    seed and method) and ``mnist_labels.npz`` (each seed's true digits under ``"<seed>:truth"`` and
    each method's cluster labels under ``"<seed>:<method>"``, ``(num_points,)`` int64; both files are
    rewritten after every seed, so a stopped run keeps the seeds it finished) and returns the mean ±
    std rows.

    A seed whose sample holds the same images as an earlier seed's (``split=all`` with all 70,000,
    or ``num_points`` = the split's size) reuses that seed's SSC coefficients, reordered, and runs
    only the spectral step with its own seed: each point's pursuit depends on the set of other
    points, not their order (``test_ssc_coding_does_not_depend_on_the_points_order``), so recoding
    would give the same coefficients up to float rounding and exact ties (duplicate images). Its
    row's seconds are the reused coding's (JIT compilation included) plus its own spectral step's,
    and its notes name the seed it reused; so do the mean ± std row's notes."""
    from sklearn.cluster import KMeans, SpectralClustering

    d = cfg.data
    k = int(d.n_clusters)
    rows = []
    labels_out: dict[str, np.ndarray] = {}
    coded: dict[str, tuple[int, np.ndarray, Any, float]] = {}  # algorithm -> (seed, positions, C, coding s)
    for seed in [int(cfg.seed) + i for i in range(count(cfg.n_seeds, "n_seeds"))]:
        X, y, feat_s, idx = _mnist_data(cfg, seed, return_indices=True)
        print(f"MNIST seed {seed}: {X.shape[0]} points, features={d.features} dim={X.shape[1]} ({feat_s:.1f}s)")
        Xn = check_data(X)
        labels_out[f"{seed}:truth"] = np.asarray(y, np.int64)
        scfg = cfg.copy_and_resolve_references()
        scfg.seed = seed

        def record(name, labels, seconds, extra="", seed=seed, y=y):
            m = all_metrics(y, labels)
            labels_out[f"{seed}:{name}"] = np.asarray(labels, np.int64)
            rows.append({"method": name, "seed": seed, "accuracy": m["accuracy"], "nmi": m["nmi"], "ari": m["ari"],
                         "seconds": seconds, "notes": extra})
            print(f"  {name}: acc={m['accuracy']:.4f} nmi={m['nmi']:.4f} ari={m['ari']:.4f} time={seconds:.1f}s")

        tau = float(cfg.ssc.tau)
        for a in cfg.ssc.algorithms:
            est = make_estimator(a, scfg, k, cfg.ssc.s_max, tau, verbose=True)
            name = NAMES[a] + (" (jaxcomp, raw norms)" if est.point_norms == "raw" else " (jaxcomp)")
            notes = f"s_max={cfg.ssc.s_max}; affinity={est.affinity_normalization}; coding + spectral"
            perm = reorder(coded[a][1], idx) if a in coded else None
            if perm is not None:  # the same images as an earlier seed: only the spectral step is new
                first, _, C, coding_s = coded[a]
                print(f"  {name}: the same {len(idx)} points as seed {first}: its coding, this seed's spectral step")
                t0 = time.perf_counter()
                A = affinity_from_coefficients(C[perm][:, perm], est.affinity_normalization)
                labels, _ = spectral_clustering(A, k, seed=seed)
                record(name, labels, coding_s + time.perf_counter() - t0, f"{notes}; coding of seed {first} reused")
                continue
            est.fit(X)  # includes jit compilation (once per process and shape)
            t = est.timings_
            coded.setdefault(a, (seed, idx, est.coef_, t["coding_s"]))
            record(name, est.labels_, t["coding_s"] + t["spectral_s"], notes)
        if cfg.baselines.sklearn_omp:
            t0 = time.perf_counter()
            C = sklearn_ssc_omp_coefficients(X, cfg.ssc.s_max, tau, progress=True, method=cfg.baselines.sklearn_method)
            t1 = time.perf_counter()
            lab, _ = spectral_clustering(affinity_from_coefficients(C), k, seed=seed)
            record(f"SSC-OMP (sklearn, {cfg.baselines.sklearn_method})", lab, time.perf_counter() - t0,
                   f"coding {t1 - t0:.1f}s + spectral")
        if cfg.baselines.spectral:
            t0 = time.perf_counter()
            sc = SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=cfg.baselines.n_neighbors,
                                    random_state=seed, assign_labels="kmeans", n_jobs=1)
            lab = sc.fit_predict(Xn)
            record("sklearn SpectralClustering (kNN graph)", lab, time.perf_counter() - t0,
                   f"n_neighbors={cfg.baselines.n_neighbors}")
        if cfg.baselines.kmeans:
            t0 = time.perf_counter()
            lab = KMeans(k, n_init=10, random_state=seed).fit_predict(Xn)
            record("sklearn KMeans", lab, time.perf_counter() - t0, "n_init=10")
        write_table(rows, workdir, "mnist_runs", title="mnist: one row per seed")
        with atomic_file(os.path.join(workdir, "mnist_labels.npz")) as f:
            np.savez(f, **labels_out)
    return aggregate_seeds(rows)


def run_speed(cfg: ml_collections.ConfigDict, workdir: str) -> list[dict]:
    """SSC-OMP coding time: jaxcomp (all points, cold = with compilation, then warm) against
    scikit-learn's ``orthogonal_mp`` per point and ``orthogonal_mp_gram`` on a precomputed Gram
    (both timed on ``speed.sample_points`` points and extrapolated linearly to all N), on the same
    features in the same process (``speed.algorithms``: must include ``omp``, the ratios' reference,
    checked by :func:`run`; also SSC-MP if listed). ``speed.num_points``
    > 0 keeps the first that many points of the MNIST sample (0: all). Also reports the fraction of
    sampled points whose scikit-learn support equals ours."""
    X, _, feat_s = _mnist_data(cfg, int(cfg.seed))
    if cfg.speed.num_points:
        X = X[: int(cfg.speed.num_points)]
    n = X.shape[0]
    s_max, tau = int(cfg.ssc.s_max), float(cfg.ssc.tau)
    print(f"speed: {n} points, dim {X.shape[1]} (features {feat_s:.1f}s)")
    rows = []
    C_ours = {}
    for a in cfg.speed.algorithms:
        for run_id in ("cold", "warm"):
            t0 = time.perf_counter()
            C, _ = sparse_coefficients(X, a, s_max=s_max, tau=tau, chunk_size=cfg.ssc.chunk_size)
            dt = time.perf_counter() - t0
            C_ours[a] = C
            rows.append({"method": f"{NAMES[a]} jaxcomp ({run_id})", "N": n, "points_timed": n,
                         "seconds_measured": dt, "seconds_all_points": dt})
            print(f"  {rows[-1]['method']}: {dt:.1f}s")
    pts = np.random.default_rng(cfg.seed).choice(n, size=min(int(cfg.speed.sample_points), n), replace=False)
    for method in ("gram", "loop"):
        t0 = time.perf_counter()
        C = sklearn_ssc_omp_coefficients(X, s_max, tau, method=method, points=pts, progress=True)
        dt = time.perf_counter() - t0
        same = np.mean([set(C[j].indices) == set(C_ours["omp"][j].indices) for j in pts]) if "omp" in C_ours else np.nan
        label = "orthogonal_mp_gram, precomputed Gram" if method == "gram" else "orthogonal_mp per point"
        rows.append({"method": f"SSC-OMP sklearn ({label})", "N": n, "points_timed": len(pts),
                     "seconds_measured": dt, "seconds_all_points": dt * n / len(pts),
                     "same_support_as_jaxcomp": float(same)})
        print(f"  {rows[-1]['method']}: {dt:.1f}s for {len(pts)} points; same support {same:.3f}")
    warm = next(r["seconds_all_points"] for r in rows if r["method"] == "SSC-OMP jaxcomp (warm)")
    for r in rows:
        r["ratio_to_jaxcomp_omp_warm"] = r["seconds_all_points"] / warm
    return rows


def _whole_values(key: str, values, minimum: int = 0) -> None:
    """``ValueError`` naming ``key`` unless every value is a whole number ``>= minimum`` (an int, or a
    float such as ``2.0`` with no fractional part): a dimension or an iteration count of 2.5 would run
    as 2 and be reported as 2.5."""
    for v in values:
        whole = is_whole(v) or (isinstance(v, float) and v.is_integer())
        if not whole or v < minimum:
            raise ValueError(f"{key} must hold whole numbers >= {minimum}, got {v!r}")


def check_algorithms(values: Any, key: str) -> list[str]:
    """``values`` as a list of known, distinct algorithms (``omp``, ``mp``), or a ValueError naming
    ``key``: a repeated one is one run counted twice (a spread of 0 over "2" seeds)."""
    values = distinct(values, key)
    unknown = [a for a in values if a not in NAMES]
    if unknown:
        raise ValueError(f"{key} holds unknown algorithm(s) {unknown}; expected 'omp', 'mp' or both")
    return values


def _positive(key: str, value: object) -> None:
    if not is_whole(value) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")


def check_synthetic_settings(cfg: ml_collections.ConfigDict) -> None:
    """``ValueError`` naming the setting, for a synthetic experiment (``phase``, ``smax``) that would
    otherwise fail midway or print a table of NaNs: trials, subspaces, algorithms and grid axes."""
    _positive("grid.trials", cfg.grid.trials)
    _positive("data.n_subspaces", cfg.data.n_subspaces)
    if not list(cfg.ssc.algorithms):
        raise ValueError("ssc.algorithms is empty; give 'omp', 'mp' or both")
    check_algorithms(cfg.ssc.algorithms, "ssc.algorithms")
    axes = {"phase": ["rho", {"t_rho": "t", "sigma_rho": "sigma", "smax_rho": "s_max"}.get(cfg.grid.axes)],
            "smax": ["s_max"]}[cfg.experiment]
    for axis in axes:
        if axis is not None and not list(cfg.grid[axis]):
            raise ValueError(f"grid.{axis} is empty; give at least one value")
        if axis in ("t", "s_max"):
            _whole_values(f"grid.{axis}", cfg.grid[axis], minimum=0 if axis == "t" else 1)


CONFIG_FILE = "config.txt"
# not settings of a result: where scattering features are cached (the same features either way) and
# where the MNIST file lies (configs/ssc.py makes it absolute from the checkout: a rerun from another
# checkout or machine is the same run; the trainer's bookkeeping keys treat data.path so too)
NOT_SETTINGS = ("data.cache_dir", "data.path")
# what separate processes of one run (``ssc_aggregate``, ``ssc_confusion``) may differ in
SEED_KEYS = ("seed", "n_seeds")
# what the drivers write into a workdir (besides config.txt): results of the settings in config.txt
OUTPUTS = ("mnist_runs.md", "mnist_runs.csv", "mnist_labels.npz", "mnist.md", "mnist.csv", "speed.md", "speed.csv",
           "smax.md", "smax.csv", "smax.png", "phase_t_rho.md", "phase_t_rho.csv", "phase_t_rho.png",
           "phase_sigma_rho.md", "phase_sigma_rho.csv", "phase_sigma_rho.png", "phase_smax_rho.md",
           "phase_smax_rho.csv", "phase_smax_rho.png")


def _settings_loader():
    import yaml

    class Loader(yaml.SafeLoader):  # str(ConfigDict) is YAML with !!python/tuple tags; read them as lists
        pass

    Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))
    return Loader


def settings_of(cfg: ml_collections.ConfigDict | str) -> dict:
    """A config's (or the text of a ``config.txt``'s) settings as a nested dict of plain values,
    without :data:`NOT_SETTINGS`: the same config always gives the same dict, whether read from the
    config or from the ``config.txt`` a run wrote."""
    import yaml

    from jaxcomp.configs import settings_without

    text = cfg if isinstance(cfg, str) else str(cfg)
    try:
        settings = yaml.load(text, Loader=_settings_loader())
    except yaml.YAMLError as e:
        raise ValueError(f"not a config.txt written by experiments.cluster: {e}") from None
    if not isinstance(settings, dict):
        raise ValueError("not a config.txt written by experiments.cluster (no settings in it)")
    return settings_without(ml_collections.ConfigDict(settings), NOT_SETTINGS)


def read_settings(workdir: str) -> dict | None:
    """The settings (:func:`settings_of`) of the run that wrote ``workdir``, from its ``config.txt``
    (written before the run starts), or ``None`` if it has none."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        try:
            return settings_of(f.read())
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def differences_between(a: dict, b: dict, ignore: tuple[str, ...] = ()) -> str:
    """The settings in which ``b`` (the later run) differs from ``a`` (nested dicts, :func:`settings_of`)
    as ``"key (A -> B), ..."``, or ``""``: the trainer's rule (:func:`jaxcomp.train.settings_differences`),
    the dotted keys ``ignore`` (and those under them) aside, and keys only one side has (settings added
    to the configs since, or no longer read)."""
    from jaxcomp.train import settings_differences as differences

    return differences(ml_collections.ConfigDict(b), a, ignore)


def check_same_settings(workdirs: list[str], ignore: tuple[str, ...] = SEED_KEYS, what: str = "runs") -> None:
    """``ValueError`` unless the runs in ``workdirs`` have the same settings (their ``config.txt``)
    but for the dotted keys ``ignore`` (by default the seeds: one run split into processes by seed),
    naming the differing settings and the two workdirs; or naming a workdir without ``config.txt``
    (its settings cannot be checked) when there are several. One workdir is always accepted."""
    if len(workdirs) < 2:
        return
    first, first_dir = None, ""
    for d in workdirs:
        settings = read_settings(d)
        if settings is None:
            raise ValueError(f"no {CONFIG_FILE} in {d!r}: its settings cannot be compared with the other "
                             f"workdirs' (combine only {what} of the same settings)")
        if first is None:
            first, first_dir = settings, d
            continue
        diff = differences_between(first, settings, ignore)
        if diff:
            raise ValueError(f"{what} of other settings: {first_dir!r} and {d!r} differ in {diff} "
                             f"(only {', '.join(ignore) or 'nothing'} may differ)")


def check_workdir(cfg: ml_collections.ConfigDict, workdir: str) -> None:
    """``ValueError`` naming ``workdir`` and the differing settings when it holds results
    (:data:`OUTPUTS`) of a run with other settings (its ``config.txt``; seeds and the experiment
    included) or of unknown settings (results but no ``config.txt``): a rerun would overwrite them,
    or leave them beside a config.txt of another run. A workdir of the same settings is reused."""
    if not os.path.isdir(workdir):
        return
    held = [name for name in OUTPUTS if os.path.exists(os.path.join(workdir, name))]
    saved = read_settings(workdir)
    if saved is None:
        if held:
            raise ValueError(f"workdir {workdir!r} holds results ({', '.join(held[:3])}) but no {CONFIG_FILE}: "
                             f"their settings are unknown and this run would overwrite them; use another --workdir")
        return
    diff = differences_between(saved, settings_of(cfg))
    if diff and held:
        raise ValueError(f"workdir {workdir!r} holds results ({', '.join(held[:3])}) of other settings: "
                         f"{diff} (there -> this run); use another --workdir, or the same settings to rerun those")


def run(cfg: ml_collections.ConfigDict, workdir: str) -> str:
    """Runs the experiment named by ``cfg.experiment`` and writes ``workdir/<name>.{md,csv}``, and
    first ``workdir/config.txt`` (the settings). A workdir holding results of other settings (seeds
    and experiment included; :func:`check_workdir`) is refused before any work."""
    exp = cfg.experiment
    if not float(cfg.ssc.tau) >= 0:  # a negative threshold was reported as tau 0 in noise mode
        raise ValueError(f"ssc.tau must be >= 0, got {cfg.ssc.tau!r}")
    if exp in ("phase", "smax"):
        check_synthetic_settings(cfg)
    if exp in ("mnist", "speed"):
        _positive("data.num_points", cfg.data.num_points)
    if exp == "mnist":
        count(cfg.n_seeds, "n_seeds")
        check_algorithms(cfg.ssc.algorithms, "ssc.algorithms")
    if exp == "speed":  # the ratios are to SSC-OMP's warm row: without it the run failed after all its timing
        if "omp" not in check_algorithms(cfg.speed.algorithms, "speed.algorithms"):
            raise ValueError(f"speed.algorithms must include 'omp' (the scikit-learn baselines are SSC-OMP and "
                             f"every ratio is to jaxcomp's SSC-OMP), got {tuple(cfg.speed.algorithms)!r}")
    check_workdir(cfg, workdir)
    os.makedirs(workdir, exist_ok=True)  # after the checks: a refused run leaves no folder
    with atomic_file(os.path.join(workdir, CONFIG_FILE), "w") as f:  # first: a stopped run's results keep theirs
        f.write(str(cfg))
    if exp == "phase":
        rows, name = run_phase(cfg, workdir), f"phase_{cfg.grid.axes}"
    elif exp == "smax":
        rows, name = run_smax(cfg, workdir), "smax"
    elif exp == "mnist":
        rows, name = run_mnist(cfg, workdir), "mnist"
    elif exp == "speed":
        rows, name = run_speed(cfg, workdir), "speed"
    else:
        raise ValueError(f"unknown experiment {exp!r}; expected phase, smax, mnist or speed")
    return write_table(rows, workdir, name, title=name)

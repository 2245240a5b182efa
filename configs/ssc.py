"""Configs for the SSC-OMP / SSC-MP experiments (``python -m experiments.cluster``).

Variants:
  synthetic:       phase diagram of the clustering error over (t, rho), sigma = 0.
  synthetic_sigma: phase diagram over (sigma, rho), t = 10.
  smax:            clustering error vs s_max (tau = 0), SSC-OMP vs SSC-MP.
  mnist:           10,000 MNIST training images, pixels -> uncentred PCA to 500 dims.
  mnist_scattering: the literature's MNIST setting (You et al., CVPR 2016): scattering features
                   (J = 3, L = 8, 3,472 dims) -> uncentred PCA to 500 dims; 10,000 training images,
                   3 seeds; SSC-MP, SSC-OMP, kNN spectral clustering and k-means. For all 70,000
                   digits: --config.data.split=all --config.data.num_points=70000.
  mnist_scattering_mp: SSC-MP alone on the mnist_scattering samples with the setting chosen on the MNIST
                   *test* split (disjoint from these training-split samples; experiments/ssc_diagnose.py):
                   s_max = 40, p_max = s_max, tau = 0, and the support ("binary") affinity, plus kNN spectral
                   clustering and k-means (docs/greedy.md, MNIST section).
  mnist_scattering_omp_raw: SSC-OMP as the public reference code runs it on MNIST (ChongYou/subspace-clustering,
                   run_mnist.py): points not scaled to unit norm, atoms selected by raw correlation
                   (ssc.point_norms="raw"), s_max = 5, rows of C to unit norm before |C| + |C|^T ("l2"); plus
                   kNN spectral clustering and k-means, on the mnist_scattering samples.
  mnist_speed:     SSC-OMP coding time, jaxcomp vs scikit-learn (orthogonal_mp per point and
                   orthogonal_mp_gram on a precomputed Gram) on the mnist_scattering features.
  noise_smax:      low SNR: iid noise N(0, 0.1^2) per coordinate (m = 50, so ||e|| ~ 0.7), error over
                   (s_max, rho), tau = 0.
  noise_smax_tau:  the same with the noise-level stopping rule tau = tau_from_noise(sigma, m).
  tiny:            a few-second smoke test of the phase-diagram code path.

MNIST is read from ``data.path``: by default ``<project>/../shared/data/mnist/mnist.npz``, found
from this file's location (so it does not depend on where the project is checked out or on the
working directory); give another file with ``--config.data.path=/path/to/mnist.npz`` (a relative
path is taken from the working directory). A missing file is reported by
``jaxcomp.cluster.data.load_mnist`` with its path and this override. Scattering features are
cached in ``data.cache_dir`` (default ``<project>/runs/cache``; "" disables the cache).
"""

import os

import ml_collections

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(PROJECT_ROOT, os.pardir, "shared", "data"))
MNIST_PATH = os.path.join(SHARED_DATA, "mnist", "mnist.npz")
CACHE_DIR = os.path.join(PROJECT_ROOT, "runs", "cache")

VARIANTS = ("synthetic", "synthetic_sigma", "smax", "mnist", "mnist_scattering", "mnist_scattering_mp",
            "mnist_scattering_omp_raw", "mnist_speed",
            "noise_smax", "noise_smax_tau", "tiny")


def get_config(variant: str = "synthetic") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.experiment = "phase"
    c.seed = 0
    c.n_seeds = 1  # MNIST: seeds seed, seed + 1, ... (each draws its own sample)
    # Data: the synthetic model of Tschannen & Bölcskei (m=200, d=20, L=3) and MNIST.
    c.data = ml_collections.ConfigDict(dict(
        ambient_dim=200, subspace_dim=20, n_subspaces=3, intersection_dim=0, rho=5.0, sigma=0.0,
        path=MNIST_PATH, split="train", num_points=10000,
        features="pca", feature_dim=500, n_clusters=10, cache_dir="",
    ))
    # Pursuit: s_max iterations; tau_mode "noise" uses max(tau, tau_from_noise(sigma, m, tau_subspace_dim)).
    c.ssc = ml_collections.ConfigDict(dict(
        algorithms=("omp", "mp"), s_max=20, tau=1e-3, tau_mode="noise", tau_subspace_dim=0,
        p_max=0,  # 0: p_max = s_max
        corr_tol=0.0, chunk_size=1024,
        # "none": |C| + |C|^T; "l2": rows of C to unit norm first (authors' code); "binary": the support of C only
        affinity_normalization="none",
        # "unit": points scaled to unit norm (the paper); "raw": as given, atoms chosen by raw correlation (the
        # public SSC-OMP reference code on MNIST, ChongYou/subspace-clustering)
        point_norms="unit",
    ))
    c.grid = ml_collections.ConfigDict(dict(
        axes="t_rho", t=(0, 4, 8, 10, 12, 14, 16, 18), rho=(1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0),
        sigma=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0), s_max=(2, 5, 10, 15, 20, 30, 50, 75, 100), trials=3,
    ))
    # sklearn_method: "loop" (orthogonal_mp per point) or "gram" (orthogonal_mp_gram on a precomputed Gram)
    c.baselines = ml_collections.ConfigDict(dict(sklearn_omp=True, sklearn_method="loop", spectral=True, kmeans=True,
                                                 n_neighbors=10))
    # speed: sample_points = points the sklearn baselines code (time extrapolated to all); num_points > 0: the first
    # that many points of the MNIST sample (0 = all); algorithms timed on all points by jaxcomp (cold and warm)
    c.speed = ml_collections.ConfigDict(dict(sample_points=200, num_points=0, algorithms=("omp",)))

    if variant == "synthetic_sigma":
        c.grid.axes = "sigma_rho"
        c.data.intersection_dim = 10
    elif variant == "smax":
        c.experiment = "smax"
        c.data.intersection_dim = 10
        c.data.rho = 5.0
        c.data.sigma = 0.5
        c.ssc.tau_mode = "fixed"
        c.ssc.tau = 0.0
        c.grid.trials = 3
    elif variant == "mnist":
        c.experiment = "mnist"
        c.ssc.s_max = 10
        c.ssc.tau = 0.0
        c.ssc.tau_mode = "fixed"
        c.ssc.chunk_size = 1000
    elif variant in ("mnist_scattering", "mnist_scattering_mp", "mnist_scattering_omp_raw", "mnist_speed"):
        c.experiment = "speed" if variant == "mnist_speed" else "mnist"
        c.n_seeds = 3
        c.data.features = "scattering"
        c.data.cache_dir = CACHE_DIR
        c.ssc.s_max = 10
        c.ssc.tau = 0.0
        c.ssc.tau_mode = "fixed"
        c.ssc.chunk_size = 1000
        c.baselines.sklearn_omp = False  # ~0.1-0.3 s per point at N = 10,000: see mnist_speed
        if variant == "mnist_scattering_mp":  # chosen on the test split, see the variant list above
            c.ssc.algorithms = ("mp",)
            c.ssc.s_max = 40
            c.ssc.affinity_normalization = "binary"
        if variant == "mnist_scattering_omp_raw":  # the reference code's setting (checked on the test split)
            c.ssc.algorithms = ("omp",)
            c.ssc.s_max = 5
            c.ssc.point_norms = "raw"
            c.ssc.affinity_normalization = "l2"
    elif variant in ("noise_smax", "noise_smax_tau"):
        c.grid.axes = "smax_rho"
        c.data.ambient_dim = 50
        c.data.subspace_dim = 5
        c.data.intersection_dim = 0
        c.data.sigma = 0.1 * 50**0.5  # e ~ N(0, sigma^2/m I) = N(0, 0.1^2 I): ||e|| ~ 0.71
        c.grid.s_max = (1, 2, 3, 5, 10, 20)
        c.grid.rho = (3.0, 10.0)
        c.ssc.chunk_size = 256
        if variant == "noise_smax":
            c.ssc.tau_mode = "fixed"
            c.ssc.tau = 0.0
    elif variant == "tiny":
        c.data.ambient_dim = 30
        c.data.subspace_dim = 4
        c.grid.t = (0, 2)
        c.grid.rho = (3.0, 6.0)
        c.grid.trials = 1
        c.ssc.s_max = 4
        c.ssc.chunk_size = 32
    return c

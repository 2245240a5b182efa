"""Configs for the SSC-OMP / SSC-MP experiments (``python -m experiments.cluster``).

Variants:
  synthetic:       phase diagram of the clustering error over (t, rho), sigma = 0.
  synthetic_sigma: phase diagram over (sigma, rho), t = 10.
  smax:            clustering error vs s_max (tau = 0), SSC-OMP vs SSC-MP.
  mnist:           10,000 MNIST training images, pixels -> uncentred PCA to 500 dims.
  tiny:            a few-second smoke test of the phase-diagram code path.

MNIST is read from ``data.path``: by default ``<project>/../shared/data/mnist/mnist.npz``, found
from this file's location (so it does not depend on where the project is checked out or on the
working directory); give another file with ``--config.data.path=/path/to/mnist.npz`` (a relative
path is taken from the working directory). A missing file is reported by
``jaxcomp.cluster.data.load_mnist`` with its path and this override.
"""

import os

import ml_collections

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(PROJECT_ROOT, os.pardir, "shared", "data"))
MNIST_PATH = os.path.join(SHARED_DATA, "mnist", "mnist.npz")

VARIANTS = ("synthetic", "synthetic_sigma", "smax", "mnist", "tiny")


def get_config(variant: str = "synthetic") -> ml_collections.ConfigDict:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.experiment = "phase"
    c.seed = 0
    # Data: the synthetic model of Tschannen & Bölcskei (m=200, d=20, L=3) and MNIST.
    c.data = ml_collections.ConfigDict(dict(
        ambient_dim=200, subspace_dim=20, n_subspaces=3, intersection_dim=0, rho=5.0, sigma=0.0,
        path=MNIST_PATH, split="train", num_points=10000,
        features="pca", feature_dim=500, n_clusters=10,
    ))
    # Pursuit: s_max iterations; tau_mode "noise" uses max(tau, tau_from_noise(sigma, m, tau_subspace_dim)).
    c.ssc = ml_collections.ConfigDict(dict(
        algorithms=("omp", "mp"), s_max=20, tau=1e-3, tau_mode="noise", tau_subspace_dim=0,
        p_max=0,  # 0: p_max = s_max
        corr_tol=0.0, chunk_size=1024,
    ))
    c.grid = ml_collections.ConfigDict(dict(
        axes="t_rho", t=(0, 4, 8, 10, 12, 14, 16, 18), rho=(1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0),
        sigma=(0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0), s_max=(2, 5, 10, 15, 20, 30, 50, 75, 100), trials=3,
    ))
    c.baselines = ml_collections.ConfigDict(dict(sklearn_omp=True, spectral=True, kmeans=True, n_neighbors=10))

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
    elif variant == "tiny":
        c.data.ambient_dim = 30
        c.data.subspace_dim = 4
        c.grid.t = (0, 2)
        c.grid.rho = (3.0, 6.0)
        c.grid.trials = 1
        c.ssc.s_max = 4
        c.ssc.chunk_size = 32
    return c

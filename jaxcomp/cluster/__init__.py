"""Subspace clustering by greedy pursuits: SSC-OMP and SSC-MP (Tschannen & Bölcskei 2018).

* :mod:`jaxcomp.cluster.ssc`: chunked, jit-compiled self-representation by OMP / MP.
* :mod:`jaxcomp.cluster.spectral`: normalised spectral clustering of a sparse affinity.
* :mod:`jaxcomp.cluster.estimators`: ``SSCOMP`` / ``SSCMP`` (scikit-learn style).
* :mod:`jaxcomp.cluster.metrics`: clustering accuracy / error, NMI, ARI.
* :mod:`jaxcomp.cluster.data`: synthetic unions of subspaces, MNIST features (pixels, PCA, scattering).
* :mod:`jaxcomp.cluster.scattering`: the 2-D scattering transform (kymatio's Morlet filters) in JAX.
* :mod:`jaxcomp.cluster.baselines`: SSC-OMP on scikit-learn's OMP (per point, or on a precomputed Gram).
* :mod:`jaxcomp.cluster.benchmarks`: host-side experiment drivers (plots, tables).
"""

from jaxcomp.cluster.data import union_of_subspaces
from jaxcomp.cluster.estimators import SSCMP, SSCOMP
from jaxcomp.cluster.metrics import (
    adjusted_rand_index,
    all_metrics,
    clustering_accuracy,
    clustering_error,
    normalized_mutual_info,
)
from jaxcomp.cluster.spectral import spectral_clustering
from jaxcomp.cluster.ssc import affinity_from_coefficients, sparse_coefficients, tau_from_noise

__all__ = [
    "SSCMP",
    "SSCOMP",
    "adjusted_rand_index",
    "affinity_from_coefficients",
    "all_metrics",
    "clustering_accuracy",
    "clustering_error",
    "normalized_mutual_info",
    "sparse_coefficients",
    "spectral_clustering",
    "tau_from_noise",
    "union_of_subspaces",
]

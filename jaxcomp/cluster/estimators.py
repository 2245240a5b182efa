"""scikit-learn style estimators for SSC-OMP and SSC-MP."""

from __future__ import annotations

import time
import warnings

import numpy as np
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClusterMixin

from jaxcomp.checks import is_whole
from jaxcomp.cluster.spectral import spectral_clustering
from jaxcomp.cluster.ssc import AFFINITY_NORMALIZATIONS, affinity_from_coefficients, check_data, sparse_coefficients


class _SSCBase(ClusterMixin, BaseEstimator):
    _algorithm = "omp"

    def _fit(self, X, p_max):
        if self.affinity_normalization not in AFFINITY_NORMALIZATIONS:
            raise ValueError(f"affinity_normalization must be one of {AFFINITY_NORMALIZATIONS}, "
                             f"got {self.affinity_normalization!r}")
        if self.n_clusters is not None and (not is_whole(self.n_clusters) or self.n_clusters < 1):  # 3.0: late
            raise ValueError(f"n_clusters must be a positive integer or None, got {self.n_clusters!r}")
        if self.random_state is not None and (not is_whole(self.random_state) or self.random_state < 0):
            raise ValueError(f"random_state must be an integer seed >= 0 or None (it seeds the eigensolver and "
                             f"k-means), got {self.random_state!r}")  # named before minutes of coding
        self.n_features_in_ = check_data(X, self.n_clusters).shape[1]
        t0 = time.perf_counter()
        C, info = sparse_coefficients(
            X,
            algorithm=self._algorithm,
            s_max=self.s_max,
            tau=self.tau,
            p_max=p_max,
            corr_tol=self.corr_tol,
            chunk_size=self.chunk_size,
            progress=self.verbose,
            point_norms=self.point_norms,
        )
        t1 = time.perf_counter()
        if C.nnz == 0:  # an empty graph: spectral clustering of it says nothing about the data
            warnings.warn(f"{type(self).__name__}: every pursuit stopped before its first step (tau={self.tau!r} "
                          f"is not below the points' norms), so no coefficient is nonzero and the clusters "
                          f"are arbitrary; tau is a residual norm, e.g. the noise level", stacklevel=3)
        self.coef_ = C
        self.n_iter_ = info["n_iter"]
        self.residual_norm_ = info["residual_norm"]
        self.affinity_matrix_ = affinity_from_coefficients(C, self.affinity_normalization)
        self.labels_, self.n_clusters_ = spectral_clustering(
            self.affinity_matrix_, self.n_clusters, max_clusters=self.max_clusters, seed=self.random_state
        )
        self.timings_ = {"coding_s": t1 - t0, "spectral_s": time.perf_counter() - t1}
        return self

    def fit_predict(self, X, y=None, **kwargs) -> np.ndarray:
        """Fits and returns ``labels_`` ``(N,)``."""
        return self.fit(X).labels_


class SSCOMP(_SSCBase):
    """SSC-OMP: each point is coded by OMP over the other (unit-norm) points, then spectral
    clustering of ``|C| + |C|^T``.

    Parameters:
      n_clusters: number of clusters, or ``None`` for the eigengap estimate.
      s_max: maximum OMP iterations per point.
      tau: residual-norm threshold (see :func:`jaxcomp.cluster.ssc.tau_from_noise`).
      corr_tol: normalised-correlation threshold (0 disables).
      chunk_size: points coded per compiled call.
      max_clusters: upper bound for the eigengap estimate.
      random_state: seed of the eigensolver start vector and k-means.
      verbose: tqdm progress over chunks.
      affinity_normalization: ``"none"`` (``|C| + |C|^T``), ``"l2"`` (each point's representation
        scaled to unit norm first, as the authors' code) or ``"binary"`` (the support of ``C`` only:
        ``A_ij`` counts the nonzeros ``C_ij``, ``C_ji``); see ``affinity_from_coefficients``.
      point_norms: ``"unit"`` (the paper: points scaled to unit norm) or ``"raw"`` (points as
        given, atoms selected by raw correlation, as the public SSC-OMP reference code does on
        MNIST); see ``jaxcomp.cluster.ssc.sparse_coefficients``.

    Attributes (after ``fit``): ``coef_`` (N, N) csr, ``affinity_matrix_`` (N, N) csr,
    ``labels_`` (N,), ``n_clusters_``, ``n_features_in_`` (m), ``n_iter_`` (N,), ``residual_norm_``
    (N,), ``timings_``. Sparse, complex or non-numeric ``X`` is refused with a ``ValueError``.
    """

    _algorithm = "omp"

    def __init__(
        self,
        n_clusters: int | None = None,
        s_max: int = 10,
        tau: float = 0.0,
        corr_tol: float = 0.0,
        chunk_size: int = 1024,
        max_clusters: int = 20,
        random_state: int = 0,
        verbose: bool = False,
        affinity_normalization: str = "none",
        point_norms: str = "unit",
    ):
        self.n_clusters = n_clusters
        self.s_max = s_max
        self.tau = tau
        self.corr_tol = corr_tol
        self.chunk_size = chunk_size
        self.max_clusters = max_clusters
        self.random_state = random_state
        self.verbose = verbose
        self.affinity_normalization = affinity_normalization
        self.point_norms = point_norms

    def fit(self, X: ArrayLike, y: object = None) -> SSCOMP:
        """``X`` ``(N, m)``, one point per row."""
        return self._fit(X, None)


class SSCMP(_SSCBase):
    """SSC-MP: as :class:`SSCOMP` with matching pursuit, plus ``p_max`` (maximum number of
    nonzero coefficients per point; default ``s_max``)."""

    _algorithm = "mp"

    def __init__(
        self,
        n_clusters: int | None = None,
        s_max: int = 10,
        tau: float = 0.0,
        p_max: int | None = None,
        corr_tol: float = 0.0,
        chunk_size: int = 1024,
        max_clusters: int = 20,
        random_state: int = 0,
        verbose: bool = False,
        affinity_normalization: str = "none",
        point_norms: str = "unit",
    ):
        self.n_clusters = n_clusters
        self.s_max = s_max
        self.tau = tau
        self.p_max = p_max
        self.corr_tol = corr_tol
        self.chunk_size = chunk_size
        self.max_clusters = max_clusters
        self.random_state = random_state
        self.verbose = verbose
        self.affinity_normalization = affinity_normalization
        self.point_norms = point_norms

    def fit(self, X: ArrayLike, y: object = None) -> SSCMP:
        """``X`` ``(N, m)``, one point per row."""
        return self._fit(X, self.p_max)

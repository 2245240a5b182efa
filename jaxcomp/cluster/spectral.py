"""Spectral clustering of a sparse symmetric affinity (normalised Laplacian, Ng-Jordan-Weiss)."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import eigsh
from sklearn.cluster import KMeans

from jaxcomp.checks import is_whole


def _check_affinity(A) -> sp.csr_matrix:
    if sp.issparse(A):
        A = sp.csr_matrix(A, dtype=np.float64)
    else:
        A = np.asarray(A, dtype=np.float64)
        if A.ndim != 2:
            raise ValueError(f"affinity must be a 2-D matrix, got shape {A.shape}")
        A = sp.csr_matrix(A)
    if A.shape[0] != A.shape[1]:
        raise ValueError(f"affinity must be square, got shape {A.shape}")
    if not np.all(np.isfinite(A.data)):
        raise ValueError("affinity contains NaN or infinite entries")
    if A.nnz and A.data.min() < 0:
        raise ValueError("affinity must be non-negative")
    if abs(A - A.T).sum() > 1e-8 * max(abs(A).sum(), 1.0):
        raise ValueError("affinity must be symmetric (use |C| + |C|^T)")
    return A


def laplacian_spectrum(A: sp.spmatrix | np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest eigenpairs of ``L = I - D^{-1/2} A D^{-1/2}``.

    Computed as the largest eigenpairs of ``S = D^{-1/2} A D^{-1/2}`` (``eigsh`` with
    ``which="LA"`` for large sparse ``A``, dense ``eigh`` for ``N <= 500``). Isolated points
    (degree 0) get degree 1.

    Returns:
      ``(eigenvalues (k,) ascending, eigenvectors (N, k))`` of ``L``, float64.
    """
    A = _check_affinity(A)
    n = A.shape[0]
    deg = np.asarray(A.sum(axis=1)).ravel()
    deg[deg <= 0] = 1.0
    dinv = sp.diags(1.0 / np.sqrt(deg))
    S = (dinv @ A @ dinv).tocsr()
    if n <= 500 or k >= n - 1:
        vals, vecs = np.linalg.eigh(S.toarray())
        vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k]
    else:
        v0 = np.random.default_rng(seed).standard_normal(n)
        vals, vecs = eigsh(S, k=k, which="LA", v0=v0, tol=1e-6, maxiter=20 * n)
        order = np.argsort(-vals)
        vals, vecs = vals[order], vecs[:, order]
    return 1.0 - vals, vecs


def estimate_n_clusters(eigenvalues: np.ndarray) -> int:
    """Eigengap heuristic: ``argmax_k (lambda_{k+1} - lambda_k)`` over ascending Laplacian
    eigenvalues, ``k >= 1``."""
    gaps = np.diff(np.asarray(eigenvalues))
    return int(np.argmax(gaps) + 1)


def spectral_clustering(
    A: sp.spmatrix | np.ndarray,
    n_clusters: int | None = None,
    max_clusters: int = 20,
    seed: int = 0,
    n_init: int = 10,
) -> tuple[np.ndarray, int]:
    """Clusters the nodes of the affinity graph ``A``.

    Args:
      A: ``(N, N)`` symmetric non-negative affinity (scipy.sparse or dense).
      n_clusters: number of clusters; estimated by the eigengap when ``None``.
      max_clusters: largest number considered by the eigengap estimate.
      seed: seeds the Lanczos start vector and k-means.
      n_init: k-means restarts.

    Returns:
      ``(labels (N,) int64, n_clusters)``.
    """
    A = _check_affinity(A)
    n = A.shape[0]
    if n == 0:
        raise ValueError("the affinity has no points (shape (0, 0))")
    if not is_whole(n_init) or n_init < 1:
        raise ValueError(f"n_init (k-means restarts) must be a positive integer, got {n_init!r}")
    if n_clusters is not None:
        if not is_whole(n_clusters) or n_clusters < 1:
            raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
        if n_clusters > n:
            raise ValueError(f"fewer points ({n}) than clusters ({n_clusters})")
        k = int(n_clusters)
        vals, vecs = laplacian_spectrum(A, k, seed)
    else:
        if not is_whole(max_clusters) or max_clusters < 1:
            raise ValueError(f"max_clusters must be a positive integer, got {max_clusters!r}")
        kmax = min(max_clusters + 1, n)
        vals, vecs = laplacian_spectrum(A, kmax, seed)
        k = estimate_n_clusters(vals)
        vecs = vecs[:, :k]
        if k == 1 and kmax > 2 and vals[1] > 1e-6:
            # a connected graph whose largest gap is its first: the heuristic's usual failure on noisy data
            warnings.warn(f"the eigengap estimate is 1 cluster (Laplacian eigenvalues {np.round(vals[:4], 3)}: "
                          "the graph is connected and the first gap is the largest); pass n_clusters if you "
                          "know it", RuntimeWarning, stacklevel=2)
    if k == 1:
        return np.zeros(n, np.int64), 1
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    U = vecs / np.maximum(norms, 1e-12)
    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed)
    return km.fit_predict(U).astype(np.int64), k

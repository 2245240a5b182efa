"""Host-side baselines: SSC-OMP on scikit-learn's ``orthogonal_mp`` / ``orthogonal_mp_gram``."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.linear_model import orthogonal_mp, orthogonal_mp_gram

from jaxcomp.cluster.ssc import check_data

METHODS = ("loop", "gram")


def sklearn_ssc_omp_coefficients(X: ArrayLike, s_max: int = 10, tau: float = 0.0, progress: bool = False,
                                 method: str = "loop", points: ArrayLike | None = None) -> sp.csr_matrix:
    """SSC-OMP coefficients with scikit-learn's OMP, one point at a time.

    ``method="loop"``: ``orthogonal_mp(D, x_j)`` on the unit-norm data with column ``j`` zeroed
    (a zero column has no correlation, so OMP never selects it), float64.

    ``method="gram"``: the Gram matrix ``G = X X^T`` (float32, like the JAX code) is computed
    once; point ``j`` is coded by ``orthogonal_mp_gram`` on a copy of ``G`` with row and column
    ``j`` zeroed (its correlation ``alpha_j = G_j. gamma - 0`` stays 0, so it is never selected)
    and ``Xy = G[:, j]`` with entry ``j`` zeroed. scikit-learn has no cheaper exact route: its
    multi-target ``orthogonal_mp_gram(G, Xy)`` loops over the targets in Python and copies ``G``
    for each one anyway (``copy_Gram`` is forced on), and a shared ``G`` cannot exclude each
    target's own atom (zeroing only ``Xy[j]`` leaves ``|alpha_j| = 1 - ||r||^2``, which OMP then
    selects). So one ``(N, N)`` copy per point, as in scikit-learn's own batched path.

    ``tau > 0`` is passed as scikit-learn's ``tol`` (squared residual norm, ``tau**2``), which then
    overrides ``s_max``; ``tau = 0`` stops after ``s_max`` atoms.

    Args:
      points: optional indices of the points to code (the rest of ``C`` stays empty), e.g. to
        time a sample.

    Returns:
      ``(N, N)`` float32 csr, row ``j`` = coefficients of point ``j``.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    Xn = check_data(X).astype(np.float64)
    n = Xn.shape[0]
    pts = np.arange(n) if points is None else np.asarray(points, np.int64).ravel()
    if pts.size and (pts.min() < 0 or pts.max() >= n):
        raise ValueError(f"points must be indices in [0, {n}), got range [{pts.min()}, {pts.max()}]")
    rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    it = pts
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(pts, desc=f"sklearn SSC-OMP ({method})", unit="pt", mininterval=2.0)
    kw = {"tol": tau**2} if tau > 0 else {"n_nonzero_coefs": min(s_max, n - 1)}
    if method == "loop":
        D = np.array(Xn.T, order="F")  # a copy: zeroing a column must not touch Xn
    else:
        X32 = Xn.astype(np.float32)
        G = np.asfortranarray(X32 @ X32.T)
        if tau > 0:
            kw["norms_squared"] = [1.0]  # unit-norm rows (one target: Xy passed as a (N, 1) column)
    for j in it:
        with warnings.catch_warnings():  # "ended prematurely" on exact fits: expected, not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            if method == "loop":
                D[:, j] = 0.0
                coef = orthogonal_mp(D, Xn[j], precompute=False, copy_X=True, **kw)
                D[:, j] = Xn[j]
            else:
                Gj = G.copy(order="F")
                Gj[j, :] = 0.0
                Gj[:, j] = 0.0
                xy = G[:, j:j + 1].copy()
                xy[j] = 0.0
                coef = orthogonal_mp_gram(Gj, xy, copy_Gram=False, copy_Xy=False, **kw)
        nz = np.flatnonzero(coef)
        rows.append(np.full(nz.size, j))
        cols.append(nz)
        vals.append(coef[nz])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n), dtype=np.float32
    )

"""Host-side baselines: SSC-OMP on scikit-learn's ``orthogonal_mp``."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import orthogonal_mp

from jaxcomp.cluster.ssc import check_data


def sklearn_ssc_omp_coefficients(X, s_max: int = 10, tau: float = 0.0, progress: bool = False) -> sp.csr_matrix:
    """SSC-OMP coefficients with ``sklearn.linear_model.orthogonal_mp``, one point at a time.

    Point ``j`` is coded over the unit-norm data with column ``j`` zeroed (so it is never
    selected; OMP picks the largest correlation and a zero column has none). ``tau > 0`` is
    passed as sklearn's ``tol`` (squared residual norm, ``tau**2``), which then overrides
    ``s_max`` in sklearn; ``tau = 0`` stops after ``s_max`` atoms.

    Returns:
      ``(N, N)`` float32 csr, row ``j`` = coefficients of point ``j``.
    """
    Xn = check_data(X).astype(np.float64)
    n = Xn.shape[0]
    D = np.array(Xn.T, order="F")  # a copy: zeroing a column must not touch Xn
    rows, cols, vals = [], [], []
    it = range(n)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="sklearn SSC-OMP", unit="pt", mininterval=2.0)
    kw = {"tol": tau**2} if tau > 0 else {"n_nonzero_coefs": min(s_max, n - 1)}
    for j in it:
        D[:, j] = 0.0
        with warnings.catch_warnings():  # "ended prematurely" on exact fits: expected, not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            coef = orthogonal_mp(D, Xn[j], precompute=False, copy_X=True, **kw)
        D[:, j] = Xn[j]
        nz = np.flatnonzero(coef)
        rows.append(np.full(nz.size, j))
        cols.append(nz)
        vals.append(coef[nz])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n), dtype=np.float32
    )

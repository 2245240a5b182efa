"""SSC-OMP and SSC-MP (Tschannen & Bölcskei, "Noisy subspace clustering via matching
pursuits", IEEE T-IT 64(6), 2018; SSC-OMP after Dyer et al. 2013 and You et al. 2016).

Data convention (scikit-learn): ``X`` is ``(N, m)``, one point per row. Every point is
normalised to unit norm, then represented by the *other* points with a greedy pursuit
(its own index is excluded from the dictionary):

* SSC-OMP (Algorithm 1 of the paper): OMP, stopped after ``s_max`` iterations or when
  ``||r||_2 <= tau``.
* SSC-MP (Algorithm 2): MP, stopped after ``s_max`` iterations, when ``||r||_2 <= tau`` or
  when the coefficient vector has ``p_max`` nonzero entries (MP may pick an atom twice).

Data-dependent stopping. The paper's data-dependent criterion is the residual threshold
``||r||_2 <= tau`` with ``tau`` chosen from the noise level, so that the pursuit stops once
the residual is at the noise floor and the number of iterations adapts to the (unknown)
subspace dimension. The equations of the paper could not be consulted when this was
written; what is implemented is exactly:

* ``tau`` (float): stop when ``||r_s||_2 <= tau``.
* :func:`tau_from_noise` gives the default data-dependent ``tau`` for the noise model
  ``y = (x + e)/||x + e||``, ``||x|| = 1``, ``e ~ N(0, sigma^2/m I_m)``: the residual of the
  exact projection onto the true ``d``-dimensional subspace has expected squared norm
  ``sigma^2 (m - d)/m / (1 + sigma^2)``; ``tau = margin * sigma sqrt((m - d)/m) /
  sqrt(1 + sigma^2)`` with ``margin = 1.1`` (``d = 0`` when unknown gives a looser bound).
* ``corr_tol`` (float, default 0): additionally stop when the largest normalised
  correlation ``max_i |<y_i, r>|/||r||`` is ``<= corr_tol`` (no point explains the residual
  better than noise would).

The per-point pursuits run in chunks of ``chunk_size`` points (the last chunk padded), so
one compiled program serves all chunks and memory stays ``O(chunk_size * N)``. The
coefficient matrix is returned as ``scipy.sparse.csr_matrix`` ``C`` with row ``j`` holding
the representation of point ``j``; the affinity is ``|C| + |C|^T``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from jaxcomp.checks import finite_number, is_whole
from jaxcomp.greedy.pursuit import check_norm_range, mp_batch, norms64, omp_batch

ALGORITHMS = ("omp", "mp")


def check_data(X: ArrayLike, n_clusters: int | None = None, unit_norm: bool = True) -> np.ndarray:
    """Validates ``X`` ``(N, m)`` on the host and returns it as float32 with unit-norm rows
    (``unit_norm=False``: the rows as given).

    Raises:
      ValueError: a sparse matrix, complex or non-numeric entries, not 2-D, no features, NaN/inf,
        zero rows (points: a zero point has no direction), fewer than 2 points, or fewer points than
        ``n_clusters``; with ``unit_norm=False``, rows whose squared norm under- or overflows float32
        (:func:`jaxcomp.greedy.pursuit.check_norm_range`).
      TypeError: an object array holding something that is not a number (e.g. a dict).
    """
    import scipy.sparse as sp

    if sp.issparse(X):
        raise ValueError(f"X is a sparse {type(X).__name__}: SSC codes every point over all the others and "
                         "needs a dense array (X.toarray())")
    X = np.asarray(X)
    if np.iscomplexobj(X):
        raise ValueError(f"Complex data not supported: X must be real, got complex dtype {X.dtype}")
    if X.dtype == object:  # numbers stored as objects are fine (scikit-learn's convention), anything else is not
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as e:
            raise type(e)(f"X must be numeric, got dtype object with a non-numeric entry ({e})") from None
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (n_points, n_features), got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.timedelta64):
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    n = X.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 points (samples), got {n} sample(s)")
    if X.shape[1] < 1:
        raise ValueError(f"0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    if n_clusters is not None and n < n_clusters:
        raise ValueError(f"fewer points ({n}) than clusters ({n_clusters})")
    X = X.astype(np.float64)
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite entries")
    with np.errstate(over="ignore", under="ignore"):
        norms = np.linalg.norm(X, axis=1)
    if not np.all(np.isfinite(norms)) or np.any((norms == 0) & np.any(X != 0, axis=1)):
        norms = norms64(X, axis=1)  # scaled: the squares of rows of 1e155 overflow even float64 (or underflow)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise ValueError(f"X has {zero.size} zero point(s) (all-zero rows), e.g. row {int(zero[0])}")
    if unit_norm:  # the plain norms where they are finite: the same float32 points as before the scaled path
        return (X / norms[:, None]).astype(np.float32)
    # raw norms: the points are both the atoms and the signals of the float32 pursuit, whose squared norms
    # underflow (rows below ~1e-19) or overflow (beyond ~5e18) there: no support, arbitrary clusters
    check_norm_range(norms, np.float32, "X's points (rows)", "row",
                     hint="rescale X (point_norms='raw' keeps the points' norms; 'unit' scales each to 1)")
    return X.astype(np.float32)


POINT_NORMS = ("unit", "raw")


def tau_from_noise(sigma: float, ambient_dim: int, subspace_dim: int = 0, margin: float = 1.1) -> float:
    """Data-dependent residual threshold for noise level ``sigma`` (see module docstring)."""
    if not (np.isfinite(sigma) and np.isfinite(margin)) or sigma < 0 or margin <= 0:  # NaN gave tau NaN
        raise ValueError(f"need a finite sigma >= 0 and margin > 0, got sigma={sigma!r}, margin={margin!r}")
    if ambient_dim < 1 or not 0 <= subspace_dim <= ambient_dim:
        raise ValueError("need ambient_dim >= 1 and 0 <= subspace_dim <= ambient_dim")
    return float(margin * sigma * math.sqrt((ambient_dim - subspace_dim) / ambient_dim) / math.sqrt(1 + sigma**2))


def _check_params(algorithm, s_max, tau, p_max, corr_tol, chunk_size, point_norms="unit"):
    # numbers first, by name: a string tau ("0.1") was a NumPy TypeError naming no parameter
    tau = finite_number(tau, "tau", minimum=0.0, strict=False)
    corr_tol = finite_number(corr_tol, "corr_tol", minimum=0.0, strict=False)
    if point_norms not in POINT_NORMS:
        raise ValueError(f"point_norms must be one of {POINT_NORMS}, got {point_norms!r}")
    if point_norms == "raw" and corr_tol > 0:
        raise ValueError("corr_tol is a normalised-correlation threshold and has no scale-free meaning with "
                         "point_norms='raw' (atoms selected by raw correlation): use tau, or point_norms='unit'")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    for name, v in (("s_max", s_max), ("chunk_size", chunk_size)):
        if not is_whole(v) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if p_max is not None and (not is_whole(p_max) or p_max < 1):
        raise ValueError(f"p_max must be a positive integer or None, got {p_max!r}")
    if not corr_tol < 1:
        raise ValueError(f"corr_tol must be in [0, 1), got {corr_tol!r}")


def sparse_coefficients(
    X: ArrayLike,
    algorithm: str = "mp",
    s_max: int = 10,
    tau: float = 0.0,
    p_max: int | None = None,
    corr_tol: float = 0.0,
    chunk_size: int = 1024,
    progress: bool = False,
    point_norms: str = "unit",
) -> tuple[sp.csr_matrix, dict]:
    """Self-representation coefficients by OMP or MP, chunked.

    Args:
      X: ``(N, m)`` data, one point per row (scaled to unit norm here unless ``point_norms="raw"``).
      algorithm: ``"omp"`` (SSC-OMP) or ``"mp"`` (SSC-MP).
      s_max: maximum number of pursuit iterations per point.
      tau: residual-norm threshold.
      p_max: SSC-MP only: maximum number of nonzero coefficients (default ``s_max``).
      corr_tol: normalised-correlation threshold (0 disables; refused with ``point_norms="raw"``).
      chunk_size: points coded per compiled call (clipped to ``N``).
      progress: show a tqdm bar over chunks.
      point_norms: ``"unit"`` (the paper: every point scaled to unit norm, atoms selected by
        normalised correlation) or ``"raw"`` (the points as given and atoms selected by the raw
        correlation ``|<x_k, r>|``, which favours points of large norm: what the public SSC-OMP
        reference code, ``ChongYou/subspace-clustering``, does on its MNIST features; ``tau`` is
        then absolute in the data's units, and :func:`tau_from_noise` does not apply: it assumes
        unit-norm points. The reference also stops once ``||r||^2 < 1e-5 ||x||``, which ``tau = 0``
        leaves out: at its 5 steps in 500 dimensions that threshold is not reached on MNIST).

    Returns:
      ``(C, info)``: ``C`` ``(N, N)`` float32 csr with zero diagonal; ``info`` holds
      ``n_iter`` ``(N,)`` and ``residual_norm`` ``(N,)`` numpy arrays.
    """
    _check_params(algorithm, s_max, tau, p_max, corr_tol, chunk_size, point_norms)
    raw = point_norms == "raw"
    Xn = check_data(X, unit_norm=not raw)
    n = Xn.shape[0]
    B = int(min(chunk_size, n))
    D = jnp.asarray(Xn.T)
    tau_j, ctol_j = jnp.asarray(tau, jnp.float32), jnp.asarray(corr_tol, jnp.float32)
    n_chunks = -(-n // B)
    rows, cols, vals, iters, rnorms = [], [], [], [], []
    it = range(n_chunks)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=f"SSC-{algorithm.upper()} coding", unit="chunk")
    for c in it:
        idx = np.arange(c * B, (c + 1) * B)
        valid = idx < n
        idx = np.where(valid, idx, 0).astype(np.int32)
        Y = D.T[idx]
        if algorithm == "omp":
            out = omp_batch(D, Y, jnp.asarray(idx), tau_j, ctol_j, max_iter=int(s_max), raw_selection=raw)
        else:
            out = mp_batch(D, Y, jnp.asarray(idx), tau_j, ctol_j, max_iter=int(s_max),
                           max_nonzeros=int(p_max if p_max is not None else s_max), raw_selection=raw)
        support, coef, _, rnorm, n_iter = jax.device_get(out)
        support, coef = support[valid], coef[valid]
        keep = support >= 0
        rows.append(np.repeat(idx[valid], keep.sum(1)))
        cols.append(support[keep])
        vals.append(coef[keep])
        iters.append(n_iter[valid])
        rnorms.append(rnorm[valid])
    C = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n), dtype=np.float32
    )
    C.eliminate_zeros()
    return C, {"n_iter": np.concatenate(iters), "residual_norm": np.concatenate(rnorms)}


AFFINITY_NORMALIZATIONS = ("none", "l2", "binary")


def affinity_from_coefficients(C: sp.spmatrix | ArrayLike, normalize: str = "none") -> sp.csr_matrix:
    """The SSC affinity ``(N, N)`` float64 csr from the coefficient matrix ``C`` ``(N, N)``.

    * ``"none"``: ``A = |C| + |C|^T`` (the paper's affinity).
    * ``"l2"``: each row of ``C`` (one point's representation) is first scaled to unit
      Euclidean norm, as the authors' SSC-OMP code does before symmetrising (points whose
      representation has a large norm no longer dominate the graph); an all-zero row stays zero.
    * ``"binary"``: only the support counts, ``A = B + B^T`` with ``B_ij = 1`` where
      ``C_ij != 0`` (so ``A_ij`` is 0, 1 or 2). The subspace-detection guarantees of SSC-OMP /
      SSC-MP are statements about the support of ``C`` (no false discoveries), not its values.
      On very coherent data the values can ruin a good support: MP's first coefficient
      (``~<x_j, x_nn>``, 0.98 on MNIST scattering features) dwarfs the later ones, the weighted
      graph is close to a 1-nearest-neighbour graph, and spectral clustering cuts it into
      small tight groups instead of digits (see docs/greedy.md, MNIST section).
    """
    if normalize not in AFFINITY_NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {AFFINITY_NORMALIZATIONS}, got {normalize!r}")
    if C is None or (not sp.issparse(C) and np.ndim(C) != 2):
        raise ValueError(f"C must be a 2-D (N, N) coefficient matrix, got {type(C).__name__} of shape {np.shape(C)}")
    C = sp.csr_matrix(C)
    if C.shape[0] != C.shape[1]:
        raise ValueError(f"C must be square (N, N): one row of coefficients per point, got shape {C.shape}")
    if C.dtype.kind not in "iufb" or (C.nnz and not np.all(np.isfinite(C.data))):
        raise ValueError("C must hold finite real coefficients (NaN or infinite values give a NaN affinity)")
    absC = abs(C).astype(np.float64)
    absC.eliminate_zeros()
    if normalize == "l2":
        norms = np.sqrt(np.asarray(absC.multiply(absC).sum(axis=1)).ravel())
        absC = sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ absC
    elif normalize == "binary":
        absC.data[:] = 1.0
    return (absC + absC.T).tocsr()

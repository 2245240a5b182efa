"""Data for the clustering experiments: synthetic unions of subspaces and MNIST features."""

from __future__ import annotations

import os

import numpy as np

from jaxcomp.checks import is_whole
from jaxcomp.files import atomic_file, load_npz


def union_of_subspaces(
    ambient_dim: int = 200,
    subspace_dim: int = 20,
    n_subspaces: int = 3,
    intersection_dim: int = 0,
    rho: float = 5.0,
    sigma: float = 0.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Points on a union of subspaces that pairwise intersect in ``intersection_dim`` dims.

    The synthetic model of Tschannen & Bölcskei (after Heckel & Bölcskei): all subspaces
    share one random ``t``-dimensional subspace and have ``d - t`` further random (jointly
    orthonormal) directions each, so any two intersect in exactly ``t`` dimensions.
    ``n_l = round(rho * d)`` points per subspace, ``x = U a`` with ``a`` uniform on the unit
    sphere, plus noise ``e ~ N(0, sigma^2/m I_m)``, and finally unit-norm rows.

    Returns:
      ``(X (N, m) float32, labels (N,) int64)`` with ``N = n_subspaces * round(rho * d)``.
    """
    m, d, L, t = ambient_dim, subspace_dim, n_subspaces, intersection_dim
    for name, value, least in (("ambient_dim", m, 1), ("subspace_dim", d, 1), ("n_subspaces", L, 1),
                               ("intersection_dim", t, 0)):
        if not is_whole(value) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
    try:
        finite = bool(np.isfinite(float(rho)) and np.isfinite(float(sigma)))
    except (TypeError, ValueError):
        finite = False
    if not finite:
        raise ValueError(f"rho and sigma must be finite numbers, got rho={rho!r}, sigma={sigma!r}")
    if not 0 <= t <= d or d < 1:
        raise ValueError(f"need 0 <= intersection_dim <= subspace_dim, got t={t}, d={d}")
    if t + L * (d - t) > m:
        raise ValueError(f"ambient_dim {m} too small for {L} subspaces of dim {d} intersecting in {t}")
    if rho <= 0 or sigma < 0:
        raise ValueError("need rho > 0 and sigma >= 0")
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((m, t + L * (d - t))))
    common = Q[:, :t]
    n_l = max(int(round(rho * d)), 1)
    X, labels = [], []
    for i in range(L):
        U = np.concatenate([common, Q[:, t + i * (d - t): t + (i + 1) * (d - t)]], axis=1)
        a = rng.standard_normal((d, n_l))
        a /= np.linalg.norm(a, axis=0)
        pts = (U @ a).T + sigma / np.sqrt(m) * rng.standard_normal((n_l, m))
        X.append(pts)
        labels.append(np.full(n_l, i))
    X = np.concatenate(X)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.concatenate(labels).astype(np.int64)


def load_mnist(path: str, num_points: int, seed: int = 0, split: str = "train",
               return_indices: bool = False) -> tuple[np.ndarray, ...]:
    """Loads ``num_points`` random MNIST images from an ``.npz`` with ``x_train``/``y_train``
    (and ``x_test``/``y_test``; ``split="all"``: the 70,000 of both, train first).

    Returns:
      ``(images (n, 784) float32 in [0, 1], labels (n,) int64)``, and with ``return_indices``
      also the images' positions in the split, ``(n,) int64`` (a seed permutes them: two seeds that
      take the whole split hold the same images in different orders).

    Raises:
      FileNotFoundError: with the path and how to set it, when the file is missing.
      ValueError: bad split, too many points requested, or a file that is not a whole .npz with
        the split's arrays.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MNIST file not found: {path!r}. Put an npz with x_train/y_train there or pass "
            "--config.data.path=/path/to/mnist.npz"
        )
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown MNIST split {split!r}; expected train, test or all")
    parts = ("train", "test") if split == "all" else (split,)
    f = load_npz(path, [f"{a}_{p}" for p in parts for a in "xy"])  # ValueError naming a damaged file
    x = np.concatenate([f[f"x_{p}"] for p in parts])
    y = np.concatenate([f[f"y_{p}"] for p in parts])
    if num_points > len(x):
        raise ValueError(f"requested {num_points} MNIST points but the {split} split has {len(x)}")
    idx = np.random.default_rng(seed).permutation(len(x))[:num_points]
    images, labels = x[idx].reshape(num_points, -1).astype(np.float32) / 255.0, y[idx].astype(np.int64)
    return (images, labels, idx.astype(np.int64)) if return_indices else (images, labels)


def uncentred_pca(X: np.ndarray, dim: int) -> np.ndarray:
    """Projection of the rows of ``X`` ``(n, p)`` on their top ``dim`` *uncentred* principal
    directions (right singular vectors of ``X`` itself, so linear subspaces stay linear).

    Returns:
      ``(n, min(dim, n, p))`` float32.
    """
    X = np.asarray(X, np.float64)
    k = min(dim, X.shape[1], X.shape[0])
    if X.shape[1] <= X.shape[0]:  # eigenvectors of the (p, p) second-moment matrix: cheaper for n >> p
        _, V = np.linalg.eigh(X.T @ X)
        V = V[:, ::-1][:, :k]
    else:
        V = np.linalg.svd(X, full_matrices=False)[2][:k].T
    return (X @ V).astype(np.float32)


def scattering_vectors(images: np.ndarray, J: int = 3, L: int = 8, pad_to: int = 32, batch_size: int = 256,
                       cache_dir: str | None = None, progress: bool = False) -> np.ndarray:
    """Scattering feature vectors of ``(n, 784)`` (or ``(n, 28, 28)``) MNIST images, as in the
    subspace-clustering literature (You et al., CVPR 2016; their public ``run_mnist.py``).

    Images are zero-padded to ``pad_to x pad_to`` (the literature resizes to 32 x 32; padding keeps
    the digits' pixels), transformed by :func:`jaxcomp.cluster.scattering.scattering2d` (order 2,
    ``K = 217`` paths for ``J = 3, L = 8``, each ``4 x 4``), every path of every image divided by
    its largest absolute value (so each path lies in ``[-1, 1]``; all-zero paths stay zero), and
    flattened: ``(n, K * (pad_to // 2^J)^2)`` float32 (3,472 for the defaults).

    ``cache_dir``: if given, the vectors are stored there as ``.npy`` under a name hashed from the
    images and ``(J, L, pad_to)``, and read back on the next call.
    """
    import hashlib

    from jaxcomp.cluster.scattering import scattering_features

    x = np.asarray(images, np.float32)
    if x.ndim == 2:
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise ValueError(f"flat images must have a square number of pixels, got {x.shape[1]}")
        x = x.reshape(-1, side, side)
    if x.ndim != 3:
        raise ValueError(f"images must be (n, H*W) or (n, H, W), got shape {x.shape}")
    path = None
    if cache_dir:
        key = hashlib.sha1(x.tobytes() + repr((J, L, pad_to, x.shape)).encode()).hexdigest()[:16]
        path = os.path.join(cache_dir, f"scattering_J{J}_L{L}_{x.shape[0]}_{key}.npy")
        if os.path.isfile(path):
            return np.load(path)
    H, W = x.shape[1:]
    if pad_to < max(H, W):
        raise ValueError(f"pad_to={pad_to} is smaller than the images ({H}x{W})")
    ph, pw = pad_to - H, pad_to - W
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
    S = scattering_features(x, J, L, 2, batch_size=batch_size, progress=progress)  # (n, K, h, w)
    S = S.reshape(S.shape[0], S.shape[1], -1)
    peak = np.abs(S).max(axis=2, keepdims=True)
    S = (S / np.where(peak > 0, peak, 1.0)).reshape(S.shape[0], -1).astype(np.float32)
    if path:
        with atomic_file(path, makedirs=True) as f:
            np.save(f, S)
    return S


def mnist_features(images: np.ndarray, kind: str = "pca", dim: int = 500, seed: int = 0,
                   cache_dir: str | None = None, progress: bool = False) -> np.ndarray:
    """Fixed (unsupervised, label-free) features of ``(n, 784)`` images.

    * ``"pixels"``: the raw pixels.
    * ``"pca"``: pixels projected on their top ``dim`` principal directions (uncentred, so
      linear subspaces stay linear).
    * ``"scattering"``: :func:`scattering_vectors` (3,472-dim), then the same uncentred PCA to
      ``dim`` (the literature's 500).

    Returns:
      ``(n, min(dim, n_features))`` float32 (``(n, 784)`` for pixels).
    """
    if kind not in ("pixels", "pca", "scattering"):
        raise ValueError(f"unknown MNIST feature kind {kind!r}; expected pixels, pca or scattering")
    X = np.asarray(images, np.float64)
    if kind == "pixels":
        return X.astype(np.float32)
    if kind == "scattering":
        X = scattering_vectors(images, cache_dir=cache_dir, progress=progress)
    return uncentred_pca(X, dim)

"""Data for the clustering experiments: synthetic unions of subspaces and MNIST features."""

from __future__ import annotations

import os

import numpy as np


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


def load_mnist(path: str, num_points: int, seed: int = 0, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Loads ``num_points`` random MNIST images from an ``.npz`` with ``x_train``/``y_train``
    (and ``x_test``/``y_test``).

    Returns:
      ``(images (n, 784) float32 in [0, 1], labels (n,) int64)``.

    Raises:
      FileNotFoundError: with the path and how to set it, when the file is missing.
      ValueError: bad split or too many points requested.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"MNIST file not found: {path!r}. Put an npz with x_train/y_train there or pass "
            "--config.data.path=/path/to/mnist.npz"
        )
    if split not in ("train", "test", "all"):
        raise ValueError(f"unknown MNIST split {split!r}; expected train, test or all")
    with np.load(path) as f:
        if split == "all":
            x = np.concatenate([f["x_train"], f["x_test"]])
            y = np.concatenate([f["y_train"], f["y_test"]])
        else:
            x, y = f[f"x_{split}"], f[f"y_{split}"]
    if num_points > len(x):
        raise ValueError(f"requested {num_points} MNIST points but the {split} split has {len(x)}")
    idx = np.random.default_rng(seed).permutation(len(x))[:num_points]
    return x[idx].reshape(num_points, -1).astype(np.float32) / 255.0, y[idx].astype(np.int64)


def mnist_features(images: np.ndarray, kind: str = "pca", dim: int = 500, seed: int = 0) -> np.ndarray:
    """Fixed (unsupervised, label-free) features of ``(n, 784)`` images.

    * ``"pixels"``: the raw pixels.
    * ``"pca"``: pixels projected on their top ``dim`` principal directions (uncentred SVD,
      so linear subspaces stay linear).

    Returns:
      ``(n, min(dim, n_features))`` float32.
    """
    if kind not in ("pixels", "pca"):
        raise ValueError(f"unknown MNIST feature kind {kind!r}; expected pixels or pca")
    X = np.asarray(images, np.float64)
    if kind == "pixels":
        return X.astype(np.float32)
    k = min(dim, X.shape[1], X.shape[0])
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    return (X @ Vt[:k].T).astype(np.float32)

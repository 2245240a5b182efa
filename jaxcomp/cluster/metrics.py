"""Clustering metrics in numpy: accuracy / error under the best label matching, NMI, ARI."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import linear_sum_assignment


def _check_labels(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(labels_true)
    b = np.asarray(labels_pred)
    if a.ndim != 1 or b.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shapes {a.shape} and {b.shape}")
    if a.shape != b.shape:
        raise ValueError(f"mismatched shapes: labels_true {a.shape} vs labels_pred {b.shape}")
    if a.size == 0:
        raise ValueError("labels are empty")
    for name, x in (("labels_true", a), ("labels_pred", b)):  # labels are names: any hashable value but NaN
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise ValueError(f"{name} hold NaN or infinite values")
        if x.dtype.kind in "cV":
            raise ValueError(f"{name} must be integers, strings or other names, got dtype {x.dtype}")
    return a, b


def contingency(labels_true: ArrayLike, labels_pred: ArrayLike) -> np.ndarray:
    """``(n_true_classes, n_pred_clusters)`` int64 table of co-occurrence counts."""
    a, b = _check_labels(labels_true, labels_pred)
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), np.int64)
    np.add.at(table, (ia, ib), 1)
    return table


def clustering_accuracy(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Fraction of points correctly labelled under the best one-to-one label matching
    (Hungarian algorithm, ``scipy.optimize.linear_sum_assignment``)."""
    table = contingency(labels_true, labels_pred)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / table.sum())


def clustering_error(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """``1 - clustering_accuracy``: the clustering error (CE) of the subspace-clustering papers."""
    return 1.0 - clustering_accuracy(labels_true, labels_pred)


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """NMI with arithmetic-mean normalisation ``I(U,V) / ((H(U)+H(V))/2)`` (sklearn's default)."""
    table = contingency(labels_true, labels_pred).astype(np.float64)
    n = table.sum()
    hu, hv = _entropy(table.sum(1)), _entropy(table.sum(0))
    if hu == 0 or hv == 0:
        return 1.0 if hu == hv else 0.0
    nz = table > 0
    pij = table[nz] / n
    outer = np.outer(table.sum(1), table.sum(0))[nz] / n**2
    mi = float((pij * np.log(pij / outer)).sum())
    return max(mi, 0.0) / ((hu + hv) / 2)


def adjusted_rand_index(labels_true: ArrayLike, labels_pred: ArrayLike) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985)."""
    table = contingency(labels_true, labels_pred).astype(np.float64)
    n = table.sum()

    def comb2(x):
        return x * (x - 1) / 2

    sum_ij = comb2(table).sum()
    sum_a = comb2(table.sum(1)).sum()
    sum_b = comb2(table.sum(0)).sum()
    if n < 2:  # no pair to agree on: identical partitions by convention (as scikit-learn)
        return 1.0
    expected = sum_a * sum_b / comb2(n)
    max_index = (sum_a + sum_b) / 2
    if max_index == expected:
        return 1.0
    return float((sum_ij - expected) / (max_index - expected))


def all_metrics(labels_true: ArrayLike, labels_pred: ArrayLike) -> dict[str, float]:
    """``{"accuracy", "error", "nmi", "ari"}`` in one call."""
    acc = clustering_accuracy(labels_true, labels_pred)
    return {
        "accuracy": acc,
        "error": 1.0 - acc,
        "nmi": normalized_mutual_info(labels_true, labels_pred),
        "ari": adjusted_rand_index(labels_true, labels_pred),
    }

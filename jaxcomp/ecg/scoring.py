"""The challenge's score: F1 per class from the confusion matrix, and mean(F1_N, F1_A, F1_O).

CinC 2017 scored ``(F1_N + F1_A + F1_O) / 3``; the noisy class ``~`` is predicted and
counted in the confusion matrix but not averaged (the challenge's Fnoisy was reported
separately). ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)`` (0 when the class is absent and
never predicted).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from jaxcomp.ecg.data import CLASSES

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _class_indices(name: str, a, num_classes: int) -> np.ndarray:
    """``a`` as int64 class indices: integers, or class names ``"N", "A", "O", "~"`` (as
    ``predict`` returns them); fractional, non-finite or unknown values are refused."""
    a = np.asarray(a)
    if a.dtype.kind in "US":
        unknown = sorted(set(a.ravel().tolist()) - set(CLASSES))
        if unknown:
            raise ValueError(f"{name}: unknown class names {unknown[:3]}; expected some of {CLASSES}")
        return np.vectorize(CLASSES.index, otypes=[np.int64])(a) if a.size else a.astype(np.int64)
    if a.dtype.kind not in "biuf" or (a.dtype.kind == "f" and (not np.all(np.isfinite(a)) or np.any(a != np.round(a)))):
        raise ValueError(f"{name} must be class indices 0..{num_classes - 1} or class names {CLASSES}, "
                         f"got dtype {a.dtype}{' with fractional or non-finite values' if a.dtype.kind == 'f' else ''}")
    return a.astype(np.int64)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int = len(CLASSES)) -> np.ndarray:
    """``[K, K]`` int64 counts; rows are true classes, columns predictions. Labels and predictions
    are class indices or class names (``"N"``, ``"A"``, ``"O"``, ``"~"``)."""
    labels = _class_indices("labels", labels, num_classes)
    predictions = _class_indices("predictions", predictions, num_classes)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    for name, a in (("labels", labels), ("predictions", predictions)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} must be class indices in 0..{num_classes - 1}")
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes,
                                                                                               num_classes)


def f1_per_class(cm: np.ndarray) -> np.ndarray:
    """``[K]`` F1 of each class from a confusion matrix."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # = 2 TP + FP + FN
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1e-12), 0.0)


def challenge_f1(cm: np.ndarray) -> float:
    """The CinC 2017 score: mean of the F1 of N, A and O (``~`` not included), from a ``[4, 4]``
    confusion matrix (rows true N, A, O, ~)."""
    if np.shape(cm) != (len(CLASSES), len(CLASSES)):
        raise ValueError(f"challenge_f1 expects a {len(CLASSES)}x{len(CLASSES)} confusion matrix (N, A, O, ~), "
                         f"got shape {np.shape(cm)}")
    return float(np.mean(f1_per_class(cm)[:3]))


def score(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """``dict(f1=challenge F1, f1_N, f1_A, f1_O, f1_~, accuracy, confusion=[K, K] list)``; labels and
    predictions as class indices or names (see :func:`confusion_matrix`), at least one of each."""
    if np.size(labels) == 0:
        raise ValueError("score: no labels (an empty set has no F1)")
    cm = confusion_matrix(labels, predictions)
    per = f1_per_class(cm)
    out = {"f1": challenge_f1(cm)}
    out.update({f"f1_{c}": float(v) for c, v in zip(CLASSES, per)})
    out["accuracy"] = float(np.trace(cm) / max(cm.sum(), 1))
    out["confusion"] = cm.tolist()
    return out


def plot_confusion(cm: np.ndarray, ax: Axes | None = None, title: str = "", normalize: bool = True) -> Axes:
    """A confusion-matrix heat map with counts (rows normalised to recall when ``normalize``)."""
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    if ax is None:
        _, ax = plt.subplots(figsize=(3.6, 3.2))
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if shown[i, j] > 0.6 * shown.max() else "black", fontsize=9)
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title, fontsize=10)
    return ax

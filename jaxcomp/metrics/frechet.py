"""Fréchet distance between Gaussian fits of feature sets (the FID formula), and the features of
jaxcomp's own MNIST classifier, so that a distribution distance on digits needs no downloaded weights.

``frechet_distance(mu1, cov1, mu2, cov2) = |mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))``, with
``tr((C1 C2)^(1/2))`` computed as ``tr((C1^(1/2) C2 C1^(1/2))^(1/2))``: ``C1 C2`` and
``C1^(1/2) C2 C1^(1/2)`` are similar matrices (same eigenvalues), and the latter is symmetric
positive semi-definite, so two symmetric eigendecompositions replace the general ``sqrtm`` of
FID's reference code (no complex round-off to discard, no ``eps`` on a singular product: tiny
negative eigenvalues from round-off are clipped to zero).

:class:`MNISTFeatures` is the shipped ResNet-8 (``metrics/pretrained/mnist_classifier``; how it was
trained: ``metrics/pretrained/MODEL.md``), read at its global-average-pooled 64-d penultimate layer
(the input of its dense head), as FID reads Inception's pool3. Its numbers are comparable with each
other, not with FIDs of other networks.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

PRETRAINED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")
MNIST_CLASSIFIER = os.path.join(PRETRAINED, "mnist_classifier.msgpack")


def gaussian_stats(features: np.ndarray, stacklevel: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``(mean float64 [D], unbiased covariance float64 [D, D])`` of ``features [N, D]`` (N >= 2).
    Fewer samples than features (N <= D) warn: the covariance is then singular (rank N - 1), a
    Fréchet distance from it is far from the one of more samples, and a transposed ``[D, N]`` set
    looks just like it."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"gaussian_stats needs features [N >= 2, D], got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("gaussian_stats: the features are not all finite")
    if f.shape[0] <= f.shape[1]:
        warnings.warn(f"gaussian_stats: {f.shape[0]} samples of {f.shape[1]} features (N <= D): the covariance "
                      f"is singular; are the features transposed ([N, D] expected)?", stacklevel=stacklevel)
    return f.mean(0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    """The symmetric square root of a symmetric positive semi-definite matrix (negative round-off
    eigenvalues clipped to 0)."""
    w, v = np.linalg.eigh((c + c.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The Fréchet distance between ``N(mu1, cov1)`` and ``N(mu2, cov2)``, squared as FID reports it
    (the squared 2-Wasserstein distance): ``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))``.

    ``mu1, mu2``: means ``[D]``; ``cov1, cov2``: covariances ``[D, D]``, symmetric positive
    semi-definite (any float dtype; computed in float64). Returns a Python float >= 0 up to
    round-off. Raises ``ValueError`` for shapes that do not agree or non-finite statistics.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if d < 1 or mu2.shape != (d,) or cov1.shape != (d, d) or cov2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes mu1 {mu1.shape}, cov1 {cov1.shape}, mu2 {mu2.shape}, "
                         f"cov2 {cov2.shape} do not agree (need [D], [D, D], [D], [D, D])")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, cov1, cov2)):
        raise ValueError("frechet_distance: non-finite statistics")
    for name, c in (("cov1", cov1), ("cov2", cov2)):  # round-off may leave tiny negative eigenvalues
        scale = max(float(np.abs(c).max()), 1e-300)
        if not np.allclose(c, c.T, rtol=0.0, atol=1e-8 * scale) or np.linalg.eigvalsh(c).min() < -1e-6 * scale:
            raise ValueError(f"frechet_distance: {name} is not a covariance (symmetric positive semi-definite)")
    s1 = _sqrt_psd(cov1)
    cross = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(s1 @ cov2 @ s1), 0.0, None)))  # tr((C1 C2)^(1/2))
    return float(np.sum(np.square(mu1 - mu2)) + np.trace(cov1) + np.trace(cov2) - 2.0 * cross)


def frechet_distance_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance between the Gaussian fits (:func:`gaussian_stats`) of two feature sets
    ``[N, D]`` and ``[M, D]`` (N, M >= 2)."""
    return frechet_distance(*gaussian_stats(features_a, stacklevel=3), *gaussian_stats(features_b, stacklevel=3))


class MNISTFeatures:
    """The shipped MNIST classifier as a feature map: loaded once, jitted once for a fixed batch shape.

    Images are ``uint8 [N, 32, 32, 1]``: MNIST's 28x28 digits zero-padded by 2 pixels on each side,
    exactly ``np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))``; ``uint8 [N, 28, 28, 1]`` is padded so
    here. Anything else is refused with a ``ValueError``. They are normalised as the classifier's
    training batches were, ``(x / 255 - mean) / std`` with the training set's statistics recorded
    in the model's ``.json`` (``training.normalization``, written by ``experiments/export_model.py``).

    Args:
      path: an exported classification model (``.msgpack`` with its ``.json``) whose parameters are
        the Flax variables ``{"params", "batch_stats"}`` of a ``resnet*`` classifier; default the
        shipped one.
      batch_size: images per call of the jitted network (the last batch is zero-padded to it, so
        the function compiles once).
    """

    def __init__(self, path: str = MNIST_CLASSIFIER, batch_size: int = 500):
        import jax
        import jax.numpy as jnp

        from jaxcomp.checks import is_whole
        from jaxcomp.modelfile import ModelLoadError, load_model
        from jaxcomp.models import classifier

        if not is_whole(batch_size) or batch_size < 1:
            raise ValueError(f"MNISTFeatures: batch_size must be a positive integer, got {batch_size!r}")
        config, variables, notes = load_model(path, task="classification")
        norm = notes.get("normalization")
        if set(variables) != {"params", "batch_stats"} or not norm:
            raise ModelLoadError(f"{path}: not an exported batch-norm classifier with its normalization (make one "
                                 "with python -m experiments.export_model)")
        if not config.model.name.startswith("resnet"):
            raise ModelLoadError(f"{path}: a {config.model.name} model; MNISTFeatures reads resnet* classifiers")
        mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
        height, width, channels = norm["image_shape"]
        if channels != 1 or height != width or mean.shape != (1,) or std.shape != (1,):
            raise ModelLoadError(f"{path}: a model of {height}x{width}x{channels} images, not 1-channel digits")
        self.size, self.batch_size = int(height), int(batch_size)
        self.mean, self.std = mean, std
        self.notes = notes
        # the same network with an identity in place of the dense head: it returns the pooled features
        body = classifier(config.model.name, config.model.num_classes, shortcut=config.model.get("shortcut", "A"),
                          dense=lambda features, name=None: (lambda x: x))
        head = variables["params"]["head"]
        self.dim, self.num_classes = (int(n) for n in np.asarray(head["kernel"]).shape)

        def run(images):
            x = (images.astype(jnp.float32) / 255.0 - mean) / std
            feats = body.apply(variables, x, train=False)
            return feats, feats @ head["kernel"] + head["bias"]

        self._run = jax.jit(run)

    def _check(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 1:
            raise ValueError(f"MNISTFeatures takes uint8 [N, {self.size}, {self.size}, 1] (or [N, 28, 28, 1]) "
                             f"digits, got {images.dtype} {images.shape}")
        if images.shape[1:3] == (28, 28) and self.size == 32:
            images = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
        if images.shape[1:3] != (self.size, self.size):
            raise ValueError(f"MNISTFeatures takes {self.size}x{self.size} (or 28x28) digits, got "
                             f"{images.shape[1]}x{images.shape[2]}")
        return images

    def _outputs(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        images = self._check(images)
        feats, logits = [], []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i : i + self.batch_size]
            pad = self.batch_size - len(chunk)
            x = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)]) if pad else chunk
            f, lg = self._run(x)
            feats.append(np.asarray(f)[: len(chunk)])
            logits.append(np.asarray(lg)[: len(chunk)])
        if not feats:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.num_classes), np.float32)
        return np.concatenate(feats).astype(np.float32), np.concatenate(logits).astype(np.float32)

    def features(self, images: np.ndarray) -> np.ndarray:
        """Penultimate-layer features ``float32 [N, D]`` (D = 64) of ``uint8 [N, 32, 32, 1]`` or
        ``uint8 [N, 28, 28, 1]`` digits."""
        return self._outputs(images)[0]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted digits ``int32 [N]`` of ``uint8 [N, 32, 32, 1]`` or ``[N, 28, 28, 1]`` digits."""
        return np.argmax(self._outputs(images)[1], -1).astype(np.int32)

    def frechet(self, images_a: np.ndarray, images_b: np.ndarray) -> float:
        """The Fréchet distance between the Gaussian fits of the features of two digit sets
        (``uint8 [N, 32, 32, 1]`` and ``[M, 32, 32, 1]``, or 28x28; N, M >= 2)."""
        return frechet_distance_features(self.features(images_a), self.features(images_b))

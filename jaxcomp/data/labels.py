"""Images with label maps (selective generative compression): batches ``{"image", "semantic"}``.

Two sources of label maps, chosen by ``config.data.labels``:

* ``"tfds"``: a tfds dataset's own maps, e.g. ``cityscapes/semantic_segmentation`` whose examples
  hold ``image_left`` (``uint8 [1024, 2048, 3]``) and ``segmentation_label`` (``uint8
  [1024, 2048, 1]``, Cityscapes' 34 label ids), read through ``tfds.data_source`` (array_record,
  prepared beforehand; nothing is downloaded);
* ``"clusters"``: a local substitute that needs no download: every image is clustered on the host
  into ``K`` classes by k-means in colour and position (:func:`colour_clusters`; deterministic:
  fixed initialisation, fixed iterations, classes numbered by brightness). The classes are regions
  of similar colour, not objects: they have no semantics and mean nothing across images beyond
  "darker" and "brighter". They exercise what SC does mechanically (a map beside the image, a
  heatmap that zeroes the latent by class, synthesis of the zeroed regions from the map) but cannot
  show semantic synthesis (a road drawn as a road because the map says "road").

Label maps are cropped, resized (nearest) and flipped with their images by the same draws, so
batch ``step`` remains a function of ``(seed, step, process index)`` only, as for
:class:`~jaxcomp.data.ImageBatches` (whose images a labelled batch reproduces exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import ml_collections
import numpy as np
from PIL import Image

from jaxcomp.checks import is_whole
from jaxcomp.data.images import (
    DataError,
    ImageBatches,
    ImageSource,
    TfdsImageSource,
    describe_image,
    error_at,
    eval_batches_from_arrays,
    image_tiles,
    rgb_image,
    scale_image,
)

MAX_CLASSES = 256  # label maps are kept as uint8


def _kmeans_pp(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding, ``float64 [k, D]``."""
    centres = [points[int(rng.integers(len(points)))]]
    d2 = np.sum(np.square(points - centres[0]), 1)
    for _ in range(1, k):
        total = d2.sum()
        i = int(rng.choice(len(points), p=d2 / total)) if total > 0 else int(rng.integers(len(points)))
        centres.append(points[i])
        d2 = np.minimum(d2, np.sum(np.square(points - points[i]), 1))
    return np.stack(centres)


def _nearest(points: np.ndarray, centres: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre and the squared distance to it, for every point (no BLAS, so the
    same bits on every machine)."""
    labels = np.empty(len(points), np.int64)
    dist = np.empty(len(points), np.float64)
    for s in range(0, len(points), chunk):
        d = np.sum(np.square(points[s:s + chunk, None, :] - centres[None]), -1)
        labels[s:s + chunk] = np.argmin(d, 1)
        dist[s:s + chunk] = d[np.arange(len(d)), labels[s:s + chunk]]
    return labels, dist


def _features(rgb: np.ndarray, position_weight: float) -> np.ndarray:
    """``[H, W, 3]`` -> ``float64 [H*W, 5]``: colour in ``[0, 1]`` and the pixel centre's position
    divided by the longer side (so a downscaled copy has the same positions), times ``position_weight``."""
    h, w = rgb.shape[:2]
    side = float(max(h, w))
    yy, xx = np.meshgrid((np.arange(h) + 0.5) / side, (np.arange(w) + 0.5) / side, indexing="ij")
    pos = np.stack([yy, xx], -1).reshape(-1, 2) * position_weight
    return np.concatenate([rgb.reshape(-1, 3).astype(np.float64) / 255.0, pos], 1)


def majority_filter(labels: np.ndarray, k: int, radius: int) -> np.ndarray:
    """Each pixel takes the most frequent label of the ``(2 radius + 1)^2`` window around it (the
    window clipped at the edges; ties to the lower label): ``uint8 [H, W]``."""
    if not is_whole(radius) or not is_whole(k) or k < 1:
        raise ValueError(f"majority_filter: k (classes) and radius (pixels) must be integers, k >= 1; got k={k!r}, "
                         f"radius={radius!r}")
    if np.ndim(labels) != 2:
        raise ValueError(f"majority_filter: labels must be a label map [H, W], got shape {np.shape(labels)}")
    if radius <= 0:
        return labels
    h, w = labels.shape
    best = np.full((h, w), -1, np.int64)
    out = np.zeros((h, w), np.uint8)
    for c in range(k):
        integral = np.pad(np.cumsum(np.cumsum(labels == c, 0, dtype=np.int64), 1), ((1, 0), (1, 0)))
        y0, y1 = np.clip(np.arange(h) - radius, 0, h), np.clip(np.arange(h) + radius + 1, 0, h)
        x0, x1 = np.clip(np.arange(w) - radius, 0, w), np.clip(np.arange(w) + radius + 1, 0, w)
        votes = (integral[y1][:, x1] - integral[y0][:, x1] - integral[y1][:, x0] + integral[y0][:, x0])
        better = votes > best
        out[better], best[better] = c, votes[better]
    return out


def colour_clusters(image: np.ndarray, k: int, position_weight: float = 0.5, fit_side: int = 96,
                    iterations: int = 20, smooth: int = 2) -> np.ndarray:
    """A label map of ``image`` (``uint8 [H, W, 3]``) with ``k`` classes, ``uint8 [H, W]``.

    k-means in (r, g, b, y, x) fitted on a copy whose longer side is ``fit_side`` (box filter),
    seeded by k-means++ from a fixed generator, ``iterations`` Lloyd steps (an emptied cluster
    restarts at the point farthest from its centre); then every pixel of the full image takes its
    nearest centre, and a ``smooth``-radius majority filter removes the speckle of textured
    regions (segmentation maps are piecewise flat). Classes are numbered by the centres'
    brightness (0 = darkest). Deterministic: the same image always gives the same map.
    """
    if not 1 <= k <= MAX_CLASSES:
        raise DataError(f"colour clusters need 1 <= k <= {MAX_CLASSES}, got {k}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(f"colour clusters need a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    ratio = min(1.0, fit_side / max(h, w))
    small = image
    if ratio < 1.0:
        size = (max(1, round(w * ratio)), max(1, round(h * ratio)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.BOX))
    points = _features(small, position_weight)
    if len(points) < k:
        raise DataError(f"an image of {h}x{w} pixels cannot be clustered into {k} classes")
    centres = _kmeans_pp(points, k, np.random.default_rng(0))
    for _ in range(iterations):
        labels, dist = _nearest(points, centres)
        for c in range(k):
            members = labels == c
            if members.any():
                centres[c] = points[members].mean(0)
            else:  # restart an emptied cluster at the worst-fitted point
                far = int(np.argmax(dist))
                centres[c], dist[far] = points[far], 0.0
    brightness = centres[:, :3] @ np.asarray([0.299, 0.587, 0.114])
    order = np.lexsort((centres[:, 4], centres[:, 3], brightness))  # by brightness, then position
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(k)
    labels, _ = _nearest(_features(image, position_weight), centres)
    return majority_filter(rank[labels].reshape(h, w).astype(np.uint8), k, smooth)


class LabelledSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


class ClusterLabelSource:
    """``(image uint8 [H, W, 3], labels uint8 [H, W])`` pairs: the images of ``images`` and their
    :func:`colour_clusters` (computed on first use, kept when ``cache``)."""

    def __init__(self, images: ImageSource, k: int, position_weight: float = 0.5, cache: bool = True):
        self.images, self.k, self.position_weight = images, int(k), float(position_weight)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.images)

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from, for messages."""
        return describe_image(self.images, index)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image = self.images[index]
        if self._cache is not None and index in self._cache:
            return image, self._cache[index]
        labels = colour_clusters(image, self.k, self.position_weight)
        if self._cache is not None:
            self._cache[index] = labels
        return image, labels


class TfdsLabelledSource(TfdsImageSource):
    """Images and label maps of a tfds dataset (array_record, prepared beforehand): ``image_key``
    (``uint8 [H, W, 3]``) and ``label_key`` (an integer ``[H, W]`` or ``[H, W, 1]``) of every
    example, e.g. ``image_left`` and ``segmentation_label`` of ``cityscapes/semantic_segmentation``."""

    def __init__(self, name: str, split: str, data_dir: str | None = None, image_key: str = "image_left",
                 label_key: str = "segmentation_label"):
        super().__init__(name, split, data_dir, image_key)
        self.label_key = label_key

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        example = self.example(index, self.image_key, self.label_key)  # names data.tfds_*_key if one is missing
        image = rgb_image(example[self.image_key], self.describe(index))
        labels = np.asarray(example[self.label_key])
        if labels.ndim == 3 and labels.shape[-1] == 1:
            labels = labels[..., 0]
        return image, labels


def check_labels(labels: np.ndarray, shape: tuple[int, int], classes: int, outside: int = -1,
                 where: str = "label map") -> np.ndarray:
    """An integer label map of ``shape`` with values in ``[0, classes)`` as ``uint8 [H, W]``; values
    ``>= classes`` become ``outside`` if ``outside >= 0``, else a :class:`DataError`. ``classes`` is
    at most 256 (uint8 would wrap larger labels)."""
    if not is_whole(classes) or not 1 <= classes <= 256:
        raise DataError(f"{where}: the number of label classes must be an integer in [1, 256] (uint8 label "
                        f"maps), got {classes!r}")
    if outside >= classes:
        raise DataError(f"{where}: labels outside the classes map to {outside}, which is not one of {classes}")
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    if labels.shape != tuple(shape):
        raise DataError(f"{where}: label map of shape {labels.shape} does not match its image {tuple(shape)}")
    if labels.size and labels.min() < 0:
        raise DataError(f"{where}: negative labels")
    if labels.size and labels.max() >= classes:
        if outside < 0:
            raise DataError(f"{where}: label {int(labels.max())} >= data.label_classes={classes} "
                            "(set data.label_outside to a class to map such labels to)")
        labels = np.where(labels >= classes, outside, labels)
    return labels.astype(np.uint8)


def random_crop_pair(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, crop: int,
                     flip: bool = True, downscale: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~jaxcomp.data.random_crop` of an image and its label map ``uint8 [H, W]`` with the same
    draws, in the same order (so the image is exactly the one ``random_crop`` gives): the window is
    resized bicubic for the image and nearest for the labels, and both are flipped together."""
    h, w = image.shape[:2]
    lo, hi = downscale
    scale = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    if min(h, w) < crop:
        raise DataError(f"image of size {h}x{w} is smaller than the crop {crop} (remove it, or lower data.crop)")
    window = max(crop, min(int(round(crop / scale)), h, w))
    y = int(rng.integers(0, h - window + 1))
    x = int(rng.integers(0, w - window + 1))
    patch = image[y:y + window, x:x + window]
    lab = labels[y:y + window, x:x + window]
    if window != crop:
        patch = np.asarray(Image.fromarray(patch).resize((crop, crop), Image.BICUBIC))
        lab = np.asarray(Image.fromarray(lab).resize((crop, crop), Image.NEAREST))
    if flip and rng.random() < 0.5:
        patch, lab = patch[:, ::-1], lab[:, ::-1]
    return np.ascontiguousarray(patch), np.ascontiguousarray(lab)


class LabelledImageBatches(ImageBatches):
    """:class:`~jaxcomp.data.ImageBatches` of ``(image, labels)`` sources: training batches
    ``{"image": uint8 [B, crop, crop, 3], "semantic": int32 [B, crop, crop]}`` and evaluation tiles
    of both. ``classes`` / ``outside``: see :func:`check_labels`."""

    def __init__(self, train: LabelledSource, val: LabelledSource | None, classes: int, outside: int = -1,
                 **kwargs):
        if not 1 <= classes <= MAX_CLASSES:
            raise DataError(f"data.label_classes must be in [1, {MAX_CLASSES}], got {classes}")
        super().__init__(train, val, **kwargs)
        self.classes, self.outside = int(classes), int(outside)

    def _pair(self, source: LabelledSource, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels = source[index]
        return image, check_labels(labels, image.shape[:2], self.classes, self.outside, describe_image(source, index))

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step, self.process_index])
        idx = rng.integers(0, len(self.train), self.local_batch_size)
        pairs = []
        for i in idx:
            try:
                pairs.append(random_crop_pair(*self._pair(self.train, int(i)), rng, self.crop, self.flip,
                                              self.downscale))
            except DataError as e:  # e.g. an image smaller than the crop: say which
                raise error_at(describe_image(self.train, int(i)), e) from e
        return {"image": np.stack([p[0] for p in pairs]),
                "semantic": np.stack([p[1] for p in pairs]).astype(np.int32)}

    def eval_tiles(self) -> np.ndarray:
        return self.eval_arrays()["image"]

    def eval_arrays(self) -> dict[str, np.ndarray]:
        """All validation tiles: ``image uint8 [N, t, t, 3]`` and ``semantic int32 [N, t, t]``."""
        t = self.eval_crop
        if self.val is None or len(self.val) == 0:
            return {"image": np.zeros((0, t, t, 3), np.uint8), "semantic": np.zeros((0, t, t), np.int32)}
        images, labels = [], []
        for i in range(len(self.val)):
            image, lab = self._pair(self.val, i)
            # at the evaluation scale, labels by nearest neighbour (never a blend of two classes)
            image, lab = scale_image(image, self.eval_downscale), scale_image(lab, self.eval_downscale, Image.NEAREST)
            images.append(image_tiles(image, t))
            labels.append(image_tiles(lab[..., None], t)[..., 0].astype(np.int32))
        return {"image": np.concatenate(images), "semantic": np.concatenate(labels)}

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        return eval_batches_from_arrays(self.eval_arrays(), batch_size, self.process_index, self.process_count)


def build_labelled_data(data: ml_collections.ConfigDict,
                        image_sources: Callable[[ml_collections.ConfigDict], tuple[ImageSource, ImageSource | None]],
                        process_index: int = 0, process_count: int = 1) -> LabelledImageBatches:
    """:class:`LabelledImageBatches` from ``config.data`` with ``labels`` set (see the module
    docstring); ``image_sources(data)`` gives the train / validation images for ``"clusters"``."""
    kind, classes = data.labels, int(data.get("label_classes", 0))
    if kind == "tfds":
        if data.source != "tfds":
            raise DataError("data.labels='tfds' reads a tfds dataset's label maps: set data.source='tfds' "
                            "(or data.labels='clusters' for colour clusters of any images)")

        def source(split: str) -> TfdsLabelledSource:
            return TfdsLabelledSource(data.tfds_name, split, data.tfds_data_dir,
                                      data.get("tfds_image_key", "image"), data.get("tfds_label_key", "label"))

        train = source(data.tfds_train_split)
        val = source(data.tfds_val_split) if data.tfds_val_split else None
    elif kind == "clusters":
        train_images, val_images = image_sources(data)
        position = float(data.get("cluster_position", 0.5))
        cache = bool(data.get("cache", True))
        train = ClusterLabelSource(train_images, classes, position, cache)
        val = ClusterLabelSource(val_images, classes, position, cache) if val_images is not None else None
    else:
        raise DataError(f"unknown data.labels {kind!r}; use 'tfds' or 'clusters' (or '' for images alone)")
    return LabelledImageBatches(
        train, val, classes=classes, outside=int(data.get("label_outside", -1)), batch_size=data.batch_size,
        crop=data.crop, flip=data.flip, downscale=tuple(data.downscale), eval_crop=data.eval_crop, seed=data.seed,
        process_index=process_index, process_count=process_count, eval_downscale=data.get("eval_downscale", 1.0),
    )


__all__ = [
    "ClusterLabelSource", "LabelledImageBatches", "TfdsLabelledSource", "build_labelled_data", "check_labels",
    "colour_clusters", "random_crop_pair",
]

"""Labelled images for classifiers: scikit-learn's digits (the embedded default), MNIST from a local
``.npz``, CIFAR-10/100 through tfds; deterministic, augmented training batches.

Arrays are ``uint8 [N, H, W, C]`` images and ``int32 [N]`` labels in memory. Batches are
``{'image': float32 [B, H, W, C] (normalised by the training set's per-channel mean and std),
'label': int32 [B]}``; batch ``step`` of host ``p`` is a pure function of ``(seed, step, p)``:
the examples follow a fresh permutation of the training set every epoch, and the augmentation
(random crop of a zero-padded image, optional horizontal flip) draws from
``default_rng([seed, step, p])``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jaxcomp.data.images import DataError, eval_batches_from_arrays, prefetch_batches
from jaxcomp.files import load_npz

if TYPE_CHECKING:
    import jax

SOURCES = ("digits", "mnist", "tfds", "digit_scenes", "voc", "tfds_stream")
AUGMENTATIONS = ("none", "shift", "crop_flip", "shift_device", "crop_flip_device")


def load_digits_arrays(split: str, num_test: int = 497) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 handwritten digits (UCI, 8x8, 17 gray levels) as ``uint8 [N, 8, 8, 1]``.

    A fixed, class-stratified hold-out of ``num_test`` images (seeded, independent of any run
    seed) is the ``test`` split; the other 1300 are ``train``; ``all`` is everything.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = data.target.astype(np.int32)
    if split == "all":
        return images, labels
    test = _stratified_subset(labels, num_test, seed=1234)
    mask = np.zeros(len(labels), bool)
    mask[test] = True
    if split == "test":
        return images[mask], labels[mask]
    if split == "train":
        return images[~mask], labels[~mask]
    raise DataError(f"unknown digits split {split!r}; use 'train', 'test' or 'all'")


def check_classification_arrays(images: np.ndarray, labels: np.ndarray,
                                where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 [N, H, W, C], int32 [N])`` from images ``[N, H, W]`` or ``[N, H, W, 1 | 3]`` and class
    indices ``[N]`` (or ``[N, 1]``, as Keras' CIFAR files) of whole numbers >= 0; anything else (a
    channels-first or flattened layout, RGBA, one-hot or fractional or negative labels, a count
    mismatch) is a :class:`DataError` naming ``where`` (the file or dataset) and what was found."""
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        hint = ""
        if images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
            hint = " (channels first? store them as [N, H, W, C])"
        elif images.ndim == 2:
            hint = " (flattened? store them as [N, H, W])"
        raise DataError(f"{where}: expected uint8 images [N, H, W] or [N, H, W, 1 or 3], got "
                        f"{images.dtype} {images.shape}{hint}")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{where}: expected class indices [N], got labels of shape {labels.shape}"
                        + (" (one-hot? store the class index of each example)" if labels.ndim == 2 else ""))
    if len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if labels.dtype.kind not in "iub" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        odd = labels[labels != np.round(labels)] if labels.dtype.kind == "f" else labels
        raise DataError(f"{where}: labels must be whole class indices, got {labels.dtype} values such as "
                        f"{odd[:3].tolist()}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{where}: labels must be class indices 0..K-1, got {labels.min()} (labels 1..K? subtract 1)")
    return images, labels.astype(np.int32)


def load_mnist_arrays(path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from an ``.npz`` with ``x_train, y_train, x_test, y_test`` (the Keras layout):
    ``uint8 [N, 28, 28, 1]``, ``int32 [N]``."""
    if not path:
        raise DataError("data.source='mnist' needs data.path, an .npz with x_train/y_train/x_test/y_test")
    if not os.path.isfile(path):
        raise DataError(f"MNIST file not found: {path!r}. Put an .npz with x_train/y_train/x_test/y_test there "
                        "(the Keras mnist.npz) or pass --config.data.path=/path/to/mnist.npz")
    if split not in ("train", "test"):
        raise DataError(f"unknown MNIST split {split!r}; use 'train' or 'test'")
    try:
        arrays = load_npz(path, [f"x_{split}", f"y_{split}"])
    except ValueError as e:  # not an .npz, truncated, or without the split's arrays
        raise DataError(str(e)) from e
    return check_classification_arrays(arrays[f"x_{split}"], arrays[f"y_{split}"], f"{path} ({split} split)")


def load_tfds_arrays(name: str, split: str, data_dir: str = "") -> tuple[np.ndarray, np.ndarray]:
    """A prepared tfds image-classification dataset (e.g. ``cifar10``, ``cifar100``) read into memory
    through ``tfds.data_source`` (array_record; no TensorFlow, no download)."""
    from jaxcomp.data.images import open_tfds

    source = open_tfds(name, split, data_dir)
    where = f"tfds dataset {name!r} split {split!r}"
    n = len(source)
    if not n:
        raise DataError(f"{where} has no examples")
    first = source[0]
    missing = [key for key in ("image", "label") if key not in first]
    if missing:
        raise DataError(f"{where}: its examples have no {' or '.join(repr(k) for k in missing)} feature (they have "
                        f"{', '.join(repr(k) for k in first)}); a classification dataset needs 'image' and 'label'")
    shape = np.asarray(first["image"]).shape
    images = np.empty((n, *shape), np.uint8)
    labels = np.empty(n, np.int64)
    for i in tqdm(range(n), desc=f"reading {name}:{split}", mininterval=5.0, leave=False):
        record = source[i]
        image = np.asarray(record["image"])
        if image.shape != shape or image.dtype != np.uint8:
            raise DataError(f"{where}: example {i} is an image of {image.dtype} {image.shape}, example 0 of uint8 "
                            f"{shape}; an in-memory classification dataset needs images of one size (resize them "
                            f"when preparing it, or use data.source='tfds_stream' with data.resize)")
        label = np.asarray(record["label"])
        if label.ndim:
            raise DataError(f"{where}: example {i} has a label of shape {label.shape}; expected one class index")
        images[i], labels[i] = image, label
    return check_classification_arrays(images, labels, where)


def downsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor x factor`` pixel blocks: ``uint8 [N, H, W, C] -> uint8 [N, H/f, W/f, C]``."""
    if factor <= 1:
        return images
    n, h, w, c = images.shape
    if h % factor or w % factor:
        raise DataError(f"data.downsample={factor} does not divide the image size {h}x{w}")
    blocks = images.reshape(n, h // factor, factor, w // factor, factor, c).astype(np.float32)
    return np.round(blocks.mean(axis=(2, 4))).astype(np.uint8)


def pad_images(images: np.ndarray, size: int) -> np.ndarray:
    """Centre ``uint8 [N, H, W, C]`` images in ``size x size`` zeros: ``uint8 [N, size, size, C]``
    (MNIST to 32: ``np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))``; an odd margin puts the extra row
    or column at the bottom / right)."""
    n, h, w, c = images.shape
    if size < max(h, w):
        raise DataError(f"data.pad_to={size} is smaller than the {h}x{w} images")
    top, left = (size - h) // 2, (size - w) // 2
    return np.pad(images, ((0, 0), (top, size - h - top), (left, size - w - left), (0, 0)))


def _stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of ``size`` examples with the classes as balanced as possible (sorted)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    picked: list[int] = []
    depth = 0
    while len(picked) < size:
        added = False
        for idx in per_class:
            if depth < len(idx) and len(picked) < size:
                picked.append(int(idx[depth]))
                added = True
        if not added:
            break
        depth += 1
    return np.sort(np.asarray(picked, np.int64))


def noisy_labels(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> np.ndarray:
    """Symmetric label noise: ``round(fraction * N)`` examples (chosen by ``seed``) get a different
    class drawn uniformly from the other ``num_classes - 1``. ``int [N] -> int32 [N]``."""
    if not 0.0 <= fraction <= 1.0:
        raise DataError(f"data.label_noise={fraction} must be a fraction in [0, 1]")
    rng = np.random.default_rng([seed, 7])
    labels = np.asarray(labels, np.int32).copy()
    idx = rng.permutation(len(labels))[: int(round(fraction * len(labels)))]
    labels[idx] = (labels[idx] + rng.integers(1, num_classes, len(idx))) % num_classes
    return labels


def augment(images: np.ndarray, rng: np.random.Generator, kind: str, pad: int) -> np.ndarray:
    """Random crops of zero-padded images (``shift``), plus horizontal flips (``crop_flip``).

    ``uint8 [B, H, W, C] -> uint8 [B, H, W, C]``; ``none`` returns the input.
    """
    if kind == "none" or (pad == 0 and kind == "shift"):
        return images
    b, h, w, _ = images.shape
    out = images
    if pad:
        padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        ys = rng.integers(0, 2 * pad + 1, b)
        xs = rng.integers(0, 2 * pad + 1, b)
        out = np.stack([padded[i, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(ys, xs))])
    if kind == "crop_flip":
        flip = rng.random(b) < 0.5
        out = np.where(flip[:, None, None, None], out[:, :, ::-1], out)
    return out


def device_augment(images: jax.Array, key: jax.Array, pad: int, flip: bool) -> jax.Array:
    """Random ``H x W`` crops of images already zero-padded by ``pad`` (and normalised), plus
    horizontal flips with probability 1/2 when ``flip``: the on-device half of the
    ``*_device`` augmentations, pure jax (jit it, or call it inside a jitted train step).

    ``float32 [B, H + 2 pad, W + 2 pad, C] -> float32 [B, H, W, C]``; ``key`` a jax PRNG key.
    Each example draws its own offsets (uniform over the ``(2 pad + 1)^2`` windows) and flip.
    """
    import jax
    import jax.numpy as jnp

    if images.ndim != 4:
        raise ValueError(f"device_augment expects images [B, H, W, C], got shape {images.shape}")
    b, hp, wp, c = images.shape
    h, w = hp - 2 * pad, wp - 2 * pad
    if h < 1 or w < 1:
        raise ValueError(f"device_augment: images {hp}x{wp} are too small to remove a padding of {pad}")
    k_y, k_x, k_f = jax.random.split(key, 3)
    ys = jax.random.randint(k_y, (b,), 0, 2 * pad + 1)
    xs = jax.random.randint(k_x, (b,), 0, 2 * pad + 1)
    crop = jax.vmap(lambda im, y, x: jax.lax.dynamic_slice(im, (y, x, 0), (h, w, c)))
    out = crop(images, ys, xs)
    if flip:
        flips = jax.random.bernoulli(k_f, 0.5, (b,))
        out = jnp.where(flips[:, None, None, None], out[:, :, ::-1], out)
    return out


class ClassificationBatches:
    """Training and evaluation batches from in-memory labelled images.

    Args:
      train, val: ``(images uint8 [N, H, W, C], labels int [N])``; ``val`` may be ``None``.
        Images may also be ``float32`` (e.g. a codec's quantized latents ``[N, h, w, C]``): they are
        standardised per channel without the ``/ 255``. Labels may also be dense, ``int [N, ...]``
        (per-pixel class maps for segmentation; then ``augment`` must be ``"none"``, since the
        crops and flips would not move the maps).
      batch_size: global batch size (each host makes ``batch_size // process_count``).
      augment, pad: see :func:`augment`; ``shift_device`` / ``crop_flip_device`` do the same
        crops (and flips) on the accelerator instead: training batches then hold the normalised,
        zero-padded, un-augmented images ``float32 [B, H + 2 pad, W + 2 pad, C]`` (gathered from
        padded copies kept in memory) and the task calls :func:`device_augment` inside its jitted
        step (:class:`jaxcomp.distill.task.ClassificationTask` does).
      seed: base seed of the epoch permutations and the augmentation.
      num_classes: number of classes (default: ``max label + 1`` of the union).
      normalize: ``False`` hands the images on as ``float32`` values unchanged (a task that
        normalises in its own graph, e.g. :class:`jaxcomp.vision.UnderstandingTask`).
    """

    def __init__(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None,
                 batch_size: int, augment: str = "none", pad: int = 0, seed: int = 0,
                 num_classes: int | None = None, process_index: int = 0, process_count: int = 1,
                 normalize: bool = True):
        x, y = train
        if augment not in AUGMENTATIONS:
            raise DataError(f"unknown data.augment {augment!r}; use one of {', '.join(AUGMENTATIONS)}")
        if len(x) == 0 or len(x) != len(y):
            raise DataError(f"need a non-empty training set with one label per image, got {len(x)} images, "
                            f"{len(y)} labels")
        if batch_size % process_count:
            raise DataError(f"global batch size {batch_size} is not divisible by {process_count} hosts")
        if np.ndim(y) > 1 and augment != "none":
            raise DataError(f"data.augment={augment!r} would move the images but not their per-pixel labels; "
                            "use augment='none' with dense labels")
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise DataError(f"images must be uint8 or float, got {x.dtype}")
        self.scale = 255.0 if x.dtype == np.uint8 else 1.0
        self.train_images, self.train_labels = x, np.asarray(y, np.int32)
        self.val = None if val is None else (val[0], np.asarray(val[1], np.int32))
        self.batch_size, self.local_batch_size = batch_size, batch_size // process_count
        self.augment, self.pad, self.seed = augment, pad, seed
        self._padded = None
        if augment.endswith("_device"):
            if np.ndim(y) > 1 or pad < 1:
                raise DataError(f"data.augment={augment!r} needs class labels and data.pad >= 1, got pad={pad}")
            self._padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        self.process_index, self.process_count = process_index, process_count
        labels = self.train_labels if self.val is None else np.concatenate([self.train_labels, self.val[1]])
        self.num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
        if normalize:
            pixels = x.reshape(-1, x.shape[-1]).astype(np.float64) / self.scale
            self.mean = pixels.mean(0).astype(np.float32)
            self.std = np.maximum(pixels.std(0), 1e-3).astype(np.float32)
        else:  # identity
            self.scale = 1.0
            self.mean, self.std = np.zeros(x.shape[-1], np.float32), np.ones(x.shape[-1], np.float32)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.train_images.shape[1:])

    def normalize(self, images: np.ndarray) -> np.ndarray:
        """``uint8 (or float) [..., C] -> float32`` standardised by the training set's per-channel statistics."""
        return (images.astype(np.float32) / np.float32(self.scale) - self.mean) / self.std

    def _indices(self, step: int) -> np.ndarray:
        n, b = len(self.train_labels), self.batch_size
        start = step * b + self.process_index * self.local_batch_size
        positions = np.arange(start, start + self.local_batch_size)
        epochs, offsets = positions // n, positions % n
        out = np.empty(len(positions), np.int64)
        for epoch in np.unique(epochs):
            perm = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
            out[epochs == epoch] = perm[offsets[epochs == epoch]]
        return out

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """This host's part of global batch ``step``: ``image float32 [B, H, W, C]``, ``label int32 [B]``,
        ``index int32 [B]`` (each example's position in the training set: per-example keys, e.g. DKPP's)."""
        idx = self._indices(step)
        index = np.asarray(idx, np.int32)
        if self._padded is not None:  # augmented on the device (device_augment)
            return {"image": self.normalize(self._padded[idx]), "label": self.train_labels[idx], "index": index}
        rng = np.random.default_rng([self.seed, step, self.process_index, 1])
        images = augment(self.train_images[idx], rng, self.augment, self.pad)
        return {"image": self.normalize(images), "label": self.train_labels[idx], "index": index}

    def train_batches(self, start_step: int = 0, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        return prefetch_batches(self.train_batch, start_step, prefetch)

    def eval_arrays(self) -> dict[str, np.ndarray]:
        """All validation examples (normalised), ``image float32 [N, H, W, C]``, ``label int32 [N]``."""
        if self.val is None:
            return {"image": np.zeros((0, *self.image_shape), np.float32), "label": np.zeros(0, np.int32)}
        return {"image": self.normalize(self.val[0]), "label": self.val[1]}

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Fixed-shape validation batches with a boolean ``valid [B]`` mask on the padded tail."""
        return eval_batches_from_arrays(self.eval_arrays(), batch_size, self.process_index, self.process_count)


def build_classification_data(data: ml_collections.ConfigDict, process_index: int | None = None,
                              process_count: int | None = None) -> ClassificationBatches:
    """Batches from a ``config.data`` block.

    ``source``: ``digits`` (scikit-learn's, shipped with the dependency), ``mnist`` (``path`` to an
    npz), ``tfds`` (``tfds_name`` e.g. ``cifar100``, ``tfds_train_split``, ``tfds_val_split``,
    ``tfds_data_dir``). ``train_size`` > 0 keeps a fixed class-balanced subset of the training
    split (chosen by ``subset_seed``, the same for every run); ``val_size`` > 0 likewise for the
    validation split. ``train_first`` > 0 keeps the first N training examples instead.
    MNIST only: ``holdout_last`` > 0 removes the last N examples of the training split from the
    training pool; with ``eval_on="holdout"`` they are the evaluation set (a validation split
    for choosing settings) instead of the test split. ``label_noise`` (a fraction) replaces that
    share of the training labels by other classes (:func:`noisy_labels`, fixed by ``subset_seed``).
    ``downsample`` > 1 averages pixel blocks (cheaper CPU experiments); ``pad_to`` > 0 zero-pads the
    images to ``pad_to`` pixels a side (:func:`pad_images`). Also
    reads ``batch_size``, ``augment``, ``pad``, ``seed``.
    """
    import jax

    source = data.source
    if source == "tfds_stream":  # ImageNet-size tfds data, read per batch (understanding, ICLR'18)
        from jaxcomp.vision.data import TfdsStreamBatches

        return TfdsStreamBatches(data, jax.process_index() if process_index is None else process_index,
                                 jax.process_count() if process_count is None else process_count)
    if source in ("digit_scenes", "voc"):  # understanding on compressed representations (ICLR'18)
        from jaxcomp.vision.data import understanding_arrays

        train, val = understanding_arrays(data, "train"), understanding_arrays(data, "val")
        return ClassificationBatches(
            train, val, data.batch_size, augment=data.get("augment", "none"), seed=data.get("seed", 0),
            num_classes=data.get("num_classes", None) or None, normalize=data.get("normalize", True),
            process_index=jax.process_index() if process_index is None else process_index,
            process_count=jax.process_count() if process_count is None else process_count)
    if source == "digits":
        train, val = load_digits_arrays("train"), load_digits_arrays("test")
    elif source == "mnist":
        train, val = load_mnist_arrays(data.path, "train"), load_mnist_arrays(data.path, "test")
        holdout, eval_on = data.get("holdout_last", 0), data.get("eval_on", "test")
        if eval_on not in ("test", "holdout") or (eval_on == "holdout" and not holdout):
            raise DataError(f"data.eval_on={eval_on!r}: use 'test', or 'holdout' with data.holdout_last > 0")
        if holdout:  # a validation split carved from the end of the training split
            if not 0 < holdout < len(train[1]):
                raise DataError(f"data.holdout_last={holdout} must be between 1 and {len(train[1]) - 1} (the training "
                                f"split has {len(train[1])} examples)")
            held = (train[0][-holdout:], train[1][-holdout:])
            train = (train[0][:-holdout], train[1][:-holdout])
            if eval_on == "holdout":
                val = held
    elif source == "tfds":
        if not data.get("tfds_name"):
            raise DataError("data.source='tfds' needs data.tfds_name (e.g. cifar10, cifar100)")
        train = load_tfds_arrays(data.tfds_name, data.get("tfds_train_split", "train"), data.get("tfds_data_dir", ""))
        val_split = data.get("tfds_val_split", "test")
        val = load_tfds_arrays(data.tfds_name, val_split, data.get("tfds_data_dir", "")) if val_split else None
    else:
        raise DataError(f"unknown data.source {source!r} for classification; use one of {', '.join(SOURCES)}")
    num_classes = int(max(train[1].max(), -1 if val is None else val[1].max())) + 1
    subset_seed = data.get("subset_seed", 0)
    if data.get("train_size", 0):
        if data.train_size > len(train[1]):
            raise DataError(f"data.train_size={data.train_size} exceeds the {len(train[1])} training examples")
        idx = _stratified_subset(train[1], data.train_size, subset_seed)
        train = (train[0][idx], train[1][idx])
    if val is not None and data.get("val_size", 0) and data.val_size < len(val[1]):
        idx = _stratified_subset(val[1], data.val_size, subset_seed + 1)
        val = (val[0][idx], val[1][idx])
    if data.get("train_first", 0):  # the first N training examples (e.g. MNIST's x_train[:50000])
        if data.get("train_size", 0) or data.train_first > len(train[1]):
            raise DataError(f"data.train_first={data.train_first} needs data.train_size=0 and at most the "
                            f"{len(train[1])} training examples")
        train = (train[0][: data.train_first], train[1][: data.train_first])
    if data.get("label_noise", 0.0):
        train = (train[0], noisy_labels(train[1], data.label_noise, num_classes, subset_seed))
    factor = data.get("downsample", 1)
    train = (downsample(train[0], factor), train[1])
    val = None if val is None else (downsample(val[0], factor), val[1])
    if data.get("pad_to", 0):  # zero-pad to pad_to x pad_to (MNIST 28 -> 32, as DPLC's digits)
        train = (pad_images(train[0], data.pad_to), train[1])
        val = None if val is None else (pad_images(val[0], data.pad_to), val[1])
    return ClassificationBatches(
        train, val, data.batch_size, augment=data.get("augment", "none"), pad=data.get("pad", 0),
        seed=data.get("seed", 0), num_classes=num_classes,
        process_index=jax.process_index() if process_index is None else process_index,
        process_count=jax.process_count() if process_count is None else process_count,
    )

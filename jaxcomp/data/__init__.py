"""Datasets as numpy batch iterators: local folders, tfds, and photos shipped with the package."""

from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from jaxcomp.data.images import (
    SAMPLES_DIR,
    ArrayImageSource,
    DataError,
    ImageBatches,
    ImageFolderSource,
    ResizedSource,
    TfdsImageSource,
    benchmark_image_paths,
    centre_crop,
    eval_batches_from_arrays,
    held_out_names,
    image_tiles,
    list_images,
    load_image,
    random_crop,
    resize_centre_crop,
    sample_image_paths,
    sample_roles,
    split_files,
)

__all__ = [
    "SAMPLES_DIR", "ArrayImageSource", "DataError", "ResizedSource", "mnist_images", "resize_centre_crop",
    "ImageBatches", "ImageFolderSource", "TfdsImageSource",
    "benchmark_image_paths", "build_image_data", "centre_crop", "eval_batches_from_arrays", "image_tiles",
    "list_images", "load_image", "random_crop", "sample_image_paths", "split_files", "held_out_names",
    "sample_roles",
]


def _split(files: list[str], data: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
    if data.get("val_path"):
        return files, list_images(data.val_path, warn_nested=True)
    holdout = data.get("holdout", "hash")
    if data.source == "folder" and holdout in ("samples", "samples_val"):
        # the shipped photos' originals never train; "samples_val": only the "val" ones validate and
        # the "test" ones are never read (samples/splits.json); "samples": all of them validate
        if holdout == "samples_val":
            test = held_out_names("test")
            files = [f for f in files if os.path.basename(f) not in test]
        shipped = held_out_names("val" if holdout == "samples_val" else None)
        val = [f for f in files if os.path.basename(f) in shipped]
        if val and len(val) < len(files):
            return [f for f in files if f not in val], val
    elif holdout not in ("samples", "samples_val", "hash"):
        raise DataError(f"data.holdout must be 'samples', 'samples_val' or 'hash', not {data.holdout!r}")
    return split_files(files, data.num_val)


def build_image_data(data: ml_collections.ConfigDict) -> ImageBatches:
    """Builds :class:`ImageBatches` from a ``config.data`` block (with ``data.labels`` set:
    :class:`~jaxcomp.data.labels.LabelledImageBatches`, images with label maps).

    ``data.source`` picks where images come from:
      * ``"samples"`` — the photos shipped inside the package;
      * ``"folder"`` — ``data.path``; validation images are ``data.val_path`` if given,
        else (``data.holdout="samples"``) the images named like the photos the package
        ships, so that anything evaluated on the shipped photos is evaluated on held-out
        images (``"samples_val"``: only those of the validation role validate, and those of
        the test role are never read: ``samples/splits.json``, :func:`sample_roles`); else
        (``"hash"``, or no such names) ``data.num_val`` images chosen by a
        stable hash of their names;
      * ``"mnist"`` — the Keras ``mnist.npz`` at ``data.path``, zero-padded to ``data.pad_to``
        pixels a side (grayscale, C = 1): training images ``x_train[:50000]``, validation
        ``x_train[50000:]`` (the first ``data.num_val`` of them when > 0); the 10k test images
        are never read by training (:func:`mnist_images` gives them to evaluations);
      * ``"digit_scenes"`` — the MNIST-on-photos scenes of :mod:`jaxcomp.data.digit_scenes`
        (``data.kind``, ``size``, ``num_train``, ``num_val``, ``mnist_path``, ``photos_path``, ...;
        see :func:`jaxcomp.vision.data.split_images`), images only;
      * ``"tfds"`` — ``data.tfds_name`` with ``data.tfds_train_split`` / ``tfds_val_split``
        from ``data.tfds_data_dir`` (array_record, no TensorFlow needed).
    With ``data.resize`` > 0 every image (training and validation) is first resized so its
    shorter side is ``data.resize`` and centre-cropped square (:func:`resize_centre_crop`); with
    ``data.labels="clusters"`` before its colour clusters are labelled (a dataset's own label maps,
    ``labels="tfds"``, are not resized: refused).
    Each host reads its own shard: batch ``step`` differs per ``jax.process_index()``.
    """
    if data.get("labels", ""):
        from jaxcomp.data.labels import build_labelled_data

        if data.get("resize", 0) and data.labels != "clusters":
            raise DataError(f"data.resize={data.resize} with data.labels={data.labels!r}: a dataset's own label maps "
                            "are not resized; leave data.resize=0 (data.downscale scales training crops, "
                            "data.eval_downscale validation images, label maps alike)")
        return build_labelled_data(data, _resized_image_sources, jax.process_index(), jax.process_count())
    train, val = _resized_image_sources(data)
    return ImageBatches(
        train, val, batch_size=data.batch_size, crop=data.crop, flip=data.flip,
        downscale=tuple(data.downscale), eval_crop=data.eval_crop, seed=data.seed,
        process_index=jax.process_index(), process_count=jax.process_count(),
        eval_downscale=data.get("eval_downscale", 1.0),
    )


def _resized_image_sources(data: ml_collections.ConfigDict):
    """:func:`_image_sources`, resized first when ``data.resize`` > 0 (:class:`ResizedSource`)."""
    train, val = _image_sources(data)
    if data.get("resize", 0):
        train = ResizedSource(train, data.resize, cache=data.get("cache", True))
        val = ResizedSource(val, data.resize, cache=data.get("cache", True)) if val is not None else None
    return train, val


def _image_sources(data: ml_collections.ConfigDict):
    """The training and validation image sources of ``config.data`` (validation may be None)."""
    source = data.source
    if source in ("samples", "folder"):
        if source == "samples":
            if data.get("path", ""):  # a user's folder would be ignored without a word
                raise DataError(f"data.path={data.path!r} is set, but data.source='samples' trains on the photos "
                                f"shipped in the package and would ignore it: add data.source=folder to train on "
                                f"that folder (or leave data.path empty)")
            if not data.get("allow_samples", True):
                raise DataError("this config trains at paper scale and refuses the shipped samples (they are the "
                                "photos the codec is evaluated on): give data.source=folder with data.path, or "
                                "data.source=tfds (data.allow_samples=True overrides, e.g. for timing)")
            files = sample_image_paths()
        else:
            if not data.path:
                raise DataError("data.source='folder' needs data.path (a folder of training images)")
            files = list_images(data.path, warn_nested=True)
        train_files, val_files = _split(files, data)
        train = ImageFolderSource(train_files, cache=data.cache)
        val = ImageFolderSource(val_files, cache=data.cache) if val_files else None
    elif source == "mnist":
        train = ArrayImageSource(mnist_images(data.path, "train", data.get("pad_to", 32)))
        val_images = mnist_images(data.path, "val", data.get("pad_to", 32))
        val = ArrayImageSource(val_images[: data.num_val] if data.get("num_val", 0) > 0 else val_images)
    elif source == "digit_scenes":  # the MNIST-on-photos scenes (a codec for understanding, ICLR'18)
        from jaxcomp.vision.data import split_images

        train = ArrayImageSource(split_images(data, "train")[0])
        val = ArrayImageSource(split_images(data, "val")[0])
    elif source == "tfds":
        key = data.get("tfds_image_key", "image")
        train = TfdsImageSource(data.tfds_name, data.tfds_train_split, data.tfds_data_dir, key)
        val = TfdsImageSource(data.tfds_name, data.tfds_val_split, data.tfds_data_dir, key) \
            if data.tfds_val_split else None
    else:
        raise DataError(f"unknown data.source {source!r}; use 'samples', 'folder', 'mnist', 'digit_scenes' or 'tfds'")
    return train, val


MNIST_TRAIN = 50_000  # x_train[:50000] trains, x_train[50000:] validates, x_test is for reports


def mnist_images(path: str, split: str, pad_to: int = 32) -> np.ndarray:
    """MNIST digits from the Keras ``mnist.npz`` at ``path``, zero-padded to ``pad_to`` pixels a
    side: ``uint8 [N, pad_to, pad_to, 1]``. ``split``: ``"train"`` (``x_train[:50000]``), ``"val"``
    (``x_train[50000:]``), ``"test"`` (the 10k test digits)."""
    from jaxcomp.data.classification import load_mnist_arrays, pad_images

    if split not in ("train", "val", "test"):
        raise DataError(f"unknown MNIST split {split!r}; use 'train', 'val' or 'test'")
    x, _ = load_mnist_arrays(path, "test" if split == "test" else "train")
    if split == "train":
        x = x[:MNIST_TRAIN]
    elif split == "val":
        x = x[MNIST_TRAIN:]
    return pad_images(x, pad_to)

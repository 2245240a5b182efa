"""Data for understanding on compressed representations: the codec's outputs for a set of images,
and the labelled arrays of each input (latent / decoded / original) for the trainer.

* :func:`codec_outputs` runs a CPM model (workdir or ``.msgpack``) over ``uint8 [N, H, W, 3]``
  images once, jitted, in fixed-size batches, and returns the quantized latents ŷ, the decodings
  and the rate and quality of every image; cached as ``.npz`` keyed by the model's parameters and
  config and the images' bytes.
* :func:`understanding_arrays` gives ``(inputs, labels)`` of one split for ``config.data`` with
  ``source="digit_scenes"`` (the local MNIST-on-photos scenes of :mod:`jaxcomp.data.digit_scenes`)
  or ``source="voc"`` (PASCAL VOC 2012 segmentation in its original folder layout:
  ``JPEGImages/``, ``SegmentationClass/`` and ``ImageSets/Segmentation/{train,val}.txt``; tfds'
  ``voc`` has boxes but no segmentation masks). With ``precomputed=True`` and ``input`` latent or
  decoded the inputs are the codec's outputs; else the images.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jaxcomp.data.images import DataError, rgb_image
from jaxcomp.files import atomic_file, load_npz

if TYPE_CHECKING:
    from jaxcomp.data.digit_scenes import SceneSpec

VOC_VOID = 255  # VOC's "void" border label; the task ignores labels >= num_classes


def model_digest(path: str, with_config: bool = False) -> str:
    """A short hash of a model's parameters (:func:`jaxcomp.modelfile.params_digest`), with
    ``with_config`` also of the config it loads with (:func:`jaxcomp.modelfile.model_digest`, the key
    of :func:`codec_outputs`' caches); a missing model is a :class:`DataError` (the codec of an
    understanding run's data)."""
    from jaxcomp.modelfile import model_digest as params_and_config
    from jaxcomp.modelfile import params_digest

    if not os.path.exists(path):
        raise DataError(f"codec model not found: {path!r} (an exported .msgpack or a training workdir)")
    return params_and_config(path) if with_config else params_digest(path)


def codec_outputs(codec: str, images: np.ndarray, batch_size: int = 64, cache_dir: str = "",
                  progress: bool = True) -> dict[str, np.ndarray]:
    """A CPM model's outputs for ``images`` (``uint8 [N, H, W, 3]``, H and W multiples of 8).

    Returns ``latent`` (``float32 [N, H/8, W/8, C]``: the quantized ŷ the decoder reads, masked
    symbols included as the value they decode to), ``decoded`` (``uint8 [N, H, W, 3]``, the
    reconstruction rounded to pixels), ``bits`` (``float32 [N]``: the context model's and the
    importance map's cross-entropy of the symbols, what the arithmetic coder spends to within a
    few bytes), ``bpp``, ``ms_ssim`` and ``psnr`` (``float32 [N]``).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"codec_outputs needs uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    if images.shape[1] % 8 or images.shape[2] % 8:
        raise DataError(f"image sides must be multiples of 8 for the codec, got {images.shape[1:3]}")
    path = ""
    digest = model_digest(codec, with_config=True)  # the config builds the task that measures bits and quality
    if cache_dir:
        key = hashlib.sha256(images.tobytes()).hexdigest()[:16]
        path = os.path.join(cache_dir, f"codec_{digest}_{key}.npz")
        if os.path.isfile(path):
            try:
                cached = load_npz(path, _CODEC_OUTPUTS)
                if all(len(v) == len(images) for v in cached.values()):
                    return cached
            except ValueError:  # a damaged cache file, or one without these arrays: rebuild it
                pass
    run, params = _codec_runner(codec, digest)

    n = len(images)
    parts: list[tuple] = []
    for s in tqdm(range(0, n, batch_size), desc="codec", disable=not progress, leave=False, mininterval=5.0):
        chunk = images[s:s + batch_size]
        pad = batch_size - len(chunk)
        if pad:  # one compiled shape
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
        parts.append(tuple(np.asarray(v)[: batch_size - pad] for v in run(params, chunk)))
    out = {k: np.concatenate([p[i] for p in parts]) for i, k in enumerate(_CODEC_OUTPUTS)}
    out["latent"] = out["latent"].astype(np.float32)
    if path:
        with atomic_file(path, makedirs=True) as f:
            np.savez(f, **out)
    return out


_CODEC_OUTPUTS = ("latent", "decoded", "bits", "bpp", "ms_ssim", "psnr")


@functools.lru_cache(maxsize=4)
def _codec_runner(codec: str, digest: str):
    """``(jitted run(params, x), params)`` of a CPM model, kept per model (``digest``: the hash of its
    parameters and config), so that every split and every call reuses one compilation; the parameters are an argument,
    not constants baked into the program."""
    import jax
    import jax.numpy as jnp

    from jaxcomp.metrics import psnr_from_mse
    from jaxcomp.vision.task import load_codec_task

    task, params = load_codec_task(codec)

    @jax.jit
    def run(params, x):
        m, _, out = task.forward(params, x.astype(jnp.float32))
        return (out["q"], jnp.round(out["x_hat"]).astype(jnp.uint8), m["bpp"] * x.shape[1] * x.shape[2],
                m["bpp"], m["ms_ssim"], psnr_from_mse(m["mse"]))

    return run, params


def scene_spec(data: ml_collections.ConfigDict) -> SceneSpec:
    """The :class:`~jaxcomp.data.digit_scenes.SceneSpec` of ``config.data``."""
    from jaxcomp.data.digit_scenes import SceneSpec

    return SceneSpec(kind=data.kind, size=int(data.size), digits=tuple(data.digits),
                     digit_size=tuple(data.digit_size), seed=int(data.scene_seed))


def split_images(data: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, S, S, 3], labels)`` of one split (labels ``int32 [N]`` or ``[N, S, S]``)."""
    if data.source == "digit_scenes":
        from jaxcomp.data.digit_scenes import scene_arrays

        n = int(data.get(f"num_{split}", 0))
        if n <= 0:
            raise DataError(f"data.num_{split} must be positive for the digit scenes")
        a = scene_arrays(scene_spec(data), split, n, data.mnist_path, data.photos_path, data.get("cache_dir", ""))
        labels = a["label"] if data.kind == "classification" else a["labels"].astype(np.int32)
        return a["image"], labels
    if data.source == "voc":
        return load_voc_segmentation(data.path, "train" if split == "train" else "val", int(data.size))
    raise DataError(f"unknown data.source {data.source!r} for understanding; use 'digit_scenes' or 'voc'")


def understanding_arrays(data: ml_collections.ConfigDict, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(network inputs, labels)`` of ``split`` for ``config.data``: the images, or with
    ``data.precomputed`` the codec's latents / decodings of them (``data.input``, ``data.codec``)."""
    images, labels = split_images(data, split)
    inp = data.get("input", "original")
    from jaxcomp.vision.task import INPUTS

    if inp not in INPUTS:
        raise DataError(f"data.input must be one of {INPUTS}, got {inp!r}")
    if data.get("precomputed", False) and inp != "original":
        if not data.get("codec", ""):
            raise DataError(f"data.input={inp!r} with precomputed inputs needs data.codec (a CPM model)")
        out = codec_outputs(data.codec, images, data.get("codec_batch_size", 64), data.get("cache_dir", ""))
        return out["latent" if inp == "latent" else "decoded"], labels
    return images, labels


def load_voc_segmentation(root: str, split: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """PASCAL VOC 2012 segmentation from its original layout under ``root`` (the folder holding
    ``JPEGImages``, ``SegmentationClass`` and ``ImageSets/Segmentation``): every image of
    ``split`` (``train`` / ``val``) resized so its shorter side is ``size`` and centre-cropped square
    (bilinear for the image, nearest for the labels): ``uint8 [N, size, size, 3]`` and ``int32
    [N, size, size]`` (21 classes, 255 = void)."""
    from PIL import Image

    from jaxcomp.data.images import resize_centre_crop

    listing = os.path.join(root, "ImageSets", "Segmentation", f"{split}.txt")
    if not os.path.isfile(listing):
        raise DataError(f"VOC 2012 segmentation not found under {root!r}: no {listing}. Pass "
                        "--config.data.path=.../VOCdevkit/VOC2012")
    with open(listing) as f:
        names = [line.strip() for line in f if line.strip()]
    images = np.empty((len(names), size, size, 3), np.uint8)
    labels = np.empty((len(names), size, size), np.int32)
    for i, name in enumerate(tqdm(names, desc=f"VOC {split}", mininterval=5.0, leave=False)):
        paths = os.path.join(root, "JPEGImages", name + ".jpg"), os.path.join(root, "SegmentationClass", name + ".png")
        try:
            img = np.asarray(Image.open(paths[0]).convert("RGB"))
            with Image.open(paths[1]) as mask:
                if mask.mode not in ("P", "L"):  # VOC's masks are palette indices, not colours
                    raise DataError(f"{paths[1]}: a {mask.mode} image; VOC class masks are palette (P) images "
                                    f"of class indices (the original SegmentationClass PNGs)")
                lab = np.asarray(mask)
        except OSError as e:  # a missing or unreadable file named by the listing
            raise DataError(f"VOC {split} image {name!r} (listed in {listing}): {e}") from e
        if lab.shape != img.shape[:2]:
            raise DataError(f"{paths[1]}: mask of {lab.shape} for an image of {img.shape[:2]}")
        images[i] = resize_centre_crop(img, size)
        labels[i] = resize_centre_crop(lab, size, Image.NEAREST)
    return images, labels


class TfdsStreamBatches:
    """Labelled images of a large tfds dataset (ImageNet), read per batch through ``tfds.data_source``
    (array_record; nothing is held in memory, nothing is downloaded).

    Training batch ``step`` of host ``p`` is a function of ``(seed, step, p)``: examples of a fresh
    permutation every epoch, each resized so its shorter side is ``resize`` (bicubic), a random
    ``size x size`` crop and a random horizontal flip. Evaluation: the centre crop.
    Batches: ``image float32 [B, size, size, 3]`` in [0, 255], ``label int32 [B]``.
    """

    def __init__(self, data: ml_collections.ConfigDict, process_index: int = 0, process_count: int = 1):
        from jaxcomp.data.images import TfdsImageSource

        self.size, self.resize = int(data.size), int(data.get("resize", data.size))
        if not 0 < self.size <= self.resize:
            raise DataError(f"data.size={self.size} and data.resize={self.resize}: need 0 < size <= resize (images "
                            "are resized to `resize` on their shorter side, then cropped to `size`)")
        self.train = TfdsImageSource(data.tfds_name, data.tfds_train_split, data.get("tfds_data_dir", ""))
        split = data.get("tfds_val_split", "")
        self.val = TfdsImageSource(data.tfds_name, split, data.get("tfds_data_dir", "")) if split else None
        if data.batch_size % process_count:
            raise DataError(f"global batch size {data.batch_size} is not divisible by {process_count} hosts")
        self.batch_size, self.local = int(data.batch_size), int(data.batch_size) // process_count
        self.seed, self.flip = int(data.get("seed", 0)), bool(data.get("flip", True))
        self.process_index = process_index
        self.num_classes = int(data.num_classes)
        self._perm: tuple[int, np.ndarray] | None = None  # (epoch, permutation) of the last batch

    def _example(self, source, index: int, rng: np.random.Generator | None) -> tuple[np.ndarray, int]:
        from jaxcomp.data.images import resize_centre_crop, resize_shorter_side

        record = source.example(index, source.image_key, "label")  # one read: image and label
        image, label = rgb_image(record[source.image_key], source.describe(index)), np.asarray(record["label"])
        if label.ndim or label.dtype.kind not in "iu" or not 0 <= int(label) < self.num_classes:
            raise DataError(f"{source.describe(index)} has label {label.tolist()!r}; expected a class index in "
                            f"0..{self.num_classes - 1} (data.num_classes={self.num_classes})")
        label = int(label)
        if rng is None:  # evaluation: the shorter side to `resize` as in training, then the centre crop
            big = resize_centre_crop(image, self.resize)
            top = (self.resize - self.size) // 2
            return big[top:top + self.size, top:top + self.size], label
        big = resize_shorter_side(image, self.resize)
        nh, nw = big.shape[:2]
        y, x = rng.integers(0, nh - self.size + 1), rng.integers(0, nw - self.size + 1)
        crop = big[y:y + self.size, x:x + self.size]
        if self.flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        return crop, label

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        n = len(self.train)
        start = step * self.batch_size + self.process_index * self.local
        positions = np.arange(start, start + self.local)
        images, labels = [], []
        for pos in positions:
            epoch = int(pos // n)
            if self._perm is None or self._perm[0] != epoch:  # one permutation per epoch, kept
                self._perm = (epoch, np.random.default_rng([self.seed, epoch]).permutation(n))
            perm = self._perm[1]
            rng = np.random.default_rng([self.seed, step, int(pos)])
            image, label = self._example(self.train, int(perm[pos % n]), rng)
            images.append(image)
            labels.append(label)
        return {"image": np.stack(images).astype(np.float32), "label": np.asarray(labels, np.int32)}

    def train_batches(self, start_step: int = 0, prefetch: int = 4) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``start_step, start_step + 1, ...`` (``image float32 [B, size, size, 3]``, ``label int32 [B]``),
        read ``prefetch`` ahead in a background thread."""
        from jaxcomp.data.images import prefetch_batches

        return prefetch_batches(self.train_batch, start_step, prefetch)

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Fixed-shape centre-crop validation batches (``image float32 [B, size, size, 3]``, ``label int32 [B]``)
        with a boolean ``valid [B]`` mask on the padded tail; none without a validation split."""
        if self.val is None:
            return iter(())
        n = len(self.val)

        def batches():
            for s in range(0, n, batch_size):
                idx = np.arange(s, s + batch_size)
                valid = idx < n
                pairs = [self._example(self.val, int(i) if v else 0, None) for i, v in zip(idx, valid)]
                yield {"image": np.stack([p[0] for p in pairs]).astype(np.float32),
                       "label": np.asarray([p[1] for p in pairs], np.int32), "valid": valid}

        return batches()

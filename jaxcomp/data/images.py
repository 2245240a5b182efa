"""Image sources and the L3C-style random-crop pipeline, all on the host in numpy.

A *source* is a random-access sequence of ``uint8`` images ``[H, W, 3]`` (``len`` and
``__getitem__``): a local folder (:class:`ImageFolderSource`), a named tfds dataset
(:class:`TfdsImageSource`) or the photos shipped with the package
(:func:`sample_image_paths`). :class:`ImageBatches` turns a source into training batches
that depend only on ``(seed, step, process_index)`` — so a resumed run sees exactly the
batches it would have seen — and into deterministic evaluation tiles.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
from PIL import Image, ImageOps

from jaxcomp.checks import is_whole

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".pgm", ".bmp", ".webp", ".tif", ".tiff")
SAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "samples")


class DataError(ValueError):
    """A dataset path, file or setting that cannot be used."""


# Pillow's raw modes of RGB files with 16 or 32 bits per sample, which it opens as 8-bit "RGB"
# ("RGB;16" without a byte order is 5-6-5 bits per pixel, which 8 bits hold exactly).
_DEEP_RGB_RAW_MODE = re.compile(r"RGB[AX]?;(16|32)[BLN]")
_CONVERTIBLE_MODES = ("RGB", "RGBX", "L", "P", "1")  # to RGB (or L) without changing a pixel


def _raw_modes(im: Image.Image) -> list[str]:
    """The raw modes of the file's tiles (before ``load``): how its samples are stored."""
    raws = []
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        raws.append(args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else "")
    return [r for r in raws if isinstance(r, str)]


def _deep_netpbm(im: Image.Image) -> list[str]:
    """``["maxval N"]`` for a PPM/PGM whose samples go up to ``N > 255`` (16 bits), which Pillow opens
    as 8-bit "RGB" (its tile's arguments are ``(mode, maxval)``, not a deep raw mode)."""
    out = []
    for tile in getattr(im, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        if isinstance(args, tuple) and len(args) == 2 and isinstance(args[1], int) and args[1] > 255:
            out.append(f"maxval {args[1]}")
    return out


def load_image(path: str, keep_gray: bool = False) -> np.ndarray:
    """Decodes an image file to ``uint8 [H, W, 3]`` RGB.

    Palette images, and grayscale ones unless ``keep_gray`` (then ``uint8 [H, W]``), are
    converted to RGB. Refused with :class:`DataError`, since a lossless codec must not drop data
    silently and a conversion would change pixels: images with an alpha channel, more than 8 bits
    per sample (16-bit RGB included, which Pillow would open as 8-bit), other colour spaces
    (CMYK, YCbCr, LAB, HSV), several frames (animations, multi-page TIFFs: only the first would be
    read; a camera JPEG whose extra frames are previews or gain maps, Pillow's "MPO", gives its main
    image), files that are not images or are damaged, and images over Pillow's decompression-bomb
    limit (``PIL.Image.MAX_IMAGE_PIXELS``). An EXIF orientation (a camera JPEG's "rotate 90°") is
    applied, so the array is the image as viewers show it and a decoded PNG, which keeps no EXIF,
    looks like the original; other metadata is not read.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"load_image expects a file path, got {type(path).__name__}")
    try:
        with Image.open(path) as im:
            mode, frames, raws = im.mode, getattr(im, "n_frames", 1), _raw_modes(im)
            if frames > 1 and im.format != "MPO":  # MPO: a camera JPEG with previews; frame 0 is the photo
                raise DataError(f"{path}: has {frames} frames (an animation or a multi-page file); "
                                f"only single images are supported")
            if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
                raise DataError(f"{path}: has an alpha channel ({mode}); only RGB images are supported")
            deep = [r for r in raws if _DEEP_RGB_RAW_MODE.fullmatch(r)] + _deep_netpbm(im)
            if mode.startswith("I") or mode == "F" or deep:
                stored = f"RGB ({deep[0]})" if deep else mode
                raise DataError(f"{path}: {stored} images (more than 8 bits per sample) are not supported")
            if mode not in _CONVERTIBLE_MODES:
                raise DataError(f"{path}: {mode} images are not supported (RGB, grayscale and palette only): "
                                f"converting them to RGB changes the pixels; convert the file first if intended")
            im.load()
            shown = ImageOps.exif_transpose(im)  # an EXIF orientation turns the pixels as a viewer shows them
            gray = keep_gray and mode in ("L", "1")
            arr = np.asarray(shown.convert("L" if gray else "RGB"), dtype=np.uint8)
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"image file not found: {path}") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: too large to decode safely ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:  # Pillow raises all three for damaged files
        raise DataError(f"cannot decode image {path}: {e}") from e
    return arr


def list_images(path: str, warn_nested: bool = False) -> list[str]:
    """Sorted image files (by extension) directly inside folder ``path``. Images in its subfolders are
    not read: an error says how many there are if the folder itself has none, and with
    ``warn_nested`` (a user's training or validation folder) a warning counts them otherwise."""
    if not os.path.isdir(path):
        what = "is a file, not a folder" if os.path.exists(path) else "not found"
        raise DataError(f"image folder {what}: {path!r}")
    entries = os.listdir(path)
    files = sorted(os.path.join(path, f) for f in entries if f.lower().endswith(IMAGE_EXTENSIONS))
    nested = sum(1 for d in entries if os.path.isdir(os.path.join(path, d))
                 for f in os.listdir(os.path.join(path, d)) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        hint = f"; its subfolders hold {nested}, but only files directly inside are read" if nested else ""
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path!r}{hint}")
    if nested and warn_nested:
        logging.getLogger(__name__).warning(
            "%s: %d images directly inside are used; %d images in its subfolders are not", path, len(files), nested)
    return files


SAMPLE_ROLES = ("val", "test")
SAMPLE_SPLITS = os.path.join(SAMPLES_DIR, "splits.json")


def sample_roles() -> dict[str, str]:
    """File name -> ``"val"`` or ``"test"`` for every shipped photo (``samples/splits.json``).

    ``val``: for training decisions (validation while training, which model or setting to keep);
    ``test``: only for the final benchmark table. The same names in ``../shared/data/photos`` are the
    full-size originals, which training never reads (:func:`held_out_names`). Raises
    :class:`DataError` if the manifest is missing, malformed or does not cover each photo once.
    """
    import json

    try:
        with open(SAMPLE_SPLITS) as f:
            manifest = json.load(f)
        roles = {name: role for role in SAMPLE_ROLES for name in manifest[role]}
        counted = sum(len(manifest[role]) for role in SAMPLE_ROLES)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"the sample photos' split manifest {SAMPLE_SPLITS} is missing or malformed: {e}") from e
    shipped = {os.path.basename(p) for p in list_images(SAMPLES_DIR)}
    if counted != len(roles) or set(roles) != shipped:
        raise DataError(f"{SAMPLE_SPLITS} must give each shipped photo exactly one role; photos without one: "
                        f"{sorted(shipped - set(roles))}, unknown names or repeats: "
                        f"{sorted(set(roles) - shipped) or counted - len(roles)}")
    return roles


def held_out_names(role: str | None = None) -> set[str]:
    """Names of the shipped photos with ``role`` (``"val"``, ``"test"``; ``None``: all of them)."""
    if role is not None and role not in SAMPLE_ROLES:
        raise DataError(f"sample role must be one of {', '.join(SAMPLE_ROLES)} (or None for all), not {role!r}")
    return {name for name, r in sample_roles().items() if role is None or r == role}


def sample_image_paths(role: str | None = None) -> list[str]:
    """The real photographs shipped inside the package (attribution in samples/SOURCES.md), sorted;
    with ``role`` only the validation (``"val"``) or test (``"test"``) ones (see :func:`sample_roles`)."""
    paths = list_images(SAMPLES_DIR)
    if role is None:
        return paths
    names = held_out_names(role)
    return [p for p in paths if os.path.basename(p) in names]


def benchmark_image_paths(folder: str = "", max_images: int | None = None) -> list[str]:
    """The images a benchmark runs on: those in ``folder`` (sorted) or, if empty, the shipped photos;
    only the first ``max_images`` if given (>= 1)."""
    paths = list_images(folder) if folder else sample_image_paths()
    if max_images is not None:
        if max_images < 1:
            raise DataError(f"--max-images must be >= 1, got {max_images}")
        paths = paths[:max_images]
    return paths


def centre_crop(image: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """The centre ``min(height, H) x min(width, W)`` window of ``image [H, W, ...]`` (C-contiguous).

    ``width`` defaults to ``height``; the window is never larger than the image.
    """
    width = height if width is None else width
    image = np.asarray(image)
    if image.ndim < 2:
        raise DataError(f"centre_crop expects an image [H, W, ...], got shape {image.shape}")
    if not (is_whole(height) and is_whole(width)) or height < 1 or width < 1:
        raise DataError(f"centre_crop needs a positive integer height and width, got {height!r} and {width!r}")
    h, w = min(height, image.shape[0]), min(width, image.shape[1])
    y, x = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return np.ascontiguousarray(image[y:y + h, x:x + w])


def split_files(files: Sequence[str], num_val: int) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split: the ``num_val`` files whose name hashes lowest.

    Hashing the base name (not the position) keeps the split stable when files are added.
    """
    if num_val < 0 or num_val >= len(files):
        raise DataError(f"cannot hold out {num_val} of {len(files)} images")
    key = lambda f: hashlib.sha1(os.path.basename(f).encode()).hexdigest()
    val = set(sorted(files, key=key)[:num_val])
    return [f for f in files if f not in val], [f for f in files if f in val]


class ImageSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> np.ndarray: ...


def describe_image(source: ImageSource, index: int) -> str:
    """Where image ``index`` of ``source`` comes from, for messages: its file, its tfds example, or
    ``image INDEX`` for a source that cannot say (an array)."""
    describe = getattr(source, "describe", None)
    return describe(index) if callable(describe) else f"image {index}"


def error_at(where: str, error: Exception) -> DataError:
    """``error`` as a :class:`DataError` that starts by naming ``where`` (once)."""
    message = str(error)
    return DataError(message if message.startswith(where) else f"{where}: {message}")


class ImageFolderSource:
    """Images from a list of files; decoded once and kept in memory when ``cache``."""

    def __init__(self, files: Sequence[str], cache: bool = True):
        if not files:
            raise DataError("empty image list")
        self.files = list(files)
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    @classmethod
    def from_folder(cls, path: str, cache: bool = True) -> ImageFolderSource:
        return cls(list_images(path), cache=cache)

    def __len__(self) -> int:
        return len(self.files)

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from, for messages: its file."""
        return self.files[index]

    def __getitem__(self, index: int) -> np.ndarray:
        if self._cache is None:
            return load_image(self.files[index])
        if index not in self._cache:
            self._cache[index] = load_image(self.files[index])
        return self._cache[index]


#: tfds datasets whose archives cannot be downloaded by script: ``tfds build`` needs ``--manual_dir``
MANUAL_TFDS = ("cityscapes", "imagenet2012")


def tfds_prepare_help(name: str) -> str:
    """How to prepare the tfds dataset ``name`` for ``tfds.data_source`` (the words every data error uses)."""
    manual = (" --manual_dir=FOLDER_OF_ITS_ARCHIVES (downloaded by hand from the dataset's site)"
              if name.split("/")[0].startswith(MANUAL_TFDS) else "")
    return (f"Prepare it once, on a machine with internet: `pip install -e '.[tf]'` (building needs TensorFlow, "
            f"reading does not), then `tfds build {name}{manual} --file_format=array_record --data_dir=DIR`, and "
            f"pass --config.data.tfds_data_dir=DIR")


def open_tfds(name: str, split: str, data_dir: str | None = None) -> Sequence[dict]:
    """``tfds.data_source(name, split)`` of a dataset prepared in array_record format under ``data_dir``
    (nothing is downloaded); a :class:`DataError` that says what is wrong: a split the dataset does
    not have (naming those it has), a split that selects nothing, or a dataset not prepared there
    (with :func:`tfds_prepare_help`)."""
    import tensorflow_datasets as tfds

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # tfds raises several types for "not prepared" / "unknown name" / "unknown split"
        text = str(e)
        unknown = re.search(r"Unknown split .*?Should be one of (\[[^\]]*\])", text, re.S)
        if unknown:
            raise DataError(f"tfds dataset {name!r} has no split {split!r}: its splits are {unknown.group(1)} "
                            f"(data.tfds_train_split / data.tfds_val_split)") from e
        if "can not be of 0 length" in text:
            raise DataError(f"tfds split {split!r} of {name!r} selects no examples") from e
        first = text.strip().splitlines()[0][:300] if text.strip() else ""  # not tfds' list of every dataset
        raise DataError(
            f"tfds dataset {name!r} split {split!r} is not available under data_dir="
            f"{data_dir or '~/tensorflow_datasets'!r} in array_record format ({type(e).__name__}: {first}). "
            + tfds_prepare_help(name)
        ) from e


class TfdsImageSource:
    """Images of a named tfds dataset, read through ``tfds.data_source`` (no TensorFlow).

    The dataset must already be prepared in array_record format under ``data_dir`` (for
    example with ``tfds build NAME --file_format=array_record``); nothing is downloaded.
    """

    def __init__(self, name: str, split: str, data_dir: str | None = None, image_key: str = "image"):
        self._source = open_tfds(name, split, data_dir)
        self.image_key, self.name, self.split = image_key, name, split

    def __len__(self) -> int:
        return len(self._source)

    def describe(self, index: int) -> str:
        """Where example ``index`` comes from, for messages."""
        return f"tfds {self.name}:{self.split} example {index}"

    def example(self, index: int, *keys: str) -> dict:
        """Example ``index`` as tfds stores it (read once), with each of ``keys`` checked to be among its
        features: a :class:`DataError` naming the features there are otherwise."""
        record = self._source[index]
        missing = [key for key in keys if key not in record]
        if missing:
            raise DataError(f"{self.describe(index)} has no {' or '.join(repr(k) for k in missing)} feature (it has "
                            f"{', '.join(repr(k) for k in record)}; the keys read are data.tfds_image_key / "
                            "data.tfds_label_key where a config has them)")
        return record

    def __getitem__(self, index: int) -> np.ndarray:
        return rgb_image(self.example(index, self.image_key)[self.image_key], self.describe(index))


def rgb_image(image: np.ndarray, where: str) -> np.ndarray:
    """``uint8 [H, W, 3]`` from ``uint8 [H, W, 3]``, ``[H, W, 1]`` or ``[H, W]`` (gray, repeated);
    anything else (RGBA, 16 bits, float) a :class:`DataError` naming ``where``."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise DataError(f"{where} is an image of {image.dtype} {image.shape}; need uint8 RGB [H, W, 3] or gray "
                        "[H, W] / [H, W, 1]")
    return image


class ArrayImageSource:
    """Images held in one array, ``uint8 [N, H, W, C]`` (e.g. MNIST, C = 1)."""

    def __init__(self, images: np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DataError(f"ArrayImageSource needs uint8 [N, H, W, C], got {images.dtype} {images.shape}")
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.images[index]


def resize_shorter_side(image: np.ndarray, size: int, resample: int = Image.BICUBIC) -> np.ndarray:
    """Resize so the shorter side is ``size`` (the other rounded, at least ``size``): ``uint8 [H, W(, C)]``
    -> ``uint8 [H', W'(, C)]``; unchanged when already that size. ``resample``: a PIL filter (bicubic for
    images, ``Image.NEAREST`` for label maps)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        raise DataError(f"resize expects a uint8 image [H, W(, C)], got {image.dtype} {image.shape}")
    if size < 1:
        raise DataError(f"resize size must be positive, got {size}")
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
    if (nh, nw) == (h, w):
        return image
    return _pil_resize(image, (nw, nh), resample)


def _pil_resize(image: np.ndarray, size: tuple[int, int], resample: int) -> np.ndarray:
    """PIL's resize of ``image`` ``[H, W(, C)]`` to ``size`` = (width, height); a one-channel ``[H, W, 1]``
    image goes through PIL as ``[H, W]`` (PIL has no one-channel 3-D mode) and keeps its channel axis."""
    gray = image.ndim == 3 and image.shape[-1] == 1
    out = np.asarray(Image.fromarray(image[..., 0] if gray else image).resize(size, resample))
    return out[..., None] if gray else out


def resize_centre_crop(image: np.ndarray, size: int, resample: int = Image.BICUBIC) -> np.ndarray:
    """Bicubic (antialiased) resize so the shorter side is ``size``, then the centre ``size x size``
    (torchvision's ``Resize(size)`` + ``CenterCrop(size)``, as DCGAN-style CelebA/LSUN pipelines):
    ``uint8 [H, W(, C)] -> uint8 [size, size(, C)]``; ``resample=Image.NEAREST`` for label maps."""
    out = resize_shorter_side(image, size, resample)
    y, x = (out.shape[0] - size) // 2, (out.shape[1] - size) // 2
    return np.ascontiguousarray(out[y : y + size, x : x + size])


class ResizedSource:
    """Another source's images through :func:`resize_centre_crop` (cached when ``cache``)."""

    def __init__(self, source: ImageSource, size: int, cache: bool = True):
        if size < 1:
            raise DataError(f"resize size must be positive, got {size}")
        self.source, self.size = source, size
        self._cache: dict[int, np.ndarray] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.source)

    def describe(self, index: int) -> str:
        """Where image ``index`` comes from, for messages (that of the source it resizes)."""
        return f"{describe_image(self.source, index)} (resized to {self.size})"

    def __getitem__(self, index: int) -> np.ndarray:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        out = resize_centre_crop(self.source[index], self.size)
        if self._cache is not None:
            self._cache[index] = out
        return out


def scale_image(image: np.ndarray, scale: float, resample: int = Image.BICUBIC) -> np.ndarray:
    """``image`` ``[H, W(, C)]`` resized by ``scale`` (each side rounded, at least 1 pixel), same dtype;
    ``scale == 1`` returns it unchanged. ``resample=Image.NEAREST`` for label maps."""
    if scale == 1:
        return image
    h, w = image.shape[:2]
    return _pil_resize(image, (max(1, int(round(w * scale))), max(1, int(round(h * scale)))), resample)


def random_crop(
    image: np.ndarray,
    rng: np.random.Generator,
    crop: int,
    flip: bool = True,
    downscale: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """One training crop ``uint8 [crop, crop, C]``, as in the L3C data preparation.

    A scale ``s`` is drawn uniformly from ``downscale`` (``s <= 1`` shrinks the image), a
    window of ``crop / s`` pixels is cut at a random place and resized to ``crop`` with a
    bicubic (antialiased) filter; that equals downscaling the whole image and cropping.
    ``image`` must be ``uint8 [H, W, C]`` with C = 3 or 1 (:class:`DataError` otherwise).
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise DataError(f"random_crop expects a uint8 image [H, W, 3] or [H, W, 1], got "
                        f"{getattr(image, 'dtype', type(image).__name__)} {np.shape(image)}")
    h, w = image.shape[:2]
    lo, hi = downscale
    scale = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    if min(h, w) < crop:
        raise DataError(f"image of size {h}x{w} is smaller than the crop {crop} (remove it, or lower data.crop)")
    window = max(crop, min(int(round(crop / scale)), h, w))  # a strong downscale is capped by the image
    y = int(rng.integers(0, h - window + 1))
    x = int(rng.integers(0, w - window + 1))
    patch = image[y : y + window, x : x + window]
    if window != crop:
        patch = _pil_resize(patch, (crop, crop), Image.BICUBIC)
    if flip and rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch)


def image_tiles(image: np.ndarray, tile: int) -> np.ndarray:
    """Non-overlapping ``tile x tile`` tiles in row-major order, ``uint8 [N, tile, tile, 3]``.

    The right and bottom remainders (less than one tile) are not covered.
    """
    if not is_whole(tile) or tile < 1:
        raise DataError(f"image_tiles: tile must be a positive integer, got {tile!r}")
    if np.ndim(image) != 3:
        raise DataError(f"image_tiles expects an image [H, W, C], got shape {np.shape(image)}")
    h, w = image.shape[:2]
    ny, nx = h // tile, w // tile
    if ny == 0 or nx == 0:
        return np.zeros((0, tile, tile, image.shape[2]), image.dtype)
    t = image[: ny * tile, : nx * tile].reshape(ny, tile, nx, tile, -1).swapaxes(1, 2)
    return t.reshape(ny * nx, tile, tile, -1)


class ImageBatches:
    """Training batches and evaluation tiles from image sources.

    Args:
      train: source of training images.
      val: source of validation images (may be ``None``).
      batch_size: *global* batch size; each of ``process_count`` hosts produces
        ``batch_size // process_count`` examples of it.
      crop, flip, downscale: the random-crop transform (:func:`random_crop`).
      eval_crop: tile size of the evaluation tiles.
      seed: base seed; batch ``step`` of host ``p`` uses ``default_rng([seed, step, p])``.
    """

    def __init__(
        self,
        train: ImageSource,
        val: ImageSource | None,
        batch_size: int,
        crop: int,
        flip: bool = True,
        downscale: tuple[float, float] = (1.0, 1.0),
        eval_crop: int = 256,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        eval_downscale: float = 1.0,
    ):
        if batch_size % process_count:
            raise DataError(f"global batch size {batch_size} is not divisible by {process_count} hosts")
        for name, value in (("crop", crop), ("eval_crop", eval_crop)):
            if not is_whole(value) or value < 1:
                raise DataError(f"data.{name} must be a positive number of pixels, got {value!r}")
        try:
            lo, hi = (float(v) for v in downscale)
        except (TypeError, ValueError):
            lo = hi = float("nan")
        if not 0 < lo <= hi < float("inf"):
            raise DataError(f"data.downscale must be two scales (lo, hi) with 0 < lo <= hi (1.0: no downscaling), "
                            f"got {tuple(downscale) if isinstance(downscale, (tuple, list)) else downscale!r}")
        if isinstance(eval_downscale, bool) or not isinstance(eval_downscale, (int, float)) \
                or not 0 < eval_downscale < float("inf"):
            raise DataError(f"data.eval_downscale must be a scale > 0 (1.0: evaluate at the images' own size), "
                            f"got {eval_downscale!r}")
        if len(train) == 0:
            raise DataError("no training images")
        self.eval_downscale = float(eval_downscale)
        self.train, self.val = train, val
        self.batch_size, self.local_batch_size = batch_size, batch_size // process_count
        self.crop, self.flip, self.downscale = crop, flip, tuple(downscale)
        self.eval_crop, self.seed = eval_crop, seed
        self.process_index, self.process_count = process_index, process_count
        self._warned_small = False  # the warning about validation images too small to tile, once per data object

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """This host's part of global batch ``step``: ``{'image': uint8 [B_local, crop, crop, 3]}``."""
        rng = np.random.default_rng([self.seed, step, self.process_index])
        idx = rng.integers(0, len(self.train), self.local_batch_size)
        crops = []
        for i in idx:
            try:
                crops.append(random_crop(self.train[int(i)], rng, self.crop, self.flip, self.downscale))
            except DataError as e:  # e.g. an image smaller than the crop: say which
                raise error_at(describe_image(self.train, int(i)), e) from e
        return {"image": np.stack(crops)}

    def train_batches(self, start_step: int = 0, prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
        """Batches ``start_step, start_step + 1, ...``, decoded in a background thread."""
        return prefetch_batches(self.train_batch, start_step, prefetch)

    def eval_tiles(self) -> np.ndarray:
        """All validation tiles (every host's), ``uint8 [N, eval_crop, eval_crop, 3]``."""
        if self.val is None or len(self.val) == 0:
            return np.zeros((0, self.eval_crop, self.eval_crop, self.train[0].shape[-1]), np.uint8)
        tiles = [image_tiles(scale_image(self.val[i], self.eval_downscale), self.eval_crop)
                 for i in range(len(self.val))]
        small = [i for i, t in enumerate(tiles) if len(t) == 0]
        if len(small) == len(tiles):
            h, w = scale_image(self.val[0], self.eval_downscale).shape[:2]
            scaled = f" at data.eval_downscale={self.eval_downscale:g}" if self.eval_downscale != 1 else ""
            raise DataError(f"every validation image{scaled} is smaller than data.eval_crop={self.eval_crop} "
                            f"(e.g. {h}x{w}): nothing to evaluate; lower data.eval_crop"
                            + (" or raise data.eval_downscale" if scaled else ""))
        if small and not self._warned_small:
            self._warned_small = True
            logging.getLogger(__name__).warning("%d of %d validation images are smaller than data.eval_crop=%d "
                                                "and are not evaluated", len(small), len(tiles), self.eval_crop)
        return np.concatenate(tiles)

    def eval_batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """This host's share of the validation tiles in batches of ``batch_size // process_count``.

        Every batch has the same shape; the last one is padded by repeating tiles and
        carries ``'valid': bool [B_local]`` so padding never enters a metric.
        """
        return eval_batches_from_arrays({"image": self.eval_tiles()}, batch_size,
                                        self.process_index, self.process_count)


def eval_batches_from_arrays(
    arrays: dict[str, np.ndarray], batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """Fixed-shape batches over the leading axis of ``arrays`` with a ``'valid'`` mask.

    The examples are split over hosts; each host yields the same number of batches, so
    a multi-host evaluation stays in lockstep. Padding repeats the first example.
    """
    if batch_size % process_count:
        raise DataError(f"eval batch size {batch_size} is not divisible by {process_count} hosts")
    n = len(next(iter(arrays.values())))
    local = batch_size // process_count
    num_batches = -(-n // batch_size)
    for b in range(num_batches):
        start = b * batch_size + process_index * local
        idx = np.arange(start, start + local)
        valid = idx < n
        idx = np.where(valid, idx, 0)
        batch = {k: v[idx] for k, v in arrays.items()}
        batch["valid"] = valid
        yield batch


def prefetch_batches(make: Callable[[int], dict], start: int, depth: int) -> Iterator[dict]:
    """Yields ``make(start), make(start + 1), ...`` computed ``depth`` ahead in a background thread.

    Every batch source's ``train_batches`` uses it: ``make(step)`` is a pure function of the
    step, so the order and contents do not depend on the thread's timing. Closing the iterator
    stops the thread.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def worker():
        step = start
        while not stop.is_set():
            try:
                item = make(step)
            except Exception as e:  # surface data errors in the consumer thread
                q.put(e)
                return
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            step += 1

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()

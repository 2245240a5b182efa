"""MNIST-M-style digit scenes: MNIST digits composited in colour onto crops of real photographs.

The data set of "Towards Image Understanding from Deep Compression without Decoding" style
experiments (classification and segmentation on compressed latents), built deterministically
on the host in numpy + PIL from the Keras ``mnist.npz`` and a folder of photographs.

Splits (disjoint digits and disjoint photos):
  * digits: ``train`` = ``x_train[:MNIST_TRAIN]`` (50,000), ``val`` = ``x_train[MNIST_TRAIN:]``
    (10,000), ``test`` = ``x_test`` (10,000); ``digit_index`` metadata indexes these per-split arrays;
  * photos: :func:`texture_split` — the originals of the photos shipped with the package
    (:func:`~jaxcomp.data.images.sample_image_paths`, matched by base name) are held out and never
    used; the others, sorted by base name, go to ``val`` if their position ``j % 6 == 4``, to
    ``test`` if ``j % 6 == 5``, else to ``train`` (2/3, 1/6, 1/6); with 3 to 5 photos the last one is
    ``test``, the one before it ``val`` and the rest ``train``; fewer than 3 is an error.

Image ``i`` of a split is a pure function of ``(spec, split, i)``, so any slice can be built on
its own (``build_scenes(..., start=k, n=1)`` is row ``k`` of a larger call). Everything random is
drawn from ``rng = np.random.default_rng([spec.seed, split_id, kind_id, i])`` (ids: positions in
:data:`SPLITS`, :data:`KINDS`), in this order, except which MNIST digits are used: digit slot ``j``
of image ``i`` takes digit ``perm[(i * max_digits + j) % N]`` of the split's ``N`` digits, where
``perm = default_rng([spec.seed, split_id, kind_id, 0, 1]).permutation(N)`` — so the first
``N // max_digits`` images use every digit at most once (classification: each digit of the split
exactly once per ``N`` images, with MNIST's class frequencies). An image of size ``S``:

  1. texture: a photo of the split (uniform), a square crop whose side is ``u * min(H, W)`` of the
     photo (``u ~ U(spec.crop_scale)``, default 0.15-0.6; position uniform), resized to ``S x S``
     with PIL bicubic, flipped left-right with probability 1/2 (``spec.flip``);
  2. number of digits ``k ~ U{digits[0] .. digits[1]}`` (classification: exactly 1);
  3. for each digit, in order: side ``s ~ U{digit_size[0] .. digit_size[1]}``; the 28x28 digit
     resized to ``s x s`` with PIL bilinear, ``alpha = digit / 255``; its box lies fully inside the
     image — classification: centred, the top-left corner moved by ``U{-r .. r}`` in each axis with
     ``r = floor(S * spec.jitter)`` (default S/8) and clipped into the image; segmentation: anywhere
     (uniform), later digits drawn over earlier ones; a random offset ``o ~ U(-colour_offset,
     colour_offset)^3`` (default 64); the colour contrasts with what lies under it: with ``m`` the
     alpha-weighted mean RGB of the current canvas under the digit, ``c = 255 - m + o``, and if
     ``|c - m| < min_contrast`` (Euclidean, default 96 — only when ``m`` is near mid-gray) ``c`` is
     moved along ``c - m`` to that distance; rounded and clipped to ``uint8`` (``digit_colour``);
     composite ``canvas = (1 - alpha) * canvas + alpha * colour`` in float32;
  4. the canvas rounded to ``uint8``. Segmentation labels: pixels with ``alpha >= 0.5`` of a digit
     get its class ``d + 1`` (0 is :data:`BACKGROUND`), later digits overwriting earlier ones; the
     image's ``label`` is the class ``d`` (0-9) of the largest digit (largest side, ties by the
     larger visible labelled area, then the first).

MNIST's ink peaks at 254, so even the darkest stroke lets 1/255 of the texture through. Decoded
photos and the last MNIST file read are kept in small module-level caches (the cached digits are
read-only). Speed on one core: 10,000 64x64 classification images in 7-10 s, 1,000 96x96
segmentation images with 1-3 digits in 1-1.5 s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zipfile
from collections.abc import Sequence

import numpy as np
from PIL import Image

from jaxcomp.checks import is_whole
from jaxcomp.data import MNIST_TRAIN
from jaxcomp.data.classification import load_mnist_arrays
from jaxcomp.data.images import DataError, list_images, load_image, sample_image_paths
from jaxcomp.files import atomic_file, sha256_file

SPLITS = ("train", "val", "test")
KINDS = ("classification", "segmentation")
BACKGROUND = 0  # segmentation class of background; digit d has class d + 1
NUM_SEG_CLASSES = 11
CACHE_FORMAT = 1  # bump when the images a spec makes change, so old caches are not reused

_PHOTOS: dict[tuple[str, int, int], Image.Image] = {}  # decoded photos by (path, mtime_ns, size)
_MAX_PHOTOS = 64
_MNIST: dict[tuple[str, int, int, str], tuple[np.ndarray, np.ndarray]] = {}  # the last file read


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """What the scenes look like (validated on construction; invalid values raise DataError).

    Attributes:
      kind: ``"classification"`` (one digit, ``label`` = its class) or ``"segmentation"``
        (``labels`` maps; ``digits=(1, 3)`` is a sensible choice there).
      size: side ``S`` of the square images in pixels, a multiple of 8 (64 for classification,
        96 recommended for segmentation).
      digits: least and most digits per image (classification must be ``(1, 1)``).
      digit_size: least and most side in pixels of a (square) resized 28x28 digit, at most ``size``.
      seed: non-negative base seed.
      crop_scale: range of the texture crop's side as a fraction of the photo's shorter side.
      jitter: classification only: the digit moves at most ``floor(size * jitter)`` pixels from the centre.
      colour_offset: the random offset added to the inverted colour, per channel ``U(-o, o)``.
      min_contrast: least RGB distance between a digit's colour and the mean colour under it.
      flip: flip textures left-right with probability 1/2.
    """

    kind: str = "classification"
    size: int = 64
    digits: tuple[int, int] = (1, 1)
    digit_size: tuple[int, int] = (36, 56)
    seed: int = 0
    crop_scale: tuple[float, float] = (0.15, 0.6)
    jitter: float = 0.125
    colour_offset: float = 64.0
    min_contrast: float = 96.0
    flip: bool = True

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DataError(f"unknown digit-scene kind {self.kind!r}; use one of {', '.join(KINDS)}")
        pairs = {k: v if isinstance(v, (tuple, list)) and len(v) == 2 else None
                 for k, v in (("digits", self.digits), ("digit_size", self.digit_size),
                              ("crop_scale", self.crop_scale))}
        whole = {"size": self.size, "seed": self.seed, **{f"{k}[{i}]": v for k in ("digits", "digit_size")
                                                         for i, v in enumerate(pairs[k] or ())}}
        bad = [k for k, p in pairs.items() if p is None] + [k for k, v in whole.items() if not is_whole(v)]
        if bad:
            raise DataError(f"digit-scene {', '.join(bad)}: size and seed must be integers, digits and digit_size "
                            f"pairs (min, max) of integers, crop_scale a pair; got size={self.size!r}, "
                            f"seed={self.seed!r}, digits={self.digits!r}, digit_size={self.digit_size!r}, "
                            f"crop_scale={self.crop_scale!r}")
        reals = [self.jitter, self.colour_offset, self.min_contrast, *self.crop_scale]
        if not all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                                                and np.isfinite(v) for v in reals):
            raise DataError(f"digit-scene crop_scale, jitter, colour_offset and min_contrast must be finite "
                            f"numbers; got {self.crop_scale!r}, {self.jitter!r}, {self.colour_offset!r}, "
                            f"{self.min_contrast!r}")
        if self.size < 8 or self.size % 8:
            raise DataError(f"digit-scene size must be a positive multiple of 8, got {self.size}")
        lo, hi = self.digits
        if not 1 <= lo <= hi:
            raise DataError(f"digits=(min, max) needs 1 <= min <= max, got {tuple(self.digits)}")
        if self.kind == "classification" and (lo, hi) != (1, 1):
            raise DataError(f"classification scenes have exactly one digit; got digits={tuple(self.digits)}, "
                            "use digits=(1, 1) or kind='segmentation'")
        dlo, dhi = self.digit_size
        if not 1 <= dlo <= dhi:
            raise DataError(f"digit_size=(min, max) needs 1 <= min <= max, got {tuple(self.digit_size)}")
        if dhi > self.size:
            raise DataError(f"digit_size max {dhi} is larger than the image size {self.size}")
        clo, chi = self.crop_scale
        if not 0 < clo <= chi <= 1:
            raise DataError(f"crop_scale=(min, max) needs 0 < min <= max <= 1, got {tuple(self.crop_scale)}")
        if self.seed < 0:
            raise DataError(f"seed must be non-negative, got {self.seed}")
        if not 0 <= self.jitter <= 0.5 or self.colour_offset < 0 or self.min_contrast < 0:
            raise DataError(f"need 0 <= jitter <= 0.5, colour_offset >= 0, min_contrast >= 0; got {self.jitter}, "
                            f"{self.colour_offset}, {self.min_contrast}")


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise DataError(f"unknown digit-scene split {split!r}; use one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def usable_photos(photo_paths: Sequence[str]) -> list[str]:
    """``photo_paths`` without the held-out originals of the shipped sample photos (by base name),
    sorted by base name."""
    held_out = {os.path.basename(p) for p in sample_image_paths()}
    return sorted((p for p in photo_paths if os.path.basename(p) not in held_out), key=os.path.basename)


def texture_split(photo_paths: Sequence[str], split: str) -> list[str]:
    """The photos that give textures to ``split`` (paths, sorted by base name).

    The originals of the package's shipped sample photos are removed (by base name, always); the
    other ``n`` photos, sorted by base name, are assigned by position ``j``: ``val`` if
    ``j % 6 == 4``, ``test`` if ``j % 6 == 5``, else ``train`` (about 2/3, 1/6, 1/6). With
    ``3 <= n < 6`` the last photo is ``test``, the one before it ``val``, the rest ``train``.
    Raises DataError for fewer than 3 usable photos or an unknown split.
    """
    _check_split(split)
    if isinstance(photo_paths, (str, os.PathLike)):
        raise DataError(f"texture_split expects a list of photo paths (list_images(folder)), got the one path "
                        f"{photo_paths!r}")
    usable = usable_photos(photo_paths)
    n = len(usable)
    if n < 3:
        raise DataError(f"digit scenes need at least 3 photos besides the {len(sample_image_paths())} held-out "
                        f"originals of the shipped samples (one per split); {n} usable of {len(photo_paths)}")
    if n >= 6:
        which = ["val" if j % 6 == 4 else "test" if j % 6 == 5 else "train" for j in range(n)]
    else:
        which = ["train"] * (n - 2) + ["val", "test"]
    return [p for p, w in zip(usable, which) if w == split]


def split_digits(mnist_path: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The MNIST digits of a split: ``uint8 [N, 28, 28]`` images and ``int32 [N]`` labels
    (``train``: ``x_train[:MNIST_TRAIN]``, ``val``: ``x_train[MNIST_TRAIN:]``, ``test``: ``x_test``)."""
    _check_split(split)
    if not mnist_path or not os.path.isfile(mnist_path):
        raise DataError(f"MNIST file not found: {mnist_path!r}; digit scenes need the Keras mnist.npz "
                        "(x_train, y_train, x_test, y_test)")
    part = "test" if split == "test" else "train"
    stat = os.stat(mnist_path)
    key = (os.path.abspath(mnist_path), stat.st_mtime_ns, stat.st_size, part)
    if key not in _MNIST:
        x, y = load_mnist_arrays(mnist_path, part)
        if x.shape[1:] != (28, 28, 1):
            raise DataError(f"{mnist_path}: expected 28x28 gray digits, got {x.shape[1:]}")
        if len(_MNIST) >= 2:
            _MNIST.clear()
        x, y = x[..., 0], y
        x.setflags(write=False)
        y.setflags(write=False)
        _MNIST[key] = (x, y)
    x, y = _MNIST[key]
    if split == "train":
        return x[:MNIST_TRAIN], y[:MNIST_TRAIN]
    if split == "val":
        return x[MNIST_TRAIN:], y[MNIST_TRAIN:]
    return x, y


def _photo(path: str) -> Image.Image:
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
    if key not in _PHOTOS:
        if len(_PHOTOS) >= _MAX_PHOTOS:
            _PHOTOS.clear()
        _PHOTOS[key] = Image.fromarray(load_image(path))
    return _PHOTOS[key]


def _contrast_colour(mean: np.ndarray, offset: np.ndarray, min_contrast: float) -> np.ndarray:
    """``uint8 [3]``: ``255 - mean + offset``, pushed to at least ``min_contrast`` from ``mean``."""
    colour = 255.0 - mean + offset
    d = colour - mean
    norm = float(np.sqrt(np.sum(d * d)))
    if norm < min_contrast:
        if norm < 1e-6:
            d, norm = np.full(3, 1.0 if mean.mean() < 127.5 else -1.0), float(np.sqrt(3.0))
        colour = mean + d * (min_contrast / norm)
    return np.clip(np.rint(colour), 0, 255).astype(np.uint8)


def _scene(spec: SceneSpec, rng: np.random.Generator, photos: list[Image.Image], digits: np.ndarray,
           digit_labels: np.ndarray, slots: np.ndarray) -> dict:
    """One image (see the module docstring for the recipe and the order of the draws)."""
    s = spec.size
    p = int(rng.integers(len(photos)))
    photo = photos[p]
    w, h = photo.size
    side = min(max(1, int(round(rng.uniform(*spec.crop_scale) * min(w, h)))), w, h)
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    canvas = np.array(photo.resize((s, s), Image.BICUBIC, box=(x0, y0, x0 + side, y0 + side)), np.float32)
    if spec.flip and rng.random() < 0.5:
        canvas = np.ascontiguousarray(canvas[:, ::-1])
    k = int(rng.integers(spec.digits[0], spec.digits[1] + 1))
    seg = spec.kind == "segmentation"
    slot_map = np.full((s, s), -1, np.int8) if seg else None
    boxes, colours = np.full((len(slots), 3), -1, np.int32), np.zeros((len(slots), 3), np.uint8)
    for j in range(k):
        d = int(rng.integers(spec.digit_size[0], spec.digit_size[1] + 1))
        if seg:
            top, left = int(rng.integers(0, s - d + 1)), int(rng.integers(0, s - d + 1))
        else:
            r, c = int(s * spec.jitter), (s - d) // 2
            top = min(max(c + int(rng.integers(-r, r + 1)), 0), s - d)
            left = min(max(c + int(rng.integers(-r, r + 1)), 0), s - d)
        offset = rng.uniform(-spec.colour_offset, spec.colour_offset, 3)
        alpha = np.asarray(Image.fromarray(digits[slots[j]]).resize((d, d), Image.BILINEAR), np.float32) / 255.0
        region = canvas[top : top + d, left : left + d]
        weight = float(alpha.sum())
        mean = (np.tensordot(alpha, region, axes=([0, 1], [0, 1])) / weight if weight > 0
                else region.mean(axis=(0, 1))).astype(np.float64)
        colour = _contrast_colour(mean, offset, spec.min_contrast)
        a = alpha[..., None]
        region[...] = (1.0 - a) * region + a * colour.astype(np.float32)
        if seg:
            slot_map[top : top + d, left : left + d][alpha >= 0.5] = j
        boxes[j], colours[j] = (top, left, d), colour
    out = {"image": np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "photo": p, "digit_box": boxes,
           "digit_colour": colours, "count": k}
    classes = digit_labels[slots[:k]]
    if seg:
        labels = np.zeros((s, s), np.uint8)
        drawn = slot_map >= 0
        labels[drawn] = (classes[slot_map[drawn]] + 1).astype(np.uint8)
        visible = np.bincount(slot_map[drawn].astype(np.int64), minlength=k)[:k]
        largest = max(range(k), key=lambda j: (boxes[j, 2], visible[j], -j))
        out["labels"], out["label"] = labels, int(classes[largest])
    else:
        out["label"] = int(classes[0])
    return out


def build_scenes(spec: SceneSpec, split: str, n: int, mnist_path: str, photos_path: str,
                 start: int = 0) -> dict[str, np.ndarray]:
    """Images ``start .. start + n - 1`` of one split (each a pure function of ``(spec, split, i)``).

    Args:
      spec: the look of the scenes (:class:`SceneSpec`).
      split: ``"train"``, ``"val"`` or ``"test"`` (which digits and which photos, see the module doc).
      n, start: how many images, and the index of the first.
      mnist_path: the Keras ``mnist.npz``.
      photos_path: a folder of photographs (the held-out sample originals in it are skipped).

    Returns (``S = spec.size``, ``D = spec.digits[1]``):
      ``image`` uint8 [n, S, S, 3];
      ``label`` int32 [n]: the digit's class 0-9 (segmentation: the class of the largest digit);
      ``labels`` uint8 [n, S, S] (segmentation only): 0 background, ``d + 1`` for digit ``d``;
      ``digit_index`` int32 [n, D]: index into the split's digits (:func:`split_digits`), -1 if absent;
      ``digit_colour`` uint8 [n, D, 3]: each digit's RGB colour (0 if absent);
      ``digit_box`` int32 [n, D, 3]: each digit's ``(top, left, side)`` in pixels (-1 if absent);
      ``photo`` int32 [n]: index into ``texture_split(list_images(photos_path), split)``.
    Drawing order of the digits: slot 0 first; later slots are drawn over earlier ones.
    """
    split_id, kind_id = _check_split(split), KINDS.index(spec.kind)
    if not is_whole(n) or not is_whole(start) or n < 0 or start < 0:
        raise DataError(f"need n >= 0 and start >= 0, got n={n}, start={start}")
    textures = texture_split(list_images(photos_path), split)
    digits, digit_labels = split_digits(mnist_path, split)
    if len(digits) == 0:
        raise DataError(f"the {split!r} split of {mnist_path} has no MNIST digits (train is x_train[:{MNIST_TRAIN}], "
                        f"val x_train[{MNIST_TRAIN}:], test x_test)")
    photos = [_photo(p) for p in textures]
    s, m = spec.size, spec.digits[1]
    perm = np.random.default_rng([spec.seed, split_id, kind_id, 0, 1]).permutation(len(digits))
    seg = spec.kind == "segmentation"
    out = {
        "image": np.zeros((n, s, s, 3), np.uint8),
        "label": np.zeros(n, np.int32),
        "digit_index": np.full((n, m), -1, np.int32),
        "digit_colour": np.zeros((n, m, 3), np.uint8),
        "digit_box": np.full((n, m, 3), -1, np.int32),
        "photo": np.zeros(n, np.int32),
    }
    if seg:
        out["labels"] = np.zeros((n, s, s), np.uint8)
    for row, i in enumerate(range(start, start + n)):
        slots = perm[(i * m + np.arange(m)) % len(digits)]
        rng = np.random.default_rng([spec.seed, split_id, kind_id, i])
        scene = _scene(spec, rng, photos, digits, digit_labels, slots)
        k = scene["count"]
        out["image"][row], out["label"][row], out["photo"][row] = scene["image"], scene["label"], scene["photo"]
        out["digit_index"][row, :k] = slots[:k]
        out["digit_colour"][row], out["digit_box"][row] = scene["digit_colour"], scene["digit_box"]
        if seg:
            out["labels"][row] = scene["labels"]
    return out


def scene_arrays(spec: SceneSpec, split: str, n: int, mnist_path: str, photos_path: str,
                 cache_dir: str = "") -> dict[str, np.ndarray]:
    """:func:`build_scenes` (images ``0 .. n - 1``) through an optional ``.npz`` cache in ``cache_dir``.

    The cache file is keyed by a hash of the spec, split, ``n``, the MNIST file's contents, the
    sorted base names and contents of the usable photos (a file rewritten in place, even to the
    same size, is a new key), the MNIST split boundary and :data:`CACHE_FORMAT`; it is
    written atomically (:func:`jaxcomp.files.atomic_file`), and an unreadable one is rebuilt.
    Returns the arrays of :func:`build_scenes`.
    """
    if not cache_dir:
        return build_scenes(spec, split, n, mnist_path, photos_path)
    _check_split(split)
    if not os.path.isfile(mnist_path):
        raise DataError(f"MNIST file not found: {mnist_path!r}; digit scenes need the Keras mnist.npz")
    photos = [(os.path.basename(p), sha256_file(p)) for p in usable_photos(list_images(photos_path))]
    key = json.dumps([dataclasses.asdict(spec), split, n, sha256_file(mnist_path), photos, MNIST_TRAIN,
                      CACHE_FORMAT], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    path = os.path.join(cache_dir, f"digit_scenes_{spec.kind}_{split}_{n}_{digest}.npz")
    if os.path.isfile(path):
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):  # a damaged cache file: rebuild it
            pass
    arrays = build_scenes(spec, split, n, mnist_path, photos_path)
    with atomic_file(path, makedirs=True) as f:
        np.savez(f, **arrays)
    return arrays

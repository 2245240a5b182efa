"""Image data: folders, shipped samples, tfds (array_record, no TensorFlow), transforms."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxcomp.configs import apply_overrides, load_config
from jaxcomp.data import (
    ArrayImageSource,
    DataError,
    ImageBatches,
    ImageFolderSource,
    build_image_data,
    image_tiles,
    load_image,
    random_crop,
    sample_image_paths,
    sample_roles,
    split_files,
)


def test_samples_are_real_rgb_photos():
    paths = sample_image_paths()
    assert len(paths) >= 6
    for p in paths:
        img = load_image(p)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
        assert min(img.shape[:2]) >= 256 and img.std() > 20  # a photo, not a flat placeholder


def test_batches_are_deterministic_per_step_and_host(l3c_tiny_config):
    data = build_image_data(l3c_tiny_config.data)
    a, b, c = data.train_batch(3), data.train_batch(3), data.train_batch(4)
    assert a["image"].shape == (4, 16, 16, 3) and a["image"].dtype == np.uint8
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["image"], c["image"])
    it = data.train_batches(3)
    np.testing.assert_array_equal(next(it)["image"], a["image"])
    np.testing.assert_array_equal(next(it)["image"], c["image"])
    it.close()
    other_host = build_image_data(l3c_tiny_config.data)
    other_host.process_index = 1
    assert not np.array_equal(other_host.train_batch(3)["image"], a["image"])


def test_random_crop_downscale_and_flip():
    img = load_image(sample_image_paths()[0])
    rng = np.random.default_rng(0)
    crop = random_crop(img, rng, 64, flip=False)
    assert crop.shape == (64, 64, 3)
    # the crop is a window of the image
    found = any(np.array_equal(img[y:y + 64, x:x + 64], crop)
                for y in range(img.shape[0] - 63) for x in range(img.shape[1] - 63))
    assert found
    small = random_crop(img, np.random.default_rng(1), 64, flip=False, downscale=(0.5, 0.5))
    assert small.shape == (64, 64, 3)
    # downscaled by 2: smoother than a plain crop of the same size (less high-frequency energy)
    flipped = random_crop(img, np.random.default_rng(0), 64, flip=True, downscale=(1, 1))
    assert flipped.shape == (64, 64, 3)
    with pytest.raises(DataError, match="smaller than the crop"):
        random_crop(img[:20, :20], rng, 64)


def test_downscaled_crop_is_a_resized_larger_window_and_the_seed_picks_the_batches():
    """``downscale=(0.5, 0.5)``: a 128-pixel window, at the place the generator draws, resized to 64
    (bicubic), not a 64-pixel window; the batches' data seed changes which crops a step gets."""
    img = load_image(sample_image_paths()[0])
    small = random_crop(img, np.random.default_rng(1), 64, flip=False, downscale=(0.5, 0.5))
    rng = np.random.default_rng(1)  # the draws of random_crop: the window's place (no scale draw at lo == hi)
    y, x = int(rng.integers(0, img.shape[0] - 128 + 1)), int(rng.integers(0, img.shape[1] - 128 + 1))
    expected = np.asarray(Image.fromarray(img[y:y + 128, x:x + 128]).resize((64, 64), Image.BICUBIC))
    np.testing.assert_array_equal(small, expected)
    images = np.stack([load_image(p)[:80, :80] for p in sample_image_paths()[:4]])
    batches = [ImageBatches(ArrayImageSource(images), None, 4, 32, seed=seed) for seed in (0, 0, 1)]
    a, same, other = (b.train_batch(0)["image"] for b in batches)
    np.testing.assert_array_equal(a, same)
    assert not np.array_equal(a, other)


def test_evaluation_tiles_at_a_fixed_scale():
    """data.eval_downscale resizes each validation image before it is tiled (training and evaluation at
    one scale, as GC's Cityscapes config needs); 1.0 keeps the images' own size; others are refused;
    images too small at that scale are named with their scaled size."""
    from jaxcomp.data.images import scale_image

    images = np.random.default_rng(0).integers(0, 256, (2, 64, 128, 3), dtype=np.uint8)
    src = ArrayImageSource(images)
    half = ImageBatches(src, src, batch_size=1, crop=16, eval_crop=32, eval_downscale=0.5).eval_tiles()
    assert half.shape == (4, 32, 32, 3)  # 32x64 per image: 1 x 2 tiles
    np.testing.assert_array_equal(half[1], scale_image(images[0], 0.5)[:, 32:64])
    assert len(ImageBatches(src, src, batch_size=1, crop=16, eval_crop=32).eval_tiles()) == 16
    with pytest.raises(DataError, match=r"at data.eval_downscale=0.25 is smaller than data.eval_crop=32 \(e.g. "
                                         r"16x32\).*or raise data.eval_downscale"):
        ImageBatches(src, src, batch_size=1, crop=16, eval_crop=32, eval_downscale=0.25).eval_tiles()
    for bad in (0, -1.0, float("nan"), True, "0.5"):
        with pytest.raises(DataError, match="data.eval_downscale must be a scale > 0"):
            ImageBatches(src, src, batch_size=1, crop=16, eval_downscale=bad)


def test_tiles_cover_the_image_in_order():
    img = np.arange(70 * 100 * 3, dtype=np.uint32).reshape(70, 100, 3)
    t = image_tiles(img, 32)
    assert t.shape == (2 * 3, 32, 32, 3)
    np.testing.assert_array_equal(t[4], img[32:64, 32:64])
    assert image_tiles(img[:10], 32).shape[0] == 0


def test_split_is_stable_and_disjoint():
    files = [f"/x/img{i}.png" for i in range(10)]
    train, val = split_files(files, 3)
    assert len(val) == 3 and not set(train) & set(val) and set(train) | set(val) == set(files)
    train2, val2 = split_files(files + ["/x/new.png"], 3)
    assert len(set(val) & set(val2)) >= 2  # adding a file barely moves the split
    # the split depends on the names only: the same photos in another folder (another machine) split alike
    moved_train, moved_val = split_files([f.replace("/x/", "/elsewhere/y/") for f in files], 3)
    assert [os.path.basename(f) for f in moved_val] == [os.path.basename(f) for f in val]
    with pytest.raises(DataError):
        split_files(files, 10)


def test_folder_source_holds_out_the_shipped_sample_names(l3c_tiny_config, tmp_path):
    names = [os.path.basename(p) for p in sample_image_paths()]
    for name in names[:2] + ["other1.png", "other2.png"]:
        Image.fromarray(np.full((40, 40, 3), 7, np.uint8)).save(tmp_path / name)
    config = apply_overrides(l3c_tiny_config, ["data.source=folder", f"data.path={tmp_path}", "data.holdout=samples"])
    data = build_image_data(config.data)
    assert sorted(os.path.basename(f) for f in data.val.files) == sorted(names[:2])
    assert sorted(os.path.basename(f) for f in data.train.files) == ["other1.png", "other2.png"]
    # samples_val (the configs' default): only the "val" role validates, the "test" role is never read
    config = apply_overrides(config, ["data.holdout=samples_val"])
    data = build_image_data(config.data)
    roles = sample_roles()
    assert sorted(os.path.basename(f) for f in data.val.files) == sorted(n for n in names[:2] if roles[n] == "val")
    assert sorted(os.path.basename(f) for f in data.train.files) == ["other1.png", "other2.png"]


def test_bad_images_give_clear_errors(tmp_path, monkeypatch, repo):
    Image.fromarray(np.zeros((8, 8, 4), np.uint8)).save(tmp_path / "alpha.png")
    with pytest.raises(DataError, match="alpha"):
        load_image(str(tmp_path / "alpha.png"))
    Image.fromarray(np.zeros((8, 8), np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(DataError, match="bits"):
        load_image(str(tmp_path / "deep.png"))
    # 16-bit RGB, which Pillow opens as 8-bit "RGB": a hand-written PNG (Pillow cannot write one)
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + np.full((4, 3), 0xABCD, ">u2").tobytes() for _ in range(4))
    header = struct.pack(">IIBBBBB", 4, 4, 16, 2, 0, 0, 0)  # 4 x 4, 16 bits, RGB
    (tmp_path / "rgb16.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                                         + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    with Image.open(tmp_path / "rgb16.png") as im:
        assert im.mode == "RGB"  # what the check must see through
    with pytest.raises(DataError, match=r"rgb16\.png: RGB \(RGB;16B\) images \(more than 8 bits per sample\)"):
        load_image(str(tmp_path / "rgb16.png"))
    # a 16-bit PPM: Pillow opens it as "RGB" too, its tile saying (mode, maxval), not a deep raw mode
    (tmp_path / "rgb16.ppm").write_bytes(b"P6 4 4 65535\n" + np.full((4, 4, 3), 0xABCD, ">u2").tobytes())
    with pytest.raises(DataError, match=r"rgb16\.ppm: RGB \(maxval 65535\) images \(more than 8 bits"):
        load_image(str(tmp_path / "rgb16.ppm"))
    (tmp_path / "rgb8.ppm").write_bytes(b"P6 4 4 255\n" + np.full((4, 4, 3), 171, np.uint8).tobytes())
    assert (load_image(str(tmp_path / "rgb8.ppm")) == 171).all()
    Image.new("CMYK", (8, 8), (1, 2, 3, 4)).save(tmp_path / "cmyk.tif")
    with pytest.raises(DataError, match="CMYK images are not supported"):
        load_image(str(tmp_path / "cmyk.tif"))
    second = Image.new("RGB", (8, 8), "red")
    Image.new("RGB", (8, 8)).save(tmp_path / "pages.tif", save_all=True, append_images=[second])
    with pytest.raises(DataError, match="has 2 frames"):
        load_image(str(tmp_path / "pages.tif"))
    photo = np.full((8, 8, 3), (200, 10, 10), np.uint8)  # a camera JPEG with a preview (MPO): its main image
    Image.fromarray(photo).save(tmp_path / "camera.jpg", format="MPO", save_all=True, append_images=[second])
    with Image.open(tmp_path / "camera.jpg") as im:
        assert im.format == "MPO" and im.n_frames == 2
    assert np.abs(load_image(str(tmp_path / "camera.jpg")).astype(int) - photo).max() < 16
    Image.new("RGB", (8, 8)).save(tmp_path / "big.png")
    with monkeypatch.context() as m:  # a decompression bomb, by Pillow's limit
        m.setattr(Image, "MAX_IMAGE_PIXELS", 16)
        with pytest.raises(DataError, match="big.png: too large to decode safely"):
            load_image(str(tmp_path / "big.png"))
    assert load_image(str(tmp_path / "big.png")).shape == (8, 8, 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="cannot decode"):
        ImageFolderSource([str(tmp_path / "broken.png")])[0]
    gray = tmp_path / "gray.png"
    Image.fromarray(np.full((8, 8), 9, np.uint8)).save(gray)
    assert load_image(str(gray)).shape == (8, 8, 3)
    # a camera's "rotate 90° clockwise" (EXIF orientation 6): the pixels as viewers show them, since a
    # decoded PNG keeps no EXIF; a PNG with the tag is turned the same way
    stored = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 14
    exif = Image.Exif()
    exif[0x0112] = 6
    for name in ("turned.png", "turned.tif"):
        Image.fromarray(stored).save(tmp_path / name, exif=exif)
        np.testing.assert_array_equal(load_image(str(tmp_path / name)), np.rot90(stored, k=-1))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        ImageFolderSource.from_folder(str(empty))
    # a folder named while the source is still the shipped samples would be ignored silently
    config = load_config(str(repo / "configs" / "l3c.py") + ":tiny")
    with pytest.raises(DataError, match="add data.source=folder"):
        build_image_data(apply_overrides(config, [f"data.path={empty}"]).data)


def test_tfds_array_record_source_without_tensorflow(l3c_tiny_config, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    photos = [load_image(p)[:48, :64] for p in sample_image_paths()[:5]]

    class JaxcompTinyPhotos(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            image = tfds.features.Tensor(shape=(None, None, 3), dtype=np.uint8, encoding="bytes")
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({"image": image}))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(photos[:3]), "validation": self._generate_examples(photos[3:])}

        def _generate_examples(self, images):
            for i, img in enumerate(images):
                yield i, {"image": img}

    JaxcompTinyPhotos(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    config = apply_overrides(l3c_tiny_config, [
        "data.source=tfds", "data.tfds_name=jaxcomp_tiny_photos", f"data.tfds_data_dir={tmp_path}",
        "data.tfds_val_split=validation", "data.eval_downscale=1.0"])
    data = build_image_data(config.data)
    assert len(data.train) == 3 and len(data.val) == 2
    batch = data.train_batch(0)["image"]
    assert batch.shape == (4, 16, 16, 3)
    windows = [p[y:y + 16, x:x + 16] for p in photos[:3] for y in range(33) for x in range(49)]
    assert any(np.array_equal(batch[0], w) or np.array_equal(batch[0], w[:, ::-1]) for w in windows)
    assert data.eval_tiles().shape == (2 * 2, 32, 32, 3)
    missing = apply_overrides(config, ["data.tfds_name=no_such_dataset_here"])
    with pytest.raises(DataError, match="not available"):
        build_image_data(missing.data)


def test_centre_crop_and_benchmark_image_paths(tmp_path):
    from jaxcomp.data import benchmark_image_paths, centre_crop

    image = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)
    crop = centre_crop(image, 3, 4)
    assert np.array_equal(crop, image[1:4, 2:6]) and crop.flags.c_contiguous
    assert np.array_equal(centre_crop(image, 4), image[0:4, 2:6])
    assert centre_crop(image, 100).shape == image.shape  # never larger than the image
    shipped = benchmark_image_paths()
    assert len(shipped) >= 8 and benchmark_image_paths("", 2) == shipped[:2]
    with pytest.raises(DataError, match="--max-images must be >= 1"):
        benchmark_image_paths("", 0)
    with pytest.raises(DataError, match="image folder not found"):
        benchmark_image_paths(str(tmp_path / "missing"))


@pytest.mark.parametrize("spec", ["l3c.py:paper", "l3c.py:rgb", "l3c.py:rgb_shared", "cpm.py:paper",
                                  "cpm.py:paper_low", "cpm.py:paper_high", "cpm.py:mse", "gc.py:paper_c4",
                                  "gc.py:paper_c8", "gc_sampler.py:paper"])
def test_paper_configs_refuse_to_train_without_real_data(repo, spec):
    """The paper-scale L3C, CPM and GC configs need a training folder (or tfds) and refuse the shipped
    samples, which are the evaluation photos; the CPU configs keep training on them."""
    from jaxcomp.configs import load_config
    from jaxcomp.data import DataError, build_image_data

    config = load_config(str(repo / "configs" / spec))
    with pytest.raises(DataError, match="needs data.path"):
        build_image_data(config.data)
    with pytest.raises(DataError, match="refuses the shipped samples"):
        build_image_data(apply_overrides(config, ["data.source=samples"]).data)
    cpu = spec.split(":")[0] + {"l3c.py": ":cpu", "cpm.py": ":cpu_med", "gc.py": ":cpu_c4",
                                "gc_sampler.py": ":cpu"}[spec.split(":")[0]]
    assert load_config(str(repo / "configs" / cpu)).data.source == "samples"



def test_image_helpers_name_bad_arguments():
    from jaxcomp.data.images import resize_centre_crop

    # crop settings that would train on NaN (crop 0), divide by zero or fail deep in the batch code
    source = ArrayImageSource(np.zeros((2, 16, 16, 3), np.uint8))
    for kwargs, message in ((dict(crop=0), "data.crop must be a positive"), (dict(crop=-8), "data.crop"),
                            (dict(eval_crop=0), "data.eval_crop"), (dict(downscale=(0.0, 0.0)), "data.downscale"),
                            (dict(downscale=(-1.0, -1.0)), "data.downscale"), (dict(downscale=(1.0, 0.5)), "lo <= hi"),
                            (dict(downscale=(1.0, "a")), "data.downscale"), (dict(downscale=(1.0, 2.0, 3.0)), "two")):
        with pytest.raises(DataError, match=message):
            ImageBatches(source, None, batch_size=2, **{"crop": 8, **kwargs})
    assert ImageBatches(source, None, batch_size=2, crop=8, downscale=(0.5, 1.0)).train_batch(0)["image"].shape[1] == 8

    image = np.zeros((20, 30, 3), np.uint8)
    for tile in (0, -2, 2.5):
        with pytest.raises(DataError, match="tile must be a positive integer"):
            image_tiles(image, tile)
    with pytest.raises(DataError, match="expects a uint8 image"):
        resize_centre_crop(np.random.default_rng(0).random((20, 30, 3)), 8)  # floats in [0, 1]
    with pytest.raises(DataError, match="size must be positive"):
        resize_centre_crop(image, 0)
    assert resize_centre_crop(image, 8).shape == (8, 8, 3)
    with pytest.raises(DataError, match="expects a file path, got NoneType"):
        load_image(None)
    from jaxcomp.data.images import centre_crop, random_crop

    with pytest.raises(DataError, match=r"an image \[H, W, \.\.\.\]"):
        centre_crop(np.arange(10), 4)
    assert centre_crop(image, 4).shape == (4, 4, 3) and centre_crop(image[..., 0], 4, 6).shape == (4, 6)
    for size in (-2, 0, 2.5, True):  # -2 gave an empty (0, 0, 3) crop without a word
        with pytest.raises(DataError, match="positive integer height and width"):
            centre_crop(image, size)
    rng = np.random.default_rng(0)
    for bad in (image.astype(np.float64) / 255, image[..., 0], image[..., :2], list(image)):
        with pytest.raises(DataError, match="random_crop expects a uint8 image"):  # float crops came back as float
            random_crop(bad, rng, 8)
    gray = np.random.default_rng(1).integers(0, 256, (20, 30, 1), dtype=np.uint8)
    assert random_crop(gray, rng, 8, downscale=(0.5, 0.5)).shape == (8, 8, 1)  # resized through PIL as [H, W]


def test_folders_and_validation_images_that_would_train_or_score_on_less_say_so(tmp_path, caplog):
    """Images in subfolders are not read: a warning counts them (an error names them if the folder
    has none of its own); a file is not a folder; validation images all smaller than eval_crop are
    an error instead of a run without evaluation, some of them a warning."""
    import logging

    from jaxcomp.data import list_images

    rng = np.random.default_rng(0)
    (tmp_path / "top" / "sub").mkdir(parents=True)
    for name in ("top/a.png", "top/sub/b.png", "top/sub/c.png"):
        Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).save(tmp_path / name)
    with caplog.at_level(logging.WARNING, logger="jaxcomp.data.images"):
        assert [os.path.basename(p) for p in list_images(str(tmp_path / "top"), warn_nested=True)] == ["a.png"]
    assert "2 images in its subfolders are not" in caplog.text
    with pytest.raises(DataError, match="its subfolders hold 1"):
        list_images(str(tmp_path))  # only the folder top/ (holding a.png) inside
    with pytest.raises(DataError, match="is a file, not a folder"):
        list_images(str(tmp_path / "top" / "a.png"))
    small = ArrayImageSource(np.zeros((2, 20, 20, 3), np.uint8))
    with pytest.raises(DataError, match="every validation image is smaller than data.eval_crop=32"):
        ImageBatches(small, small, 2, 16, eval_crop=32).eval_tiles()
    class Listed:  # an ImageSource of two sizes
        images = [np.zeros((20, 20, 3), np.uint8), np.zeros((40, 40, 3), np.uint8)]
        __len__ = lambda self: 2  # noqa: E731
        __getitem__ = lambda self, i: self.images[i]  # noqa: E731

    mixed = Listed()
    data = ImageBatches(small, mixed, 2, 16, eval_crop=32)
    with caplog.at_level(logging.WARNING, logger="jaxcomp.data.images"):
        assert len(data.eval_tiles()) == 1
        assert len(data.eval_tiles()) == 1  # every evaluation of a run: one warning
    assert caplog.text.count("1 of 2 validation images are smaller") == 1


def test_classification_arrays_of_a_users_file_are_checked(tmp_path):
    """An MNIST-style ``.npz`` (or tfds arrays) in a layout the loaders do not read is refused by name
    instead of training on garbage: channels-first or flattened images, RGBA, one-hot, fractional or
    negative labels, a count mismatch; Keras' ``[N, 1]`` labels and whole-valued float labels are read."""
    from jaxcomp.data.classification import check_classification_arrays, load_mnist_arrays

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), np.array([0, 1, 2, 3, 4, 5], np.uint8)

    def npz(name, x_train, y_train):
        path = tmp_path / f"{name}.npz"
        np.savez(path, x_train=x_train, y_train=y_train, x_test=x, y_test=y)
        return str(path)

    images, labels = load_mnist_arrays(npz("good", x, y[:, None].astype(np.float32)), "train")
    assert images.shape == (6, 28, 28, 1) and labels.dtype == np.int32 and labels.tolist() == list(range(6))
    for name, x_train, y_train, message in [
        ("nchw", x[:, None], y, r"got uint8 \(6, 1, 28, 28\) \(channels first"),
        ("flat", x.reshape(6, -1), y, r"\(6, 784\) \(flattened"),
        ("onehot", x, np.eye(10, dtype=np.uint8)[y], r"labels of shape \(6, 10\) \(one-hot"),
        ("fraction", x, y + 0.5, r"whole class indices, got float64 values such as \[0.5, 1.5, 2.5\]"),
        ("negative", x, y.astype(np.int64) - 1, r"0..K-1, got -1"),
        ("count", x, y[:5], "6 images but 5 labels"),
    ]:
        path = npz(name, x_train, y_train)
        with pytest.raises(DataError, match=rf"{name}\.npz \(train split\): .*{message}"):
            load_mnist_arrays(path, "train")
    with pytest.raises(DataError, match=r"cifar: expected uint8 images .* got uint8 \(6, 28, 28, 4\)"):
        check_classification_arrays(np.zeros((6, 28, 28, 4), np.uint8), y, "cifar")


def test_tfds_data_problems_are_named(monkeypatch, tmp_path):
    """What a prepared tfds dataset can hold that the loaders do not read, and what a config can ask that
    it does not have, each named (the example, the features or splits there are): images of several
    sizes or RGBA for in-memory classification, no 'label' feature, an unknown split, a dataset not
    prepared (tfds' list of every dataset is not repeated); the streamed ImageNet batches' size above
    resize, RGBA and labels out of range; data.resize with a dataset's own label maps (refused; colour
    clusters are labelled on the resized images); an image smaller than the crop names its file."""
    import ml_collections
    import tensorflow_datasets as tfds

    from jaxcomp.data import build_image_data
    from jaxcomp.data.classification import load_tfds_arrays
    from jaxcomp.vision.data import TfdsStreamBatches

    rng = np.random.default_rng(0)
    rgb = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    datasets = {
        "sizes": [{"image": rgb[0], "label": 0}, {"image": rgb[1][:36], "label": 1}],
        "rgba": [{"image": np.zeros((40, 48, 4), np.uint8), "label": 0}],
        "nolabel": [{"image": rgb[0], "digit": 0}],
        "good": [{"image": im, "label": i} for i, im in enumerate(rgb)],
        "badlabel": [{"image": rgb[0], "label": 7}],
    }

    def data_source(name, split, data_dir=None, download=True):
        if name == "absent":
            raise tfds.core.registered.DatasetNotFoundError("Dataset absent not found.\nAvailable datasets:\n\t- mnist")
        if split not in ("train", "validation"):
            raise ValueError(f"Unknown split '{split}'. Should be one of ['train', 'validation'].")
        return datasets[name]

    monkeypatch.setattr(tfds, "data_source", data_source)
    with pytest.raises(DataError, match=r"'sizes' split 'train': example 1 is an image of uint8 \(36, 48, 3\)"):
        load_tfds_arrays("sizes", "train")
    with pytest.raises(DataError, match=r"'rgba' split 'train': expected uint8 images .*\(1, 40, 48, 4\)"):
        load_tfds_arrays("rgba", "train")
    with pytest.raises(DataError, match=r"no 'label' feature \(they have 'image', 'digit'\)"):
        load_tfds_arrays("nolabel", "train")
    with pytest.raises(DataError, match=r"'good' has no split 'test': its splits are \['train', 'validation'\]"):
        load_tfds_arrays("good", "test")
    with pytest.raises(DataError, match="'absent' split 'train' is not available") as absent:
        load_tfds_arrays("absent", "train")
    assert "Available datasets" not in str(absent.value) and "tfds build absent" in str(absent.value)
    assert load_tfds_arrays("good", "train")[0].shape == (3, 40, 48, 3)

    def stream(name, **settings):
        return TfdsStreamBatches(ml_collections.ConfigDict(dict(
            tfds_name=name, tfds_train_split="train", tfds_val_split="validation", size=32, resize=36,
            batch_size=1, seed=0, num_classes=3, flip=True) | settings))

    assert stream("good").train_batch(0)["image"].shape == (1, 32, 32, 3)
    with pytest.raises(DataError, match="data.size=32 and data.resize=24: need 0 < size <= resize"):
        stream("good", resize=24)
    with pytest.raises(DataError, match=r"tfds rgba:train example 0 is an image of uint8 \(40, 48, 4\)"):
        stream("rgba").train_batch(0)
    with pytest.raises(DataError, match=r"tfds badlabel:train example 0 has label 7; expected a class index in 0..2"):
        stream("badlabel").train_batch(0)

    images = ml_collections.ConfigDict(dict(
        source="tfds", tfds_name="good", tfds_train_split="train", tfds_val_split="validation", tfds_data_dir="",
        batch_size=1, crop=16, flip=False, downscale=(1.0, 1.0), eval_crop=16, seed=0, cache=True, resize=16,
        labels="tfds", label_classes=4))
    with pytest.raises(DataError, match="data.resize=16 with data.labels='tfds'"):
        build_image_data(images)
    clusters = build_image_data(ml_collections.ConfigDict(images.to_dict() | {"labels": "clusters"}))
    assert clusters.eval_arrays()["image"].shape == (3, 16, 16, 3)  # one 16-pixel tile an image: resized first

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(rgb[0][:12]).save(folder / "small.png")
    small = ml_collections.ConfigDict(images.to_dict() | dict(source="folder", path=str(folder), labels="",
                                                              resize=0, num_val=0, holdout="hash"))
    with pytest.raises(DataError, match=r"small\.png: image of size 12x48 is smaller than the crop 16"):
        build_image_data(small).train_batch(0)

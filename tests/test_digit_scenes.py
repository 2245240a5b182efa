"""MNIST-M-style digit scenes (jaxcomp.data.digit_scenes) on a tiny fake MNIST and synthetic photos."""

import glob
import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxcomp.data import digit_scenes as ds
from jaxcomp.data.images import SAMPLES_DIR, DataError, list_images

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
# synthetic photos: one base colour each (plus smooth noise), so a pixel's texture names its photo
BASES = {"p0.png": (210, 40, 40), "p1.png": (40, 210, 40), "p2.png": (40, 40, 210), "p3.png": (210, 210, 40),
         "p4.png": (40, 210, 210), "p5.png": (210, 40, 210)}
HELD_OUT = ("Wine_by_Jakkub_Mede.png", (128, 128, 128))  # named like a shipped sample: never used
TRAIN_ROWS = 43  # the fake file's train/val boundary (MNIST's is 50,000)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """A fake mnist.npz (the 10 shipped digits, unpadded to 28x28, tiled; test in reverse order) and a
    photos folder."""
    root = tmp_path_factory.mktemp("digit_scenes")
    files = sorted(glob.glob(os.path.join(SAMPLES_DIR, "mnist", "*_digit*.png")))
    digits = np.stack([np.asarray(Image.open(f).convert("L"))[2:-2, 2:-2] for f in files])  # padded to 32
    labels = np.array([int(re.search(r"digit(\d)", f).group(1)) for f in files])
    assert digits.shape == (10, 28, 28) and sorted(labels) == list(range(10))
    train = np.tile(np.arange(10), 6)
    test = np.tile(np.arange(10)[::-1], 3)
    mnist = str(root / "mnist.npz")
    np.savez(mnist, x_train=digits[train], y_train=labels[train], x_test=digits[test], y_test=labels[test])
    photos = root / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, base in [*BASES.items(), HELD_OUT]:
        noise = np.asarray(Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)).resize((120, 90),
                                                                                                 Image.BICUBIC))
        amp = 0 if name == HELD_OUT[0] else 0.15
        img = np.clip(np.array(base) + amp * (noise.astype(np.float64) - 127.5), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(photos / name)
    (photos / "notes.txt").write_text("not an image")
    return mnist, str(photos)


@pytest.fixture(autouse=True)
def small_boundary(monkeypatch):
    monkeypatch.setattr(ds, "MNIST_TRAIN", TRAIN_ROWS)


def rederive(out, i, digits, spec):
    """alphas [k, S, S] of image i's digits from the metadata, and the label map they make."""
    s = spec.size
    alphas, labels = [], np.zeros((s, s), np.uint8)
    x, y = digits
    for j in range(out["digit_index"].shape[1]):
        idx = out["digit_index"][i, j]
        if idx < 0:
            assert (out["digit_box"][i, j] == -1).all()
            continue
        top, left, side = out["digit_box"][i, j]
        assert top >= 0 and left >= 0 and top + side <= s and left + side <= s  # fully inside
        a = np.zeros((s, s), np.float32)
        a[top:top + side, left:left + side] = np.asarray(
            Image.fromarray(x[idx]).resize((side, side), Image.BILINEAR), np.float32) / 255
        labels[a >= 0.5] = y[idx] + 1
        alphas.append(a)
    return np.stack(alphas), labels


def check_composite(out, spec, digits):
    """Where a digit's alpha is ~1 and no later digit covers it the pixel is its colour (up to the
    texture's weight 1 - alpha); the label map is the one its digits make; background pixels show
    the texture of `photo`; pixels labelled as a digit look more like its colour than the texture."""
    exact = 0
    for i in range(len(out["image"])):
        alphas, labels = rederive(out, i, digits, spec)
        if "labels" in out:
            np.testing.assert_array_equal(out["labels"][i], labels)
        for j in range(len(alphas)):
            top_j = (alphas[j] >= 0.98) & ~(alphas[j + 1:] > 0).any(0)  # MNIST's darkest ink is 254
            err = np.abs(out["image"][i][top_j].astype(np.float32) - out["digit_colour"][i, j]).max(-1)
            assert (err <= (1 - alphas[j][top_j]) * 255 + 0.5).all()
            exact += int(top_j.sum())
        background = ~(alphas > 0).any(0)
        mean = out["image"][i][background].reshape(-1, 3).mean(0)
        nearest = min([*BASES, HELD_OUT[0]], key=lambda n: np.abs(mean - BASES.get(n, HELD_OUT[1])).sum())
        assert nearest == os.path.basename(out["textures"][out["photo"][i]])
        base = np.array(BASES[nearest])
        for j in range(len(alphas)):  # pixels labelled as a digit look more like its colour than the texture
            mine = (alphas[j] >= 0.5) & ((alphas > 0).sum(0) == 1)
            pixels = out["image"][i][mine].astype(int)
            to_colour = np.abs(pixels - out["digit_colour"][i, j]).sum(-1)
            assert (to_colour <= np.abs(pixels - base).sum(-1)).mean() >= 0.9
    assert exact > 0


def build(spec, split, n, fake, start=0):
    out = ds.build_scenes(spec, split, n, *fake, start=start)
    out["textures"] = ds.texture_split(list_images(fake[1]), split)
    return out


SEG = ds.SceneSpec(kind="segmentation", size=48, digits=(1, 3), digit_size=(20, 36))


def test_classification_images_labels_and_metadata(fake):
    spec = ds.SceneSpec(size=64)
    for split in ds.SPLITS:
        out = build(spec, split, 25, fake)
        digits = ds.split_digits(fake[0], split)
        assert out["image"].shape == (25, 64, 64, 3) and out["image"].dtype == np.uint8
        assert out["label"].dtype == np.int32 and out["digit_index"].shape == (25, 1)
        assert out["digit_colour"].shape == (25, 1, 3) and out["photo"].dtype == np.int32
        assert "labels" not in out
        assert (out["digit_index"] >= 0).all()
        np.testing.assert_array_equal(out["label"], digits[1][out["digit_index"][:, 0]])
        top, left, side = out["digit_box"][:, 0].T
        assert ((36 <= side) & (side <= 56)).all()
        centre = (64 - side) // 2
        assert (np.abs(top - centre) <= 8).all() and (np.abs(left - centre) <= 8).all()
        check_composite(out, spec, digits)
    # each digit of the split once per N images (the train split's 43 digits)
    out = ds.build_scenes(spec, "train", TRAIN_ROWS, *fake)
    assert sorted(out["digit_index"][:, 0]) == list(range(TRAIN_ROWS))


def test_segmentation_labels_match_the_image(fake):
    out = build(SEG, "train", 30, fake)
    digits = ds.split_digits(fake[0], "train")
    assert out["labels"].shape == (30, 48, 48) and out["labels"].dtype == np.uint8
    assert out["digit_index"].shape == (30, 3) and out["labels"].max() <= ds.NUM_SEG_CLASSES - 1
    counts = (out["digit_index"] >= 0).sum(1)
    assert set(counts) == {1, 2, 3}
    assert ((out["digit_index"] >= 0) == (np.arange(3) < counts[:, None])).all()  # slots filled in order
    check_composite(out, SEG, digits)
    for i in range(30):  # label: the class of the largest digit
        k = counts[i]
        sides = out["digit_box"][i, :k, 2]
        classes = digits[1][out["digit_index"][i, :k]]
        assert out["label"][i] in classes[sides == sides.max()]
        present = set(np.unique(out["labels"][i])) - {ds.BACKGROUND}
        assert present <= {c + 1 for c in classes}
    assert (out["labels"] == ds.BACKGROUND).mean() > 0.5
    used = out["digit_index"][:TRAIN_ROWS // 3]  # no digit twice in the first N // max_digits images
    used = used[used >= 0]
    assert len(set(used)) == len(used)


def test_deterministic_and_seeded(fake):
    for spec in (ds.SceneSpec(), SEG):
        a = ds.build_scenes(spec, "val", 8, *fake)
        b = ds.build_scenes(spec, "val", 8, *fake)
        c = ds.build_scenes(ds.SceneSpec(**{**spec.__dict__, "seed": 1}), "val", 8, *fake)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
        assert not np.array_equal(a["image"][:, :3, :3], c["image"][:, :3, :3])  # other textures too
        assert not np.array_equal(a["digit_index"], c["digit_index"])


def test_random_access(fake):
    for spec in (ds.SceneSpec(), SEG):
        full = ds.build_scenes(spec, "train", 12, *fake)
        for k in (0, 5, 11):
            one = ds.build_scenes(spec, "train", 1, *fake, start=k)
            for key in full:
                np.testing.assert_array_equal(one[key][0], full[key][k], err_msg=f"{key} of image {k}")
        part = ds.build_scenes(spec, "train", 4, *fake, start=7)
        for key in full:
            np.testing.assert_array_equal(part[key], full[key][7:11])


def test_images_vary(fake):
    out = ds.build_scenes(ds.SceneSpec(), "train", 20, *fake)
    assert len(set(out["photo"])) >= 3
    corners = {out["image"][i, :3, :3].tobytes() for i in range(20)}
    assert len(corners) == 20
    assert len(set(out["digit_box"][:, 0, 2])) >= 5


def test_colours_contrast_with_the_texture(fake, tmp_path):
    spec = ds.SceneSpec(colour_offset=0)
    out = build(spec, "train", 20, fake)
    base = np.array([BASES[os.path.basename(out["textures"][p])] for p in out["photo"]])
    assert (np.abs(out["digit_colour"][:, 0].astype(int) - (255 - base)).max(-1) <= 30).all()  # inverted
    out = ds.build_scenes(ds.SceneSpec(), "train", 20, *fake)
    base = np.array([BASES[os.path.basename(ds.texture_split(list_images(fake[1]), "train")[p])]
                     for p in out["photo"]])
    assert (np.linalg.norm(out["digit_colour"][:, 0] - base, axis=-1) >= 80).all()
    assert len({tuple(c) for c in out["digit_colour"][:, 0]}) >= 10  # random offsets
    gray = tmp_path / "gray"  # 255 - mid-gray is mid-gray: pushed to min_contrast away
    gray.mkdir()
    for k in range(3):
        Image.fromarray(np.full((40, 40, 3), 127 + k, np.uint8)).save(gray / f"g{k}.png")
    for offset in (0, 64):
        out = ds.build_scenes(ds.SceneSpec(colour_offset=offset), "train", 10, fake[0], str(gray))
        dist = np.linalg.norm(out["digit_colour"][:, 0].astype(float) - 127, axis=-1)
        assert (dist >= 96 - 2).all()


def test_texture_split_rule_and_holdout(fake):
    photos = list_images(fake[1])
    assert HELD_OUT[0] in {os.path.basename(p) for p in photos}
    splits = {s: [os.path.basename(p) for p in ds.texture_split(photos, s)] for s in ds.SPLITS}
    assert splits == {"train": ["p0.png", "p1.png", "p2.png", "p3.png"], "val": ["p4.png"], "test": ["p5.png"]}
    names = [f"{c}.png" for c in "abcdefghijklmnopqr"] + [HELD_OUT[0], "Picture_0B_by_freespace.png"]
    sizes = {s: len(ds.texture_split(names, s)) for s in ds.SPLITS}
    assert sizes == {"train": 12, "val": 3, "test": 3}
    assert ds.texture_split(["x/c.png", "y/a.png", "b.png"], "val") == ["b.png"]
    assert ds.texture_split(["x/c.png", "y/a.png", "b.png"], "test") == ["x/c.png"]
    assert ds.texture_split([f"{c}.png" for c in "abcde"], "train") == ["a.png", "b.png", "c.png"]
    with pytest.raises(DataError, match="at least 3 photos"):
        ds.texture_split(["a.png", "b.png", HELD_OUT[0]], "train")


def test_splits_use_disjoint_digits_and_textures(fake):
    x_all = np.load(fake[0])
    train, val, test = (ds.split_digits(fake[0], s) for s in ds.SPLITS)
    np.testing.assert_array_equal(train[0], x_all["x_train"][:TRAIN_ROWS])
    np.testing.assert_array_equal(val[0], x_all["x_train"][TRAIN_ROWS:])
    np.testing.assert_array_equal(test[0], x_all["x_test"])
    np.testing.assert_array_equal(val[1], x_all["y_train"][TRAIN_ROWS:])
    photos = list_images(fake[1])
    used = [set(ds.texture_split(photos, s)) for s in ds.SPLITS]
    assert not (used[0] & used[1] or used[0] & used[2] or used[1] & used[2])
    assert len(set.union(*used)) == len(BASES)
    for split in ds.SPLITS:  # the images show their split's photos (check_composite checks which one)
        out = build(ds.SceneSpec(), split, 10, fake)
        check_composite(out, ds.SceneSpec(), ds.split_digits(fake[0], split))


def test_errors(fake, tmp_path, monkeypatch):
    mnist, photos = fake
    spec = ds.SceneSpec()
    with pytest.raises(DataError, match="MNIST file not found"):
        ds.build_scenes(spec, "train", 2, str(tmp_path / "none.npz"), photos)
    with pytest.raises(DataError, match="image folder not found"):
        ds.build_scenes(spec, "train", 2, mnist, str(tmp_path / "nowhere"))
    only_held_out = tmp_path / "held"
    only_held_out.mkdir()
    Image.new("RGB", (64, 64)).save(only_held_out / HELD_OUT[0])
    Image.new("RGB", (64, 64)).save(only_held_out / "sunset_by_Aitzol_Berasategi.png")
    with pytest.raises(DataError, match="at least 3 photos"):
        ds.build_scenes(spec, "train", 2, mnist, str(only_held_out))
    with pytest.raises(DataError, match="unknown digit-scene split"):
        ds.build_scenes(spec, "validation", 2, mnist, photos)
    with pytest.raises(DataError, match="unknown digit-scene kind"):
        ds.SceneSpec(kind="detection")
    with pytest.raises(DataError, match="multiple of 8"):
        ds.SceneSpec(size=60)
    with pytest.raises(DataError, match="exactly one digit"):
        ds.SceneSpec(digits=(1, 2))
    with pytest.raises(DataError, match="larger than the image size"):
        ds.SceneSpec(size=32, digit_size=(20, 40))
    monkeypatch.setattr(ds, "MNIST_TRAIN", 60)  # x_train has 60 rows: val is empty
    with pytest.raises(DataError, match="'val' split .* has no MNIST digits"):
        ds.build_scenes(spec, "val", 2, mnist, photos)
    ds.build_scenes(spec, "train", 2, mnist, photos)


def test_scene_arrays_cache(fake, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    a = ds.scene_arrays(SEG, "test", 5, *fake, cache_dir=str(cache))
    (path,) = cache.iterdir()
    assert path.suffix == ".npz" and not list(cache.glob("*.tmp*"))

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt although cached")

    real = ds.build_scenes
    monkeypatch.setattr(ds, "build_scenes", fail)
    b = ds.scene_arrays(SEG, "test", 5, *fake, cache_dir=str(cache))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    monkeypatch.setattr(ds, "build_scenes", real)
    ds.scene_arrays(SEG, "test", 6, *fake, cache_dir=str(cache))
    other = ds.scene_arrays(ds.SceneSpec(kind="segmentation", size=48, digits=(1, 3), digit_size=(20, 36), seed=3),
                            "test", 5, *fake, cache_dir=str(cache))
    assert not np.array_equal(other["image"], a["image"])
    assert len(list(cache.iterdir())) == 3
    path.write_bytes(b"damaged")
    c = ds.scene_arrays(SEG, "test", 5, *fake, cache_dir=str(cache))
    assert all(np.array_equal(a[k], c[k]) for k in a)
    d = ds.scene_arrays(SEG, "test", 5, *fake)
    assert all(np.array_equal(a[k], d[k]) for k in a)
    # an MNIST file rewritten in place, to the same size, with other labels: a new key, not the old scenes
    import shutil

    mnist = tmp_path / "mnist.npz"
    shutil.copy(fake[0], mnist)
    before = ds.scene_arrays(SEG, "test", 5, str(mnist), fake[1], cache_dir=str(cache))
    with np.load(fake[0]) as f:
        arrays = {k: f[k] for k in f.files}
    np.savez(mnist, **dict(arrays, y_test=(arrays["y_test"] + 1) % 10))
    assert mnist.stat().st_size == os.path.getsize(fake[0])
    after = ds.scene_arrays(SEG, "test", 5, str(mnist), fake[1], cache_dir=str(cache))
    assert not np.array_equal(after["label"], before["label"])


@pytest.mark.skipif(not (os.path.isfile(os.path.join(SHARED, "mnist", "mnist.npz"))
                         and os.path.isdir(os.path.join(SHARED, "photos"))), reason="no ../shared/data")
def test_real_data(monkeypatch):
    monkeypatch.setattr(ds, "MNIST_TRAIN", 50_000)
    mnist, photos = os.path.join(SHARED, "mnist", "mnist.npz"), os.path.join(SHARED, "photos")
    out = ds.build_scenes(ds.SceneSpec(), "test", 200, mnist, photos)
    assert (np.bincount(out["label"], minlength=10) > 0).all() and out["label"].max() == 9
    shipped = {os.path.basename(p) for p in list_images(SAMPLES_DIR)}
    for split in ds.SPLITS:
        assert not shipped & {os.path.basename(p) for p in ds.texture_split(list_images(photos), split)}
    assert len(ds.split_digits(mnist, "val")[0]) == 10_000


def test_each_split_of_a_scenes_config_holds_its_own_scenes(fake):
    """``config.data`` of the digit scenes: the understanding task's splits and the codec's training
    and validation sources (``build_image_data``) are the scenes of their own split."""
    import ml_collections

    from jaxcomp.data import build_image_data
    from jaxcomp.vision.data import split_images

    data = ml_collections.ConfigDict(dict(
        source="digit_scenes", kind="classification", size=32, digits=(1, 1), digit_size=(20, 28), scene_seed=0,
        num_train=4, num_val=3, num_test=2, mnist_path=fake[0], photos_path=fake[1], cache_dir="",
        batch_size=2, crop=32, flip=False, downscale=(1.0, 1.0), eval_crop=32, seed=0))
    spec = ds.SceneSpec(size=32, digits=(1, 1), digit_size=(20, 28))
    images = {}
    for split in ds.SPLITS:
        images[split] = split_images(data, split)[0]
        np.testing.assert_array_equal(images[split], ds.build_scenes(spec, split, data[f"num_{split}"], *fake)["image"])
    codec_data = build_image_data(data)
    np.testing.assert_array_equal(codec_data.train.images, images["train"])
    np.testing.assert_array_equal(codec_data.val.images, images["val"])
    assert not np.array_equal(images["train"][:3], images["val"])

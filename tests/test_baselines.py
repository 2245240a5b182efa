"""Baseline codecs: every lossless one is bit-exact on a real photo; lossy ones and the benchmark run."""

from __future__ import annotations

import csv
import importlib
import os
import re

import numpy as np
import pytest
from PIL import Image

from jaxcomp import baselines
from jaxcomp.baselines import Codec, CodecError, NotLosslessError, bits_per_subpixel, verify_lossless
from jaxcomp.data import load_image, sample_image_paths

ic = pytest.importorskip("imagecodecs")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A 128x128 crop (uint8 [128, 128, 3]) of a shipped photo, from its textured middle."""
    image = load_image(sample_image_paths()[0])
    h, w = image.shape[:2]
    return np.ascontiguousarray(image[h // 2 - 64:h // 2 + 64, w // 2 - 64:w // 2 + 64])


@pytest.fixture(scope="module")
def bench_codecs():
    return importlib.import_module("experiments.bench_codecs")


def test_registry_lists_every_available_codec():
    names = [c.name for c in baselines.lossless_baselines()]
    assert names == [n for n in baselines.lossless_codec_names() if n in names]
    assert {"png", "webp", "jpeg2000", "jpegxl-e7", "jpegxl-e9"} <= set(names)
    assert [c.name for c in baselines.lossless_baselines(["webp", "png"])] == ["webp", "png"]


@pytest.mark.parametrize("name", baselines.lossless_codec_names())
def test_lossless_baseline_is_bit_exact_on_photo(name, photo):
    try:
        (codec,) = baselines.lossless_baselines([name])
    except CodecError as e:
        pytest.skip(str(e))  # not in this imagecodecs build
    data = verify_lossless(codec, photo)
    assert np.array_equal(codec.decode(data), photo)
    bpsp = bits_per_subpixel(len(data), photo.shape)
    assert 0.5 < bpsp < 8.0, f"{name}: {bpsp:.3f} bpsp is not below the raw 8 bpsp (24 bits per pixel)"


def test_verify_lossless_catches_lossy_codecs(photo):
    def flip_one(data: bytes) -> np.ndarray:
        out = ic.png_decode(data).copy()
        out[3, 5, 1] ^= 1
        return out

    flipper = Codec("flipper", lambda im: ic.png_encode(im), flip_one)
    with pytest.raises(NotLosslessError, match=r"'flipper' is not lossless: 1 of 49152 subpixels differ.*\(3, 5, 1\)"):
        verify_lossless(flipper, photo)
    cropper = Codec("cropper", lambda im: ic.png_encode(im[:-1]), ic.png_decode)
    with pytest.raises(NotLosslessError, match="decoded uint8"):
        verify_lossless(cropper, photo)


@pytest.mark.parametrize("encode", [
    lambda im: ic.jpegxl_encode(im, level=100),  # no lossless=True: near-lossless VarDCT
    lambda im: ic.jpegxl_encode(im, distance=0),
    lambda im: ic.jpeg2k_encode(im, level=50, reversible=True),  # reversible wavelet, but rate-truncated
    lambda im: ic.webp_encode(im, 100, lossless=False),
], ids=["jpegxl-level100", "jpegxl-distance0", "jpeg2000-reversible-level50", "webp-lossless-false"])
def test_silently_lossy_settings_are_caught(encode, photo):
    def decode(data: bytes) -> np.ndarray:
        return ic.imread(data)

    with pytest.raises(NotLosslessError):
        verify_lossless(Codec("trap", encode, decode), photo)


def test_bad_input_and_names(photo):
    (png,) = baselines.lossless_baselines(["png"])
    with pytest.raises(CodecError, match="uint8"):
        png.encode(photo.astype(np.float32))
    with pytest.raises(CodecError, match=r"\[H, W, 3\]"):
        png.encode(photo[..., :1])
    with pytest.raises(CodecError, match="unknown lossless codec.*'flif'"):
        baselines.lossless_baselines(["png", "flif"])
    with pytest.raises(CodecError, match="unknown lossy codec"):
        baselines.lossy_baselines(["bpg"])


def test_lossy_baselines(photo):
    crop = np.ascontiguousarray(photo[:64, :64])
    codecs = baselines.lossy_baselines()
    assert {"jpeg", "webp", "jpeg2000"} <= {c.name for c in codecs}
    for c in codecs:
        lo, hi = (0.5, 2.0) if c.param == "bpsp" else (30, 90)
        small, large = c.encode(crop, lo), c.encode(crop, hi)
        assert len(small) < len(large), c.name
        out = c.decode(large)
        assert out.shape == crop.shape and out.dtype == np.uint8, c.name
        mse = np.mean((out.astype(float) - crop) ** 2)
        assert 0 < mse < 100, (c.name, mse)  # lossy, but a decent reconstruction
        if c.param == "bpsp":
            assert bits_per_subpixel(len(small), crop.shape) <= lo


def _tiny_folder(tmp_path, photo):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(photo[:40, :48]).save(folder / "a.png")
    Image.fromarray(photo[50:82, 60:96]).save(folder / "b.png")
    return folder


def test_bench_codecs_writes_results(tmp_path, photo, bench_codecs, monkeypatch):
    folder = _tiny_folder(tmp_path, photo)
    (png,) = baselines.lossless_baselines(["png"])
    # an estimate of 4 bpsp on the 40x48 image and 2 on the 32x36 one: the total is pooled (bits over
    # subpixels), not the mean of the two
    learned = Codec("fake-learned", png.encode, png.decode,
                    estimate=lambda im: (4.0 if im.shape[0] == 40 else 2.0) * im.size)
    monkeypatch.setattr(bench_codecs, "extra_codecs", lambda args: [learned])
    out = tmp_path / "out"
    assert bench_codecs.main(["--images", str(folder), "--out", str(out), "--no-progress"]) == 0
    md = (out / "results.md").read_text()
    assert "estimated bpsp" in md and "| fake-learned |" in md
    assert (out / "bpsp.png").stat().st_size > 1000
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    names = [c.name for c in baselines.lossless_baselines()] + ["fake-learned"]
    assert sorted({r["codec"] for r in rows}) == sorted(names)
    totals = {r["codec"]: r for r in rows if r["image"] == "TOTAL"}
    assert len(rows) == 3 * len(names) and set(totals) == set(names)
    assert all(r["exact"] == "True" for r in rows)
    # pooled bpsp of the fake codec == png's, and its estimate pooled over both images' subpixels
    assert float(totals["fake-learned"]["bpsp"]) == pytest.approx(float(totals["png"]["bpsp"]))
    subpixels = (40 * 48 + 32 * 36) * 3
    pooled = (4.0 * 40 * 48 + 2.0 * 32 * 36) * 3 / subpixels
    assert float(totals["fake-learned"]["estimated_bpsp"]) == pytest.approx(pooled)
    assert pooled != pytest.approx(3.0)  # the mean of the two images' 4 and 2
    assert sorted(float(r["estimated_bpsp"]) for r in rows if r["codec"] == "fake-learned" and r["image"] != "TOTAL") \
        == pytest.approx([2.0, 4.0])
    assert float(totals["png"]["bpsp"]) == pytest.approx(8 * int(totals["png"]["bytes"]) / subpixels)


def test_bench_codecs_errors(tmp_path, photo, bench_codecs, monkeypatch, capsys):
    """Bad input is exit 2 with one error line (as bench_rd), a codec that is not lossless exit 1."""
    folder = _tiny_folder(tmp_path, photo)
    out = str(tmp_path / "out")
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("mine")
    for argv, message in (
            (["--images", str(tmp_path / "missing"), "--no-l3c"], "image folder not found"),
            (["--images", str(tmp_path / "empty"), "--no-l3c"], "no images"),
            (["--images", str(folder), "--codecs", "png,nope", "--no-l3c"], "unknown codec.*'nope'"),
            (["--images", str(folder), "--checkpoint", str(tmp_path / "none.msgpack")], "checkpoint not found")):
        assert bench_codecs.main([*argv, "--out", out, "--no-progress"]) == 2, argv
        assert re.search(message, capsys.readouterr().err), argv
    assert bench_codecs.main(["--images", str(folder), "--codecs", "png", "--no-l3c", "--no-progress",
                              "--out", str(tmp_path / "a_file")]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err and (tmp_path / "a_file").read_text() == "mine"
    lossy = Codec("lossy", lambda im: ic.jpeg8_encode(im, level=90), ic.jpeg8_decode)
    monkeypatch.setattr(bench_codecs, "extra_codecs", lambda args: [lossy])
    assert bench_codecs.main(["--images", str(folder), "--codecs", "png,lossy", "--out", out, "--no-progress"]) == 1
    assert "'lossy' is not lossless on a.png" in capsys.readouterr().err
    # --max-images counts the images of --split (the first shipped sample is a test image)
    from jaxcomp.data import held_out_names

    assert bench_codecs.main(["--split", "val", "--max-images", "1", "--codecs", "png", "--no-l3c",
                              "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "results.csv")) as f:
        images = {r["image"] for r in csv.DictReader(f)} - {"TOTAL"}
    assert len(images) == 1 and images <= held_out_names("val")


def test_encode_at_bitrate_bisection_is_exact():
    """A fake codec whose size is known: the largest quality that fits, in a handful of encodes."""
    image = np.zeros((8, 10, 3), np.uint8)  # 80 pixels: 10 bytes = 1 bpp
    calls = []

    def encode(im, q):
        calls.append(q)
        return b"x" * (10 + 2 * int(q))  # 1 bpp + 0.2 bpp per quality step

    fake = baselines.LossyCodec("fake", encode, lambda data: image, param_range=(0, 100))
    for target_q in (0, 1, 37, 99):
        calls.clear()
        m = baselines.encode_at_bitrate(fake, image, max_bpp=1.0 + 0.2 * target_q + 0.1)
        assert (m.param, m.reachable) == (target_q, True) and m.bpp == pytest.approx(1.0 + 0.2 * target_q)
        assert len(calls) <= 9
    assert baselines.encode_at_bitrate(fake, image, max_bpp=100.0).param == 100  # everything fits
    m = baselines.encode_at_bitrate(fake, image, max_bpp=0.5)  # nothing fits: the smallest, flagged
    assert (m.param, m.reachable, m.bpp) == (0, False, 1.0)
    with pytest.raises(CodecError, match="> 0 bpp"):
        baselines.encode_at_bitrate(fake, image, max_bpp=0.0)


def test_encode_at_bitrate_real_codecs(photo):
    (jpeg, j2k) = baselines.lossy_baselines(["jpeg", "jpeg2000"])
    target = baselines.bits_per_pixel(len(jpeg.encode(photo, 50)), photo.shape)
    m = baselines.encode_at_bitrate(jpeg, photo, target)
    assert m.reachable and m.bpp <= target and m.param >= 50
    assert baselines.bits_per_pixel(len(jpeg.encode(photo, m.param + 1)), photo.shape) > target  # the largest
    assert np.array_equal(jpeg.decode(m.data), jpeg.decode(jpeg.encode(photo, m.param)))
    m = baselines.encode_at_bitrate(j2k, photo, 1.5)
    assert m.reachable and 1.2 < m.bpp <= 1.5 and m.param == pytest.approx(0.5)
    assert not baselines.encode_at_bitrate(jpeg, photo, 0.01).reachable

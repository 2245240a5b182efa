"""experiments/bench_gc without the GC model: arguments, the lowest-rate search, the grids, and the
whole script on tiny images with stand-in codecs."""

from __future__ import annotations

import csv
import importlib
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcomp.baselines import LossyCodec
from jaxcomp.data import centre_crop, load_image, sample_image_paths

ic = pytest.importorskip("imagecodecs")


@pytest.fixture(scope="module")
def bench_gc():
    return importlib.import_module("experiments.bench_gc")


class FakeGC:
    """GC's API on top of JPEG at one quality; ``flaky`` decodes differently on every call."""

    bound_bpp = 0.0181

    def __init__(self, quality: int, flaky: bool = False):
        self.quality, self.flaky, self.calls = quality, flaky, 0

    def compress(self, image: np.ndarray) -> bytes:
        return bytes(ic.jpeg8_encode(image, level=self.quality))

    def decompress(self, data: bytes) -> np.ndarray:
        out = np.array(ic.jpeg8_decode(data))
        self.calls += 1
        if self.flaky:
            out[0, 0, 0] ^= self.calls & 1
        return out


def _sized_codec(sizes: dict[float, int], param: str = "quality", param_range=(0.0, 100.0)) -> LossyCodec:
    """A codec whose file for knob value ``p`` is ``sizes[p]`` bytes (the default: 1000)."""
    return LossyCodec("sized", lambda image, p: bytes(sizes.get(p, 1000)), lambda data: None, param=param,
                      param_range=param_range)


# ----------------------------------------------------------------------------- arguments


def test_parse_args_defaults_and_lists(bench_gc):
    args = bench_gc.parse_args([])
    assert args.crop == "768x512" and args.checkpoints == "default" and args.cpm == "low"
    assert args.out.endswith("bench_gc") and args.codecs == "jpeg,webp,jpeg2000,avif"
    assert args.rate_factor == 2.0 and args.max_images is None and not args.held_out
    args = bench_gc.parse_args(["--checkpoints", "c4, runs/gc_c8/,c4", "--codecs", "jpeg,,webp", "--crop", "64",
                                "--max-images", "3", "--held-out", "--cpm", ""])
    assert bench_gc.parse_names(args.checkpoints) == ["c4", "runs/gc_c8/"]
    assert bench_gc.parse_names(args.codecs) == ["jpeg", "webp"] and bench_gc.parse_names(" , ") == []
    assert (args.crop, args.max_images, args.held_out, args.cpm) == ("64", 3, True, "")
    assert [bench_gc.gc_display_name(c) for c in ("default", "c4", "runs/gc_c8/", "m/c2.msgpack")] == [
        "GC", "GC c4", "GC gc_c8", "GC c2"]


@pytest.mark.parametrize("argv, message", [
    (["--images", "/no/such/folder"], "image folder not found"),
    (["--codecs", "jpeg,bmp"], "unknown lossy codec"),
    (["--max-images", "0"], "--max-images"),
    (["--rate-factor", "0"], "--rate-factor"),
    (["--checkpoints", "c4", "--codecs", "jpeg"], "GC codec is not available"),
    (["--checkpoints", "", "--cpm", "", "--codecs", ""], "nothing to benchmark"),
])
def test_errors_exit_2(bench_gc, monkeypatch, capsys, tmp_path, argv, message):
    monkeypatch.setitem(sys.modules, "jaxcomp.codecs.gc", None)  # as if GC did not exist: import fails
    no_cpm = [] if "--cpm" in argv else ["--cpm", ""]  # never load a model here
    assert bench_gc.main(argv + no_cpm + ["--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- lowest rate


def test_lowest_rate_search(bench_gc):
    image = np.zeros((8, 8, 3), np.uint8)
    # at the floor sizes wobble: quality 0 is not the smallest; on a tie the higher quality wins
    m = bench_gc.lowest_rate(_sized_codec({0: 120, 1: 100, 2: 100, 3: 110, 4: 130}), image)
    assert (m.param, len(m.data), m.reachable) == (2.0, 100, True)
    assert m.bpp == pytest.approx(8 * 100 / 64)
    # the search is over the lowest qualities of the codec's range only
    assert bench_gc.lowest_rate(_sized_codec({0: 50, 10: 10}, param_range=(0, 100)), image).param == 0.0
    assert bench_gc.lowest_rate(_sized_codec({30: 70, 31: 60, 35: 5}, param_range=(30, 90)), image).param == 31.0
    # a target-rate knob: ever smaller targets until the codec's floor
    floor = _sized_codec({0.01: 300, 0.001: 90, 0.0001: 90, 1e-5: 90, 1e-6: 90}, param="bpsp", param_range=(0.01, 8))
    m = bench_gc.lowest_rate(floor, image)
    assert len(m.data) == 90 and m.param == pytest.approx(0.001)


def test_lowest_rate_real_codecs(bench_gc):
    from jaxcomp.baselines import encode_at_bitrate, lossy_baselines

    image = centre_crop(load_image(sample_image_paths()[0]), 64, 96)
    for codec in lossy_baselines(["jpeg", "webp", "jpeg2000"]):
        low = bench_gc.lowest_rate(codec, image)
        for setting in ([10, 50] if codec.param == "quality" else [0.05, 0.5]):
            assert low.bpp <= bench_gc.bits_per_pixel(len(codec.encode(image, setting)), image.shape), codec.name
        # nothing is reachable below the floor; at the floor rate it is
        assert not encode_at_bitrate(codec, image, 0.5 * low.bpp).reachable, codec.name
        assert codec.decode(low.data).shape == image.shape


# ----------------------------------------------------------------------------- grids


def test_write_grid(bench_gc, tmp_path):
    red, blue = np.zeros((20, 30, 3), np.uint8), np.zeros((20, 30, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    path = tmp_path / "g" / "grid.png"
    bench_gc.write_grid(str(path), [[("original", red), ("GC: 0.020 bpp", blue)], [("only one", blue)]], pad=4)
    grid = np.asarray(Image.open(path))
    cell_w, cell_h = 30, 20 + 16
    assert grid.shape == (2 * cell_h + 3 * 4, 2 * cell_w + 3 * 4, 3)
    assert (grid[4 + 16 + 5, 4 + 5] == [255, 0, 0]).all()  # row 0, col 0: red below its label strip
    assert (grid[4 + 16 + 5, 4 + cell_w + 4 + 5] == [0, 0, 255]).all()  # row 0, col 1: blue
    assert (grid[2 * 4 + cell_h + 16 + 5, 4 + 5] == [0, 0, 255]).all()  # row 1, col 0: blue
    assert (grid[2 * 4 + cell_h + 16 + 5, 4 + cell_w + 4 + 5] == 255).all()  # row 1, col 1: empty (white)
    label = grid[4:4 + 16, 4:4 + cell_w]
    assert (label < 128).any() and (label == 255).any()  # text drawn on the white strip
    with pytest.raises(ValueError, match="no panels"):
        bench_gc.write_grid(str(path), [])


def test_grid_panels_pick_the_best_classical_within_budget(bench_gc):
    image = np.zeros((4, 4, 3), np.uint8)
    px = {k: np.full((4, 4, 3), v, np.uint8) for k, v in dict(gc=1, cpm=2, j=3, w=4, a=5, jl=6).items()}
    rows = [dict(method="GC c4", kind="gc", bpp=0.02, ms_ssim=0.7),
            dict(method="CPM low", kind="cpm", bpp=0.1, ms_ssim=0.9),
            dict(method="jpeg (lowest)", kind="lowest", codec="jpeg", bpp=0.15, ms_ssim=0.5),
            dict(method="jpeg (<= 2x GC c4)", kind="matched", codec="jpeg", target="GC c4", bpp=0.15, ms_ssim=0.5,
                 reachable=False),
            dict(method="webp (<= 2x GC c4)", kind="matched", codec="webp", target="GC c4", bpp=0.039, ms_ssim=0.6,
                 reachable=True),
            dict(method="avif (<= 2x GC c4)", kind="matched", codec="avif", target="GC c4", bpp=0.035, ms_ssim=0.8,
                 reachable=True)]
    decoded = [px["gc"], px["cpm"], px["jl"], px["j"], px["w"], px["a"]]
    (row,) = bench_gc.grid_panels(image, rows, decoded)
    assert [label.split(":")[0] for label, _ in row] == ["original", "GC c4", "CPM low", "best classical, avif"]
    assert [int(im[0, 0, 0]) for _, im in row] == [0, 1, 2, 5]
    # none within budget: the smallest file, labelled over budget
    over = [dict(r, reachable=False) for r in rows]
    (row,) = bench_gc.grid_panels(image, over, decoded)
    assert row[-1][0].startswith("avif over budget") and int(row[-1][1][0, 0, 0]) == 5
    # without GC: original | CPM | each codec at its lowest rate
    (row,) = bench_gc.grid_panels(image, rows[1:3], decoded[1:3])
    assert [label.split(":")[0] for label, _ in row] == ["original", "CPM low", "jpeg (lowest)"]


# ----------------------------------------------------------------------------- end to end


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bench_gc_end_to_end(tmp_path, bench_gc, monkeypatch, capsys):
    photo = load_image(sample_image_paths()[1])
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(centre_crop(photo, 48, 64)).save(folder / "a.png")
    Image.fromarray(photo[:40, :40]).save(folder / "b.png")
    gcs = [("GC c4", FakeGC(5)), ("GC flaky", FakeGC(8, flaky=True))]
    monkeypatch.setattr(bench_gc, "load_gc_codecs", lambda checkpoints: gcs)
    monkeypatch.setattr(bench_gc, "load_cpm_codec", lambda checkpoint: ("CPM low", FakeGC(30)))
    out = tmp_path / "out"
    assert bench_gc.main(["--images", str(folder), "--codecs", "jpeg,webp", "--out", str(out), "--no-progress",
                          "--swd-patches", "16"]) == 0
    assert "Means over images" in capsys.readouterr().out
    for name in ("results.md", "summary.md", "summary.csv", "swd.csv", "rows.csv"):
        assert (out / name).stat().st_size > 100, name
    assert (out / "bpp_swd.png").read_bytes()[:4] == b"\x89PNG"
    for stem in ("a", "b"):
        grid = np.asarray(Image.open(out / "grids" / f"{stem}.png"))
        assert grid.shape[0] > 2 * 40 and grid.shape[1] > 4 * 40  # two GC rows of four panels
    summary = {r["method"]: r for r in _read_csv(out / "summary.csv")}
    assert list(summary)[:3] == ["GC c4", "GC flaky", "CPM low"]
    assert set(summary) >= {"jpeg (lowest)", "webp (lowest)", "jpeg (<= 2x GC c4)", "webp (<= 2x GC flaky)"}
    assert summary["GC c4"]["exact"] == "2/2" and summary["GC flaky"]["exact"] == "0/2"
    assert summary["GC c4"]["within_bound"] == "0/2" and float(summary["GC c4"]["bound_bpp"]) == 0.0181
    rows = _read_csv(out / "rows.csv")
    assert len(rows) == 2 * (2 + 1 + 2 * (1 + 2))
    for r in rows:
        if r["kind"] == "matched":
            gc = next(g for g in rows if g["image"] == r["image"] and g["method"] == r["target"])
            assert float(r["target_bpp"]) == pytest.approx(2 * float(gc["bpp"]))
            assert (r["reachable"] == "True") == (float(r["bpp"]) <= float(r["target_bpp"]))
            if r["codec"] == "jpeg" and r["reachable"] == "True" and float(r["param"]) < 100:  # the best that fits
                image = load_image(str(folder / r["image"]))
                bigger = 8 * len(ic.jpeg8_encode(image, level=int(float(r["param"])) + 1, optimize=True))
                assert bigger / (image.shape[0] * image.shape[1]) > float(r["target_bpp"])
        if r["kind"] == "lowest":  # the floor is never above the rate-matched encoding
            m = next(x for x in rows if (x["image"], x["kind"], x["codec"]) == (r["image"], "matched", r["codec"]))
            assert float(r["bpp"]) <= float(m["bpp"])
    reached = summary["jpeg (<= 2x GC c4)"]["reached"]
    assert reached == f"{sum(r['reachable'] == 'True' for r in rows if r['method'] == 'jpeg (<= 2x GC c4)')}/2"
    # the set's SWD: all finite, and the high-quality CPM stand-in is closer to the originals than GC's q=5
    swd = {r["method"]: float(r["mean"]) for r in _read_csv(out / "swd.csv")}
    assert all(np.isfinite(v) and v >= 0 for v in swd.values())
    assert swd["CPM low"] < swd["GC c4"]

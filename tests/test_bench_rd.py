"""experiments/bench_rd end to end on tiny images, with a fake learned codec and JPEG."""

from __future__ import annotations

import csv
import importlib
import re
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcomp.data import centre_crop, load_image, sample_image_paths

ic = pytest.importorskip("imagecodecs")


class FakeLearnedCodec:
    """The learned codecs' API on top of JPEG at one quality; ``broken`` decodes one pixel wrong."""

    def __init__(self, quality: int, broken: bool = False, refine_steps: int = 0):
        self.quality, self.broken, self.refine_steps = quality, broken, refine_steps

    def with_refinement(self, steps: int) -> FakeLearnedCodec:
        return FakeLearnedCodec(self.quality, self.broken, steps)

    def compress(self, image: np.ndarray) -> bytes:
        return bytes(ic.jpeg8_encode(image, level=self.quality))

    def decompress(self, data: bytes) -> np.ndarray:
        out = np.array(ic.jpeg8_decode(data))
        if self.broken:
            out[0, 0, 0] ^= 1
        return out

    def reconstruct(self, image: np.ndarray) -> np.ndarray:
        return np.asarray(ic.jpeg8_decode(self.compress(image)))

    def estimate_bits(self, image: np.ndarray) -> float:
        return 0.9 * 8 * len(self.compress(image))


@pytest.fixture(scope="module")
def bench_rd():
    return importlib.import_module("experiments.bench_rd")


@pytest.fixture()
def folder(tmp_path):
    """Two small real-photo crops (48x64 and 40x40) as PNG files."""
    photo = load_image(sample_image_paths()[1])
    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(centre_crop(photo, 48, 64)).save(d / "a.png")
    Image.fromarray(photo[:40, :40]).save(d / "b.png")
    return d


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bench_rd_end_to_end(tmp_path, folder, bench_rd, monkeypatch):
    learned = [("fake_low", FakeLearnedCodec(20)), ("fake_high", FakeLearnedCodec(60, broken=True)),
               ("fake_low+refine5", FakeLearnedCodec(30, refine_steps=5))]
    monkeypatch.setattr(bench_rd, "learned_codecs", lambda args: learned)
    out = tmp_path / "out"
    assert bench_rd.main(["--images", str(folder), "--codecs", "jpeg", "--qualities", "10,50,90", "--out", str(out),
                          "--no-progress"]) == 0
    for name in ("results.md", "summary.md", "summary.csv", "per_image.csv", "curves.csv", "rows.csv"):
        assert (out / name).stat().st_size > 100, name
    for name in ("rd_msssim.png", "rd_psnr.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and (out / name).stat().st_size > 5000

    rows = _read_csv(out / "rows.csv")
    assert len(rows) == 2 * (3 + 3 + 3)  # per image: 3 learned points, 3 curve points, 3 matched
    own = {(r["image"], r["codec"]): r for r in rows if r["kind"] == "learned"}
    for (_, point), r in own.items():
        assert float(r["estimated_bpp"]) == pytest.approx(0.9 * float(r["bpp"]))
        assert r["exact"] == ("False" if point == "fake_high" else "True")
        assert 0 < float(r["ms_ssim"]) < 1 and 15 < float(r["psnr"]) < 50
    matched = [r for r in rows if r["kind"] == "matched" and "+" not in r["target"]]
    assert len(matched) == 4
    for m in matched:
        target = own[(m["image"], m["target"])]
        assert float(m["target_bpp"]) == pytest.approx(float(target["bpp"]))
        assert m["reachable"] == "True"  # the fake *is* JPEG, so its rate is reachable
        assert float(m["bpp"]) <= float(target["bpp"])  # the matched-bitrate rule
        # JPEG with optimized Huffman tables at the same quality is no larger: the same quality or better
        assert float(m["param"]) >= (20 if m["target"] == "fake_low" else 60)
        assert float(m["ms_ssim"]) >= float(target["ms_ssim"]) - 1e-6

    summary = {r["codec"] + "@" + r["point"]: r for r in _read_csv(out / "summary.csv")}
    assert set(summary) == {"fake_low@fake_low", "jpeg (matched)@fake_low", "fake_high@fake_high",
                            "jpeg (matched)@fake_high", "fake_low+refine5@fake_low+refine5",
                            "jpeg (matched)@fake_low+refine5"}
    assert summary["fake_low@fake_low"]["exact"] == "2/2" and summary["fake_high@fake_high"]["exact"] == "0/2"
    m = summary["jpeg (matched)@fake_low"]
    assert m["learned_ms_ssim_higher"].endswith("/2") and m["over_budget"] == "0"
    wins = sum(float(own[(r["image"], "fake_low")]["ms_ssim"]) > float(r["ms_ssim"])
               for r in matched if r["target"] == "fake_low")
    assert m["learned_ms_ssim_higher"] == f"{wins}/2"
    mean_bpp = np.mean([float(r["bpp"]) for r in own.values() if r["codec"] == "fake_low"])
    assert float(summary["fake_low@fake_low"]["bpp"]) == pytest.approx(mean_bpp, rel=1e-4)
    curves = _read_csv(out / "curves.csv")
    assert [(c["codec"], c["param"]) for c in curves] == [("jpeg", "10"), ("jpeg", "50"), ("jpeg", "90")]
    assert float(curves[0]["bpp"]) < float(curves[1]["bpp"]) < float(curves[2]["bpp"])
    md = (out / "results.md").read_text()
    assert "| fake_low | fake_low | 2 |" in md and "jpeg (matched)" in md and "## Baselines' curves" in md
    # the per-image table puts each image's own matched baseline beside it
    per_image = _read_csv(out / "per_image.csv")
    every_match = [r for r in rows if r["kind"] == "matched"]
    assert len(per_image) == 6
    for p in per_image:
        (m,) = [r for r in every_match if r["image"] == p["image"] and r["target"] == p["point"]]
        assert float(p["jpeg ms_ssim"]) == pytest.approx(float(m["ms_ssim"]))
        assert float(p["jpeg bpp"]) == pytest.approx(float(m["bpp"]))
    assert len({p["jpeg bpp"] for p in per_image if p["point"] == "fake_low"}) == 2
    # means are means (three values, one of them far off, tell a mean from a median)
    assert bench_rd._means([{"a": 1.0}, {"a": 2.0}, {"a": 9.0}], ["a"]) == {"a": 4.0}


def test_bench_rd_unreachable_rate_is_flagged(tmp_path, folder, bench_rd, monkeypatch):
    """A learned codec far below JPEG's smallest file: JPEG's smallest encoding, counted as over budget."""

    class Tiny(FakeLearnedCodec):
        def compress(self, image):
            return b"\0" * 4

        def decompress(self, data):
            return np.full((48, 64, 3), 128, np.uint8)

        reconstruct = lambda self, image: np.full(image.shape, 128, np.uint8)  # noqa: E731

    monkeypatch.setattr(bench_rd, "learned_codecs", lambda args: [("tiny", Tiny(0))])
    out = tmp_path / "out"
    assert bench_rd.main(["--images", str(folder), "--max-images", "1", "--codecs", "jpeg", "--qualities", "50",
                          "--out", str(out), "--no-progress"]) == 0
    (m,) = [r for r in _read_csv(out / "rows.csv") if r["kind"] == "matched"]
    assert m["reachable"] == "False" and float(m["bpp"]) > float(m["target_bpp"]) and float(m["param"]) == 0
    (s,) = [r for r in _read_csv(out / "summary.csv") if r["codec"] == "jpeg (matched)"]
    assert s["over_budget"] == "1"


def test_bench_rd_baselines_only_and_errors(tmp_path, folder, bench_rd, capsys):
    out = tmp_path / "out"
    assert bench_rd.main(["--images", str(folder), "--checkpoints", "--codecs", "jpeg", "--qualities", "30,70",
                          "--crop", "32", "--out", str(out), "--no-progress"]) == 0
    assert "No learned checkpoints" in (out / "results.md").read_text() and not (out / "summary.csv").exists()
    assert {r["height"] for r in _read_csv(out / "rows.csv")} == {"32"}
    assert (out / "rd_msssim.png").exists()
    capsys.readouterr()
    bad = [
        (["--images", str(tmp_path / "missing")], "image folder not found"),
        (["--images", str(folder), "--codecs", "jpeg,bpg"], "unknown lossy codec.*'bpg'"),
        (["--images", str(folder), "--qualities", "10,x"], "--qualities"),
        (["--images", str(folder), "--codecs", ""], "nothing to benchmark"),
        (["--images", str(folder), "--crop", "8", "--codecs", "jpeg"], "too small for MS-SSIM"),
        (["--images", str(folder), "--crop", "-1", "--codecs", "jpeg"], "--crop must be >= 0"),
        (["--images", str(folder), "--max-images", "0", "--codecs", "jpeg"], "--max-images must be >= 1"),
        (["--images", str(folder), "--refine", "5,-1", "--codecs", "jpeg"], "--refine must be a comma-separated"),
    ]
    for args, message in bad:
        assert bench_rd.main(args + ["--checkpoints", "--out", str(out), "--no-progress"]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert re.search(message, err[0]), (message, err[0])


def test_learned_codecs_from_checkpoints(tmp_path, folder, bench_rd, monkeypatch, capsys):
    """Names come from the paths; the default is the shipped cpm_{low,med,high} that exist."""
    import types

    from jaxcomp.modelfile import ModelLoadError

    def load_codec(path):
        if "missing" in path:
            raise ModelLoadError(f"checkpoint not found: {path}")
        return FakeLearnedCodec(30)

    monkeypatch.setitem(sys.modules, "jaxcomp.codecs.cpm", types.SimpleNamespace(load_codec=load_codec))
    args = bench_rd.parse_args(["--checkpoints", "runs/a/model.msgpack", "runs/b/model.msgpack", "runs/workdir/"])
    assert [name for name, _ in bench_rd.learned_codecs(args)] == ["model", "model'", "workdir"]
    args = bench_rd.parse_args(["--checkpoints", "runs/a.msgpack", "--refine", "0,7,7"])
    assert [(n, c.refine_steps) for n, c in bench_rd.learned_codecs(args)] == [("a", 0), ("a+refine7", 7)]
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "cpm_high.msgpack").write_bytes(b"")
    (tmp_path / "pre" / "cpm_low.msgpack").write_bytes(b"")
    monkeypatch.setattr(bench_rd, "PRETRAINED_DIR", str(tmp_path / "pre"))
    assert [n for n, _ in bench_rd.learned_codecs(bench_rd.parse_args([]))] == ["cpm_low", "cpm_high"]
    capsys.readouterr()
    assert bench_rd.main(["--images", str(folder), "--checkpoints", "missing.msgpack", "--out", str(tmp_path / "o"),
                          "--no-progress"]) == 2
    assert capsys.readouterr().err.strip() == "error: checkpoint not found: missing.msgpack"

"""experiments/dplc_sweep.py: which images a sweep reports on and compares against, and (slow) the
whole sweep on the tiny config."""

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments import dplc_sweep
from jaxcomp.codecs.dplc.task import GENERATOR_FIELDS
from jaxcomp.configs import apply_overrides, load_config
from jaxcomp.data import held_out_names
from jaxcomp.data.images import image_tiles, resize_centre_crop


def _config(repo, variant, **overrides):
    c = load_config(str(repo / "configs" / "dplc.py") + ":" + variant)
    return apply_overrides(c, [f"{k}={v}" for k, v in overrides.items()]) if overrides else c


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """A folder with images named like the shipped samples' originals of both roles, and others;
    each image's pixels say which file it is (value = its index)."""
    folder = tmp_path_factory.mktemp("photos")
    names = sorted(held_out_names("val")) + sorted(held_out_names("test")) + ["train_a.png", "train_b.png"]
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        h, w = 150 + 10 * i, 140
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(folder / name)
    return folder


def _expected_tiles(folder, names, size, tile):
    images = [np.asarray(Image.open(folder / n).convert("RGB")) for n in sorted(names)]
    return np.concatenate([image_tiles(resize_centre_crop(im, size), tile) for im in images])


def test_photo_sweep_reports_on_test_originals_against_val_originals(repo, photo_folder):
    """The report set is the "test" role's originals (resized as training resizes them), the reference
    (the floor of the distance) the "val" role's; a selection run (split=val) reports on "val" alone;
    neither set contains a training image."""
    c = _config(repo, "photos", **{"data.path": str(photo_folder)})
    report, reference = dplc_sweep.evaluation_images(c)
    tile = c.data.eval_crop
    np.testing.assert_array_equal(report, _expected_tiles(photo_folder, held_out_names("test"), c.data.resize, tile))
    np.testing.assert_array_equal(reference, _expected_tiles(photo_folder, held_out_names("val"), c.data.resize,
                                                             tile))
    assert report.shape == (4 * (c.data.resize // tile) ** 2, tile, tile, 3) and report.dtype == np.uint8
    c.sweep.split = "val"
    report, reference = dplc_sweep.evaluation_images(c)
    np.testing.assert_array_equal(report, _expected_tiles(photo_folder, held_out_names("val"), c.data.resize, tile))
    assert reference is None
    c.sweep.split = "train"
    with pytest.raises(ValueError, match="sweep.split"):
        dplc_sweep.evaluation_images(c)


def test_folder_without_the_sample_names_falls_back_to_validation_tiles(repo, tmp_path):
    """Another photo folder: its hash-split validation tiles, and no reference row (no second held-out set)."""
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (130, 130, 3), dtype=np.uint8)).save(tmp_path / f"p{i}.png")
    c = _config(repo, "photos", **{"data.path": str(tmp_path), "data.holdout": "hash"})
    report, reference = dplc_sweep.evaluation_images(c)
    assert reference is None and report.shape == (c.data.num_val * 4, 64, 64, 3)


@pytest.mark.slow
def test_tiny_sweep_end_to_end(repo, tmp_path, monkeypatch, capsys):
    """Stage 1 (6 steps), then the sweep of the tiny config: every (method, rate, seed) run trains once,
    a rerun trains nothing, and the results name every run; a generator stopped before its steps is
    named by a warning; ``grid_images`` above what the runs cached shows what there is."""
    from jaxcomp import tasks
    from jaxcomp import train as trainer

    monkeypatch.chdir(repo)
    g = _config(repo, "tiny")
    gdir = str(tmp_path / "g")
    trainer.train(g, gdir, *tasks.build(g), progress=False)
    c = _config(repo, "tiny", **{"sweep.generator": gdir})
    work = str(tmp_path / "sweep")
    dplc_sweep.run(c, work)
    with open(os.path.join(work, "results.json")) as f:
        results = json.load(f)
    runs = {(r["method"], r["bits"], r["seed"]) for r in results["runs"]}
    assert len(runs) == len(c.sweep.methods) * len(c.sweep.rates) * len(c.sweep.seeds)
    assert all(np.isfinite(r["mse"]) and np.isfinite(r["distance"]) for r in results["runs"])
    assert os.path.exists(os.path.join(work, "curves.png"))
    stamps = {d: os.path.getmtime(os.path.join(work, "runs", d, "decoded.npz")) for d in os.listdir(
        os.path.join(work, "runs"))}
    dplc_sweep.run(c, work)  # cached: no run is trained or decoded again
    assert all(os.path.getmtime(os.path.join(work, "runs", d, "decoded.npz")) == t for d, t in stamps.items())
    assert "stopped at step" not in capsys.readouterr().out
    stopped = str(tmp_path / "g_stopped")
    trainer.train(g, stopped, *tasks.build(g), progress=False, time_limit=1e-9)  # a --time-limit stop
    dplc_sweep.warn_unfinished_generator(stopped)
    assert f"stopped at step 1 of its {g.steps}" in capsys.readouterr().out
    longer = _config(repo, "tiny", **{"sweep.generator": gdir, "sweep.steps": c.sweep.steps + 2})
    with pytest.raises(ValueError, match="decoded.npz was made with other settings or test images"):
        dplc_sweep.run(longer, work)  # not the old runs reported as the new settings'
    # the generator trained further in the same workdir is another generator: its old decodings are
    # refused (they were keyed by its path), not tabulated beside a G(z) row of the new one
    more = _config(repo, "tiny", **{"steps": g.steps + 2})
    trainer.train(more, gdir, *tasks.build(more), progress=False)
    with pytest.raises(ValueError, match="decoded.npz was made with other settings or test images"):
        dplc_sweep.run(c, work)


def test_an_empty_sweep_is_refused_before_anything_runs(repo, tmp_path):
    """sweep.rates / methods / seeds empty: an error naming the key (it printed the reference rows
    alone, exit 0), before the generator is read or anything is written."""
    for key in ("rates", "methods", "seeds"):
        empty = _config(repo, "tiny", **{"sweep.generator": str(tmp_path / "g"), f"sweep.{key}": "()"})
        with pytest.raises(ValueError, match=f"sweep.{key} is empty"):
            dplc_sweep.run(empty, str(tmp_path / "e"))
    assert not (tmp_path / "e").exists()


def test_stage2_runs_take_the_stage1_generators_sizes(repo):
    """A sweep over a wider generator (``--config.model.latent=64``) builds every stage-2 run at that
    latent size (else loading G would refuse the mismatch), at the sweep's rate and seed."""
    c = _config(repo, "mnist", **{"model.latent": 64, "model.features": 8, "model.prior": "uniform",
                                  "model.prior_var": 2.0, "model.upsample": "transposed", "model.image_size": 64,
                                  "model.channels": 3})
    for method in dplc_sweep.METHODS:
        s = dplc_sweep.stage2_config(c, method, 32, 4, seed=2)
        fields = GENERATOR_FIELDS
        assert {k: s.model[k] for k in fields} == {k: c.model[k] for k in fields}
        assert (s.model.latent, s.model.code_channels, s.model.levels) == (64, 32, 4)
        assert s.seed == s.data.seed == 2
    assert set(GENERATOR_FIELDS) >= {"image_size", "channels", "latent", "features", "prior", "prior_var",
                                                "upsample"}
    # sweep.mmd is DPLC's lambda (sweep.mmd_per_rate: one per rate); the baselines keep theirs (no MMD)
    for key, mmd, want in (("mmd", 7.0, (7.0, 7.0)), ("mmd_per_rate", (2.0, 3.0), (2.0, 3.0))):
        c.sweep = ml_collections.ConfigDict({**c.sweep.to_dict(), "rates": ((32, 4), (8, 2)), "mmd": 0.0, key: mmd})
        got = tuple(dplc_sweep.stage2_config(c, "dplc", m, levels, seed=0).loss.mmd for m, levels in c.sweep.rates)
        assert got == want
        for method in ("cae", "gan"):
            assert dplc_sweep.stage2_config(c, method, 32, 4, seed=0).loss.mmd == 0.0


def test_distribution_metric_reuses_the_report_sets_features_only_for_that_set():
    """The MNIST FD caches the report set's statistics: the same numbers as a fresh computation, and a
    different report set is not scored against the cached one."""
    rng = np.random.default_rng(0)
    a, b, c = (rng.integers(0, 256, (40, 32, 32, 1), dtype=np.uint8) for _ in range(3))
    c[:, 8:24, 8:24] = 0  # a visibly different set
    metric = dplc_sweep.DistributionMetric(1, 32)
    first, again = metric(a, b), metric(a, b)
    assert first == again == pytest.approx(metric.features.frechet(a, b), rel=1e-12)
    assert metric(a, c) == pytest.approx(metric.features.frechet(a, c), rel=1e-12) != first


def test_sample_grids_show_what_every_row_has(tmp_path, capsys):
    """``save_grid`` cuts every row to the shortest (a run's cached grid may hold fewer images than a later
    command asks: numpy refused to concatenate), says so, and writes nothing for 0 images."""
    from PIL import Image

    rows = [np.full((6, 4, 4, 1), 9, np.uint8), np.zeros((3, 4, 4, 1), np.uint8)]
    dplc_sweep.save_grid(rows, str(tmp_path / "g.png"), wanted=5)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    assert grid.shape == (8, 12) and (grid[:4] == 9).all() and (grid[4:] == 0).all()
    assert "shows 3 images a row, not 5" in capsys.readouterr().out
    dplc_sweep.save_grid(rows, str(tmp_path / "none.png"), wanted=0)
    assert not (tmp_path / "none.png").exists()

"""experiments/dplc_generators.py: the stage-1 comparison (WGAN-GP, WAE, Wasserstein++): what each
objective's config trains, what the scores measure, and (slow) the tiny comparison end to end."""

import json
import os
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import dplc_generators
from jaxcomp.configs import apply_overrides, load_config


def _config(repo, variant, **overrides):
    c = load_config(str(repo / "configs" / "dplc.py") + ":" + variant)
    return apply_overrides(c, [f"{k}={v}" for k, v in overrides.items()]) if overrides else c


def test_each_objective_config_trains_its_own_loss_on_the_users_data(repo):
    """WGAN-GP: the critic's score is G's whole loss (no MMD); WAE: no critic; Wasserstein++: both.
    All three read the user's data block, take the seed, and scale the decays with ``generators.steps``."""
    c = _config(repo, "mnist", **{"data.path": "elsewhere/mnist.npz", "generators.steps": 1000,
                                  "model.latent": 64, "model.prior": "uniform", "loss.gan": 0.01})
    got = {o: dplc_generators.objective_config(c, o, 7) for o in ("wgan", "wae", "wpp")}
    assert {o: g.objective for o, g in got.items()} == {"wgan": "wgan", "wae": "wae", "wpp": "wpp"}
    assert (got["wgan"].loss.gan, got["wgan"].loss.mmd) == (1.0, 0.0) and got["wgan"].gan.mode == "joint"
    assert got["wae"].loss.gan == 0.0 and got["wae"].gan.mode == "none" and got["wae"].loss.mmd == c.loss.mmd
    assert (got["wpp"].loss.gan, got["wpp"].loss.mmd) == (0.01, c.loss.mmd)  # Wasserstein++ keeps the overrides
    for g in got.values():
        assert g.data.path == "elsewhere/mnist.npz" and g.seed == g.data.seed == 7
        assert (g.model.latent, g.model.prior) == (64, "uniform")  # the user's generator sizes
        assert g.steps == 1000 and g.optimizer.boundaries == (700,)
    assert got["wgan"].optimizer_d.boundaries == (700,) and got["wpp"].optimizer_d.boundaries == ()
    # the command's time budgets are not settings of a run: a slice with another budget finds its finished runs
    sliced = apply_overrides(c, ["generators.time_limit=540", "sweep.time_limit=60"])
    for o, g in got.items():
        assert dplc_generators.objective_config(sliced, o, 7).to_json(sort_keys=True) == g.to_json(sort_keys=True), o
        assert "time_limit" not in g.generators and "time_limit" not in g.sweep, o
    with pytest.raises(ValueError, match="unknown objective"):
        dplc_generators.objective_config(c, "vae", 0)
    # a run's cached scores stand for its own settings: another seed list or stage-2 sweep is the same run
    # (adding a seed refused every run made already), another loss weight is not
    settings = {o: dplc_generators.run_settings(g, 100, "m", "test") for o, g in got.items()}
    planned = apply_overrides(c, ["generators.seeds=(0, 1, 2, 3)", "sweep.rates=((2, 2),)"])
    weighted = apply_overrides(c, ["loss.gan=0.02"])
    for o in got:
        assert dplc_generators.run_settings(dplc_generators.objective_config(planned, o, 7), 100, "m", "test") == \
            settings[o], o
    assert dplc_generators.run_settings(dplc_generators.objective_config(weighted, "wpp", 7), 100, "m",
                                        "test") != settings["wpp"]


class _IdentityModel:
    """A stand-in stage-1 model on 4x4x1 images: F flattens, G reshapes; so G(F(x)) == x exactly."""

    spec = SimpleNamespace(latent=16, prior="uniform", prior_var=1.0)  # what sample_prior reads

    def __init__(self, objective, shift=0.0):
        self.objective, self.shift = objective, shift

    def decode(self, params, z):
        return jnp.clip(z.reshape(-1, 4, 4, 1) + self.shift, -1.0, 1.0)

    def encode(self, params, x):
        return x.reshape(x.shape[0], -1)


def test_scores_measure_reconstructions_and_samples_separately():
    """An exact auto-encoder scores MSE 0 and the reconstructions' distance 0; a shifted decoder's MSE is
    its shift squared; WGAN-GP (no F) gets sample scores only; samples are as many as the images, and
    the same for every objective of a seed; the latent MMD is ~0 for codes distributed as the prior."""
    test = np.random.default_rng(0).integers(0, 256, (300, 4, 4, 1), dtype=np.uint8)
    mean_gap = lambda a, b: float(abs(a.astype(float).mean() - b.astype(float).mean()))
    scores, samples, rec = dplc_generators.score(_IdentityModel("wae"), None, test, mean_gap, seed=0, batch=128)
    assert samples.shape == test.shape and samples.dtype == np.uint8
    np.testing.assert_array_equal(rec, test)
    assert scores["recon_mse"] == 0.0 and scores["recon_distance"] == 0.0
    assert scores["sample_distance"] == mean_gap(samples, test) > 0
    # F(x) of uniform random pixels is uniform on [-1, 1]^16, the prior: MMD ~ 0; constant images are far
    far, _, _ = dplc_generators.score(_IdentityModel("wae"), None, np.full_like(test, 250), mean_gap, seed=0)
    assert abs(scores["latent_mmd"]) < 0.02 and far["latent_mmd"] > 0.2
    # a decoder off by 2/255 of the range ([-1, 1]): one grey level per pixel, where the clip allows
    shifted, same_z, rec = dplc_generators.score(_IdentityModel("wpp", 2 / 255), None, test, mean_gap, seed=0,
                                                 batch=128)
    err = np.mean(np.square(rec.astype(float) - test.astype(float)), axis=(1, 2, 3))
    assert shifted["recon_mse"] == pytest.approx(float(np.mean(err))) and 0 < shifted["recon_mse"] <= 1.0
    psnr = np.mean(10 * np.log10(255.0 ** 2 / np.maximum(err, 1e-10)))
    assert shifted["recon_psnr"] == pytest.approx(float(psnr))
    # the same z for every objective of a seed (up to the decoder's shift), other z for another seed
    assert np.abs(same_z.astype(int) - samples.astype(int)).max() <= 1
    _, other_z, _ = dplc_generators.score(_IdentityModel("wae"), None, test, mean_gap, seed=1, batch=128)
    assert np.abs(other_z.astype(int) - samples.astype(int)).max() > 100
    only, _, none = dplc_generators.score(_IdentityModel("wgan"), None, test, mean_gap, seed=0)
    assert none is None and set(only) == {"sample_distance"}
    # a Gaussian prior of variance 4: the latent MMD is measured against that prior with its kernel scale
    import jax

    from jaxcomp.codecs.dplc.model import sample_prior, to_model_range
    from jaxcomp.gan import mmd_imq

    wide = _IdentityModel("wae")
    wide.spec = SimpleNamespace(latent=16, prior="gaussian", prior_var=4.0)
    got, _, _ = dplc_generators.score(wide, None, test, mean_gap, seed=0, batch=128)
    fx = np.asarray(to_model_range(test)).reshape(len(test), -1)
    prior = sample_prior(wide.spec, jax.random.fold_in(jax.random.PRNGKey(0), 2**31), len(test))
    assert got["latent_mmd"] == pytest.approx(float(mmd_imq(jnp.asarray(fx), prior, 4.0)), rel=1e-4)
    assert got["latent_mmd"] != pytest.approx(float(mmd_imq(jnp.asarray(fx), prior, 1.0)), rel=1e-2)


def test_summary_has_one_row_per_objective_with_the_spread_over_seeds():
    runs = [dict(objective="wgan", seed=s, steps=5, sample_distance=d) for s, d in ((0, 4.0), (1, 6.0))]
    runs += [dict(objective="wae", seed=0, steps=5, sample_distance=9.0, recon_distance=1.0, recon_mse=100.0,
                  recon_psnr=28.0, latent_mmd=0.01)]
    rows = dplc_generators.summarize({"runs": runs, "data_reference": 0.5})
    assert [r["objective"] for r in rows] == ["WGAN-GP", "WAE", "held-out data (reference)"]
    assert rows[0]["G(z) distance"] == "5.00 ± 1.41" and rows[0]["G(F(x)) MSE"].startswith("n/a")
    assert rows[1]["G(F(x)) PSNR (dB)"] == "28.00 ± 0.00" and rows[2]["G(z) distance"] == "0.50"


@pytest.mark.slow
def test_tiny_comparison_end_to_end(repo, tmp_path, monkeypatch):
    """Every (objective, seed) of the tiny config trains once and is scored; a rerun trains nothing."""
    monkeypatch.chdir(repo)
    c = _config(repo, "tiny")
    work = str(tmp_path / "g")
    dplc_generators.run(c, work)
    with open(os.path.join(work, "results.json")) as f:
        results = json.load(f)
    assert {(r["objective"], r["seed"]) for r in results["runs"]} == {
        (o, s) for o in c.generators.objectives for s in c.generators.seeds}
    assert all(("recon_mse" in r) == (r["objective"] != "wgan") for r in results["runs"])
    # each objective's generator moved (2 critic steps, then a generator step): not the same G(z) scores
    distance = {(r["objective"], r["seed"]): r["sample_distance"] for r in results["runs"]}
    assert distance[("wgan", 0)] != distance[("wpp", 0)]
    assert all(os.path.exists(os.path.join(work, f)) for f in ("samples.png", "reconstructions.png"))
    stamps = {d: os.path.getmtime(os.path.join(work, "runs", d, "scores.json")) for d in os.listdir(
        os.path.join(work, "runs"))}
    dplc_generators.run(c, work)
    assert all(os.path.getmtime(os.path.join(work, "runs", d, "scores.json")) == t for d, t in stamps.items())
    # the grids are not part of a run's settings: a rerun may show more of each run's cached images (it failed
    # in numpy), or none (grid_images=0 had cached empty grids that broke every later run)
    from PIL import Image

    more = _config(repo, "tiny", **{"generators.grid_images": 8})
    dplc_generators.run(more, work)
    assert Image.open(os.path.join(work, "samples.png")).size[0] == 8 * more.model.image_size
    dplc_generators.run(_config(repo, "tiny", **{"generators.grid_images": 0}), work)
    assert all(os.path.getmtime(os.path.join(work, "runs", d, "scores.json")) == t for d, t in stamps.items())

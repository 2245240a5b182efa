"""DPLC: the rate, the objectives of both stages, the frozen generator, the data (tiny configs)."""

import importlib.util
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp import gan, tasks
from jaxcomp.codecs.dplc import model as dm
from jaxcomp.codecs.dplc.task import DPLCGeneratorTask, DPLCTask, distortion
from jaxcomp.configs import apply_overrides, load_config
from jaxcomp.train import jit_init

SHARED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _config(repo, variant, **overrides):
    c = load_config(str(repo / "configs" / "dplc.py") + ":" + variant)
    return apply_overrides(c, [f"{k}={v}" for k, v in overrides.items()]) if overrides else c


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)}


@pytest.fixture(scope="module")
def generator_params(repo, batch):
    """Stage-1 parameters of the tiny Wasserstein++ model (untrained, seed 0)."""
    task = DPLCGeneratorTask(_config(repo, "tiny"))
    return jit_init(task.init)(jax.random.PRNGKey(0), batch).params["generator"]["decoder"]


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _changed(a, b):
    return any(not np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))


def test_rate_is_m_times_grid_times_log2_levels():
    spec = dm.DPLCSpec(image_size=64, code_channels=8, levels=2)
    assert spec.grid == 4 and spec.bits == 128 and spec.bpp == pytest.approx(128 / 4096)
    assert dm.DPLCSpec(image_size=32, code_channels=4, levels=4).bits == 2 * 2 * 4 * 2
    assert dm.DPLCSpec(image_size=32, code_channels=3, levels=5).bits == pytest.approx(4 * 3 * math.log2(5))
    assert dm.DPLCSpec(code_channels=0).bits == 0
    np.testing.assert_allclose(dm.DPLCSpec(levels=2).centers(), [-0.5, 0.5])
    np.testing.assert_allclose(dm.DPLCSpec(levels=4).centers(), [-0.75, -0.25, 0.25, 0.75])
    assert dm.DPLCSpec(image_size=32, latent=16).noise_channels == 4  # ceil(16 / 2^2), the reference's
    assert dm.DPLCSpec(image_size=32, latent=17).noise_channels == 5  # rounded up, not down
    with pytest.raises(ValueError, match="multiple of 16"):
        dm.DPLCSpec(image_size=40)


def test_encoder_emits_only_the_centres_and_symbols_agree(repo, batch, generator_params):
    task = DPLCTask(_config(repo, "tiny_compress", **{"model.levels": 3}), generator_params)
    state = jit_init(task.init)(jax.random.PRNGKey(1), batch)
    code, symbols = task.encode(state.params, dm.to_model_range(batch["image"]))
    assert code.shape == symbols.shape == (4, 1, 1, 2) and symbols.dtype == jnp.int32
    centers = np.asarray(task.spec.centers())
    np.testing.assert_array_equal(np.asarray(code), centers[np.asarray(symbols)])
    assert np.asarray(symbols).min() >= 0 and np.asarray(symbols).max() < 3


def test_prior_and_map_noise_have_their_stated_spread():
    """The Gaussian prior has variance ``prior_var`` (std 2 at 4), the uniform one fills [-1, 1], and
    B's noise fills half a quantization step either side, ``[-1/L, 1/L]`` (the centres are 2/L apart)."""
    key = jax.random.PRNGKey(0)
    z = np.asarray(dm.sample_prior(dm.DPLCSpec(latent=64, prior_var=4.0), key, 2000))
    assert z.shape == (2000, 64) and np.std(z) == pytest.approx(2.0, rel=0.01) and abs(np.mean(z)) < 0.03
    u = np.asarray(dm.sample_prior(dm.DPLCSpec(latent=64, prior="uniform"), key, 2000))
    assert -1.0 <= u.min() < -0.999 and 0.999 < u.max() <= 1.0
    for levels in (2, 4):
        spec = dm.DPLCSpec(image_size=32, levels=levels)
        noise = np.asarray(dm.map_noise(spec, key, 500))
        assert noise.shape == (500, spec.grid, spec.grid, spec.noise_channels)
        half = 1.0 / levels
        assert -half <= noise.min() < -0.99 * half and 0.99 * half < noise.max() <= half
        assert np.std(noise) == pytest.approx(half / math.sqrt(3), rel=0.02)  # uniform, not Gaussian


def test_map_blocks_add_their_input():
    """B's residual block is ``relu(x + branch)``: with the branch's last norm scale at 0, ``relu(x)``."""
    from flax.core import unfreeze

    block = dm.BasicBlock(8)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 8)), jnp.float32)
    variables = unfreeze(block.init(jax.random.PRNGKey(0), x))
    variables["params"]["norm2"]["scale"] = jnp.zeros_like(variables["params"]["norm2"]["scale"])
    np.testing.assert_allclose(np.asarray(block.apply(variables, x)), np.maximum(np.asarray(x), 0.0), atol=1e-6)


def test_mmd_estimator_is_unbiased():
    """The unbiased MMD^2 averages to 0 over independent same-distribution samples (the biased
    V-statistic, which keeps the diagonal, would average clearly above 0), and is positive for
    a shifted distribution."""
    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    draw = jax.vmap(lambda k: jax.random.normal(k, (2, 8, 4)))(keys)
    values = jax.vmap(lambda d: gan.mmd_imq(d[0], d[1]))(draw)
    mean, err = float(jnp.mean(values)), float(jnp.std(values)) / math.sqrt(len(keys))
    assert abs(mean) < 3 * err
    shifted = jax.vmap(lambda d: gan.mmd_imq(d[0], d[1] + 1.0))(draw)
    assert float(jnp.mean(shifted)) > 10 * err
    # the kernel's scale follows the prior's variance: samples twice as wide under variance 4 are
    # the unit-variance case exactly
    x, y = draw[0, 0], draw[0, 1] + 0.5
    assert float(gan.mmd_imq(2.0 * x, 2.0 * y, 4.0)) == pytest.approx(float(gan.mmd_imq(x, y)), rel=1e-5)
    assert float(gan.mmd_imq(2.0 * x, 2.0 * y)) != pytest.approx(float(gan.mmd_imq(x, y)), rel=1e-2)


def _loss_terms_generator(task, params, batch, rng):
    """The stage-1 loss recomputed from its definition with the same keys as the task draws them."""
    x = dm.to_model_range(batch["image"])
    fx = task.encode(params, x)
    rec = distortion(task.loss.distortion, x, task.decode(params, fx))
    prior = dm.sample_prior(task.spec, jax.random.fold_in(rng, 2), x.shape[0])
    mmd = gan.mmd_imq(fx, prior, task.spec.prior_var)
    adv = -jnp.mean(task.critic.critic.apply({"params": params["discriminator"]}, task.decode(params, fx)))
    return rec, mmd, adv


def test_wasserstein_pp_loss_is_wae_plus_weighted_critic(repo, batch):
    # a prior variance other than 1, so that the MMD's kernel scale must follow it
    task = DPLCGeneratorTask(_config(repo, "tiny", **{"loss.gan": 0.5, "loss.mmd": 3.0, "model.prior_var": 4.0}))
    state = jit_init(task.init)(jax.random.PRNGKey(0), batch)
    rng = jax.random.PRNGKey(7)
    generator_loss = jax.jit(task.generator_loss)  # one compilation for both weights
    loss, (metrics, _) = generator_loss(state.params, batch, rng, jnp.float32(1.0))
    rec, mmd, adv = jax.jit(_loss_terms_generator, static_argnums=0)(task, state.params, batch, rng)
    assert float(metrics["reconstruction"]) == pytest.approx(float(rec), rel=1e-5)
    assert float(metrics["mmd"]) == pytest.approx(float(mmd), rel=1e-4, abs=1e-6)
    assert float(loss) == pytest.approx(float(rec + 3.0 * mmd + 0.5 * adv), rel=1e-5)
    # the adversarial term is off during a warm-up
    loss0, _ = generator_loss(state.params, batch, rng, jnp.float32(0.0))
    assert float(loss0) == pytest.approx(float(rec + 3.0 * mmd), rel=1e-5)
    # the critic's gradient reaches G, not F: F's gradient is that of the WAE terms alone
    def f_grad(weight):
        t = DPLCGeneratorTask(_config(repo, "tiny", **{"loss.gan": weight, "loss.mmd": 3.0}))
        return jax.jit(jax.grad(lambda g: t.generator_loss(dict(state.params, generator=g), batch, rng,
                                                           jnp.float32(1.0))[0]))(state.params["generator"])
    with_adv, without = f_grad(0.5), f_grad(0.0)
    for a, b in zip(_leaves(with_adv["encoder"]), _leaves(without["encoder"])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert _changed(with_adv["decoder"], without["decoder"])


def test_wasserstein_pp_critic_sees_interpolates_of_encoder_and_prior(repo, batch):
    wpp = DPLCGeneratorTask(_config(repo, "tiny"))
    state = jit_init(wpp.init)(jax.random.PRNGKey(0), batch)
    rng = jax.random.PRNGKey(3)
    fake = wpp.generate(state.params, batch, rng)
    z_rng, a_rng = jax.random.split(jax.random.fold_in(rng, 1))
    z = dm.sample_prior(wpp.spec, z_rng, 4)
    fx = wpp.encode(state.params, dm.to_model_range(batch["image"]))
    a = jax.random.uniform(a_rng, (4, 1))
    np.testing.assert_allclose(fake, wpp.decode(state.params, a * fx + (1 - a) * z), atol=1e-5)
    assert not np.allclose(fake, wpp.decode(state.params, z), atol=1e-3)
    assert not np.allclose(fake, wpp.decode(state.params, fx), atol=1e-3)
    # WGAN-GP's critic sees G(z) alone
    wgan = DPLCGeneratorTask(_config(repo, "tiny", objective="wgan"))
    s2 = jit_init(wgan.init)(jax.random.PRNGKey(0), batch)
    np.testing.assert_allclose(wgan.generate(s2.params, batch, rng), wgan.decode(s2.params, z), atol=1e-5)


@pytest.mark.parametrize("objective, mode", [("wgan", "alternate"), ("wae", "none"), ("wpp", "alternate")])
def test_each_objective_trains_the_players_it_should(repo, batch, objective, mode):
    config = _config(repo, "tiny", objective=objective, **{"gan.mode": mode, "gan.d_steps": 1})
    task, _ = tasks.build_task(config)
    state = jit_init(task.init)(jax.random.PRNGKey(0), batch)
    assert ("encoder" in state.params["generator"]) == (objective != "wgan")
    step = jax.jit(task.train_step)
    s1, m1 = step(state, batch, jax.random.PRNGKey(1))  # alternate with d_steps 1: a critic step first
    s2, m2 = step(s1, batch, jax.random.PRNGKey(2))
    assert _changed(state.params["generator"], s2.params["generator"])
    assert _changed(state.params["discriminator"], s2.params["discriminator"]) == (objective != "wae")
    assert all(np.isfinite(float(v)) for v in m2.values())


def test_critic_losses_distortions_and_stage_evaluations_by_hand(repo, batch, generator_params):
    """The image critic's loss (WGAN-GP: -(E[c(x)] - E[c(fake)]) + gp * penalty, real images in
    [-1, 1]; the GAN baseline's LSGAN D loss on real vs fake), the distortions (rmse = sqrt(mse)),
    stage 2's latent B(E(x), u(rng)) and stage 1's evaluation of G(F(x)), each against its formula."""
    x = dm.to_model_range(batch["image"])
    y = x[::-1]
    assert float(distortion("mse", x, y)) == pytest.approx(float(np.mean((np.asarray(x) - np.asarray(y)) ** 2)),
                                                           rel=1e-5)  # a float32 mean in another order
    assert float(distortion("rmse", x, y)) == pytest.approx(math.sqrt(float(distortion("mse", x, y))), rel=1e-6)
    wpp = DPLCGeneratorTask(_config(repo, "tiny", **{"loss.gp": 3.0}))
    state = jit_init(wpp.init)(jax.random.PRNGKey(0), batch)
    rng = jax.random.PRNGKey(2)

    @jax.jit
    def stage1(params):  # the task's critic loss and the formula's pieces, in one compilation
        fake = wpp.generate(params, batch, jax.random.PRNGKey(1))
        critic = lambda v: wpp.critic.critic.apply({"params": params["discriminator"]}, v)  # noqa: E731
        return (wpp.discriminator_loss(params, batch, fake, rng), jnp.mean(critic(x)) - jnp.mean(critic(fake)),
                gan.gradient_penalty(critic, x, fake, rng))

    (loss, m), w, penalty = stage1(state.params)
    assert float(m["wasserstein"]) == pytest.approx(float(w), rel=1e-5)
    assert float(loss) == pytest.approx(float(-w + 3.0 * penalty), rel=1e-5)
    # stage 1's evaluation scores the reconstruction G(F(x)), in [0, 255]^2
    ev = jax.jit(wpp.eval_step)(state, batch)
    recon = jax.jit(lambda p: dm.to_pixels(wpp.decode(p, wpp.encode(p, x))))(state.params)
    np.testing.assert_allclose(ev["mse"], np.mean((np.asarray(recon) - batch["image"]) ** 2, axis=(1, 2, 3)),
                               rtol=1e-5)
    # the GAN baseline's discriminator: LSGAN on real against fake
    task = DPLCTask(_config(repo, "tiny_gan"), generator_params)
    s2 = jit_init(task.init)(jax.random.PRNGKey(1), batch)

    @jax.jit
    def stage2(params):
        fake2 = task.generate(params, batch, rng)
        score = lambda v: task.critic.critic.apply({"params": params["discriminator"]}, v)  # noqa: E731
        code, _ = task.encode(params, x)
        return (task.discriminator_loss(params, batch, fake2, rng)[0], gan.d_loss("lsgan", score(x), score(fake2)),
                task.forward(params, batch["image"], rng)["z"],
                task.latent(params, code, dm.map_noise(task.spec, rng, 4)))

    d2, want_d2, z_task, z = stage2(s2.params)
    assert float(d2) == pytest.approx(float(want_d2), rel=1e-5)
    # stage 2: z = B(E(x), u) with u drawn from the step's key (not the MMD's prior key)
    np.testing.assert_allclose(z_task, z, rtol=1e-5, atol=1e-6)


def test_generators_end_in_tanh(repo):
    """G's images lie in [-1, 1] (tanh) even with weights far from their initialisation."""
    g = dm.Generator(dm.spec_from_config(_config(repo, "tiny").model))
    z = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (2, g.spec.latent))
    rng = np.random.default_rng(1)
    p = jax.tree.map(lambda a: jnp.asarray(5.0 * rng.standard_normal(a.shape), jnp.float32),
                     jax.eval_shape(g.init, jax.random.PRNGKey(1), z)["params"])
    out = jax.jit(g.apply)({"params": p}, z)
    assert float(jnp.abs(out).max()) <= 1.0 and float(jnp.abs(out).max()) > 0.9


def test_objective_and_schedule_must_agree(repo):
    with pytest.raises(ValueError, match="gan.mode='none'"):
        DPLCGeneratorTask(_config(repo, "tiny", objective="wae"))
    with pytest.raises(ValueError, match="objective must be one of"):
        DPLCGeneratorTask(_config(repo, "tiny", objective="vae"))
    with pytest.raises(ValueError, match="compress.generator must name"):
        DPLCTask(_config(repo, "tiny_compress"))


def test_compression_losses_of_dplc_cae_and_gan_baseline(repo, batch, generator_params):
    rng = jax.random.PRNGKey(5)
    x = dm.to_model_range(batch["image"])
    for variant, mmd_weight, adv_weight in (("tiny_compress", 100.0, 0.0), ("tiny_cae", 0.0, 0.0),
                                            ("tiny_gan", 0.0, 1.0)):
        task = DPLCTask(_config(repo, variant, **{"model.prior_var": 4.0}), generator_params)
        state = jit_init(task.init)(jax.random.PRNGKey(1), batch)
        loss, (metrics, x_hat) = task.generator_loss(state.params, batch, rng, jnp.float32(1.0))
        out = task.forward(state.params, batch["image"], rng)
        np.testing.assert_allclose(x_hat, out["x_hat"], atol=1e-6)
        expected = distortion(task.loss.distortion, x, out["x_hat"])
        if mmd_weight:
            prior = dm.sample_prior(task.spec, jax.random.fold_in(rng, 2), 4)
            expected += mmd_weight * gan.mmd_imq(out["z"], prior, 4.0)
        if adv_weight:
            logits = task.critic.critic.apply({"params": state.params["discriminator"]}, out["x_hat"])
            expected += adv_weight * gan.g_loss("lsgan", logits)
        assert float(loss) == pytest.approx(float(expected), rel=1e-5), variant
        assert float(metrics["bits"]) == task.spec.bits


@pytest.mark.parametrize("variant, frozen", [("tiny_compress", True), ("tiny_cae", False)])
def test_generator_stays_frozen_in_dplc_and_trains_in_the_baseline(repo, batch, generator_params, variant, frozen):
    task = DPLCTask(_config(repo, variant), generator_params)
    state = start = jit_init(task.init)(jax.random.PRNGKey(1), batch)
    for leaf, ref in zip(_leaves(state.params["generator"]["decoder"]), _leaves(generator_params)):
        np.testing.assert_array_equal(leaf, ref)  # the decoder starts as the stage-1 generator
    step = jax.jit(task.train_step)
    for i in range(3):
        state, _ = step(state, batch, jax.random.PRNGKey(10 + i))
    assert _changed(generator_params, state.params["generator"]["decoder"]) != frozen
    assert _changed(start.params["generator"]["map"], state.params["generator"]["map"])  # one init compiled


def test_zero_bits_maps_noise_alone(repo, batch, generator_params):
    task = DPLCTask(_config(repo, "tiny_compress", **{"model.code_channels": 0}), generator_params)
    state = jit_init(task.init)(jax.random.PRNGKey(1), batch)
    assert task.spec.bits == 0 and state.params["generator"]["encoder"] == {}
    a = task.forward(state.params, batch["image"], jax.random.PRNGKey(0))["x_hat"]
    b = task.forward(state.params, batch["image"][::-1], jax.random.PRNGKey(0))["x_hat"]
    np.testing.assert_allclose(a, b, atol=1e-6)  # the image does not matter at 0 bits
    state, metrics = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(2))
    assert np.isfinite(float(metrics["loss"]))


def test_wrong_image_shape_is_refused(repo, generator_params):
    task = DPLCTask(_config(repo, "tiny_compress"), generator_params)
    with pytest.raises(ValueError, match=r"takes images \[B, 16, 16, 3\]"):
        task.init(jax.random.PRNGKey(0), {"image": np.zeros((2, 32, 32, 3), np.uint8)})


def test_every_variant_builds(repo):
    spec = importlib.util.spec_from_file_location("dplc_config", repo / "configs" / "dplc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for variant in module.VARIANTS:
        config = _config(repo, variant)
        if config.task == "dplc_generator":
            tasks.build_task(config)
        else:
            assert config.compress.generator == ""


def test_mnist_images_are_padded_and_split():
    path = SHARED_DATA / "mnist" / "mnist.npz"
    if not path.exists():
        pytest.skip("../shared/data/mnist is absent")
    from jaxcomp.data import mnist_images

    train, val = mnist_images(str(path), "train"), mnist_images(str(path), "val")
    assert train.shape == (50000, 32, 32, 1) and val.shape == (10000, 32, 32, 1) and train.dtype == np.uint8
    assert train[:, :2].max() == 0 and train[:, :, -2:].max() == 0  # 2 zero rows/columns each side
    test = mnist_images(str(path), "test", pad_to=28)
    assert test.shape == (10000, 28, 28, 1)


def test_resize_centre_crop_is_torchvisions():
    from jaxcomp.data import resize_centre_crop

    image = np.zeros((60, 90, 3), np.uint8)
    image[:, 45:] = 255
    out = resize_centre_crop(image, 20)
    assert out.shape == (20, 20, 3)
    assert out[:, :8].max() == 0 and out[:, 12:].min() == 255  # the middle 60x60, shrunk by 3
    gray = resize_centre_crop(np.full((40, 30, 1), 7, np.uint8), 10)
    assert gray.shape == (10, 10, 1) and (gray == 7).all()


@pytest.mark.parametrize("variant, epoch, decays", [
    ("paper_celeba", 636, (100, 140)), ("paper_celeba_wgan", 2543, ()), ("paper_lsun", 11847 // 10, (100, 140))])
def test_paper_schedules_count_the_references_updates(repo, variant, epoch, decays):
    """The reference's WGAN loop: an epoch is epoch // 5 generator iterations of 5 critic updates and one
    generator update, and both learning rates drop x0.4 at the decay epochs (MultiStepLR, once an epoch).
    Our alternate schedule over config.steps must give each player that many updates, and each player's
    schedule (which counts its own updates) its decays at those epochs."""
    from jaxcomp.gan import schedule_from_config
    from jaxcomp.train import make_optimizer

    c = _config(repo, variant)
    g, d = schedule_from_config(c.gan).players(np.arange(c.steps))
    iters = epoch // 5
    assert int(np.sum(g)) == 165 * iters and int(np.sum(d)) == 165 * iters * 5
    for opt, per_epoch in ((c.optimizer, iters), (c.optimizer_d, 5 * iters)):
        lr = make_optimizer(opt)[1]
        assert float(lr(0)) == pytest.approx(opt.learning_rate)
        for i, e in enumerate(decays):  # the i-th decay falls exactly at epoch e of this player's updates
            assert float(lr(e * per_epoch - 1)) == pytest.approx(opt.learning_rate * 0.4 ** i)
            assert float(lr(e * per_epoch)) == pytest.approx(opt.learning_rate * 0.4 ** (i + 1))


PAPER_VARIANTS = ["paper_celeba", "paper_celeba_wgan", "paper_celeba_wae", "paper_lsun", "paper_celeba_compress",
                  "paper_celeba_cae", "paper_celeba_gan", "mnist", "photos"]


@pytest.mark.slow
@pytest.mark.parametrize("variant", PAPER_VARIANTS)
def test_paper_configs_train_a_few_steps(repo, variant):
    """The paper-size networks (64x64, nz = 128, f = 64) compile and take finite steps on the CPU, on the
    shipped photos in place of CelebA/LSUN (which need tfds data prepared offline)."""
    from jaxcomp import train as trainer
    from jaxcomp.data import build_image_data

    overrides = {"data.batch_size": 4}
    if variant in ("mnist", "photos") and not (SHARED_DATA / variant).exists():
        pytest.skip(f"../shared/data/{variant} is absent")
    if variant.startswith("paper"):
        overrides.update({"data.source": "samples", "data.holdout": "hash", "data.num_val": 1, "data.resize": 64})
    config = _config(repo, variant, **overrides)
    generator = None
    if config.task == "dplc":
        g_task = DPLCGeneratorTask(_config(repo, "paper_celeba", **overrides))
        batch = {"image": np.zeros((4, 64, 64, 3), np.uint8)}
        generator = jit_init(g_task.init)(jax.random.PRNGKey(0), batch).params["generator"]["decoder"]
        task = DPLCTask(config, generator)
        data = build_image_data(config.data)
    else:
        task, data = tasks.build(config)
    r = trainer.benchmark_train_step(task, data.train_batch(0), steps=2, warmup=1)
    assert all(np.isfinite(v) for v in r["metrics"].values())

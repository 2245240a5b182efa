"""GC (generative compression): quantizer, heatmap, two-player training and resume, codec, CLI."""

import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcomp import cli, gan, tasks
from jaxcomp import train as trainer
from jaxcomp.codecs import gc
from jaxcomp.coding import BitstreamError, ModelMismatchError, TruncatedError, UnsupportedError, pack, unpack
from jaxcomp.configs import apply_overrides, load_config
from jaxcomp.data import load_image, sample_image_paths
from jaxcomp.modelfile import export_params


@pytest.fixture(scope="module")
def config(repo):
    return load_config(str(repo / "configs" / "gc.py") + ":tiny")


@pytest.fixture(scope="module")
def state(config):
    task, _ = tasks.build_task(config)
    batch = {"image": np.zeros((1, 32, 32, 3), np.uint8)}
    return trainer.jit_init(task.init)(jax.random.PRNGKey(0), batch)


@pytest.fixture(scope="module")
def photo():
    return load_image(sample_image_paths()[1])[:72, :88]  # not a multiple of 16: padded


def test_quantizer_emits_only_the_five_centres(config, state):
    model = gc.GC(gc.spec_from_config(config.model))
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 48, 3), maxval=255.0)
    params = state.params["generator"]
    out = jax.jit(lambda p, v: model.apply({"params": p}, v))(params, x)
    assert out["w_hat"].shape == (2, 2, 3, config.model.channels)
    np.testing.assert_array_equal(np.unique(np.asarray(out["w_hat"])) % 1, 0)
    assert set(np.unique(np.asarray(out["w_hat"]))) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    np.testing.assert_array_equal(np.asarray(gc.centers())[np.asarray(out["symbols"])], np.asarray(out["w_hat"]))
    w = jnp.asarray([-7.0, -1.4, -0.6, 0.2, 1.51, 9.0])
    values, symbols = model.apply({"params": params}, w, method=gc.GC.quantize)
    np.testing.assert_array_equal(np.asarray(values), [-2, -1, -1, 0, 2, 2])
    np.testing.assert_array_equal(np.asarray(symbols), [0, 1, 1, 2, 4, 4])
    # sizes the generator cannot give back (x_hat would be larger than the image) are refused
    for shape in ((1, 24, 40, 3), (1, 32, 20, 3), (32, 32, 3)):
        with pytest.raises(ValueError, match="multiples of 16"):
            model.apply({"params": params}, jnp.zeros(shape))
    # a symbol outside 0..4 is NaN bits, not a cheaper rate
    bits = np.asarray(gc.prior_bits(jnp.zeros((2, 5)), jnp.asarray([[0, 2], [0, 7]])))
    assert np.isfinite(bits[0]) and np.isnan(bits[1])
    # straight-through: the soft assignment's gradient reaches w
    assert float(jnp.abs(jax.grad(lambda v: model.apply({"params": params}, v, method=gc.GC.quantize)[0].sum())(
        jnp.asarray([0.4, 1.3]))).sum()) > 0


def test_generator_is_the_papers_layout():
    """G mirrors E (c3s1-960, residual blocks, u480-u240-u120-u60, c7s1-3, tanh); a residual block
    with its convolutions zeroed is the identity (the skip); the prior's bits are -log2 softmax."""
    from jaxcomp.codecs.gc.model import Generator, ResBlock

    spec = gc.GCSpec(channels=8, width=1.0, res_blocks=2)
    assert spec.features == (60, 120, 240, 480, 960)
    g = Generator(spec.features, spec.res_blocks)
    shapes = jax.eval_shape(g.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 2, 2, 8), jnp.float32))["params"]
    assert shapes["c3"]["kernel"].shape == (3, 3, 8, 960)
    assert [shapes[f"u{i}"]["kernel"].shape[-1] for i in range(4)] == [480, 240, 120, 60]
    assert shapes["out"]["kernel"].shape == (7, 7, 60, 3) and "res1" in shapes and "res2" not in shapes
    small = Generator((2, 3, 4, 5, 6), 1)
    w = 50.0 * jax.random.normal(jax.random.PRNGKey(1), (1, 2, 2, 3))
    rng = np.random.default_rng(2)  # large weights: outputs far outside [-1, 1] without the tanh
    p = jax.tree.map(lambda a: jnp.asarray(5.0 * rng.standard_normal(a.shape), jnp.float32),
                     jax.eval_shape(small.init, jax.random.PRNGKey(2), w)["params"])
    x = jax.jit(small.apply)({"params": p}, w)
    assert x.shape == (1, 32, 32, 3) and float(jnp.abs(x).max()) <= 1.0
    block = ResBlock(3)
    h = jax.random.normal(jax.random.PRNGKey(3), (1, 4, 4, 3))
    zeroed = jax.tree.map(jnp.zeros_like, jax.eval_shape(block.init, jax.random.PRNGKey(4), h)["params"])
    np.testing.assert_allclose(jax.jit(block.apply)({"params": zeroed}, h), h, atol=1e-6)
    logits = jnp.asarray([[0.0, 1.0, 2.0, 0.5, -1.0], [3.0, 0.0, 0.0, 0.0, 0.0]])
    symbols = jnp.asarray([[[[2, 0], [4, 1]]]])  # [1, 1, 2, C=2]
    logp = np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True)) / np.log(2.0)
    want = [-(logp[0, 2] + logp[1, 0]), -(logp[0, 4] + logp[1, 1])]
    np.testing.assert_allclose(gc.prior_bits(logits, symbols)[0, 0], want, rtol=1e-5)
    # symbols without their channel axis, or of one channel, broadcast silently against the C priors
    from jaxcomp.codecs.gc.model import soft_prior_bits

    for bad in (jnp.zeros((1, 3, 4), jnp.int32), symbols[..., :1]):  # [B, h, w] without C; C = 1
        with pytest.raises(ValueError, match=r"prior_bits: the prior is \[C, 5\] and the latent \[\.\.\., C\]"):
            gc.prior_bits(logits, bad)
    with pytest.raises(ValueError, match=r"soft_prior_bits: .* got shapes \(2, 5\) and \(1, 1, 2, 1\)"):
        jax.jit(lambda w: soft_prior_bits(w, logits, 1.0))(jnp.zeros((1, 1, 2, 1)))


def test_each_player_steps_with_its_own_optimizer(config):
    """config.optimizer trains G, config.optimizer_d trains D (Adam's first step moves each weight
    by its learning rate)."""
    c = apply_overrides(config, ["optimizer.learning_rate=0.001", "optimizer_d.learning_rate=0.03"])
    task = tasks.build_task(c)[0]
    grads = {"w": jnp.asarray([0.5, -2.0])}
    for tx, lr in ((task.tx_g, 0.001), (task.tx_d, 0.03)):
        updates, _ = tx.update(grads, tx.init(grads), grads)
        np.testing.assert_allclose(np.abs(updates["w"]), lr, rtol=1e-3)


def test_rate_bound_is_the_papers():
    for c, bpp in ((2, 0.0181), (4, 0.0362), (8, 0.0724)):  # the paper's numbers (multiples of 0.0181)
        assert gc.GCSpec(channels=c).bound_bits_per_pixel == pytest.approx(bpp, rel=3e-3)
        assert gc.GCSpec(channels=c).bound_bits_per_pixel == c * math.log2(5) / 256
    assert gc.GCSpec(width=0.25).features == (15, 30, 60, 120, 240)
    with pytest.raises(ValueError, match="unknown config.model keys.*widht"):
        gc.spec_from_config(ml_collections.ConfigDict(dict(channels=4, widht=1.0)))


def test_heatmap_zeroes_the_masked_latent(config, state):
    model = gc.GC(gc.spec_from_config(config.model))
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 32, 3), maxval=255.0)
    params = state.params["generator"]
    heat = jnp.asarray([[[1.0, 0.0], [0.0, 1.0]]])
    full = model.apply({"params": params}, x)
    masked = model.apply({"params": params}, x, heatmap=heat)
    np.testing.assert_array_equal(np.asarray(masked["w_hat"])[0, 0, 1], 0.0)
    np.testing.assert_array_equal(np.asarray(masked["w_hat"])[0, 1, 0], 0.0)
    np.testing.assert_array_equal(np.asarray(masked["w_hat"])[0, 0, 0], np.asarray(full["w_hat"])[0, 0, 0])
    # G sees only w_hat: changing the image where the latent is masked cannot change the output
    far = x.at[:, :16, 16:].set(0.0).at[:, 16:, :16].set(255.0)
    other = model.apply({"params": params}, far, heatmap=heat)
    assert float(jnp.abs(other["w"] - masked["w"]).max()) > 0  # the encoder did see the change
    np.testing.assert_array_equal(np.asarray(other["w_hat"])[0, 0, 1], 0.0)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_gan_training_resumes_exactly(config, tmp_path):
    """Warm-up step, then joint steps; a run stopped by its time limit and continued ends in the
    same state (both players, both optimizers) as an uninterrupted one."""
    config = apply_overrides(config, ["steps=3", "checkpoint_every=2", "eval_every=0"])
    task, data = tasks.build(config)
    reference, _ = trainer.train(config, str(tmp_path / "straight"), task, data, progress=False)
    assert int(reference.step) == 3
    stopped, _ = trainer.train(config, str(tmp_path / "sliced"), task, data, progress=False, time_limit=1e-9)
    assert int(stopped.step) == 1
    resumed, _ = trainer.train(config, str(tmp_path / "sliced"), task, data, progress=False)
    for a, b in zip(_leaves((reference.params, reference.opt_state)), _leaves((resumed.params, resumed.opt_state))):
        np.testing.assert_array_equal(a, b)
    # both players moved, and the discriminator only after the warm-up step
    init = trainer.init_state(task, data.train_batch(0), jax.random.split(jax.random.PRNGKey(config.seed))[0],
                              trainer.make_mesh())  # the trainer's own compiled init, reused
    for player in ("generator", "discriminator"):
        moved = [not np.array_equal(a, b) for a, b in zip(_leaves(init.params[player]),
                                                          _leaves(reference.params[player]))]
        assert any(moved), player
    d_counts = [int(x) for x in jax.tree.leaves(stopped.opt_state["discriminator"]) if np.ndim(x) == 0]
    g_counts = [int(x) for x in jax.tree.leaves(stopped.opt_state["generator"]) if np.ndim(x) == 0]
    assert set(d_counts) == {0} and 1 in g_counts  # warm-up: no discriminator update
    assert trainer.checkpoint_manager(str(tmp_path / "sliced")).latest_step() == 3


def test_codec_roundtrip_is_exact_and_within_the_bound(state, config, photo):
    spec = gc.spec_from_config(config.model)
    codec = gc.GCCodec(spec, state.params["generator"])
    data = codec.compress(photo)
    decoded = codec.decompress(data)
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    assert decoded.flags.writeable and decoded.flags.c_contiguous  # the caller's array, as L3C's and CPM's
    np.testing.assert_array_equal(decoded, codec.reconstruct(photo))
    np.testing.assert_array_equal(codec.decompress(data), decoded)  # deterministic
    # untrained prior = uniform: the payload is the raw symbols' information, plus at most the ANS
    # coder's 64-bit state (2 words)
    symbols = 5 * 6 * spec.channels
    header = len(pack("gc", codec.fingerprint, dict(h=72, w=88, m="RGB", e="p", n=codec.numerics, c=2**32 - 1),
                      [b""]))
    assert len(data) - header <= (math.ceil(symbols * math.log2(5) / 32) + 2) * 4
    gray = photo[..., 1]
    assert codec.decompress(codec.compress(gray)).shape == gray.shape
    # a prior fitted to skewed symbols codes them in about their information under it (plus the
    # coder's 2 words), far below the uniform code
    skewed_sym = np.zeros((5, 6, spec.channels), np.int32)
    skewed_sym[0, :2] = 3
    probs = np.stack([np.bincount(skewed_sym[..., c].ravel(), minlength=5) for c in range(spec.channels)]) + 0.1
    probs = probs / probs.sum(1, keepdims=True)
    skewed = gc.GCCodec(spec, dict(state.params["generator"], prior_logits=np.log(probs)))
    mode, payload = skewed._payload(skewed_sym)
    information = float(-np.log2(probs[np.arange(spec.channels), skewed_sym]).sum())
    assert mode == "p" and len(payload) * 8 <= information + 64 + 32 < symbols * math.log2(5)
    # a prior fitted to the photo's own symbols still decodes it exactly
    sym = codec.analyse(photo)
    counts = np.stack([np.bincount(sym[..., c].ravel(), minlength=5) for c in range(spec.channels)]) + 0.1
    logits = np.log(counts / counts.sum(1, keepdims=True))
    fitted = gc.GCCodec(spec, dict(state.params["generator"], prior_logits=logits))
    np.testing.assert_array_equal(fitted.decompress(fitted.compress(photo)), fitted.reconstruct(photo))
    # a prior that contradicts the symbols falls back to the uniform code
    wrong = dict(state.params["generator"], prior_logits=np.tile([30.0, 0, 0, 0, 0], (spec.channels, 1)))
    bad_prior = gc.GCCodec(spec, wrong)
    assert bad_prior._payload(np.full((5, 6, spec.channels), 4))[0] == "u"


def test_codec_refuses_bad_input(state, config, photo):
    spec = gc.spec_from_config(config.model)
    codec = gc.GCCodec(spec, state.params["generator"])
    data = codec.compress(photo)
    with pytest.raises(TruncatedError):
        codec.decompress(data[:-7])
    with pytest.raises(ValueError, match="at most 65536 pixels a side"):  # a file its decoder would refuse
        codec.compress(np.zeros((16, (1 << 16) + 1), np.uint8))
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 4
    with pytest.raises(BitstreamError, match="corrupt"):
        codec.decompress(bytes(flipped))
    # a forged header (checksum recomputed) claiming a huge image: refused before G allocates it (it aborted in XLA)
    meta, payloads = unpack(data, "gc", codec.fingerprint)
    forged = pack("gc", codec.fingerprint, dict(meta, h=1 << 16, w=1 << 16), payloads)
    with pytest.raises(BitstreamError, match="claims a 65536x65536 image, .* in a payload of"):
        codec.decompress(forged)
    symbols = codec.analyse(photo)  # synthesise: symbols past the 5 centres were clamped, -1 wrapped
    for bad, message in ((np.full_like(symbols, 99), r"outside 0\.\.4"), (np.full_like(symbols, -1), r"outside 0\.\.4"),
                         (symbols.astype(np.float32), "integer values"), (symbols[None], "shape")):
        with pytest.raises(ValueError, match=message):
            codec.synthesise(bad, *photo.shape[:2])
    with pytest.raises(ValueError, match=r"width must be an integer in 1\.\.96"):  # came back 88 wide
        codec.synthesise(symbols, photo.shape[0], 480)
    other = gc.GCCodec(spec, jax.tree.map(lambda a: a * 1.01, state.params["generator"]))
    with pytest.raises(ModelMismatchError):
        other.decompress(data)
    with pytest.raises(UnsupportedError, match="cpm"):
        codec.decompress(pack("cpm", codec.fingerprint, {}, [b""]))
    with pytest.raises(BitstreamError, match="numerics"):
        codec.numerics, saved = "tpu", codec.numerics
        try:
            codec.decompress(data)
        finally:
            codec.numerics = saved
    with pytest.raises(ValueError, match="uint8"):
        codec.compress(photo.astype(np.float32))
    with pytest.raises(ValueError, match="at least 16"):
        codec.compress(photo[:8])
    with pytest.raises(ValueError, match="RGBA"):
        codec.compress(np.zeros((32, 32, 4), np.uint8))


def test_command_line_roundtrip(state, config, photo, tmp_path, capsys):
    from PIL import Image

    model = str(tmp_path / "gc_tiny.msgpack")
    export_params(state.params, config, model, {"note": "untrained, for tests"})
    Image.fromarray(photo).save(tmp_path / "p.png")
    assert cli.main(["compress", "--codec", "gc", "--checkpoint", model, str(tmp_path / "p.png"),
                     str(tmp_path / "p.jxc")]) == 0
    assert "bits per pixel" in capsys.readouterr().out
    assert cli.main(["decompress", "--checkpoint", model, str(tmp_path / "p.jxc"), str(tmp_path / "d.png")]) == 0
    codec = gc.load_codec(model)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d.png")), codec.reconstruct(photo))
    # without --checkpoint a file of a model that is not shipped is refused with a message
    assert cli.main(["decompress", str(tmp_path / "p.jxc"), str(tmp_path / "e.png")]) == 1
    assert "not shipped" in capsys.readouterr().err
    # an L3C or CPM model is not a GC model
    with pytest.raises(Exception, match="not 'gc'"):
        gc.load_codec(str(repo_model("l3c")))


def test_model_files_whose_notes_describe_other_layers_are_refused(state, config, tmp_path):
    """Parameters of the tiny model beside notes naming fewer residual blocks, another latent depth
    or noise channels (an edited .json): the codec, the SC codec and the latent sampler refuse them
    by name when loading, instead of decoding with part of the network or failing inside Flax."""
    from jaxcomp.codecs.gc.sampler import load_frozen_gc
    from jaxcomp.codecs.gc.sc_codec import load_sc_codec
    from jaxcomp.modelfile import ModelLoadError

    good = str(tmp_path / "good.msgpack")
    export_params(state.params, config, good, {"note": "untrained, for tests"})
    gc.load_codec(good)  # the notes that fit load
    load_frozen_gc(good)
    changes = {"fewer_blocks": [f"model.res_blocks={config.model.res_blocks - 1}"],
               "channels": [f"model.channels={config.model.channels + 1}"],
               "noise": ["model.noise_channels=2"]}
    for name, overrides in changes.items():
        path = str(tmp_path / f"{name}.msgpack")
        export_params(state.params, apply_overrides(config, overrides), path, {"note": "edited notes"})
        for load in (gc.load_codec, load_frozen_gc):
            with pytest.raises(ModelLoadError, match="do not fit the architecture its .json describes"):
                load(path)
    sc = str(tmp_path / "sc.msgpack")
    export_params(state.params, apply_overrides(config, ["model.semantic_classes=4"]), sc, {"note": "edited"})
    with pytest.raises(ModelLoadError, match="do not fit the architecture its .json describes"):
        load_sc_codec(sc)


def repo_model(name):
    from jaxcomp.codecs.pretrained import PRETRAINED_DIR

    return os.path.join(PRETRAINED_DIR, f"{name}.msgpack")


def test_generator_loss_terms(config, state):
    """loss = adversarial * (g_adv + lambda_fm * FM) + lambda_mse * MSE([-1, 1]) + prior fit."""
    task, _ = tasks.build_task(config)
    image = jnp.asarray(load_image(sample_image_paths()[2])[:32, :32][None])
    batch = {"image": image}
    rng = jax.random.PRNGKey(0)
    loss = jax.jit(task.generator_loss)  # one compilation for both weights (eager runs take seconds each)
    off, (m_off, x_hat) = loss(state.params, batch, rng, jnp.float32(0.0))
    on, (m_on, _) = loss(state.params, batch, rng, jnp.float32(1.0))
    mse_unit = float(jnp.mean(jnp.square(image / 127.5 - 1.0 - x_hat)))
    assert float(off) == pytest.approx(config.loss.lambda_mse * mse_unit + float(m_off["prior_bits_per_symbol"]),
                                       rel=1e-5)
    assert float(on) - float(off) == pytest.approx(float(m_on["g_adv"]) + config.loss.lambda_fm * float(m_on["fm"]),
                                                   rel=1e-4)
    # the terms themselves, recomputed from the discriminator's outputs on x and x_hat: its patch logits
    # (each scale's last output) for the adversarial terms, its hidden layers for feature matching
    from jaxcomp import gan

    x_unit = image.astype(jnp.float32) / 127.5 - 1.0

    @jax.jit
    def disc_terms(params, x_hat):  # one compilation (eager runs of the discriminator take seconds)
        d_params = {"params": params["discriminator"]}
        return (task.disc.apply(d_params, x_unit, task.cond(None)), task.disc.apply(d_params, x_hat, task.cond(None)),
                task.discriminator_loss(params, batch, x_hat, rng)[0])

    real_feats, fake_feats, d_value = disc_terms(state.params, x_hat)
    real_logits, fake_logits = [f[-1] for f in real_feats], [f[-1] for f in fake_feats]
    assert all(r.shape[-1] == 1 for r in real_logits)
    assert float(m_on["g_adv"]) == pytest.approx(float(gan.g_loss(config.loss.gan, fake_logits)), rel=1e-5)
    fm = float(gan.feature_matching(real_feats, fake_feats))
    assert fm > 0 and float(m_on["fm"]) == pytest.approx(fm, rel=1e-5)
    expected_d = float(gan.d_loss(config.loss.gan, real_logits, fake_logits))
    assert float(d_value) == pytest.approx(expected_d, rel=1e-5)
    assert expected_d != pytest.approx(float(gan.d_loss(config.loss.gan, fake_logits, real_logits)), rel=1e-3)
    # the prior's cross-entropy trains the prior only: no gradient into the encoder from it
    lam0 = apply_overrides(config, ["loss.lambda_mse=0.0"])
    t0, _ = tasks.build_task(lam0)
    grads = jax.jit(jax.grad(lambda g: t0.generator_loss(dict(state.params, generator=g), batch, rng,
                                                         jnp.float32(0.0))[0]))(state.params["generator"])
    assert float(jnp.abs(grads["prior_logits"]).sum()) > 0
    assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves(grads["encoder"]))


def test_pixel_ranges_by_hand():
    """GC's and DPLC's [0, 255] <-> [-1, 1], both ways, clipped on the way out (x = 1 must not become 256, which a uint8
    cast wraps to 0)."""
    from jaxcomp.codecs.dplc import model as dm

    for to_unit, to_pixels in ((gc.model.to_unit, gc.model.to_pixels), (dm.to_model_range, dm.to_pixels)):
        np.testing.assert_allclose(np.asarray(to_unit(np.array([0, 51, 255], np.uint8))), [-1.0, -0.6, 1.0], atol=1e-7)
        np.testing.assert_array_equal(np.asarray(to_pixels(jnp.array([-1.5, -1.0, 0.0, 1.0, 2.0]))),
                                      [0.0, 0.0, 127.5, 255.0, 255.0])


def test_rate_term_moves_latents_towards_the_cheap_centres(config, state):
    """beta > 0: the rate's value is the prior's bits of the hard symbols, and its gradient pulls w
    towards the centres the prior codes cheaply (soft-to-hard), whichever side they are on."""
    from jaxcomp.codecs.gc.model import soft_prior_bits

    w = jnp.array([[[[0.3, -0.2]]]])  # [1, 1, 1, C=2]
    for cheap, sign in ((0, 1.0), (4, -1.0)):  # cheapest centre -2 (w should fall) or +2 (w should rise)
        logits = jnp.zeros((2, 5)).at[:, cheap].set(3.0)
        bits, grad = jax.value_and_grad(lambda v, p=logits: jnp.sum(soft_prior_bits(v, p, 1.0)))(w)
        assert float(bits) == pytest.approx(float(gc.prior_bits(logits, jnp.array([[[[2, 2]]]])).sum()), rel=1e-6)
        assert np.all(np.sign(np.asarray(grad)) == sign), (cheap, grad)
        # the prior is fitted by its own term: the rate term gives it no gradient
        prior_grad = jax.grad(lambda p, v=w: jnp.sum(soft_prior_bits(v, p, 1.0)))(logits)
        assert float(jnp.abs(prior_grad).max()) == 0.0
    # through the task: the generator's loss with beta = 1 is the loss without it plus the rate
    small = apply_overrides(config, ["model.res_blocks=1", "model.disc_scales=1", "model.disc_layers=1"])
    task = tasks.build_task(small)[0]
    batch = {"image": np.asarray(jax.random.uniform(jax.random.PRNGKey(3), (1, 16, 16, 3), maxval=255.0))}
    with_rate = tasks.build_task(apply_overrides(small, ["loss.beta=1.0"]))[0]
    rng = np.random.default_rng(4)  # random parameters of the smaller model (no init to compile)
    params = jax.tree.map(lambda a: jnp.asarray(0.2 * rng.standard_normal(a.shape), a.dtype),
                          jax.eval_shape(task.init, jax.random.PRNGKey(0), batch).params)
    params["generator"]["prior_logits"] = jnp.tile(jnp.arange(5.0), (config.model.channels, 1))  # not uniform

    @jax.jit
    def losses(params):  # the loss without and with the rate term (the rate's gradient: checked above)
        return (task.generator_loss(params, batch, jax.random.PRNGKey(0), 1.0)[0],
                with_rate.generator_loss(params, batch, jax.random.PRNGKey(0), 1.0)[0],
                task.forward(params, batch, jax.random.PRNGKey(0)))

    l0, l1, out = losses(params)
    rate = float(jnp.mean(gc.prior_bits(out["prior_logits"], out["symbols"]))) / config.model.channels
    assert float(l1 - l0) == pytest.approx(rate, rel=1e-4)


def test_latent_sampler_trains_on_frozen_latents_and_samples_centres(state, config, repo, tmp_path):
    """The WGAN-GP sampler: alternate critic/generator steps on the frozen GC's latents; samples are
    quantized to the centres; the sample script writes its table and grids."""
    from experiments import gc_samples
    from jaxcomp.codecs.gc import sampler

    model = str(tmp_path / "gc_tiny.msgpack")
    export_params(state.params, config, model, {"note": "untrained, for tests"})
    scfg = apply_overrides(load_config(str(repo / "configs" / "gc_sampler.py") + ":tiny"),
                           [f"gc_model={model}", "steps=3", "gan.d_steps=2", "eval_every=3"])
    task, data = tasks.build(scfg)
    final, metrics = trainer.train(scfg, str(tmp_path / "sampler"), task, data, progress=False)
    assert {"critic_real", "critic_fake", "gap"} <= set(metrics)
    for a, b in zip(_leaves(final.model_state["gc"]), _leaves(state.params["generator"])):
        np.testing.assert_array_equal(a, b)  # GC stays frozen
    init = trainer.init_state(task, data.train_batch(0), jax.random.split(jax.random.PRNGKey(scfg.seed))[0],
                              trainer.make_mesh())  # the trainer's own compiled init, reused
    g_moved = [not np.array_equal(a, b) for a, b in zip(_leaves(init.params["generator"]),
                                                        _leaves(final.params["generator"]))]
    assert any(g_moved)  # steps 0, 1 the critic's, step 2 the generator's
    w = task.sample_latents(final.params, jax.random.PRNGKey(0), 3)
    assert w.shape == (3, 2, 2, config.model.channels)
    assert set(np.unique(np.asarray(w))) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    prior = sampler.prior_sample_images(task, 2)
    assert prior.shape == (2, 32, 32, 3) and prior.dtype == np.uint8
    # the critic's loss: -(E[c(real)] - E[c(fake)]) + gp * penalty at interpolates of real and fake
    @jax.jit
    def critic_terms(params, image):  # the task's critic loss and the formula's pieces, in one compilation
        real = task.latents(state.params["generator"], image)
        fake = task.sample_latents(params, jax.random.PRNGKey(1), real.shape[0])
        critic = lambda v: task.critic.apply({"params": params["discriminator"]}, v)  # noqa: E731
        return (task.critic_loss(params, real, fake, jax.random.PRNGKey(2))[0],
                jnp.mean(critic(real)) - jnp.mean(critic(fake)), gan.gradient_penalty(critic, real, fake,
                                                                                     jax.random.PRNGKey(2)))

    loss, gap, penalty = critic_terms(final.params, jnp.asarray(data.train_batch(0)["image"]))
    assert task.gp == scfg.loss.gp != 1.0 and float(penalty) > 0
    assert float(loss) == pytest.approx(float(-gap + scfg.loss.gp * penalty), rel=1e-5)
    # the prior baseline draws each channel's symbols from that channel's prior row
    task.gc_params = {**task.gc_params, "prior_logits": jnp.zeros((config.model.channels, 5)).at[0, 4].set(30.0)
                      .at[1, 0].set(30.0)}
    biased = sampler.prior_sample_latents(task, 50)
    np.testing.assert_array_equal(np.asarray(biased[..., 0]), 2.0)
    np.testing.assert_array_equal(np.asarray(biased[..., 1]), -2.0)
    out = tmp_path / "samples"
    assert gc_samples.main(["--sampler", str(tmp_path / "sampler"), "--n", "2", "--seeds", "0",
                            "--out", str(out)]) == 0
    text = (out / "samples.md").read_text()
    assert all(f"| {name} |" in text for name in ("wgan-gp", "prior", "reconstruction", "real (another draw)"))
    grids = sorted(p.name for p in out.glob("grid_*.png"))  # one per set, none written over another
    assert grids == ["grid_prior.png", "grid_real.png", "grid_real_another_draw.png", "grid_reconstruction.png",
                     "grid_wgan-gp.png"]
    assert gc_samples.main(["--sampler", str(tmp_path / "missing"), "--out", str(out), "--force"]) == 2


def test_gc_samples_refuses_an_earlier_run_and_bad_seeds_before_it_samples(tmp_path, capsys):
    """A second run into the same --out replaced its table and grids without a word (--force now
    does); --seeds 0,0 counted one seed twice; --seeds '' failed with int()'s message, no flag named.
    All are refused before the sampler is loaded (here: one that does not exist)."""
    from experiments import gc_samples

    out = tmp_path / "samples"
    missing = ["--sampler", str(tmp_path / "missing"), "--out", str(out)]
    for seeds, message in (("0,0", "--seeds repeats [0]"), ("", "--seeds is empty"), ("0,,1", "--seeds must be"),
                           ("a", "--seeds must be"), ("-1", "--seeds must be whole numbers >= 0")):
        with pytest.raises(SystemExit) as e:
            gc_samples.main(missing + ["--seeds", seeds])
        assert e.value.code == 2 and message in capsys.readouterr().err, seeds
    assert gc_samples.main(missing + ["--seeds", "2,0"]) == 2  # to the sampler: not found
    assert "missing" in capsys.readouterr().err
    for earlier in ("samples.csv", "grid_prior.png"):
        out.mkdir(exist_ok=True)
        (out / earlier).write_text("an earlier run's")
        with pytest.raises(SystemExit):
            gc_samples.main(missing)
        err = capsys.readouterr().err
        assert earlier in err and "--force" in err
        assert gc_samples.main(missing + ["--force"]) == 2  # past the check, to the missing sampler
        (out / earlier).unlink()
    (out / "notes.txt").write_text("not a sample")  # other files do not count
    assert gc_samples.main(missing) == 2
    assert gc_samples.previous_outputs(str(tmp_path / "nowhere")) == []


def test_sampler_needs_a_named_gc_model_before_it_writes(repo, tmp_path, capsys):
    """configs/gc_sampler.py:tiny without gc_model said 'checkpoint not found: ' (an empty name)."""
    from experiments.train import main as train_main

    workdir = tmp_path / "sampler"
    assert train_main(["--config", str(repo / "configs" / "gc_sampler.py") + ":tiny", "--workdir", str(workdir),
                       "--no-progress"]) == 2
    assert "config.gc_model must name a trained GC model" in capsys.readouterr().err
    assert not workdir.exists()
    with pytest.raises(ValueError, match="must name a trained GC model"):
        from jaxcomp.codecs.gc.sampler import load_frozen_gc

        load_frozen_gc("  ")


def test_synthesise_names_the_symbols_dtype_not_a_flattened_shape(state, config):
    """Float symbols [4, 5, C] were reported as 'a 1-D array ..., got shape (4*5*C,)': the shape the
    check flattened them to, not the caller's (which is fine); the message names the dtype."""
    codec = gc.GCCodec(gc.spec_from_config(config.model), state.params["generator"])
    c = config.model.channels
    with pytest.raises(ValueError) as e:
        codec.synthesise(np.zeros((4, 5, c), np.float32), 64, 80)
    assert "the symbols must be integer values, got float32" in str(e.value)
    assert f"({4 * 5 * c},)" not in str(e.value) and "1-D" not in str(e.value)
    with pytest.raises(ValueError, match=r"got shape \(1, 4, 5, "):  # a wrong shape: the caller's
        codec.synthesise(np.zeros((1, 4, 5, c), np.int32), 64, 80)


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["gc.py:paper_c2", "gc.py:paper_c4", "gc.py:paper_c8", "gc.py:cpu_c4"])
def test_paper_configs_train_a_few_steps(repo, spec):
    """The paper-size networks compile and take finite steps on the CPU (batch of 1, the D update on)."""
    config = load_config(str(repo / "configs" / spec), ["data.batch_size=1", "gan.warmup_steps=0",
                                                        "data.source=samples", "data.allow_samples=True"])
    task, data = tasks.build(config)
    r = trainer.benchmark_train_step(task, data.train_batch(0), steps=1, warmup=1)
    assert np.isfinite(r["metrics"]["loss"]) and np.isfinite(r["metrics"]["d_loss"])
    assert r["metrics"]["updated_discriminator"] == 1.0


def test_context_model_codes_correlated_symbols_exactly_and_smaller(state, config, photo):
    """The fitted table p(s | left, up, previous channel): counting fit, exact diagonal-order
    decoding, fewer bits than the factorized prior on correlated latents, and files that need it."""
    from jaxcomp.codecs.gc import context
    from jaxcomp.coding import CategoricalStreamDecoder, encode_categorical

    rng = np.random.default_rng(0)
    field = np.clip(np.round(np.cumsum(rng.normal(size=(9, 11, 3)), axis=1) / 3) + 2, 0, 4).astype(np.int32)
    ctx = context.contexts(field)
    assert tuple(ctx[0, 0, 0]) == (context.OUTSIDE,) * 3
    assert tuple(ctx[2, 3, 1]) == (field[2, 2, 1], field[1, 3, 1], field[2, 3, 0])
    logits = context.fit_context_logits([field], 3, smoothing=0.5)
    # the fit is the smoothed count: one context seen once with symbol s has p(s) = 1.5 / (1 + 2.5)
    c, (left, up, prev), sym = 0, ctx[0, 0, 0], field[0, 0, 0]
    seen = np.sum((ctx[..., 0, :] == ctx[0, 0, 0]).all(-1))
    same = np.sum((ctx[..., 0, :] == ctx[0, 0, 0]).all(-1) & (field[..., 0] == sym))
    assert np.exp(logits[c, left, up, prev, sym]) == pytest.approx((same + 0.5) / (seen + 2.5), rel=1e-5)
    pmfs = context.table_pmfs(logits)
    order = context.coding_order(field.shape)
    assert sorted(order) == list(range(field.size))
    words = encode_categorical(field.reshape(-1)[order], context.symbol_pmfs(pmfs, field)[order])
    np.testing.assert_array_equal(context.decode_symbols(CategoricalStreamDecoder(words), pmfs, field.shape), field)
    assert len(words) * 32 < field.size * math.log2(5) * 0.8

    spec = gc.spec_from_config(config.model)
    plain = gc.GCCodec(spec, state.params["generator"])
    sym_photo = plain.analyse(photo)
    table = context.fit_context_logits([sym_photo], spec.channels)
    ctx_codec = gc.GCCodec(spec, state.params["generator"], table)
    bits = ctx_codec.estimate_bits(photo)
    assert bits["context"] < bits["factorized"] <= bits["bound"] + 1e-6
    data = ctx_codec.compress(photo)
    assert ctx_codec._payload(sym_photo)[0] == "x" and len(data) < len(plain.compress(photo))
    np.testing.assert_array_equal(ctx_codec.decompress(data), plain.reconstruct(photo))
    assert ctx_codec.fingerprint != plain.fingerprint  # the table is part of the model
    with pytest.raises(ModelMismatchError):
        plain.decompress(data)
    with pytest.raises(ValueError, match="context_logits has shape"):
        gc.GCCodec(spec, state.params["generator"], table[:, :5])

"""Context-model lossy codec (CVPR'18): model pieces, exact decoding, rate estimate, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.codecs import cpm
from jaxcomp.coding import BitstreamError, ModelMismatchError, TruncatedError, UnsupportedError
from jaxcomp.data import load_image, sample_image_paths
from jaxcomp.train import jit_init


@pytest.fixture(scope="module")
def codec(cpm_tiny_config, cpm_tiny_params):
    # 64-pixel tiles: images over 64 pixels a side are coded in several independent tiles
    return cpm.CPMCodec(cpm.spec_from_config(cpm_tiny_config.model), cpm_tiny_params, tile=64)


@pytest.fixture(scope="module")
def photo():
    return load_image(sample_image_paths()[1])


def test_importance_mask_is_the_papers_3d_mask():
    y = jnp.array([[[-100.0, 0.0, 100.0]]])  # sigmoid -> 0, 0.5, 1
    m = np.asarray(cpm.importance_mask(y, 4))[0, 0]
    np.testing.assert_allclose(m[0], [0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(m[1], [1, 1, 0, 0], atol=1e-6)  # sigmoid(0) * 4 = 2
    np.testing.assert_allclose(m[2], [1, 1, 1, 1], atol=1e-6)
    np.testing.assert_array_equal(np.asarray(cpm.unmasked_count(jnp.asarray(m)[None])), [[0, 2, 4]])


def test_bottleneck_reads_the_importance_map_from_channel_0_and_codes_the_others(cpm_tiny_config, cpm_tiny_params):
    """The encoder's raw output is ``[y, z_1 .. z_C]``: the importance map comes from y alone and
    the C coded values are the other channels, masked."""
    spec = cpm.spec_from_config(cpm_tiny_config.model)
    model = cpm.CPM(spec)
    raw = jax.random.normal(jax.random.PRNGKey(0), (1, 3, 4, spec.channels + 1)) * 2.0
    out = model.apply({"params": cpm_tiny_params}, raw, method=cpm.CPM.bottleneck)
    mask = cpm.importance_mask(raw[..., 0], spec.channels)
    np.testing.assert_allclose(out["mask"], mask, rtol=1e-6)
    np.testing.assert_allclose(out["z"], raw[..., 1:] * mask, rtol=1e-6)
    # the encoder refuses sizes the decoder cannot give back (x_hat would be larger than the image)
    for shape in ((1, 20, 24, 3), (1, 24, 17, 3), (24, 24, 3)):
        for method in (cpm.CPM.encode, cpm.CPM.latent):
            with pytest.raises(ValueError, match="multiples of 8"):
                model.apply({"params": cpm_tiny_params}, jnp.zeros(shape), method=method)


def test_rate_penalty_is_a_hinge_above_the_target():
    """``beta * max(mean(H) - H_target, 0)``: bits above the target cost, bits below it do not
    (guards the mutant `cpm/rate-hinge-flipped`)."""
    w = dict(ms_ssim=2.0, mse=0.5, beta=3.0, H_target=1.0)
    ones = jnp.ones(2)
    d, r = cpm.rd_objective(w, 0.9 * ones, 0.1 * ones, jnp.array([1.2, 1.6]))
    np.testing.assert_allclose([float(d), float(r)], [2.0 * 0.1 + 0.5 * 0.1, 3.0 * 0.4], rtol=1e-6)
    _, r = cpm.rd_objective(w, ones, ones, jnp.array([0.5, 0.7]))
    assert float(r) == 0.0


def test_symbol_bits_are_minus_log2_p_and_nan_outside_the_levels():
    """``-log2 p(s)``; a symbol outside ``0..L-1`` (e.g. -1 padding) is NaN, not the last level's
    bits (negative indices wrap in ``take_along_axis``) nor 0 bits (no one-hot row)."""
    logits = jnp.log(jnp.array([0.7, 0.2, 0.1]))[None, None, None, None]  # [1, 1, 1, 1, L=3]
    for s, want in ((0, -np.log2(0.7)), (2, -np.log2(0.1)), (-1, np.nan), (3, np.nan)):
        sym = jnp.full((1, 1, 1, 1), s)
        got = float(cpm.symbol_bits(logits, sym)[0, 0, 0, 0])
        centers = jnp.array([-1.0, 0.0, 1.0])
        soft = float(cpm.expected_symbol_bits(logits, jnp.zeros((1, 1, 1, 1)), sym, centers, 1.0)[0, 0, 0, 0])
        np.testing.assert_allclose([got, soft], [want, want], rtol=1e-6)


def test_rate_terms_count_only_unmasked_symbols():
    """``bits`` sums the symbols the mask keeps (plus the importance map); ``H_real`` all of them
    (guards `cpm/rate-counts-masked-symbols`)."""
    spec = cpm.CPMSpec(channels=4, centers=6, importance_map=False)
    bc = jnp.arange(1.0, 1 + 2 * 2 * 4).reshape(1, 2, 2, 4)
    mask = jnp.asarray(np.arange(4)[None, None, None] < np.array([[1, 4], [0, 2]])[None, ..., None], jnp.float32)
    out = cpm.rate_terms(spec, dict(mask=mask), bc)
    np.testing.assert_allclose(float(out["bits"][0]), float(jnp.sum(bc * mask)))
    np.testing.assert_allclose(float(out["H_real"][0]), float(jnp.mean(bc)))


def test_rate_terms_with_the_importance_map():
    """With the importance map: its bits are ``-log2 P(k | left, up)`` (numpy, over an asymmetric table,
    ``C + 1`` outside the border); ``bits`` and ``H_fit`` add them, ``H_soft`` adds them as a constant
    (the map's prior is fitted through ``H_fit`` alone, the mask through ``H_soft``)."""
    C = 3
    spec = cpm.CPMSpec(channels=C, centers=6, importance_map=True)
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 2, (C + 2, C + 2, C + 1)), jnp.float32)
    k = np.array([[1, 3, 0], [2, 2, 3]])
    mask = jnp.asarray((np.arange(C) < k[..., None])[None], jnp.float32)
    bc = jnp.asarray(rng.uniform(0.5, 4.0, (1, 2, 3, C)), jnp.float32)
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    kb = 0.0
    for y in range(2):
        for x in range(3):
            left = k[y, x - 1] if x else C + 1
            up = k[y - 1, x] if y else C + 1
            kb -= logp[left, up, k[y, x]] / np.log(2.0)
    out = cpm.rate_terms(spec, dict(mask=mask, kmap_logits=logits), bc)
    n = 2 * 3 * C
    coded = float(jnp.sum(bc * mask))
    np.testing.assert_allclose(float(out["kmap_bits"][0]), kb, rtol=1e-5)
    np.testing.assert_allclose(float(out["bits"][0]), coded + kb, rtol=1e-5)
    np.testing.assert_allclose(float(out["H_soft"][0]), (coded + kb) / n, rtol=1e-5)
    np.testing.assert_allclose(float(out["H_fit"][0]), (coded + kb) / n, rtol=1e-5)

    def term(name, kmap_logits, m):
        return cpm.rate_terms(spec, dict(mask=m, kmap_logits=kmap_logits), bc)[name][0]

    fit = jax.grad(term, argnums=(1, 2))("H_fit", logits, mask)
    soft = jax.grad(term, argnums=(1, 2))("H_soft", logits, mask)
    assert float(jnp.abs(fit[0]).sum()) > 0 and float(jnp.abs(soft[0]).sum()) == 0
    np.testing.assert_allclose(np.asarray(soft[1]), np.asarray(bc) / n, rtol=1e-5)


def test_context_model_is_causal_in_the_wavefront_order(cpm_tiny_config, cpm_tiny_params):
    """Changing one symbol changes logits only at positions of later wavefronts."""
    spec = cpm.spec_from_config(cpm_tiny_config.model)
    model = cpm.CPM(spec)
    rng = np.random.default_rng(0)
    centers = np.asarray(cpm_tiny_params["centers"])
    sym = rng.integers(0, spec.centers, (1, 6, 7, spec.channels))
    base = model.apply({"params": cpm_tiny_params}, jnp.asarray(centers[sym]), method=cpm.CPM.context_logits)
    fronts = cpm.wavefronts(spec.channels, 6, 7)
    t_of = np.zeros((spec.channels, 6, 7), int)
    for t, f in enumerate(fronts):
        t_of[f[:, 0], f[:, 1], f[:, 2]] = t
    for c, y, x in [(1, 2, 3), (0, 0, 0), (spec.channels - 1, 5, 6)]:
        changed = sym.copy()
        changed[0, y, x, c] = (changed[0, y, x, c] + 1) % spec.centers
        out = model.apply({"params": cpm_tiny_params}, jnp.asarray(centers[changed]), method=cpm.CPM.context_logits)
        diff = np.abs(np.asarray(out - base)).max(-1)[0]  # [h, w, C]
        affected = np.transpose(diff > 0, (2, 0, 1))  # [C, h, w]
        assert not affected[t_of <= t_of[c, y, x]].any()
        # ... and it is used: the same position of the next channel (the 3D context; guards the
        # mutant `cpm/context-blind-to-previous-channel`) and the next position to the right
        if c + 1 < spec.channels:
            assert affected[c + 1, y, x]
        if x + 1 < 7:
            assert affected[c, y, x + 1]


def test_wavefront_steps_equal_the_conv_context_model(codec, cpm_tiny_config):
    """The coder's incremental steps compute the training model's PMFs (up to float rounding)."""
    spec = codec.spec
    rng = np.random.default_rng(1)
    h, w = 5, 9
    sym = rng.integers(0, spec.centers, (h, w, spec.channels)).astype(np.int32)
    logits = codec._logits_fn(codec.params, jnp.asarray(codec.centers[sym])[None])
    expected = np.asarray(jax.nn.softmax(logits, -1))[0]  # [h, w, C, L]
    plan = codec._plan(h, w)
    got = np.zeros_like(expected)

    def consume(i, pmf):
        f = plan.fronts[i]
        got[f[:, 1], f[:, 2], f[:, 0]] = pmf
        return sym[f[:, 1], f[:, 2], f[:, 0]]

    codec._run_fronts(plan, None, consume)
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("k,s", [(3, 2), (5, 2), (4, 2), (5, 3), (1, 2)])
def test_subpixel_conv_transpose_is_flax_conv_transpose(k, s):
    """jaxcomp.nn.ConvTranspose: nn.ConvTranspose(padding="SAME")'s parameters and outputs."""
    import flax.linen as fnn

    from jaxcomp.nn import ConvTranspose

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, 4))
    ref = fnn.ConvTranspose(3, (k, k), strides=(s, s), padding="SAME")
    ours = ConvTranspose(3, (k, k), (s, s), kernel_init=fnn.initializers.lecun_normal())
    p_ref, p_ours = ref.init(jax.random.PRNGKey(1), x), ours.init(jax.random.PRNGKey(1), x)
    jax.tree.map(np.testing.assert_array_equal, p_ref, p_ours)  # same names, shapes, values
    p = jax.tree.map(lambda a: a + 0.3, p_ref)  # a non-zero bias too
    y_ref, y_ours = ref.apply(p, x), ours.apply(p, x)
    assert y_ours.shape == (2, 5 * s, 7 * s, 3)
    np.testing.assert_allclose(np.asarray(y_ours), np.asarray(y_ref), atol=1e-5)


def test_training_decoder_computes_the_codecs_synthesis(codec, cpm_tiny_params):
    """The sub-pixel decoder used in training and the codec's dilated one: same parameters, same
    images up to float rounding."""
    sym = np.random.default_rng(2).integers(0, codec.spec.centers, (1, 3, 5, codec.spec.channels))
    q = jnp.asarray(codec.centers[sym])
    fast = cpm.CPM(codec.spec).apply({"params": cpm_tiny_params}, q, method=cpm.CPM.decode)
    exact = codec._decode_fn(cpm_tiny_params, q)
    assert fast.shape == exact.shape == (1, 24, 40, 3)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(exact), atol=1e-3)


def test_exact_roundtrip_of_real_photos_at_odd_sizes(codec, photo):
    rng = np.random.default_rng(0)
    for h, w in [(64, 64), (77, 131), (1, 1), (9, 200)]:
        y, x = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
        image = photo[y:y + h, x:x + w]
        data, ideal = codec.compress(image, return_bits=True)
        out = codec.decompress(data)
        assert out.dtype == np.uint8 and out.shape == image.shape
        np.testing.assert_array_equal(out, codec.reconstruct(image))
        assert len(data) * 8 < ideal + 8 * (120 + 12 * len(codec._tiles(-(-h // 8), -(-w // 8), 8)))
        if h * w >= 64 * 64:
            estimate = codec.estimate_bits(image)
            assert abs(ideal - estimate) / estimate < 1e-3


def test_an_asymmetric_importance_map_prior_roundtrips_at_its_rate(codec, photo):
    """A trained map's prior ``P(k | left, up)`` is not symmetric in its neighbours (an untrained one is
    uniform): with random parameters (logits of std 1.5 after the model's x30) the coder must still
    use the model's context order and border, so the stream decodes and its bits match the estimate;
    masked channels hold the symbol the model quantizes a masked (zero) value to."""
    params = dict(codec.params, kmap_logits=jnp.asarray(
        np.random.default_rng(3).normal(0, 0.05, codec.params["kmap_logits"].shape), jnp.float32))
    trained = cpm.CPMCodec(codec.spec, params, tile=64)
    image = photo[:64, :64]
    data, ideal = trained.compress(image, return_bits=True)
    np.testing.assert_array_equal(trained.decompress(data), trained.reconstruct(image))
    assert abs(ideal - trained.estimate_bits(image)) / ideal < 1e-3
    symbols, k = trained.analyse(image)
    model_symbols = cpm.CPM(codec.spec).apply({"params": params}, jnp.asarray(image, jnp.float32)[None],
                                              method=cpm.CPM.encode)["symbols"][0]
    assert (k < codec.spec.channels).any()
    np.testing.assert_array_equal(symbols, np.asarray(model_symbols))


def test_masked_symbols_are_not_coded(codec, photo):
    image = photo[:64, :64]
    symbols, k = codec.analyse(image)
    symbols[...], k[...] = 0, 0  # the caller's copies: the codec's own (memoised) analysis is untouched
    symbols, k = codec.analyse(image)
    assert 0 < k.mean() < codec.spec.channels  # an untrained map masks some channels, not all
    masked = np.arange(codec.spec.channels)[None, None] >= k[..., None]
    assert (symbols[masked] == codec.zero_symbol).all()
    # the coder codes sum(k) latent symbols plus the h*w importance values, nothing more
    _, bits = codec.compress(image, return_bits=True)
    bit_map, k2 = codec.bit_map(image)
    np.testing.assert_array_equal(k, k2)
    assert (bit_map[k == 0] == 0).all()
    # the map holds every coded channel's bits at its position: with the importance map's bits, the total
    kmap = float(cpm.kmap_bits(cpm.KMAP_SCALE * codec.params["kmap_logits"], jnp.asarray(k)[None])[0])
    assert float(bit_map.sum()) + kmap == pytest.approx(bits, rel=1e-4)


def test_grayscale_roundtrip(codec, photo):
    gray = photo[:40, :48, 1]
    out = codec.decompress(codec.compress(gray))
    assert out.shape == gray.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, codec.reconstruct(gray))


def test_bad_images_are_refused(codec, photo, monkeypatch):
    with pytest.raises(ValueError, match="uint8"):
        codec.compress(photo[:16, :16].astype(np.float32))
    # nothing is written that the decoder would refuse: sides over 65536, tiles over 32768 or not
    # whole numbers, more tiles than the container's 16-bit payload count; refine steps are whole
    with pytest.raises(ValueError, match="at most 65536 pixels a side"):
        codec.compress(np.zeros(((1 << 16) + 1, 1), np.uint8))
    for tile in ((1 << 15) + 8, 16.0, True):
        with pytest.raises(ValueError, match="up to 32768"):
            cpm.CPMCodec(codec.spec, codec.params, tile=tile)
    with pytest.raises(ValueError, match="whole number of steps"):
        cpm.CPMCodec(codec.spec, codec.params, refine=1.5)
    import jaxcomp.coding

    monkeypatch.setattr(jaxcomp.coding, "MAX_PAYLOADS", 3)
    with pytest.raises(ValueError, match="4 tiles exceed a stream's 3 payloads"):
        codec.compress(photo[:72, :72])
    with pytest.raises(ValueError, match="RGBA"):
        codec.compress(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ValueError, match="shape"):
        codec.compress(np.zeros((8, 8, 2), np.uint8))
    # analyse checks its image too (floats in [0, 1] gave other symbols; RGBA an error from inside JAX)
    for bad, message in ((photo[:16, :16] / 255.0, "uint8"), (np.zeros((16, 16, 4), np.uint8), "RGBA")):
        with pytest.raises(ValueError, match=message):
            codec.analyse(bad)
    # synthesise: symbols outside the centres were clamped by JAX, a larger size came back smaller
    symbols, _ = codec.analyse(photo[:16, :16])
    levels = len(codec.centers)
    for bad, message in ((symbols + levels, rf"outside 0\.\.{levels - 1}"), (symbols - levels, "outside"),
                         (symbols.astype(np.float32), "integer values"), (symbols[..., :1], "shape")):
        with pytest.raises(ValueError, match=message):
            codec.synthesise(bad, 16, 16)
    with pytest.raises(ValueError, match=r"height must be an integer in 1\.\.16"):
        codec.synthesise(symbols, 40, 16)
    assert codec.synthesise(symbols, 13, 16).shape == (13, 16, 3)


def test_a_model_file_whose_notes_describe_other_layers_is_refused(tmp_path):
    """A shipped operating point's parameters beside notes naming 16 instead of 32 latent channels
    (an edited .json) are refused by name when the codec is loaded, not inside Flax."""
    import json
    import os
    import shutil

    from jaxcomp.codecs.cpm.codec import load_codec, shipped_model
    from jaxcomp.modelfile import ModelLoadError

    base = os.path.splitext(shipped_model("low"))[0]
    shutil.copy(base + ".msgpack", tmp_path / "m.msgpack")
    with open(base + ".json") as f:
        notes = json.load(f)
    notes["config"]["model"]["channels"] = 16
    (tmp_path / "m.json").write_text(json.dumps(notes))
    with pytest.raises(ModelLoadError, match=r"do not fit the architecture its .json describes.*instead of"):
        load_codec(str(tmp_path / "m.msgpack"))
    from jaxcomp.vision.task import load_codec_task  # the understanding task's frozen codec, too

    with pytest.raises(ModelLoadError, match=r"do not fit the architecture its .json describes"):
        load_codec_task(str(tmp_path / "m.msgpack"))
    assert load_codec_task(shipped_model("low"))[1].keys() == load_codec("low").params.keys()
    from jaxcomp.modelfile import param_shapes

    param_shapes.cache_clear()  # traced anew
    with jax.enable_x64(True):  # a process with 64-bit floats on (the shape check's conv failed on float64)
        assert load_codec("low").params.keys() == load_codec_task(shipped_model("low"))[1].keys()


def test_damaged_or_foreign_bitstreams_give_clear_errors(codec, photo, cpm_tiny_config, cpm_tiny_params):
    data = codec.compress(photo[:40, :40])
    with pytest.raises(TruncatedError):
        codec.decompress(data[: len(data) // 2])
    rng = np.random.default_rng(1)
    for _ in range(5):
        flipped = bytearray(data)
        flipped[int(rng.integers(0, len(data)))] ^= 1 << int(rng.integers(0, 8))
        with pytest.raises(BitstreamError):
            codec.decompress(bytes(flipped))
    other = jax.tree.map(lambda p: p + 0.01, cpm_tiny_params)
    with pytest.raises(ModelMismatchError):
        cpm.CPMCodec(codec.spec, other, tile=64).decompress(data)
    from jaxcomp.coding import unpack
    with pytest.raises(UnsupportedError, match="cpm"):  # an L3C decoder refuses a cpm stream by its codec id
        unpack(data, "l3c")


def test_training_step_lowers_the_loss_and_reports_rates(cpm_tiny_config):
    task = cpm.CPMTask(cpm_tiny_config)
    photo = load_image(sample_image_paths()[0])
    batch = {"image": jnp.asarray(np.stack([photo[:32, :32], photo[40:72, 40:72]]))}
    state = jit_init(task.init)(jax.random.PRNGKey(0), batch)
    step = jax.jit(task.train_step)
    losses = []
    for _ in range(6):
        state, m = step(state, batch, jax.random.PRNGKey(0))
        losses.append(float(m["loss"]))
    assert losses[-1] < losses[0]
    for key in ("ms_ssim", "bpp", "H_soft", "H_real", "kmap_bpp", "psnr", "importance"):
        assert np.isfinite(float(m[key])), key
    ev = jax.jit(task.eval_step)(state, batch)
    assert ev["bpp"].shape == (2,) and ((ev["ms_ssim"] > 0) & (ev["ms_ssim"] <= 1)).all()
    # the reported rates and scores by hand from the forward pass: bits per *pixel* (32 x 32, not
    # per subpixel), the importance as a fraction of the channels, PSNR the mean of per-image PSNRs
    m, rates, out = jax.jit(task.forward)(state.params, batch["image"])
    mean_metrics = jax.jit(lambda p: task.objective(p, batch["image"])[1])(state.params)
    np.testing.assert_allclose(np.asarray(m["bpp"]), np.asarray(rates["bits"]) / 1024, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(m["kmap_bpp"]), np.asarray(rates["kmap_bits"]) / 1024, rtol=1e-6)
    coded = np.sum(np.asarray(out["mask"]) > 0, axis=-1).mean(axis=(1, 2)) / task.spec.channels
    np.testing.assert_allclose(np.asarray(m["importance"]), coded, rtol=1e-6)
    mse = np.mean((np.asarray(batch["image"], np.float64) - np.asarray(out["x_hat"], np.float64)) ** 2, axis=(1, 2, 3))
    mean_of_psnrs, psnr_of_mean = np.mean(10 * np.log10(255.0**2 / mse)), 10 * np.log10(255.0**2 / mse.mean())
    assert abs(mean_of_psnrs - psnr_of_mean) > 1e-3 * mean_of_psnrs  # the two differ by more than the tolerance
    assert float(mean_metrics["psnr"]) == pytest.approx(mean_of_psnrs, rel=1e-4)


def test_training_objective_is_its_terms_value_and_gradient(cpm_tiny_config, cpm_tiny_params):
    """The loss is distortion + beta * max(H_soft - H_target, 0) (the soft 3D mask: the importance
    map learns from it) + mean(H_fit) (fits the context model and the map's prior on the hard mask)
    + weight decay + centre decay, in value and in gradient; the context model sends no gradient
    into the encoder (it sees the symbols as constants). Objectives: ``ms_ssim`` (+ ``mix_mse``
    MSE) and ``mse``."""
    from jaxcomp.configs import apply_overrides
    from jaxcomp.train import l2_penalty

    config = apply_overrides(cpm_tiny_config, ["loss.mix_mse=0.5", "loss.beta=7.0", "loss.H_target=0.05",
                                               "loss.weight_decay=0.01", "loss.center_decay=0.3"])
    w = cpm.objective_weights(config.loss)
    assert w == dict(ms_ssim=config.loss.K_ms_ssim, mse=0.5, beta=7.0, H_target=0.05)
    mse_w = cpm.objective_weights(apply_overrides(config, ["loss.distortion=mse", "loss.K_mse=3.0"]).loss)
    assert mse_w == dict(ms_ssim=0.0, mse=3.0, beta=7.0, H_target=0.05)
    task = cpm.CPMTask(config)
    photo = load_image(sample_image_paths()[0])
    image = jnp.asarray(np.stack([photo[:32, :32], photo[40:72, 40:72]]))

    def by_hand(params):
        m, rates, _ = task.forward(params, image)
        distortion = w["ms_ssim"] * (1 - jnp.mean(m["ms_ssim"])) + w["mse"] * jnp.mean(m["mse"])
        penalty = w["beta"] * (jnp.mean(rates["H_soft"]) - w["H_target"])
        ae = {k: params[k] for k in ("encoder", "decoder")}
        decay = l2_penalty(ae, 0.01, min_ndim=2) + 0.5 * 0.3 * jnp.sum(jnp.square(params["centers"]))
        return distortion + penalty + jnp.mean(rates["H_fit"]) + decay

    params = jax.tree.map(jnp.asarray, cpm_tiny_params)
    @jax.jit
    def everything(p):  # one compilation
        rate = lambda q, k: jnp.mean(task.forward(q, image)[1][k])  # noqa: E731
        return (jax.value_and_grad(task.loss, has_aux=True)(p, image), jax.value_and_grad(by_hand)(p),
                jax.grad(rate)(p, "H_fit"), jax.grad(rate)(p, "H_soft"), rate(p, "H_soft"))

    ((total, _), grads), (want, want_grads), fit_grads, soft_grads, h_soft = everything(params)
    assert float(h_soft) > 0.05  # the hinge is active
    assert float(total) == pytest.approx(float(want), rel=1e-5)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        h = want_grads
        for k in path:
            h = h[k.key]
        np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-6 * float(jnp.abs(h).max() + 1), err_msg=str(path))
    # H_fit's gradient reaches the context model and the map's prior, never the encoder
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(fit_grads["encoder"]))
    assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(fit_grads["context"]))
    assert any(float(jnp.abs(g).max()) > 0.0 for g in jax.tree.leaves(soft_grads["encoder"]))  # the map


def test_config_errors_are_clear(cpm_tiny_config):
    from jaxcomp.configs import ConfigError, apply_overrides

    with pytest.raises(ConfigError, match="loss.H_targt"):
        apply_overrides(cpm_tiny_config, ["loss.H_targt=1.0"])
    bad = apply_overrides(cpm_tiny_config, ["loss.distortion=ssim"])
    with pytest.raises(ValueError, match="distortion"):
        cpm.CPMTask(bad)
    for override in ("loss.H_target=-1.0", "loss.beta=-500.0", "loss.K_ms_ssim=1e400"):  # H_target -1: always on
        weight = r"config\.loss: the weight '(H_target|beta|ms_ssim)' must be (a finite number )?>= 0"
        with pytest.raises(ValueError, match=weight):
            cpm.CPMTask(apply_overrides(cpm_tiny_config, [override]))
    task = cpm.CPMTask(cpm_tiny_config)
    with pytest.raises(ValueError, match="multiples of 8"):
        task.check_batch((1, 36, 36, 3))



def test_latent_refinement_lowers_the_objective_and_any_codec_of_the_model_decodes(codec, photo, cpm_tiny_config):
    image = photo[30:94, 50:114]
    objective = cpm.objective_weights(cpm_tiny_config.loss)
    refined = cpm.CPMCodec(codec.spec, codec.params, tile=64, refine=12, objective=objective,
                           refine_lr=0.3)
    latent, _, _ = cpm._refine_functions(codec.spec)
    x = jnp.asarray(image, jnp.float32)[None]
    z0 = latent(codec.params, x)
    z, trace = refined.refine(x, z0)
    values = [t[0] for t in trace]
    assert len(trace) == 12 and values[-1] < values[0]  # the training objective of this image went down
    assert not np.array_equal(np.asarray(z), np.asarray(z0))  # the best iterate is a refined one
    # ... and the best one: its objective is the lowest of the trace, also when a large step overshoots
    # and the lowest is not the last (here the first step's result)
    import optax

    _, _, step = cpm._refine_functions(codec.spec)
    w = {key: jnp.float32(v) for key, v in objective.items()}
    evaluate = lambda z: float(step(codec.params, w, jnp.float32(0.0), z, optax.scale_by_adam().init(z), x)[2])  # noqa: E731
    assert evaluate(z) == pytest.approx(min(values), rel=1e-5)
    z_big, trace_big = cpm.CPMCodec(codec.spec, codec.params, tile=64, refine=6, objective=objective,
                                    refine_lr=3.0).refine(x, z0)
    big = [t[0] for t in trace_big]
    assert np.argmin(big) < len(big) - 1
    assert evaluate(z_big) == pytest.approx(min(big), rel=1e-5)
    # the rate's gradient is that of the expected bits (soft assignment to the centres), not of the
    # hard symbols' bits: with the distortion off, Adam's first step moves z by -lr * sign(gradient)
    rate_only = {"ms_ssim": jnp.float32(0.0), "mse": jnp.float32(0.0), "beta": jnp.float32(1.0),
                 "H_target": jnp.float32(0.0)}

    def rate(z):
        model = cpm.CPM(codec.spec, subpixel_decoder=True)
        out = model.apply({"params": codec.params}, z, method=cpm.CPM.bottleneck)
        out["logits"] = model.apply({"params": codec.params}, out["q"], method=cpm.CPM.context_logits)
        out["kmap_logits"] = cpm.KMAP_SCALE * codec.params["kmap_logits"]
        bc = cpm.expected_symbol_bits(out["logits"], out["z"], out["symbols"], codec.params["centers"],
                                      codec.spec.sigma)
        return jnp.mean(cpm.rate_terms(codec.spec, out, bc)["H_soft"])

    moved = step(codec.params, rate_only, jnp.float32(1e-3), z0, optax.scale_by_adam().init(z0), x)[0] - z0
    g = np.asarray(jax.grad(rate)(z0))
    big_g = np.abs(g) > 1e-3 * np.abs(g).max()
    assert big_g.sum() > 100
    np.testing.assert_array_equal(np.sign(np.asarray(moved))[big_g], -np.sign(g)[big_g])
    symbols, k = refined.analyse(image)
    trace = refined.refine_trace
    again = refined.analyse(image)[0]  # remembered (not refined again), handed out as a copy
    assert refined.refine_trace is trace and np.array_equal(again, symbols) and again is not symbols
    plain_symbols, plain_k = codec.analyse(image)
    assert not (np.array_equal(symbols, plain_symbols) and np.array_equal(k, plain_k))
    data, bits = refined.compress(image, return_bits=True)
    out = codec.decompress(data)  # the decoder needs no refinement: the stream is an ordinary one
    np.testing.assert_array_equal(out, refined.reconstruct(image))
    assert abs(bits - refined.estimate_bits(image)) / bits < 1e-3
    plain = refined.with_refinement(0)
    assert plain.refine_steps == 0 and refined.refine_steps == 12
    np.testing.assert_array_equal(plain.reconstruct(image), codec.reconstruct(image))
    with pytest.raises(ValueError, match="objective"):
        codec.with_refinement(5)  # built without the model's training objective
    with pytest.raises(ValueError, match=">= 0"):
        refined.with_refinement(-1)

"""L3C model: shapes, uniform top scale, ablation variants, and that training lowers bpsp."""

import dataclasses
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.codecs import l3c
from jaxcomp.configs import apply_overrides
from jaxcomp.data import load_image, sample_image_paths
from jaxcomp.entropy import logistic_mixture as lm
from jaxcomp.train import jit_init


@pytest.fixture(scope="module")
def images():
    img = load_image(sample_image_paths()[0])
    return jnp.asarray(np.stack([img[:32, :32], img[32:64, 32:64]]))


@pytest.fixture(scope="module")
def params(l3c_tiny_params):
    """The tiny model's initial parameters with random biases instead of zeros.

    With zero biases the untrained encoders put every symbol of z(2) on the centre level 0, so
    D(2)'s features are exactly zero and its outputs (and the RGB coefficients of D(1)) nearly
    so: a decoder that ignored the coarser scale, or a mixture without channel conditioning,
    would compute the same numbers. With these the representations spread over the levels
    and every input and term of the model shows in its outputs.
    """
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x + rng.normal(0.0, 0.3, x.shape).astype(x.dtype) if path[-1].key == "bias" else x,
        l3c_tiny_params)


@pytest.fixture(scope="module")
def forward(l3c_tiny_config, params, images):
    """``(spec, model, out)``: the tiny model's forward pass on ``images``, computed once for the module."""
    spec = l3c.spec_from_config(l3c_tiny_config.model)
    model = l3c.L3C(spec)
    out = jax.jit(model.apply)({"params": params}, images)  # jitted: run eagerly, every op compiles alone
    return spec, model, out


def test_representation_shapes_and_top_bits(forward, images):
    spec, _, out = forward
    for s in range(spec.scales + 1):
        size = 32 // 2**s
        assert out["values"][s].shape == (2, size, size, spec.channels(s))
        assert out["symbols"][s].dtype == jnp.int32
        assert int(out["symbols"][s].max()) < spec.num_levels(s) and int(out["symbols"][s].min()) >= 0
    for s in range(spec.scales):
        assert out["params"][s].shape[1:3] == out["values"][s].shape[1:3]
    bits = l3c.bits_per_scale(spec, out)
    top = 8 * 8 * spec.latent_channels * np.log2(spec.levels)
    np.testing.assert_allclose(np.asarray(bits[-1]), [top, top], rtol=1e-6)
    m = l3c.bpsp_metrics(spec, out, images.shape)
    np.testing.assert_allclose(np.asarray(m["bpsp"]), sum(np.asarray(b) for b in bits) / (32 * 32 * 3), rtol=1e-5)


def test_bits_channels_first_match_nhwc(l3c_tiny_config, l3c_tiny_params, images):
    """bits_per_scale computes channels-first (faster on CPU); the NHWC formulation gives the
    same bits and the same gradients, on both the RGB and the latent scales."""
    spec = l3c.spec_from_config(l3c_tiny_config.model)
    model = l3c.L3C(spec)

    def bits(params, channels_first):
        out = model.apply({"params": params}, images)
        if channels_first:
            return jnp.stack(l3c.bits_per_scale(spec, out)[:-1])
        return jnp.stack([-jnp.sum(lm.mixture_log_prob(l3c.mixture_params(spec, out["params"][s], s),
                                                       out["values"][s], spec.num_levels(s)), axis=(1, 2, 3))
                          / np.log(2.0) for s in range(spec.scales)])

    grad = jax.jit(jax.value_and_grad(lambda p, cf: jnp.sum(bits(p, cf)) / 1e4), static_argnums=1)
    (v_nhwc, g_nhwc), (v_cf, g_cf) = grad(l3c_tiny_params, False), grad(l3c_tiny_params, True)
    per_scale = jax.jit(bits, static_argnums=1)
    np.testing.assert_allclose(np.asarray(per_scale(l3c_tiny_params, True)),
                               np.asarray(per_scale(l3c_tiny_params, False)), rtol=2e-5)
    np.testing.assert_allclose(float(v_cf), float(v_nhwc), rtol=1e-5)
    assert jax.tree.structure(g_nhwc) == jax.tree.structure(g_cf)
    for a, b in zip(jax.tree.leaves(g_nhwc), jax.tree.leaves(g_cf)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-5 * float(np.abs(a).max()))


def test_rgb_variants(l3c_tiny_config, images):
    counts = {}
    for shared in (False, True):
        cfg = apply_overrides(l3c_tiny_config, ["model.representation=rgb", f"model.share_weights={shared}"])
        spec = l3c.spec_from_config(cfg.model)
        model = l3c.L3C(spec)
        params = jit_init(model.init)(jax.random.PRNGKey(0), images)["params"]
        out = jax.jit(model.apply)({"params": params}, images)  # jitted: run eagerly, every op compiles alone
        assert out["symbols"][1].shape == (2, 16, 16, 3) and int(out["symbols"][2].max()) <= 255
        assert np.isfinite(np.asarray(l3c.bpsp_metrics(spec, out, images.shape)["bpsp"])).all()
        counts[shared] = sum(x.size for x in jax.tree.leaves(params))
    assert counts[True] * spec.scales == counts[False]


def test_bad_shapes_and_settings_are_refused(l3c_tiny_config):
    task = l3c.L3CTask(l3c_tiny_config)
    with pytest.raises(ValueError, match="divisible by 4"):
        task.check_batch((1, 30, 32, 3))
    with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
        task.check_batch((1, 32, 32, 4))
    with pytest.raises(ValueError, match="representation"):
        l3c.L3CSpec(representation="jpeg")


def test_tiny_training_lowers_the_loss(l3c_tiny_config, images):
    task = l3c.L3CTask(l3c_tiny_config)
    batch = {"image": images}
    state = jit_init(task.init)(jax.random.PRNGKey(0), batch)
    step = jax.jit(task.train_step)
    first = None
    for i in range(40):
        state, metrics = step(state, batch, jax.random.PRNGKey(i))
        first = float(metrics["bpsp"]) if first is None else first
    last = float(jax.jit(task.eval_step)(state, batch)["bpsp"].mean())
    assert last < 0.8 * first, (first, last)


def test_each_decoder_fuses_the_coarser_scales_features(forward, params):
    """D(s) predicts x(s-1) from z(s) *and* the features of D(s+1) (the paper's feature fusion,
    ``head(z) + coarser``), and the forward pass hands each decoder the coarser one's features.

    Guards against: the forward pass giving the decoders no coarser features (each scale
    predicted from its own z(s) only); the fusion removed inside the decoder; a decoder that
    ignores its own z(s). Perturbing only the coarser scale's representation must move the
    finer scale's predicted mixture parameters.
    """
    spec, model, out = forward
    predict = jax.jit(lambda z, coarser, scale: model.apply({"params": params}, z, coarser, scale,
                                                            method=l3c.L3C.predict), static_argnums=2)
    v = out["values"]  # z(0..2); the tiny model has 2 scales
    f2, raw1 = predict(v[2], None, 2)
    _, raw0 = predict(v[1], f2, 1)
    # the forward pass is this chain: D(2) on z(2), then D(1) on z(1) fused with D(2)'s features
    np.testing.assert_allclose(np.asarray(out["params"][1]), np.asarray(raw1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(out["params"][0]), np.asarray(raw0), rtol=1e-4, atol=1e-5)

    spread = np.asarray(raw0).std(axis=(0, 1, 2)).mean()  # how much x(0)'s parameters vary over pixels

    def moved(raw):
        """Mean change of x(0)'s mixture parameters, relative to their spread over the pixels."""
        return float(np.abs(np.asarray(raw) - np.asarray(raw0)).mean() / spread)

    # z(2) mirrored (level l -> L-1-l, still on the grid): another coarser representation, the same z(1)
    f2_other, _ = predict(-v[2], None, 2)
    assert moved(predict(v[1], f2_other, 1)[1]) > 0.1  # ... changes the finer scale's prediction
    assert moved(predict(v[1], None, 1)[1]) > 0.1      # without the coarser features: another prediction
    assert moved(predict(-v[1], f2, 1)[1]) > 0.1       # and D(1) also reads its own z(1)


def _keys_cubic(t):
    """Keys' cubic convolution kernel (a = -0.5), the bicubic kernel of PIL, TensorFlow and JAX."""
    t = np.abs(t)
    return np.where(t < 1, (1.5 * t - 2.5) * t * t + 1,
                    np.where(t < 2, ((-0.5 * t + 2.5) * t - 4) * t + 2, 0.0))


def _halve_bicubic_antialiased(image):
    """float64 ``[B, H, W, C] -> [B, H/2, W/2, C]``: output pixel i is centred on input coordinate
    2i + 1/2 (pixel centres at integers), the kernel is stretched x2 (antialiasing: 8 taps per
    axis), and the weights that fall inside the image are renormalised to sum to one (PIL's
    BICUBIC resize of a float image gives the same numbers)."""
    def matrix(n):
        w = _keys_cubic((np.arange(n)[None, :] - (2 * np.arange(n // 2)[:, None] + 0.5)) / 2)
        return w / w.sum(1, keepdims=True)

    return np.einsum("ih,jw,bhwc->bijc", matrix(image.shape[1]), matrix(image.shape[2]), image)


def test_rgb_pyramid_is_antialiased_bicubic_downscaling(images):
    """Each level of the RGB variant's pyramid is the previous one downscaled x2 with an
    antialiased bicubic filter and rounded to 8 bits, computed here independently in float64
    numpy (on two photo crops and a noise image, where filters differ most).

    Guards against: nearest-neighbour subsampling (``x[::2, ::2]``, no antialiasing);
    bicubic interpolation without antialiasing (4 taps); flooring instead of rounding.
    """
    noise = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    x = jnp.concatenate([images, jnp.asarray(noise)])
    pyramid = [np.asarray(p) for p in jax.jit(l3c.rgb_pyramid, static_argnums=1)(x, 2)]
    np.testing.assert_array_equal(pyramid[0], np.asarray(x, np.float32))
    for s in (1, 2):
        exact = _halve_bicubic_antialiased(pyramid[s - 1].astype(np.float64))
        expected = np.clip(np.round(exact), 0, 255)
        assert pyramid[s].shape == expected.shape
        # float32 vs float64: a value within float error of a half-integer may round either way
        differs = pyramid[s] != expected
        assert np.all(np.abs(exact[differs] - np.floor(exact[differs]) - 0.5) < 1e-3), s
        assert differs.mean() < 0.01, (s, differs.mean())
    # the "subsample" pyramid (beyond the paper): each level is the top-left pixel of each 2x2 block,
    # i.e. the sub-pixels of step 0 of the 4-step order (subpixel_steps_map == 0)
    sub = [np.asarray(p) for p in l3c.rgb_pyramid(x, 2, "subsample")]
    for s in (1, 2):
        step0 = l3c.subpixel_steps_map(*sub[s - 1].shape[1:3], 4) == 0
        np.testing.assert_array_equal(sub[s].reshape(-1, 3), sub[s - 1][:, step0].reshape(-1, 3))
    with pytest.raises(ValueError, match="needs representation='rgb', subpixel_steps=4"):
        l3c.L3CSpec(representation="rgb", rgb_pyramid="subsample", subpixel_steps=2)


def _reference_bits(raw, x, levels, rgb, mixtures):
    """float64 numpy ``-log2 P(x)`` per example under PixelCNN++'s discretized logistic mixture
    (L3C's likelihood), straight from the decoder's raw output ``[B, H, W, P]``.

    ``P = [logits | means | log-scales]`` (each ``C x K``, channel-major) and, for RGB, ``3 x K``
    coefficients: ``mu_G = m_G + tanh(a) x_R``, ``mu_B = m_B + tanh(b) x_R + tanh(c) x_G``.
    Log-scales are clamped below at -7; a bin is ``[x - d/2, x + d/2]`` with ``d = 2 / (L - 1)``,
    the first and last extended to -inf and +inf.
    """
    raw, x = np.asarray(raw, np.float64), np.asarray(x, np.float64)
    c, k = x.shape[-1], mixtures
    n, shape = c * k, raw.shape[:-1] + (c, k)
    logits, means = raw[..., :n].reshape(shape), raw[..., n:2 * n].reshape(shape).copy()
    scales = np.exp(np.maximum(raw[..., 2 * n:3 * n].reshape(shape), -7.0))
    if rgb:
        coeffs = np.tanh(raw[..., 3 * n:].reshape(raw.shape[:-1] + (3, k)))
        means[..., 1, :] += coeffs[..., 0, :] * x[..., 0:1]
        means[..., 2, :] += coeffs[..., 1, :] * x[..., 0:1] + coeffs[..., 2, :] * x[..., 1:2]
    half = 1.0 / (levels - 1)
    v = x[..., None]
    upper = np.where(v > 1 - half, 1.0, 1 / (1 + np.exp(-(v + half - means) / scales)))
    lower = np.where(v < -1 + half, 0.0, 1 / (1 + np.exp(-(v - half - means) / scales)))
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    p = np.sum((upper - lower) * weights, -1)
    return -np.log2(p).sum(axis=(1, 2, 3))


def test_training_bits_are_the_discretized_logistic_mixture(forward):
    """The bits L3C trains on (``bits_per_scale``) for the RGB scale x(0) (256 levels, channel
    conditioning) and the latent scale x(1) (9 levels) equal a float64 numpy evaluation of the
    discretized logistic mixture from the decoders' raw outputs.

    Guards against: the bin width off by one (``2 / L`` instead of ``2 / (L - 1)``: bins that
    no longer tile the range); the RGB channel conditioning dropped (zero coefficients); the
    log-scale clamp wrong; the edge bins not extended.
    """
    spec, _, out = forward
    bits = jax.jit(lambda out: l3c.bits_per_scale(spec, out))(out)
    for s in range(spec.scales):
        ref = _reference_bits(out["params"][s], out["values"][s], spec.num_levels(s), spec.channels(s) == 3,
                              spec.mixtures)
        np.testing.assert_allclose(np.asarray(bits[s]), ref, rtol=2e-5, err_msg=f"scale {s}")


def test_green_and_blue_means_are_conditioned_on_the_decoded_channels(forward):
    """x(0)'s mixture (from D(1)'s output) conditions the means on the channels decoded before:
    ``mu_R = m_R``, ``mu_G = m_G + tanh(a) x_R``, ``mu_B = m_B + tanh(b) x_R + tanh(c) x_G``, in both
    layouts (the coder's NHWC and the loss's channels-first); its log-scales are clamped below
    at -7 (L3C's clamp).

    Guards against: the RGB channel conditioning dropped (G's mean not depending on R, in
    either layout); the conditioning coefficients not squashed by tanh; the log-scale clamp
    flipped or moved.
    """
    spec, _, out = forward
    k = spec.mixtures
    n = 3 * k
    raw = np.array(out["params"][0])
    # log-scales either side of the clamp
    raw[..., 2 * n:3 * n] = np.linspace(-10.0, 1.0, raw[..., 2 * n:3 * n].size).reshape(raw[..., 2 * n:3 * n].shape)
    p = l3c.mixture_params(spec, jnp.asarray(raw), 0)
    np.testing.assert_array_equal(np.asarray(p.log_scales),
                                  np.maximum(raw[..., 2 * n:3 * n], -7.0).reshape(p.log_scales.shape))
    x = np.asarray(out["values"][0])
    m = raw[..., n:2 * n].reshape(raw.shape[:-1] + (3, k))
    a, b, c = np.moveaxis(np.tanh(raw[..., 3 * n:].reshape(raw.shape[:-1] + (3, k))), -2, 0)
    xr, xg = x[..., 0:1], x[..., 1:2]
    expected = np.stack([m[..., 0, :], m[..., 1, :] + a * xr, m[..., 2, :] + b * xr + c * xg], -2)
    assert np.abs(expected[..., 1, :] - m[..., 1, :]).mean() > 0.01  # G's mean really moves with R here

    means = jax.jit(lm.conditioned_means, static_argnames="channels_first")
    np.testing.assert_allclose(np.asarray(means(p, jnp.asarray(x))), expected, rtol=1e-5, atol=1e-6)
    p_cf = l3c.mixture_params(spec, jnp.moveaxis(jnp.asarray(raw), -1, 0), 0, channels_first=True)
    cf = np.asarray(means(p_cf, jnp.moveaxis(jnp.asarray(x), -1, 0), channels_first=True))  # [C, K, B, H, W]
    np.testing.assert_allclose(np.moveaxis(cf, (0, 1), (-2, -1)), expected, rtol=1e-5, atol=1e-6)


# ---- sub-pixel autoregression inside each scale (model.subpixel_steps; beyond the paper) ----------


def _subpixel_model(config, steps, head, representation="learned"):
    """``(spec, model, params)``: the tiny model with ``steps`` sub-pixel steps, every parameter
    perturbed (the light heads' zero-initialised output convs too: an untrained step would
    otherwise ignore its context and a leak could not show)."""
    cfg = apply_overrides(config, [f"model.subpixel_steps={steps}", f"model.subpixel_head={head}",
                                   f"model.representation={representation}"])
    spec = l3c.spec_from_config(cfg.model)
    model = l3c.L3C(spec)
    params = jit_init(model.init)(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3), np.uint8))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x + rng.normal(0.0, 0.3 if path[-1].key == "bias" else 0.1, x.shape).astype(x.dtype), params)
    return spec, model, params


def test_the_shared_head_tells_its_steps_apart_by_their_embedding(l3c_tiny_config):
    """The shared sub-pixel head adds step k's own embedding row: making every row step 0's changes
    the bits (a head that read row 0 at every step would not notice)."""
    spec, model, params = _subpixel_model(l3c_tiny_config, 4, "shared")
    x = np.random.default_rng(1).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    bits = jax.jit(lambda p: l3c.bits_per_scale(spec, model.apply({"params": p}, x))[0])
    same = jax.tree_util.tree_map_with_path(
        lambda path, v: jnp.broadcast_to(v[:1], v.shape) if path[-1].key == "step_embedding" else v, params)
    assert float(jnp.abs(bits(params) - bits(same)).max()) > 1e-3


def test_the_papers_model_is_unchanged_by_the_subpixel_switch(l3c_tiny_config, l3c_tiny_params):
    """``subpixel_steps=1`` (the default) is the paper's model: no sub-pixel parameters, and the
    architecture that model fingerprints hash (so streams of earlier versions still decode) has
    no sub-pixel fields; with steps it has them. Bad settings are refused by name."""
    assert l3c_tiny_config.model.subpixel_steps == 1
    leaves = {"/".join(str(k.key) for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(l3c_tiny_params)}
    assert not any("step" in leaf or "context" in leaf for leaf in leaves)
    assert "subpixel_steps" not in l3c.L3CSpec().architecture()
    assert l3c.L3CSpec(subpixel_steps=4).architecture()["subpixel_steps"] == 4
    with pytest.raises(ValueError, match="subpixel_steps"):
        l3c.L3CSpec(subpixel_steps=3)
    with pytest.raises(ValueError, match="subpixel_head"):
        l3c.L3CSpec(subpixel_steps=2, subpixel_head="big")
    # the bicubic pyramid (every model before the switch) keeps its fingerprint; the subsampled one,
    # which may start from a bicubic model's very parameters, is a different model to the coder
    assert "rgb_pyramid" not in l3c.L3CSpec(representation="rgb", subpixel_steps=4).architecture()
    sub = l3c.L3CSpec(representation="rgb", subpixel_steps=4, rgb_pyramid="subsample")
    assert sub.architecture()["rgb_pyramid"] == "subsample"
    with pytest.raises(ValueError, match="rgb_pyramid"):
        l3c.L3CSpec(representation="rgb", rgb_pyramid="nearest")
    # the coding order within each 2x2 block: the diagonal first, so the checkerboard's two steps are
    # the unions of the four steps' {0, 1} and {2, 3}
    np.testing.assert_array_equal(l3c.subpixel_steps_map(2, 2, 4), [[0, 2], [3, 1]])
    np.testing.assert_array_equal(l3c.subpixel_steps_map(2, 4, 2), [[0, 1, 0, 1], [1, 0, 1, 0]])
    np.testing.assert_array_equal(l3c.subpixel_steps_map(4, 4, 4) // 2, l3c.subpixel_steps_map(4, 4, 2))
    # a fresh sub-pixel head predicts no correction: an untrained step codes as step 0 does
    head = l3c.SubpixelHead(features=4, outputs=6)
    f, ctx = jnp.ones((1, 4, 4, 5)), jnp.ones((1, 4, 4, 4))
    assert not np.asarray(head.apply(head.init(jax.random.PRNGKey(0), f, ctx), f, ctx)).any()
    # the quantizer's softness sigma reaches the encoder's gradient (the forward pass is the same)
    spec = l3c.spec_from_config(l3c_tiny_config.model)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (1, 8, 8, 3)), jnp.float32)
    enc = l3c.Encoder(spec)
    params = enc.init(jax.random.PRNGKey(0), x)

    def grad_for(sigma):
        e = l3c.Encoder(dataclasses.replace(spec, sigma=sigma))
        return jax.grad(lambda p: jnp.sum(e.apply(p, x)[1] * jnp.arange(1.0, 1 + spec.latent_channels)))(params)

    g1, g2 = jax.tree.leaves(grad_for(1.0)), jax.tree.leaves(grad_for(2.0))
    assert any(not np.allclose(a, b) for a, b in zip(g1, g2))


@pytest.mark.parametrize("steps,head", [(4, "light"), pytest.param(2, "shared", marks=pytest.mark.slow)])
def test_each_subpixel_step_sees_only_the_subpixels_coded_before_it(l3c_tiny_config, images, steps, head):
    """Step k's mixture parameters for x(s-1) (the RGB image and the learned z(1)) do not change
    when the sub-pixels of steps >= k change (they are not decoded yet), do change when those of
    earlier steps change (the context is used), and are what the training forward pass uses at
    step k's positions (the loss is the rate of the sequential code).

    Guards against: a mask that lets a step see its own or later sub-pixels (a decoder could not
    reproduce it: the loss would be a lie); a context that is ignored; the training pass using
    another step's parameters at a position than the coder.
    """
    spec, model, params = _subpixel_model(l3c_tiny_config, steps, head)
    apply = jax.jit(model.apply)
    out = apply({"params": params}, images)
    predict = jax.jit(lambda z, coarser, scale: model.apply({"params": params}, z, coarser, scale,
                                                            method=l3c.L3C.predict), static_argnums=2)
    step_fn = jax.jit(lambda f, base, target, scale, k: model.apply(
        {"params": params}, f, base, target, scale, k, method=l3c.L3C.predict_step), static_argnums=(3, 4))
    v = out["values"]
    f2, base2 = predict(v[2], None, 2)
    f1, base1 = predict(v[1], f2, 1)
    for scale, (f, base) in [(1, (f1, base1)), (2, (f2, base2))]:
        target = np.asarray(v[scale - 1])
        smap = l3c.subpixel_steps_map(target.shape[1], target.shape[2], steps)[None, :, :, None]
        for k in range(steps):
            at_k = np.broadcast_to(smap == k, out["params"][scale - 1].shape)
            raw = np.asarray(step_fn(f, base, target, scale, k))
            np.testing.assert_allclose(np.asarray(out["params"][scale - 1])[at_k], raw[at_k], rtol=1e-5, atol=1e-5)
            later = np.where(smap >= k, -target + 0.5, target)  # sub-pixels not yet decoded: changed
            np.testing.assert_array_equal(np.asarray(step_fn(f, base, later, scale, k))[at_k], raw[at_k],
                                          err_msg=f"scale {scale} step {k} sees sub-pixels of steps >= {k}")
            if k:
                earlier = np.where(smap < k, -target + 0.5, target)
                moved = np.abs(np.asarray(step_fn(f, base, earlier, scale, k))[at_k] - raw[at_k]).mean()
                assert moved > 1e-3 * np.abs(raw[at_k]).mean(), (scale, k, moved)


# ---- faithfulness to the reference (issue 34, item 3): E_in, "RGB Shared", configs ----------------


def _param_shapes(spec, size=16):
    """``{"E1/input/kernel": shape, ...}`` of an L3C of ``spec``, without computing anything."""
    shapes = jax.eval_shape(l3c.L3C(spec).init, jax.random.PRNGKey(0), jnp.zeros((1, size, size, 3), jnp.uint8))
    return {"/".join(str(k.key) for k in path): tuple(x.shape)
            for path, x in jax.tree_util.tree_leaves_with_path(shapes["params"])}


def test_the_encoders_have_the_references_input_conv_when_switched_on(l3c_tiny_config, l3c_tiny_params, repo):
    """``model.encoder_head_conv``: every E(s) starts with the reference's 3x3 conv E_in from its input
    (3 RGB channels at s = 1, E(s-1)'s Cf features after) to Cf channels, before the 5x5 stride-2 conv,
    which then maps Cf to Cf; the parameter count grows by exactly that, computed by hand. On in the
    paper's configs and those of the learned representation (the tiny test model too), off in the RGB
    ones; models from before the switch (configs without it) have none and keep their fingerprint.

    Guards against: E_in missing (or only at the first scale) when switched on; E_in after the stride-2
    conv (it would see Cf channels at s = 1 and the 5x5 conv 3); the switch ignored by the config."""
    from jaxcomp.configs import load_config

    spec = l3c.spec_from_config(l3c_tiny_config.model)
    cf, n_scales = spec.features, spec.scales
    assert spec.encoder_head_conv and spec.representation == "learned"
    on = {"/".join(str(k.key) for k in path): tuple(x.shape)
          for path, x in jax.tree_util.tree_leaves_with_path(l3c_tiny_params)}  # what the tests' model has
    off = _param_shapes(dataclasses.replace(spec, encoder_head_conv=False))
    for s in range(1, n_scales + 1):
        cin = 3 if s == 1 else cf
        assert on[f"E{s}/input/kernel"] == (3, 3, cin, cf) and on[f"E{s}/input/bias"] == (cf,)
        assert on[f"E{s}/head/kernel"] == (5, 5, cf, cf) and off[f"E{s}/head/kernel"] == (5, 5, cin, cf)
        assert f"E{s}/input/kernel" not in off
    count = lambda shapes: sum(int(np.prod(v)) for v in shapes.values())  # noqa: E731
    # E_in of each scale (9 Cin Cf + Cf), and E(1)'s 5x5 conv now reading Cf channels instead of 3
    extra = sum(9 * (3 if s == 1 else cf) * cf + cf for s in range(1, n_scales + 1)) + 25 * (cf - 3) * cf
    assert count(on) - count(off) == extra
    assert set(on) - set(off) == {f"E{s}/{p}" for s in range(1, n_scales + 1) for p in ("input/kernel", "input/bias")}
    assert "encoder_head_conv" not in l3c.L3CSpec().architecture()
    assert "encoder_head_conv" not in l3c.L3CSpec(encoder_head_conv=True, representation="rgb").architecture()
    assert l3c.L3CSpec(encoder_head_conv=True).architecture()["encoder_head_conv"] is True
    for variant, expected in [("paper", True), ("cpu", True), ("tiny", True), ("rgb", False), ("cpu_rgb", False)]:
        cfg = load_config(f"{repo}/configs/l3c.py:{variant}")
        assert cfg.model.encoder_head_conv is expected, variant


def test_reference_rgb_mixture_is_the_reference_codes(repo):
    """The reference's RGB mixture (criterion/logistic_mixture.py on x in [0, 255]): log-scales clamped at
    -7 in pixel units = -7 - ln 127.5 on our [-1, 1] grid, and sigmoid coefficients; the latents' mixtures
    (L levels in [-1, 1], as there) keep -7. Models without the field keep -7 / tanh and their fingerprint."""
    from jaxcomp.configs import load_config

    k = 2
    spec = l3c.L3CSpec(scales=2, mixtures=k, reference_rgb_mixture=True)
    legacy = dataclasses.replace(spec, reference_rgb_mixture=False)
    rgb = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 2, 3 * 3 * k + 3 * k)) * 3, jnp.float32)
    rgb = rgb.at[..., 2 * 3 * k:3 * 3 * k].set(-30.0)  # every log-scale far below both floors
    ref, old = l3c.mixture_params(spec, rgb, 0), l3c.mixture_params(legacy, rgb, 0)
    np.testing.assert_allclose(ref.log_scales, -7 - np.log(127.5), rtol=1e-6)
    np.testing.assert_allclose(old.log_scales, -7.0)
    raw_coeffs = np.asarray(rgb[..., 3 * 3 * k:]).reshape(1, 2, 2, 3, k)
    np.testing.assert_allclose(ref.coeffs, 1 / (1 + np.exp(-raw_coeffs)), rtol=1e-5)
    np.testing.assert_allclose(old.coeffs, np.tanh(raw_coeffs), rtol=1e-5)
    latent = jnp.full((1, 2, 2, 3 * spec.latent_channels * k), -30.0, jnp.float32)
    np.testing.assert_allclose(l3c.mixture_params(spec, latent, 1).log_scales, -7.0)
    assert "reference_rgb_mixture" not in legacy.architecture() and spec.architecture()["reference_rgb_mixture"]
    for variant, expected in [("paper", True), ("rgb", True), ("rgb_shared", True), ("cpu", False),
                              ("cpu_rgb", False), ("tiny", False)]:
        assert load_config(f"{repo}/configs/l3c.py:{variant}").model.reference_rgb_mixture is expected, variant


def test_the_encoders_stride_2_conv_is_centred_like_the_references():
    """E(s)'s 5x5 stride-2 conv pads 2 on every side (the reference's ``conv(Cf, Cf, 5, stride=2)``,
    padding ``k // 2``): its output (i, j) reads input rows 2i-2 .. 2i+2 and columns 2j-2 .. 2j+2, so
    z(s)[i, j] is centred on the 2x2 block of x(s-1) that D(s) predicts from it. A one-pixel change at
    (7, 6) of a 16x16 input moves exactly output rows {3, 4} and columns {2, 3, 4}.

    Guards against: padding moved to one side (same shapes and parameters, every roundtrip and
    training test still passing, latents misaligned by 1.5 pixels)."""
    spec = l3c.L3CSpec(scales=1, features=4, blocks=1, latent_channels=2, mixtures=1)
    encoder = l3c.Encoder(spec)
    shapes = jax.eval_shape(encoder.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda x: jnp.asarray(rng.normal(0.5, 0.2, x.shape), x.dtype), shapes)  # no zero taps

    @jax.jit
    def head(x):
        _, inter = encoder.apply({"params": params}, x, capture_intermediates=True)
        return inter["intermediates"]["head"]["__call__"][0]

    x = jnp.asarray(rng.uniform(-1, 1, (1, 16, 16, 3)), jnp.float32)
    moved = np.abs(np.asarray(head(x.at[0, 7, 6].add(1.0)) - head(x)))[0].max(-1) > 1e-6
    assert moved.shape == (8, 8)
    assert sorted(set(np.nonzero(moved)[0])) == [3, 4] and sorted(set(np.nonzero(moved)[1])) == [2, 3, 4]


def _random_params(model, image_shape, seed=0):
    """Parameters of ``model`` drawn at random (He-scaled kernels, small random biases) without
    compiling ``model.init``: only the shapes are traced."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(image_shape, jnp.uint8))["params"]
    rng = np.random.default_rng(seed)

    def draw(path, x):
        fan_in = int(np.prod(x.shape[:-1])) if path[-1].key == "kernel" else 0
        return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / fan_in) if fan_in else 0.3, x.shape), x.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def test_rgb_shared_is_one_decoder_trained_on_one_scale_and_applied_recursively(repo, images):
    """configs/l3c.py:rgb_shared is the paper's "RGB Shared" (the reference's cr_rgb_shared.cf and its
    test-time recursion at 4 scales): one set of decoder parameters and no encoders; D's prediction of
    x(s-1) depends on the coarser image x(s) only, not on the coarser scale's features, so the forward
    pass on x(1) taken as an image predicts x(1) exactly as the full pass does (the same network
    applied recursively); and the training loss covers the finest scale only: the bits of x(0) given
    x(1), plus x(1) coded uniformly (8 bits a subpixel), per subpixel of x(0). (Computed at 2 scales
    and the tiny model's widths: 3 small compilations, no init.)

    Guards against: feature fusion kept in the shared decoder (the old ablation, now the config
    ``rgb_shared_fused``); the training loss over all scales; one decoder per scale; validation
    (checkpoint choice) measuring the training loss's scales instead of the recursive model."""
    from jaxcomp.configs import load_config

    config = load_config(f"{repo}/configs/l3c.py:rgb_shared")
    paper = l3c.spec_from_config(config.model)
    assert (paper.representation, paper.share_weights, paper.fuse_features, paper.train_scales, paper.scales) == (
        "rgb", True, False, 1, 4)
    fused = l3c.spec_from_config(load_config(f"{repo}/configs/l3c.py:rgb_shared_fused").model)
    assert (fused.share_weights, fused.fuse_features, fused.train_scales, fused.scales) == (True, True, 0, 3)
    assert "fuse_features" in paper.architecture() and "fuse_features" not in fused.architecture()
    assert "train_scales" not in paper.architecture()  # training only: the coder never reads it

    cfg = apply_overrides(config, ["model.features=8", "model.blocks=1", "model.mixtures=2", "model.scales=2"])
    spec = l3c.spec_from_config(cfg.model)
    model = l3c.L3C(spec)
    x = images[:, :16, :16]
    params = _random_params(model, (1, 16, 16, 3))
    assert list(params) == ["D1"]  # one decoder, no encoders
    task = l3c.L3CTask(cfg)

    @jax.jit
    def run(params, x):
        """The forward pass, the bits of x(0) given x(1) in it, the training loss, the forward pass
        on x(1) taken as an image, and the validation metrics (one compilation)."""
        out = model.apply({"params": params}, x)
        small = model.apply({"params": params}, out["symbols"][1].astype(jnp.uint8))
        val = task.eval_step(SimpleNamespace(params=params), {"image": x})
        return out, l3c.bits_per_scale(spec, out)[0], task.loss(params, x), small, val, l3c.bits_per_scale(spec, out)

    full, bits0, (loss, metrics), small, val, bits = run(params, x)
    np.testing.assert_array_equal(np.asarray(small["symbols"][1]), np.asarray(full["symbols"][2]))
    np.testing.assert_allclose(np.asarray(small["params"][0]), np.asarray(full["params"][1]), rtol=1e-5, atol=1e-5,
                               err_msg="D's prediction of x(1) depends on more than x(2)")
    np.testing.assert_allclose(float(loss), float(np.mean(np.asarray(bits0) + 8.0 * 8 * 8 * 3)) / (16 * 16 * 3),
                               rtol=1e-5)
    assert set(metrics) == {"bpsp", "bpsp_s0", "bpsp_s1"}
    # validation (checkpoint choice) measures the recursive model the coder uses, every scale of it,
    # not the training loss's x(0) | x(1) with x(1) at 8 bits
    np.testing.assert_allclose(np.asarray(val["bpsp"]), np.sum(np.asarray(bits), 0) / (16 * 16 * 3), rtol=1e-5)
    assert abs(float(np.mean(val["bpsp"])) - float(loss)) > 0.5  # (an untrained decoder: worse than uniform here)
    # each scale's bits over the image's subpixels: the scales add up to the total
    assert float(metrics["bpsp_s0"]) + float(metrics["bpsp_s1"]) == pytest.approx(float(metrics["bpsp"]), rel=1e-5)
    with pytest.raises(ValueError, match="untrained"):
        l3c.L3CSpec(representation="rgb", share_weights=True, train_scales=1)  # with fusion
    with pytest.raises(ValueError, match="train_scales"):
        l3c.L3CSpec(representation="rgb", share_weights=True, fuse_features=False, train_scales=5)


def test_every_l3c_config_validates_on_the_val_photos_only(repo):
    """Each configs/l3c.py variant, given a folder, validates on the originals of the shipped photos
    of the "val" role and never reads the "test" ones (data.holdout=samples_val; the split itself is
    tested in test_l3c_codec.py), so no training decision touches the README's test photos."""
    import importlib.util

    from jaxcomp.configs import load_config

    spec = f"{repo}/configs/l3c.py"
    module_spec = importlib.util.spec_from_file_location("l3c_configs", spec)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    for variant in module.VARIANTS:
        assert load_config(f"{spec}:{variant}").data.holdout == "samples_val", variant


def test_subpixel_curves_report_mean_std_scales_and_paired_differences(tmp_path):
    """``experiments.l3c_subpixel curves``: two groups of two seeds. Group a at step 10: 5.0 and
    7.0 (mean 6.000, sample std 1.414); group b, seeds swapped in order on disk: 4.0 (seed 1) and
    6.5 (seed 0), so the differences paired by seed are 6.5-5.0 = +1.5 and 4.0-7.0 = -3.0
    (mean -0.750, std 3.182, better in 1 of 2). Duplicate seeds in a group are refused."""
    import json

    from experiments import l3c_subpixel

    def run(name, seed, evals):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"seed": seed}))
        rows = [{"step": s, "split": "train", "bpsp": v + 1} for s, v in evals]
        rows += [{"step": s, "split": "eval", "bpsp": v, "bpsp_s0": v - 1, "bpsp_s1": 1.0} for s, v in evals]
        (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        return str(d)

    a = [run("a0", 0, [(5, 9.0), (10, 5.0)]), run("a1", 1, [(5, 8.0), (10, 7.0)])]
    b = [run("b1", 1, [(10, 4.0)]), run("b0", 0, [(10, 6.5)])]
    report = l3c_subpixel.summarize_groups(l3c_subpixel.load_groups([("a", a), ("b", b)]))
    lines = report.splitlines()
    assert "| 5 | 8.500 ± 0.707 |  |" in lines
    assert "| 10 | 6.000 ± 1.414 | 5.250 ± 1.768 |" in lines
    row_b = next(line for line in lines if line.startswith("| b | 10 |"))
    assert "6.500 (seed 0) / 4.000 (seed 1)" in row_b
    assert "s0: 4.250, s1: 1.000" in row_b
    assert "-0.750 ± 3.182 over 2 seeds, better in 1 of 2" in row_b
    # three seeds: the per-scale column is the mean (0, 1 and 5 average 2, their median is 1)
    c = [run(f"c{i}", i, [(10, v)]) for i, v in enumerate((1.0, 2.0, 6.0))]
    row_c = next(line for line in l3c_subpixel.summarize_groups(l3c_subpixel.load_groups([("c", c)])).splitlines()
                 if line.startswith("| c | 10 |"))
    assert "s0: 2.000" in row_c
    with pytest.raises(SystemExit, match="same seed"):
        l3c_subpixel.load_groups([("a", a + [run("a0bis", 0, [(10, 1.0)])])])
    with pytest.raises(SystemExit, match="no metrics.jsonl"):
        l3c_subpixel.load_groups([("x", [str(tmp_path)])])
    with pytest.raises(SystemExit, match="share no evaluation step"):
        l3c_subpixel.load_groups([("x", [run("x0", 0, [(5, 1.0)]), run("x1", 1, [(7, 1.0)])])])
    # a run still writing: its partial last line is skipped
    with open(os.path.join(a[0], "metrics.jsonl"), "a") as f:
        f.write('{"step": 15, "split": "ev')
    # the command: patterns (overlapping ones count a run once), the table file, the figure
    table, fig = tmp_path / "t.md", tmp_path / "f.png"
    with pytest.warns(UserWarning, match=r"metrics\.jsonl, line 5: not a JSON record"):
        l3c_subpixel.main(["curves", "--group", "a", str(tmp_path / "a?"), a[0], "--group", "b", *b,
                           "--table", str(table), "--out", str(fig)])
    assert table.read_text() == report and fig.stat().st_size > 0
    with pytest.raises(SystemExit, match="names no workdir"):
        l3c_subpixel.main(["curves", "--group", "a", *a, str(tmp_path / "typo*"), "--out", str(fig)])

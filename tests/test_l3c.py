"""L3C model: shapes, uniform top scale, ablation variants, and that training lowers bpsp."""

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


def test_representation_shapes_and_top_bits(l3c_tiny_config, l3c_tiny_params, images):
    spec = l3c.spec_from_config(l3c_tiny_config.model)
    model = l3c.L3C(spec)
    params = l3c_tiny_params
    out = jax.jit(model.apply)({"params": params}, images)  # jitted: run eagerly, every op compiles alone
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

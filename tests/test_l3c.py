"""L3C model: shapes, uniform top scale, ablation variants, and that training lowers bpsp."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcomp.codecs import l3c
from jaxcomp.configs import apply_overrides
from jaxcomp.data import load_image, sample_image_paths
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

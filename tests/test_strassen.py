"""StrassenNets: ternary quantizer, SPN layers (geometry and exactness), op counting, phases, matmul search."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp import strassen
from jaxcomp.strassen import counting
from jaxcomp.strassen.matmul import canonical_signs, describe_algorithm, tensor_error, verify_on_integers


def test_twn_ternary_values_threshold_and_straight_through_gradient():
    w = jax.random.normal(jax.random.PRNGKey(0), (64, 32))
    q = strassen.ternarize(w)
    delta = 0.7 * jnp.mean(jnp.abs(w))
    kept = jnp.abs(w) > delta
    scale = jnp.sum(jnp.abs(w) * kept) / jnp.sum(kept)
    np.testing.assert_allclose(np.unique(np.asarray(q)), [-scale, 0.0, scale], rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(q != 0), np.asarray(kept))
    np.testing.assert_array_equal(np.sign(np.asarray(q)), np.sign(np.asarray(w)) * np.asarray(kept))
    g = jax.random.normal(jax.random.PRNGKey(1), w.shape)
    grad = jax.grad(lambda w: jnp.sum(strassen.ternarize(w) * g))(w)
    np.testing.assert_allclose(grad, g)  # straight through
    # learned scale: value s * t, the scale's gradient is the mean of g * t over the kept entries
    s = jnp.float32(0.3)
    gw, gs = jax.grad(lambda w, s: jnp.sum(strassen.ternarize(w, scale=s) * g), argnums=(0, 1))(w, s)
    np.testing.assert_allclose(gw, g)
    t = strassen.ternary_pattern(w)
    np.testing.assert_allclose(gs, jnp.sum(g * t) / jnp.sum(jnp.abs(t)), rtol=1e-5)
    np.testing.assert_allclose(strassen.ternarize(w, scale=s), s * t)
    # rounding: {-1, 0, 1} with scale 1; mix blends linearly
    r = strassen.ternarize(jnp.array([-2.0, -0.6, 0.4, 0.7]), method="round")
    np.testing.assert_array_equal(r, [-1.0, -1.0, 0.0, 1.0])
    np.testing.assert_allclose(strassen.mix_ternary(w, 0.25), 0.75 * w + 0.25 * q, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown ternary method"):
        strassen.ternary_pattern(w, "binary")


def test_ternarize_params_uses_and_removes_learned_scales():
    params = {"layer": {"wb": jnp.array([[0.9, -0.1], [-1.2, 0.5]]), "wc": jnp.ones((2, 3)), "a_tilde": jnp.ones(2)},
              "head": {"kernel": jnp.full((2, 2), 0.123)}}
    with_scales = strassen.add_learned_scales(params)
    assert set(with_scales["layer"]) == {"wb", "wc", "a_tilde", "wb_scale", "wc_scale"}
    with_scales["layer"]["wb_scale"] = jnp.float32(2.0)
    eff = strassen.ternarize_params(with_scales, 1.0)
    assert set(eff["layer"]) == {"wb", "wc", "a_tilde"}
    t = strassen.ternary_pattern(params["layer"]["wb"])
    np.testing.assert_allclose(eff["layer"]["wb"], 2.0 * t)
    np.testing.assert_array_equal(eff["head"]["kernel"], params["head"]["kernel"])  # not an SPN matrix
    np.testing.assert_array_equal(strassen.ternarize_params(params, 0.0)["layer"]["wb"], params["layer"]["wb"])
    leaves = strassen.ternary_leaves(with_scales)
    assert leaves["layer/wb"][1] == 2.0 and leaves["layer/wb"][0].dtype == np.int8


def test_strassen_weights_compute_exact_products_and_a_wrong_sign_does_not():
    wa, wb, wc = strassen.strassen_weights()
    assert tensor_error(wa, wb, wc) == 0
    assert verify_on_integers(wa, wb, wc, trials=2000)
    a, b = np.random.default_rng(0).normal(size=(2, 100, 2, 2))
    got = strassen.spn_matmul(jnp.asarray(wa, jnp.float32), jnp.asarray(wb, jnp.float32),
                              jnp.asarray(wc, jnp.float32), a.reshape(100, 4), b.reshape(100, 4))
    np.testing.assert_allclose(got, (a @ b).reshape(100, 4), atol=1e-5)
    np.testing.assert_array_equal(strassen.spn_tensor(wa, wb, wc), strassen.matmul_tensor())
    broken = wc.copy()
    broken[0, 3] = -broken[0, 3]
    assert tensor_error(wa, wb, broken) > 0
    assert not verify_on_integers(wa, wb, broken, trials=100)
    lines = describe_algorithm(wa, wb, wc)  # M4 = A22 (B21 - B11) is printed as A22 (B11 - B21), negated in C
    assert lines[0] == "M1 = (A11 + A22) (B11 + B22)" and lines[3] == "M4 = A22 (B11 - B21)"
    assert lines[7] == "C11 = M1 - M4 - M5 + M7" and lines[9] == "C21 = M2 - M4"
    assert tensor_error(*canonical_signs(wa, wb, wc)) == 0


@pytest.mark.parametrize("p,stride,size", [(1, 1, 8), (2, 1, 7), (2, 2, 9), (3, 2, 8)])
def test_spn_conv_can_express_the_conv_it_replaces(p, stride, size):
    """With W_b = the k x k kernel placed at each of the p x p offsets and W_c selecting them, the SPN
    computes the replaced conv exactly: this pins down kernel (p-1)s+k, stride ps, padding and cropping."""
    k, c_in, c_out = 3, 2, 3
    kernel = jax.random.normal(jax.random.PRNGKey(0), (k, k, c_in, c_out))
    x = jax.random.normal(jax.random.PRNGKey(1), (2, size, size + 1, c_in))
    pad = ((1, 1), (1, 1))
    ref = jax.lax.conv_general_dilated(x, kernel, (stride, stride), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    kk, r = (p - 1) * stride + k, p * p * c_out
    wb = np.zeros((kk, kk, c_in, r), np.float32)
    wc = np.zeros((p, p, r, c_out), np.float32)
    for i in range(p):
        for j in range(p):
            for o in range(c_out):
                ch = (i * p + j) * c_out + o
                wb[i * stride:i * stride + k, j * stride:j * stride + k, :, ch] = kernel[..., o]
                wc[i, j, ch, o] = 1.0
    layer = strassen.SPNConv(c_out, (k, k), hidden=r, p=p, strides=(stride, stride), padding=pad, batch_norm=False)
    params = jax.eval_shape(layer.init, jax.random.PRNGKey(2), x)["params"]
    assert params["wb"].shape == wb.shape and params["wc"].shape == wc.shape
    y = jax.jit(layer.apply)({"params": {"wb": wb, "wc": wc, "a_tilde": np.ones(r, np.float32)}}, x)
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, atol=1e-4)


def test_spn_dense_shapes_and_compute():
    layer = strassen.SPNDense(5, hidden=3)
    x = jnp.ones((2, 4, 7))
    variables = layer.init(jax.random.PRNGKey(0), x)
    p = variables["params"]
    assert p["wb"].shape == (7, 3) and p["a_tilde"].shape == (3,) and p["wc"].shape == (3, 5)
    y = layer.apply(variables, x)
    np.testing.assert_allclose(y, ((x @ p["wb"]) * p["a_tilde"]) @ p["wc"] + p["bias"], rtol=1e-5)


def test_op_counts_by_hand():
    # 3x3 conv, 16 -> 16 channels on 8x8 (stride 1, same padding), p = 1, r = 16:
    #   full precision: 8*8*16 outputs x 144 = 147456 muls, x 143 = 146432 adds
    #   SPN: 64 positions x 16 = 1024 muls; adds 1024*143 (W_b) + 1024 (BN shift) + 1024*15 (W_c) = 162816
    layer = strassen.SPNConv(16, (3, 3), hidden=16, p=1, padding=((1, 1), (1, 1)))
    x = jnp.ones((1, 8, 8, 16))
    shapes = jax.eval_shape(layer.init, jax.random.PRNGKey(0), x)  # counting needs shapes only
    rows = counting.count_ops(layer, shapes, x)
    assert rows == [("", dict(muls=1024, adds=162816, fp_muls=147456, fp_adds=146432, spn=1))]
    # p = 2: 4x4 hidden positions, W_b kernel 4x4: 16*16 = 256 muls, 256*(16*16-1) + 256 + 1024*15 adds
    layer2 = strassen.SPNConv(16, (3, 3), hidden=16, p=2, padding=((1, 1), (1, 1)))
    (_, c2), = counting.count_ops(layer2, jax.eval_shape(layer2.init, jax.random.PRNGKey(0), x), x)
    assert (c2["muls"], c2["adds"], c2["fp_muls"]) == (256, 256 * 255 + 256 + 1024 * 15, 147456)

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = strassen.CountedConv(4, (3, 3), padding=((1, 1), (1, 1)))(x)        # 8*8*4*27 = 6912 muls
            x = jnp.mean(x, (1, 2))
            x = strassen.SPNDense(10, hidden=6, use_bias=True)(x)                   # 6 muls; fp 40
            return strassen.CountedDense(2)(x)                                      # 20 muls, 18 + 2 adds

    x = jnp.ones((1, 8, 8, 3))
    net = Net()
    rows = counting.count_ops(net, jax.eval_shape(net.init, jax.random.PRNGKey(0), x), x)
    assert [c["muls"] for _, c in rows] == [6912, 6, 20]
    assert rows[1][1]["adds"] == 6 * 3 + 10 * 5 + 10 and rows[2][1]["adds"] == 20
    s = counting.summarize(rows)
    assert s["spn_muls"] == 6 and s["spn_fp_muls"] == 40 and s["net_muls"] == 6938
    assert s["spn_mul_reduction"] == pytest.approx(1 - 6 / 40)
    assert "| **network** |" in counting.format_table(rows)


def test_phases_mix_and_freeze_the_right_leaves():
    assert [float(strassen.ternary_mix(s, 4, 4)) for s in (0, 3, 4, 5, 7, 100)] == [0, 0, 0.25, 0.5, 1, 1]
    assert float(strassen.ternary_mix(10, 5)) == 1.0 and float(strassen.ternary_mix(4, 5)) == 0.0
    assert float(strassen.ternary_mix(10**6, -1)) == 0.0
    params = {"spn": {"wb": jnp.ones(3), "wc": jnp.ones(3), "a_tilde": jnp.ones(3), "wb_scale": jnp.ones(())},
              "head": {"kernel": jnp.ones(2)}}
    labels = strassen.phase_labels(params)
    assert labels == {"spn": {"wb": "ternary", "wc": "ternary", "a_tilde": "rest", "wb_scale": "rest"},
                      "head": {"kernel": "rest"}}
    tx = strassen.phased_optimizer(optax.sgd(0.1), freeze_step=2)
    state = tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    history = []
    for _ in range(4):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(jax.tree.map(float, jax.tree.map(lambda x: x.reshape(-1)[0], params)))
    assert [h["spn"]["wb"] for h in history] == pytest.approx([0.9, 0.8, 0.8, 0.8])
    assert [h["spn"]["wc"] for h in history] == pytest.approx([0.9, 0.8, 0.8, 0.8])
    assert [h["spn"]["a_tilde"] for h in history] == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert [h["head"]["kernel"] for h in history] == pytest.approx([0.9, 0.8, 0.7, 0.6])


def test_matmul_experiment_tiny_learns_an_exact_algorithm(repo, tmp_path):
    from experiments.strassen_matmul import run
    from jaxcomp.configs import load_config

    table = run(load_config(str(repo / "configs" / "strassen_matmul.py") + ":tiny"), str(tmp_path))
    assert "| 8 | 1/1 |" in table and "exact on 10000 random integer matrices" in table
    assert (tmp_path / "results.json").exists()


def test_spn_resnet_trains_through_the_three_phases(repo, tmp_path):
    """The zoo's ResNet with SPN convs through the trainer: ternary after the ramp, W_b/W_c frozen from
    freeze_step while a_tilde trains, per-layer counts with >99% fewer multiplications in SPN layers."""
    from jaxcomp import tasks
    from jaxcomp import train as trainer
    from jaxcomp.configs import load_config

    config = load_config(str(repo / "configs" / "strassen.py") + ":tiny",
                         ["steps=7", "strassen.ternary_start=2", "strassen.ramp_steps=2", "strassen.freeze_step=4",
                          "eval_every=0", "checkpoint_every=7", "data.batch_size=16"])
    task, data = tasks.build(config)
    seen = {}

    def snapshot(step, state, metrics):
        seen[step] = jax.tree.map(np.asarray, state.params["stage1_block0"]["conv1"])
        seen[f"mix{step}"] = float(metrics["ternary_mix"])

    state, _ = trainer.train(config, str(tmp_path), task, data, callbacks=[snapshot], progress=False)
    assert [seen[f"mix{s}"] for s in range(1, 8)] == [0, 0, 0.5, 1, 1, 1, 1]  # mix of the step taken
    np.testing.assert_array_equal(seen[4]["wb"], seen[7]["wb"])   # frozen from step 4 on
    np.testing.assert_array_equal(seen[4]["wc"], seen[7]["wc"])
    assert not np.array_equal(seen[3]["wb"], seen[4]["wb"])        # trained before
    assert not np.array_equal(seen[4]["a_tilde"], seen[7]["a_tilde"])
    eff = task.effective_params(state.params, state.step)["stage1_block0"]["conv1"]["wb"]
    assert len(np.unique(np.asarray(eff))) == 3
    s = strassen.summarize(task.op_counts(state, data.train_batch(0)["image"]))
    assert s["spn_layers"] == 6 and s["spn_mul_reduction"] > 0.99


def test_counts_script_for_configs(repo, tmp_path):
    from experiments.strassen_counts import run
    from jaxcomp.configs import load_config

    spec = str(repo / "configs" / "strassen.py")
    table = run(load_config(spec + ":tiny"), str(tmp_path))  # ResNet-8 on 8x8 digits, r = c_out, p = 1
    assert "| stage1_block0/conv1 | yes | 1,024 | 162,816 | 147,456 | 146,432 |" in table
    assert (tmp_path / "op_counts.md").exists()
    # LSTM (counted from shapes): 64 -> 512 input and 128 -> 512 recurrent projections with r = 512
    lm = run(load_config(spec + ":ptb"), str(tmp_path))
    assert "| lstm0_input | yes | 512 | 294,400 | 32,768 | 32,768 |" in lm
    assert "| output | no | 1,280,000 |" in lm

"""Shared GAN pieces: hand-computed losses, the 3-scale discriminator, the two-player schedule."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcomp import gan
from jaxcomp.nn import StridedConv
from jaxcomp.train import TwoPlayerState


def test_avg_pool_matches_a_hand_computation():
    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    expected = np.zeros((3, 3), np.float32)
    for i in range(3):
        for j in range(3):  # 3x3 window centred on (2i, 2j), padding not counted
            rows = range(max(2 * i - 1, 0), min(2 * i + 2, 5))
            cols = range(max(2 * j - 1, 0), min(2 * j + 2, 5))
            expected[i, j] = np.mean([x[0, r, c, 0] for r in rows for c in cols])
    np.testing.assert_allclose(np.asarray(gan.avg_pool_3x3(jnp.asarray(x)))[0, ..., 0], expected, rtol=1e-6)


def test_the_discriminator_sees_three_scales():
    d = gan.MultiScaleDiscriminator(scales=3, features=4, layers=2)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 32, 32, 3), minval=-1, maxval=1)
    @jax.jit
    def init_apply(key, x):  # one compilation (eager runs take seconds)
        params = d.init(key, x)["params"]
        return params, d.apply({"params": params}, x)

    params, out = init_apply(jax.random.PRNGKey(1), x)
    assert len(out) == 3 and sorted(params) == ["scale0", "scale1", "scale2"]
    # 32 -> 17 -> 9 (stride 2, pad 2) -> 10 -> 11 (stride 1, pad 2); 16 -> ... -> 7; 8 -> ... -> 5
    assert [o[-1].shape for o in out] == [(2, 11, 11, 1), (2, 7, 7, 1), (2, 5, 5, 1)]
    assert all(len(o) == 4 for o in out)  # 2 stride-2 blocks, a stride-1 block, the logits
    # scale s is a PatchGAN on the image average-pooled s times
    single = gan.PatchDiscriminator(4, 2)

    @jax.jit
    def references(params, x):  # the three scales in one compilation
        refs = []
        for s in range(3):
            refs.append(single.apply({"params": params[f"scale{s}"]}, x)[-1])
            x = gan.avg_pool_3x3(x)
        return refs

    for s, ref in enumerate(references(params, x)):
        np.testing.assert_allclose(np.asarray(out[s][-1]), np.asarray(ref), rtol=1e-5, atol=1e-6)
    # a conditioning map is an input at every scale
    cond = jnp.zeros((2, 32, 32, 2))
    dc = gan.MultiScaleDiscriminator(scales=3, features=4, layers=2)

    @jax.jit
    def conditioned(key, x, cond):
        pc = dc.init(key, x, cond)["params"]
        return pc, dc.apply({"params": pc}, x, cond.at[:, :, :, 0].set(1.0)), dc.apply({"params": pc}, x, cond)

    pc, moved, base = conditioned(jax.random.PRNGKey(1), x, cond)
    assert pc["scale2"]["conv0"]["kernel"].shape[2] == 5
    assert all(float(jnp.abs(a[-1] - b[-1]).max()) > 1e-4 for a, b in zip(moved, base))
    with pytest.raises(ValueError, match="does not match"):
        dc.apply({"params": pc}, x, cond[:, :16])


def test_patch_discriminator_is_pix2pixhds_layout():
    """C64-C128-C256-C512 (widths doubling, capped at 8x), instance norm on every block but the first."""
    d = gan.PatchDiscriminator(features=2, layers=4)
    params = jax.eval_shape(d.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))["params"]
    widths = [params[f"conv{i}"]["kernel"].shape[-1] for i in range(5)]
    assert widths == [2, 4, 8, 16, 16]  # the stride-1 block keeps 8x, not 16x
    assert [params[f"conv{i}"]["kernel"].shape[:2] for i in range(5)] == [(4, 4)] * 5
    assert params["logits"]["kernel"].shape == (4, 4, 16, 1)
    assert sorted(k for k in params if k.startswith("norm")) == ["norm1", "norm2", "norm3", "norm4"]
    assert not any(k.startswith("norm") for k in jax.eval_shape(
        gan.PatchDiscriminator(2, 2, norm=False).init, jax.random.PRNGKey(0),
        jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))["params"])


def test_patch_discriminator_computes_what_pix2pixhd_computes():
    """The forward pass written out with lax convolutions: 4x4 convs padded by 2 (stride 2, then 1),
    LeakyReLU(0.2) after every block, instance norm (eps 1e-6, learned scale and bias) on all but the
    first, and a 1-channel 4x4 logits conv; every block's activations are returned."""
    d = gan.PatchDiscriminator(features=2, layers=1)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 12, 3))
    params = d.init(jax.random.PRNGKey(1), x)["params"]
    rng = np.random.default_rng(0)  # the norm's scale and bias away from 1 and 0, so that both matter
    params = jax.tree.map(lambda a: a + jnp.asarray(rng.normal(0, 0.5, a.shape), a.dtype), params)
    out = jax.jit(lambda p, x: d.apply({"params": p}, x))(params, x)

    def conv(h, layer, stride):
        y = jax.lax.conv_general_dilated(h, layer["kernel"], (stride, stride), ((2, 2), (2, 2)),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + layer["bias"]

    leaky = lambda v: np.where(v > 0, v, 0.2 * v)  # noqa: E731
    h0 = leaky(np.asarray(conv(x, params["conv0"], 2)))
    h1 = np.asarray(conv(h0, params["conv1"], 1))
    mean, var = h1.mean(axis=(1, 2), keepdims=True), h1.var(axis=(1, 2), keepdims=True)
    h1 = leaky((h1 - mean) / np.sqrt(var + 1e-6) * np.asarray(params["norm1"]["scale"])
               + np.asarray(params["norm1"]["bias"]))
    logits = np.asarray(conv(h1, params["logits"], 1))
    assert len(out) == 3
    for got, want in zip(out, (h0, h1, logits)):
        assert got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
    assert (h0 < 0).any() and (h1 < 0).any()  # the negative slope is exercised


R = np.array([[1.5, 0.5], [-0.5, 2.0]], np.float32)
F = np.array([[-1.0, 0.25], [0.75, -2.0]], np.float32)


def softplus(v):
    return np.log1p(np.exp(v))


@pytest.mark.parametrize("kind, d_expected, g_expected", [
    ("lsgan", np.mean((R - 1) ** 2) + np.mean(F ** 2), np.mean((F - 1) ** 2)),
    ("nonsaturating", np.mean(softplus(-R)) + np.mean(softplus(F)), np.mean(softplus(-F))),
    ("hinge", np.mean(np.maximum(1 - R, 0)) + np.mean(np.maximum(1 + F, 0)), -np.mean(F)),
    ("wgan", np.mean(F) - np.mean(R), -np.mean(F)),
])
def test_gan_losses_equal_hand_computations(kind, d_expected, g_expected):
    assert float(gan.d_loss(kind, jnp.asarray(R), jnp.asarray(F))) == pytest.approx(d_expected, rel=1e-5)
    assert float(gan.g_loss(kind, jnp.asarray(F))) == pytest.approx(g_expected, rel=1e-5)
    # lists are scales of a multi-scale discriminator: their losses add up
    two = gan.d_loss(kind, [jnp.asarray(R), jnp.asarray(2 * R)], [jnp.asarray(F), jnp.asarray(F)])
    assert float(two) == pytest.approx(d_expected + float(gan.d_loss(kind, jnp.asarray(2 * R), jnp.asarray(F))),
                                       rel=1e-5)
    g_two = gan.g_loss(kind, [jnp.asarray(F), jnp.asarray(2 * F)])
    assert float(g_two) == pytest.approx(g_expected + float(gan.g_loss(kind, jnp.asarray(2 * F))), rel=1e-5)
    for loss, args in ((gan.d_loss, (R, F)), (gan.g_loss, (F,))):
        with pytest.raises(ValueError, match="unknown GAN loss"):
            loss(kind + "x", *args)


def test_gradient_penalty_at_the_interpolates():
    a = jnp.asarray([[1.0, 2.0], [2.0, 0.0]])  # ||a|| = 3: a linear critic's gradient everywhere
    real = jax.random.normal(jax.random.PRNGKey(0), (3, 2, 2))
    fake = jax.random.normal(jax.random.PRNGKey(1), (3, 2, 2))
    linear = lambda x: jnp.sum(x * a, axis=(1, 2))
    assert float(gan.gradient_penalty(linear, real, fake, jax.random.PRNGKey(2))) == pytest.approx(4.0, rel=1e-5)
    # a quadratic critic: grad = 2 x_hat, at x_hat = eps real + (1 - eps) fake with eps per example
    rng = jax.random.PRNGKey(3)
    eps = np.asarray(jax.random.uniform(rng, (3, 1, 1)))
    x_hat = eps * np.asarray(real) + (1 - eps) * np.asarray(fake)
    norms = np.sqrt(np.sum((2 * x_hat) ** 2, axis=(1, 2)))
    quad = lambda x: jnp.sum(x**2, axis=(1, 2))
    assert float(gan.gradient_penalty(quad, real, fake, rng)) == pytest.approx(np.mean((norms - 1) ** 2), rel=1e-4)


def test_feature_matching_is_pix2pixhds_weighting():
    """pix2pixHD: sum over scales and layers of 1 / num_D * 4 / (n_layers_D + 1) * mean L1 (4x the average)."""
    r = [[jnp.ones((1, 2, 2, 1)), jnp.zeros((1, 1, 1, 2)), jnp.full((1, 1, 1, 1), 9.0)],
         [jnp.full((1, 2, 2, 1), 2.0), jnp.full((1, 1, 1, 1), 5.0)]]
    f = [[jnp.zeros((1, 2, 2, 1)), jnp.full((1, 1, 1, 2), 3.0), jnp.zeros((1, 1, 1, 1))],
         [jnp.full((1, 2, 2, 1), -2.0), jnp.zeros((1, 1, 1, 1))]]
    # scale 0: layers |1-0| = 1 and |0-3| = 3 (logits ignored); scale 1: |2+2| = 4
    expected = 4 * ((1 + 3) / (2 * 2) + 4 / (1 * 2))
    assert float(gan.feature_matching(r, f)) == pytest.approx(expected)
    grads = jax.grad(lambda real: gan.feature_matching(real, f))(r)
    assert all(float(jnp.abs(g).max()) == 0.0 for s in grads for g in s)  # real features are constants
    # the generated features get the L1 gradient: 4 sign(f - r) / (elements * layers * scales), logits none
    g = jax.grad(lambda fake: gan.feature_matching(r, fake))(f)
    np.testing.assert_allclose(g[0][0], -4 * np.ones((1, 2, 2, 1)) / (4 * 2 * 2))
    np.testing.assert_allclose(g[0][1], 4 * np.ones((1, 1, 1, 2)) / (2 * 2 * 2))
    np.testing.assert_allclose(g[1][0], -4 * np.ones((1, 2, 2, 1)) / (4 * 1 * 2))
    assert float(jnp.abs(g[0][2]).max()) == 0.0 and float(jnp.abs(g[1][1]).max()) == 0.0
    with pytest.raises(ValueError, match="scale 1: 2 real and 1 fake layers"):  # zip would drop a layer
        gan.feature_matching(r, [f[0], f[1][1:]])
    with pytest.raises(ValueError, match="2 real and 1 fake scales"):
        gan.feature_matching(r, f[:1])


def test_mmd_imq_equals_a_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 2)), rng.normal(size=(4, 2)) + 0.5
    scales, var = (0.5, 2.0), 1.5
    total = 0.0
    for s in scales:
        c = s * 2 * 2 * var
        k = lambda a, b, c=c: c / (c + np.sum((a - b) ** 2))
        kxx = sum(k(x[i], x[j]) for i in range(3) for j in range(3) if i != j) / 6
        kyy = sum(k(y[i], y[j]) for i in range(4) for j in range(4) if i != j) / 12
        kxy = sum(k(x[i], y[j]) for i in range(3) for j in range(4)) / 12
        total += kxx + kyy - 2 * kxy
    got = gan.mmd_imq(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), var, scales)
    assert float(got) == pytest.approx(total, rel=1e-5)
    # samples of one distribution are closer than shifted ones
    a = jax.random.normal(jax.random.PRNGKey(0), (200, 4))
    b = jax.random.normal(jax.random.PRNGKey(1), (200, 4))
    assert abs(float(gan.mmd_imq(a, b))) < 0.02 < float(gan.mmd_imq(a, b + 1.0))
    with pytest.raises(ValueError, match="at least 2"):
        gan.mmd_imq(a[:1], b)
    # bf16 samples: the kernel and the penalty are float32, as documented
    ab = a.astype(jnp.bfloat16)
    assert gan.imq_kernel(ab, ab, 1.0).dtype == jnp.float32
    assert gan.gradient_penalty(lambda v: jnp.sum(v ** 2, -1), ab, ab * 0.5, jax.random.PRNGKey(2)).dtype == jnp.float32


@pytest.mark.parametrize("shape, k, s, pad", [((2, 16, 16, 3), 4, 2, (2, 2)), ((1, 17, 15, 2), 4, 2, (2, 2)),
                                              ((2, 9, 13, 3), 3, 2, (1, 1)), ((1, 20, 20, 2), 5, 3, (2, 1))])
def test_strided_conv_equals_flax_conv(shape, k, s, pad):
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    ref = nn.Conv(5, (k, k), strides=(s, s), padding=(pad, pad))
    params = ref.init(jax.random.PRNGKey(1), x)
    got = StridedConv(5, k, s, pad).apply(params, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref.apply(params, x)), rtol=1e-5, atol=1e-5)


class ToyPlayers:
    """G(z) = a * z, D(x) = b * x: small enough to check every update by hand."""

    def __init__(self, schedule):
        self.schedule = schedule
        self.seen_adversarial = []

    def state(self):
        return TwoPlayerState.create({"a": jnp.ones(())}, {"b": jnp.ones(())}, optax.sgd(0.1), optax.sgd(0.1))

    def generate(self, params, batch, rng):
        return params["generator"]["a"] * batch["z"]

    def generator_loss(self, params, batch, rng, adversarial):
        fake = self.generate(params, batch, rng)
        score = params["discriminator"]["b"] * fake
        loss = adversarial * -jnp.mean(score) + jnp.mean((fake - batch["x"]) ** 2)
        return loss, ({"adv": adversarial}, fake)

    def discriminator_loss(self, params, batch, fake, rng):
        b = params["discriminator"]["b"]
        loss = jnp.mean(b * fake) - jnp.mean(b * batch["x"])
        return loss, {"fake_mean": jnp.mean(fake)}

    def step(self, state, batch):
        return jax.jit(lambda st, bt: gan.two_player_step(st, bt, jax.random.PRNGKey(0), self.schedule, self.generate,
                                                          self.generator_loss, self.discriminator_loss))(state, batch)


def test_joint_schedule_updates_exactly_the_players_it_should():
    toy = ToyPlayers(gan.GANSchedule("joint", 1, warmup_steps=1))
    batch = {"z": jnp.asarray([1.0, 2.0]), "x": jnp.asarray([3.0, 3.0])}
    s0 = toy.state()
    s1, m1 = toy.step(s0, batch)  # warm-up: G on the distortion alone, D untouched
    # d/da mean((a z - x)^2) at a = 1: mean(2 (z - x) z) = (2*-2*1 + 2*-1*2) / 2 = -4
    assert float(s1.params["generator"]["a"]) == pytest.approx(1.0 + 0.1 * 4.0)
    assert float(s1.params["discriminator"]["b"]) == 1.0
    assert float(m1["adv"]) == 0.0 and float(m1["updated_discriminator"]) == 0.0
    assert int(s1.step) == 1
    s2, m2 = toy.step(s1, batch)  # both players, D on the fakes of the G it saw this step
    a1 = float(s1.params["generator"]["a"])
    # G: d/da [-b mean(a z) + mean((a z - x)^2)] with b = 1
    g_grad = -1.5 + np.mean(2 * (a1 * np.array([1, 2]) - 3) * np.array([1, 2]))
    assert float(s2.params["generator"]["a"]) == pytest.approx(a1 - 0.1 * g_grad, rel=1e-5)
    # D: d/db [mean(b fake) - mean(b x)] with fake = a1 z (generated before G's update)
    d_grad = np.mean(a1 * np.array([1, 2])) - 3.0
    assert float(s2.params["discriminator"]["b"]) == pytest.approx(1.0 - 0.1 * d_grad, rel=1e-5)
    assert float(m2["d_fake_mean"]) == pytest.approx(np.mean(a1 * np.array([1, 2])), rel=1e-6)


def test_alternate_schedule_cycles_critic_and_generator_steps():
    toy = ToyPlayers(gan.GANSchedule("alternate", d_steps=2, warmup_steps=0))
    batch = {"z": jnp.asarray([1.0, 2.0]), "x": jnp.asarray([3.0, 3.0])}
    state = toy.state()
    updated = []
    for _ in range(6):
        new, m = toy.step(state, batch)
        g_moved = float(new.params["generator"]["a"]) != float(state.params["generator"]["a"])
        d_moved = float(new.params["discriminator"]["b"]) != float(state.params["discriminator"]["b"])
        assert (g_moved, d_moved) == (bool(m["updated_generator"]), bool(m["updated_discriminator"]))
        updated.append("G" if g_moved and not d_moved else "D" if d_moved and not g_moved else "?")
        state = new
    assert "".join(updated) == "DDGDDG"
    # with a warm-up: the generator alone first, then the cycle starts with the critic's turns
    schedule = gan.GANSchedule("alternate", d_steps=2, warmup_steps=2)
    players = [schedule.players(jnp.asarray(step)) for step in range(8)]
    assert "".join("D" if bool(d) else "G" for _, d in players) == "GGDDGDDG"
    assert all(bool(g) != bool(d) for g, d in players)


def test_schedule_settings_are_checked():
    with pytest.raises(ValueError, match="d_steps must be 1"):
        gan.GANSchedule("joint", d_steps=5)
    with pytest.raises(ValueError, match="unknown gan.mode"):
        gan.GANSchedule("simultaneous")
    with pytest.raises(ValueError, match=">= 1"):
        gan.GANSchedule("alternate", d_steps=0)


def test_mode_none_trains_the_generator_alone():
    toy = ToyPlayers(gan.GANSchedule("none", warmup_steps=0))
    batch = {"z": jnp.asarray([1.0, 2.0]), "x": jnp.asarray([3.0, 3.0])}
    s0 = toy.state()
    s1, m = toy.step(s0, batch)
    assert float(m["adv"]) == 0.0 and float(m["updated_discriminator"]) == 0.0
    assert float(s1.params["generator"]["a"]) == pytest.approx(1.4)  # the distortion's gradient alone
    assert float(s1.params["discriminator"]["b"]) == 1.0


@pytest.mark.parametrize("backend", ["cpu", "gpu"])
def test_branch_runs_the_branch_its_predicate_names(backend, monkeypatch):
    """The schedule's ``branch``: both branches selected with ``where`` on the CPU, ``lax.cond``
    elsewhere (faked here by reporting another backend); a Python bool picks at trace time."""
    from jaxcomp.gan.training import branch

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    x = {"a": jnp.arange(3.0), "b": jnp.ones(())}
    double = lambda t: jax.tree.map(lambda v: 2 * v, t)  # noqa: E731
    negate = lambda t: jax.tree.map(lambda v: -v, t)  # noqa: E731
    for pred, want in ((True, double(x)), (False, negate(x))):
        for p in (pred, jnp.asarray(pred)):
            got = jax.jit(lambda t, p=p: branch(p, double, negate, t))(x) if not isinstance(p, bool) else \
                branch(p, double, negate, x)
            jax.tree.map(np.testing.assert_array_equal, got, want)

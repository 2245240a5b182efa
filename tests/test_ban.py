"""Born-Again Networks: losses against numpy, the model zoo, batch norm, data readers, a tiny generation run."""

from __future__ import annotations

import json
import os
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcomp import distill, models
from jaxcomp.configs import apply_overrides, load_config
from jaxcomp.data import DataError
from jaxcomp.data.classification import ClassificationBatches, build_classification_data, load_digits_arrays
from jaxcomp.data.text import LMBatches, Vocabulary, build_lm_data, read_words
from jaxcomp.train import jit_init


def _softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


@pytest.fixture(scope="module")
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 5)).astype(np.float32) * 2, rng.normal(size=(6, 5)).astype(np.float32) * 2


@pytest.fixture(scope="module")
def ban_config(repo):
    return load_config(str(repo / "configs" / "ban.py") + ":tiny")


# ---- losses ------------------------------------------------------------------------------


def test_kd_loss_value_and_gradient_scale(logits):
    s, t = logits
    for temp in (1.0, 4.0):
        p, q = _softmax(t / temp), _softmax(s / temp)
        expected = temp**2 * np.mean(np.sum(p * (np.log(p) - np.log(q)), -1))
        np.testing.assert_allclose(distill.kd_loss(s, t, temp), expected, rtol=1e-5)
        # d/ds T^2 KL(p || softmax(s/T)) = T (q - p): the T^2 factor keeps the scale O(1) in T
        grad = jax.grad(distill.kd_loss)(jnp.asarray(s), t, temp)
        np.testing.assert_allclose(grad, temp * (q - p) / len(s), atol=1e-6)
    assert float(distill.kd_loss(t, t, 3.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(jnp.abs(jax.grad(lambda x: distill.kd_loss(s, x, 2.0))(jnp.asarray(t))).max()) == 0.0
    for bad in (0.0, -1.0, float("nan"), True):  # NaN losses (T = 0), or a bool read as T = 1
        with pytest.raises(ValueError, match="temperature must be > 0"):
            distill.kd_loss(s, t, bad)


def test_ban_losses_are_cross_entropy_to_the_teacher(logits):
    s, t = logits
    labels = np.array([0, 1, 2, 3, 4, 0])
    p = _softmax(t)
    ce_soft = np.mean(-np.sum(p * np.log(_softmax(s)), -1))
    ce_labels = np.mean(-np.log(_softmax(s)[np.arange(6), labels]))
    np.testing.assert_allclose(distill.ban_loss(s, t), ce_soft, rtol=1e-5)
    np.testing.assert_allclose(distill.ban_label_loss(s, t, labels, 0.5), ce_soft + 0.5 * ce_labels, rtol=1e-5)
    np.testing.assert_allclose(distill.label_loss(s, labels), ce_labels, rtol=1e-5)
    # BAN = KD at T=1 up to the teacher's entropy
    entropy = np.mean(-np.sum(p * np.log(p), -1))
    np.testing.assert_allclose(distill.ban_loss(s, t), distill.kd_loss(s, t, 1.0) + entropy, rtol=1e-5)
    mask = np.array([1, 1, 1, 0, 0, 0], bool)
    np.testing.assert_allclose(distill.ban_loss(s, t, mask), distill.ban_loss(s[:3], t[:3]), rtol=1e-5)


def test_cwtm_weights_are_normalised_teacher_confidence(logits):
    s, t = logits
    labels = np.array([0, 1, 2, 3, 4, 0])
    w = np.asarray(distill.cwtm_weights(t))
    conf = _softmax(t).max(-1)
    np.testing.assert_allclose(w, conf / conf.sum(), rtol=1e-5)
    assert w.sum() == pytest.approx(1.0, rel=1e-6)
    ce = -np.log(_softmax(s)[np.arange(6), labels])
    np.testing.assert_allclose(distill.cwtm_loss(s, t, labels), np.sum(w * ce), rtol=1e-5)
    masked = np.asarray(distill.cwtm_weights(t, np.array([1, 1, 0, 0, 1, 1], bool)))
    assert masked[2] == masked[3] == 0 and masked.sum() == pytest.approx(1.0, rel=1e-6)


def test_dkpp_keeps_the_argmax_and_permutes_the_rest():
    t = jnp.asarray(np.random.default_rng(1).normal(size=(200, 7)).astype(np.float32))
    p = np.asarray(jax.nn.softmax(t))
    d = np.asarray(distill.dkpp_targets(t, jax.random.PRNGKey(3)))
    np.testing.assert_array_equal(d.argmax(-1), p.argmax(-1))
    np.testing.assert_allclose(d.max(-1), p.max(-1))
    np.testing.assert_allclose(np.sort(d, -1), np.sort(p, -1))  # same values, other places
    moved = (np.abs(d - p) > 1e-9).any(-1)
    assert moved.mean() > 0.9  # 6 non-argmax entries: the identity has probability 1/720
    d2 = np.asarray(distill.dkpp_targets(t, jax.random.PRNGKey(4)))
    assert not np.allclose(d, d2)
    # independently per position: rows whose teacher distributions are equal get different permutations
    same = np.tile(np.asarray(t)[:1], (50, 1))
    rows = np.asarray(distill.dkpp_targets(same, jax.random.PRNGKey(5)))
    assert len({tuple(np.round(r, 6)) for r in rows}) > 40  # 720 orders of the 6 others: repeats are rare
    np.testing.assert_allclose(distill.dkpp_loss(t, t, jax.random.PRNGKey(3)),
                               np.mean(-np.sum(d * np.log(p), -1)), rtol=1e-5)
    # per-position keys (distill.dkpp_permutation="example"): a row's permutation follows its key, not
    # the step's rng or its place in the batch; the argmax stays
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.PRNGKey(9), jnp.arange(50))
    a = np.asarray(distill.dkpp_targets(same, jax.random.PRNGKey(5), keys))
    b = np.asarray(distill.dkpp_targets(same[::-1], jax.random.PRNGKey(6), keys[::-1]))
    np.testing.assert_array_equal(a, b[::-1])
    np.testing.assert_array_equal(a.argmax(-1), p[:1].argmax(-1).repeat(50))
    assert len({tuple(np.round(r, 6)) for r in a}) > 40


def test_dkpp_per_example_permutation_is_fixed_across_steps(tiny_config, monkeypatch):
    """distill.dkpp_permutation="example": the task's DKPP target of an example depends on its training-set
    index, not on the step's rng, so two steps from one state on one batch give the same loss; "step"
    (the default) draws anew each step. The classification batches carry that index."""
    from jaxcomp.data.classification import build_classification_data
    from jaxcomp.distill import task as task_module

    monkeypatch.setattr(task_module, "build_model", _linear_model)
    data = build_classification_data(tiny_config.data)
    batch = data.train_batch(0)
    assert batch["index"].dtype == np.int32 and len(set(batch["index"].tolist())) == len(batch["label"])
    rng = np.random.default_rng(2)
    model = _Linear(5)
    teacher = task_module.Teacher(model, {"params": {"head": {
        "kernel": rng.normal(0, 0.5, (int(np.prod(batch["image"].shape[1:])), 5)).astype(np.float32),
        "bias": np.zeros(5, np.float32)}}})
    losses = {}
    for mode in ("step", "example"):
        task = task_module.ClassificationTask(apply_overrides(tiny_config, [
            "distill.loss=dkpp", "distill.label_weight=0.0", f"distill.dkpp_permutation={mode}"]), teachers=[teacher])
        state = jit_init(task.init)(jax.random.PRNGKey(1), batch)
        step = jax.jit(lambda s, b, r, task=task: task.train_step(s, b, r)[1]["task_loss"])
        losses[mode] = [float(step(state, batch, jax.random.PRNGKey(k))) for k in (1, 2)]
    assert losses["example"][0] == losses["example"][1]
    assert losses["step"][0] != losses["step"][1]
    with pytest.raises(ValueError, match="dkpp_permutation"):
        task_module.ClassificationTask(apply_overrides(tiny_config, ["distill.dkpp_permutation=batch"]),
                                       teachers=[teacher])


def test_dkpp_adds_the_weighted_label_loss(logits):
    s, t = logits
    labels = np.arange(6, dtype=np.int32) % s.shape[-1]
    key = jax.random.PRNGKey(4)
    np.testing.assert_allclose(distill.dkpp_loss(s, t, key, labels, 0.3),
                               distill.dkpp_loss(s, t, key) + 0.3 * distill.label_loss(s, labels), rtol=1e-6)


def test_ensembles_and_loss_dispatch(logits):
    s, t = logits
    ens = distill.ensemble_log_probs(jnp.stack([s, t]))
    np.testing.assert_allclose(jax.nn.softmax(ens), (_softmax(s) + _softmax(t)) / 2, rtol=1e-5)
    labels = np.zeros(6, np.int32)
    rng = jax.random.PRNGKey(0)
    np.testing.assert_allclose(distill.distillation_loss("ce", s, None, labels, rng), distill.label_loss(s, labels))
    with pytest.raises(ValueError, match="unknown distillation loss"):
        distill.distillation_loss("fitnet", s, t, labels, rng)
    with pytest.raises(ValueError, match="needs a teacher"):
        distill.distillation_loss("ban", s, None, labels, rng)


@pytest.mark.parametrize("name", distill.LOSSES)
def test_every_loss_ignores_masked_positions(name):
    """A masked-out position (a PTB window's burn-in or padding) changes no loss: new student and
    teacher logits and labels there leave the value equal, while the same change at a kept
    position moves it."""
    rng = np.random.default_rng(4)
    s, t = (jnp.asarray(rng.normal(size=(2, 6, 7)).astype(np.float32)) for _ in range(2))
    y = jnp.asarray(rng.integers(0, 7, (2, 6)), jnp.int32)
    mask = jnp.asarray(np.tile([True, True, True, True, False, False], (2, 1)))
    key = jax.random.PRNGKey(2)

    noise = jnp.asarray(rng.normal(0, 2, s.shape).astype(np.float32))

    def value(where):
        s2, t2 = s.at[where].add(noise[where]), t.at[where].multiply(-2.0)
        y2 = y.at[where].set((y[where] + 1) % 7)
        return float(distill.distillation_loss(name, s2, t2, y2, key, 2.0, 0.5, mask))

    base = float(distill.distillation_loss(name, s, t, y, key, 2.0, 0.5, mask))
    assert value((slice(None), slice(4, 6))) == pytest.approx(base, rel=1e-6)
    assert abs(value((slice(None), slice(0, 2))) - base) > 1e-3
    # padding labels out of range (-1, C) at masked positions: the loss and its gradient stay finite
    y_pad = y.at[:, 4].set(-1).at[:, 5].set(7)
    loss, grad = jax.value_and_grad(lambda s_: distill.distillation_loss(name, s_, t, y_pad, key, 2.0, 0.5, mask))(s)
    assert float(loss) == pytest.approx(base, rel=1e-6)
    assert np.all(np.isfinite(np.asarray(grad))) and not np.any(np.asarray(grad)[:, 4:])


def test_losses_refuse_mismatched_shapes_and_flag_bad_labels():
    """A teacher of another shape, labels of another shape or dtype, or a mask of another shape is a
    ValueError/TypeError naming the shapes (not a silent broadcast); an unmasked label outside
    0..C-1 gives NaN, never another class's cross-entropy; a traced label weight works under jit;
    CWTM with every position masked is 0, not NaN."""
    key = jax.random.PRNGKey(0)
    s = jnp.asarray(np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32))
    y = jnp.array([0, 1, 2, 3])
    for name in ("kd", "ban", "ban_label", "cwtm", "dkpp"):
        for bad in (s[:, None, :], s[:1]):
            with pytest.raises(ValueError, match="same shape"):
                distill.distillation_loss(name, s, bad, y, key)
    with pytest.raises(ValueError, match="leading shape"):
        distill.label_loss(s, y[:, None])
    with pytest.raises(TypeError, match="integers"):
        distill.label_loss(s, y.astype(jnp.float32))
    with pytest.raises(ValueError, match="mask has shape"):
        distill.label_loss(s, y, mask=jnp.ones((4, 1), bool))
    ce = np.asarray(distill.cross_entropy(s, jnp.array([-1, 5, 4, 0])))
    assert np.isnan(ce[:2]).all() and np.isfinite(ce[2:]).all()
    for name in ("kd", "ban_label", "dkpp"):
        traced = jax.jit(lambda w, n=name: distill.distillation_loss(n, s, -s, y, key, 2.0, w))(0.5)
        assert float(traced) == pytest.approx(float(distill.distillation_loss(name, s, -s, y, key, 2.0, 0.5)), rel=1e-6)
    none = jnp.zeros((4,), bool)
    assert float(distill.cwtm_loss(s, s, y, none)) == 0.0 and float(distill.cwtm_weights(s, none).sum()) == 0.0
    # a float mask weights the positions; a concrete JAX zero skips the label term (no labels needed)
    w = jnp.asarray([1.0, 0.5, 0.0, 0.0])
    ce = np.asarray(distill.cross_entropy(s, y))
    assert float(distill.label_loss(s, y, w)) == pytest.approx((ce[0] + 0.5 * ce[1]) / 1.5, rel=1e-6)
    # weights summing to less than 1 give the same weighted mean (no floor at 1 in the denominator)
    assert float(distill.label_loss(s, y, 0.1 * w)) == pytest.approx((ce[0] + 0.5 * ce[1]) / 1.5, rel=1e-6)
    assert float(distill.kd_loss(s, -s, 2.0, 0.1 * w)) == pytest.approx(float(distill.kd_loss(s, -s, 2.0, w)), rel=1e-6)
    assert float(distill.label_loss(s, y, jnp.zeros(4))) == 0.0
    assert float(distill.distillation_loss("kd", s, -s, None, key, 2.0, jnp.asarray(0.0))) == pytest.approx(
        float(distill.kd_loss(s, -s, 2.0)), rel=1e-6)
    with pytest.raises(ValueError, match="needs the labels"):
        distill.distillation_loss("kd", s, -s, None, key, 2.0, 0.5)


# ---- the losses as the task trains with them (a tiny linear model) -----------------------------


class _Linear(nn.Module):
    """A linear classifier of a few hundred parameters (``6x6x1`` images, 5 classes: 185), standing in for
    the config's ResNet so that the task and the generations driver run in seconds."""

    num_classes: int

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(self.num_classes, name="head")(x.reshape(x.shape[0], -1))


def _linear_model(config):
    return _Linear(config.model.num_classes)


@pytest.fixture(scope="module")
def tiny_npz(tmp_path_factory):
    """Synthetic MNIST-layout data: 5 classes of 6x6 images, a bright class-dependent pixel pair plus noise;
    80 training and 40 held-out images."""
    rng = np.random.default_rng(0)

    def images(n):
        y = np.arange(n) % 5
        x = rng.integers(0, 90, (n, 6, 6))
        x[np.arange(n), y, y] = 255
        x[np.arange(n), 5 - y, y] = 200
        return x.astype(np.uint8), y

    (x, y), (xt, yt) = images(80), images(40)
    path = tmp_path_factory.mktemp("ban_tiny") / "tiny.npz"
    np.savez(path, x_train=x, y_train=y, x_test=xt, y_test=yt)
    return path


@pytest.fixture(scope="module")
def tiny_config(ban_config, tiny_npz):
    return apply_overrides(ban_config, [
        "data.source=mnist", f"data.path={tiny_npz}", "data.augment=none", "data.batch_size=16",
        "model.num_classes=5", "steps=3", "checkpoint_every=3", "log_every=3", "optimizer.decay_steps=3",
        "optimizer.learning_rate=0.5", "eval_batch_size=64", "distill.temperature=2.0", "distill.label_weight=0.3"])


def test_the_task_trains_with_the_configured_losses_gradient(tiny_config, monkeypatch):
    """For ``distill.loss`` in kd, ban_label, cwtm, dkpp (T=2 and label weight 0.3, not the defaults), one SGD
    step of the task must report the loss function called directly on the same student / teacher logits,
    labels and DKPP key, and move the parameters by exactly ``-lr`` times that function's gradient.

    Guards against: cwtm / dkpp (or kd, ban_label) dispatched to the plain BAN loss; KD's temperature
    or label weight dropped; DKPP drawing its permutation from a fixed key instead of the step's key."""
    from jaxcomp.distill import task as task_module

    monkeypatch.setattr(task_module, "build_model", _linear_model)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 6, 6, 1)).astype(np.float32)
    y = rng.integers(0, 5, 16).astype(np.int32)
    model = _Linear(5)
    teacher = task_module.Teacher(model, {"params": {"head": {  # a confident teacher
        "kernel": rng.normal(0, 0.5, (36, 5)).astype(np.float32), "bias": np.zeros(5, np.float32)}}})
    losses = ("kd", "ban_label", "cwtm", "dkpp")
    tasks = {name: task_module.ClassificationTask(apply_overrides(tiny_config, [
        f"distill.loss={name}", "optimizer.momentum=0", "optimizer.l2=0"]), teachers=[teacher]) for name in losses}
    # and KD with weight decay: 0.5 * l2 * ||w||² joins the loss, l2 * w the gradient
    tasks["kd_decay"] = task_module.ClassificationTask(apply_overrides(tiny_config, [
        "distill.loss=kd", "optimizer.momentum=0", "optimizer.l2=0.1"]), teachers=[teacher])
    batch = {"image": x, "label": y}
    state = jit_init(tasks["kd"].init)(jax.random.PRNGKey(1), batch)  # the same structure for every loss
    step_rng = jax.random.PRNGKey(5)

    def steps_and_direct(state):
        t = model.apply(teacher.variables, x)
        dkpp_key = jax.random.split(step_rng)[1]  # the task's split: (dropout, DKPP)
        direct = {"kd": lambda s: distill.kd_loss(s, t, 2.0) + 0.3 * distill.label_loss(s, y),
                  "ban_label": lambda s: distill.ban_label_loss(s, t, y, 0.3),
                  "cwtm": lambda s: distill.cwtm_loss(s, t, y),
                  "dkpp": lambda s: distill.dkpp_loss(s, t, dkpp_key, y, 0.3)}
        direct["kd_decay"] = direct["kd"]
        out = {}
        for name in tasks:
            new, metrics = tasks[name].train_step(state, batch, step_rng)
            value, grads = jax.value_and_grad(lambda p, f=direct[name]: f(model.apply({"params": p}, x)))(state.params)
            out[name] = new.params, metrics, value, grads
        return out, distill.ban_loss(model.apply({"params": state.params}, x), t)

    # one compilation for the four tasks' steps and the direct losses (this module compiles at XLA's level 0)
    out, ban = jax.tree.map(np.asarray, jax.jit(steps_and_direct)(state))
    params0 = jax.tree.leaves(jax.tree.map(np.asarray, state.params))
    for name, (params, metrics, value, grads) in out.items():
        l2 = 0.1 if name == "kd_decay" else 0.0
        assert abs(value - ban) > 1e-2, name  # the plain BAN loss is told apart
        np.testing.assert_allclose(metrics["task_loss"], value, rtol=1e-5, err_msg=name)
        decay = 0.5 * l2 * sum(float(np.sum(np.square(p))) for p in params0)
        assert decay > 0.01 or not l2
        np.testing.assert_allclose(metrics["loss"], value + decay, rtol=1e-5, err_msg=name)
        for p0, p1, g in zip(params0, jax.tree.leaves(params), jax.tree.leaves(grads)):
            np.testing.assert_allclose(p1, p0 - 0.5 * (g + l2 * p0), rtol=1e-5, atol=1e-6, err_msg=name)


def test_several_teachers_teach_their_averaged_probabilities(tiny_config, monkeypatch):
    """A student of two teachers (BANE's ensemble teacher) learns from the mean of their
    probabilities, not of their logits."""
    from jaxcomp.distill import task as task_module

    monkeypatch.setattr(task_module, "build_model", _linear_model)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 6, 6, 1)).astype(np.float32)
    model = _Linear(5)
    teachers = [task_module.Teacher(model, {"params": {"head": {
        "kernel": rng.normal(0, scale, (36, 5)).astype(np.float32), "bias": np.zeros(5, np.float32)}}})
        for scale in (0.3, 1.5)]
    task = task_module.ClassificationTask(apply_overrides(tiny_config, ["distill.loss=ban"]), teachers=teachers)
    state = jit_init(task.init)(jax.random.PRNGKey(1), {"image": x, "label": np.zeros(8, np.int32)})
    probs = jax.nn.softmax(task.teacher_logits(state.model_state, jnp.asarray(x)), -1)
    each = [jax.nn.softmax(model.apply(t.variables, x), -1) for t in teachers]
    np.testing.assert_allclose(np.asarray(probs), np.asarray((each[0] + each[1]) / 2), rtol=1e-5, atol=1e-6)


# ---- models --------------------------------------------------------------------------------


@pytest.mark.parametrize("name,classes,params", [
    ("resnet20", 10, 269_722), ("resnet56", 10, 853_018), ("wrn-28-10", 100, 36_536_884),
    ("wrn-28-2", 100, 1_479_220), ("densenet-bc-100-12", 10, 769_162),
])
def test_named_variants_have_the_papers_parameter_counts(name, classes, params):
    # abstract init (jax.eval_shape): no compute even for WRN-28-10's 36.5M parameters
    assert models.count_params(models.classifier(name, classes), (1, 32, 32, 3)) == params


def test_model_output_shapes_and_injected_layers():
    x = jax.ShapeDtypeStruct((2, 16, 16, 3), jnp.float32)
    for name in ("resnet8", "wrn-10-2", "densenet-bc-22-4"):
        model = models.classifier(name, 7)
        variables = jax.eval_shape(lambda m=model: m.init(jax.random.PRNGKey(0), jnp.zeros(x.shape)))
        out = jax.eval_shape(lambda v, m=model: m.apply(v, jnp.zeros(x.shape)), variables)
        assert out.shape == (2, 7) and "batch_stats" in variables
    calls = []

    def conv(features, kernel_size, **kw):
        calls.append((features, tuple(kernel_size), kw["strides"], kw["padding"]))
        return nn.Conv(features, kernel_size, **kw)

    dense_names = []

    def dense(features, **kw):
        dense_names.append(kw["name"])
        return nn.Dense(features, **kw)

    model = models.classifier("resnet8", 10, conv=conv, dense=dense)
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1))))
    assert len(calls) == 7 and calls[0] == (16, (3, 3), (1, 1), ((1, 1), (1, 1)))  # stem + 3 blocks x 2
    assert dense_names == ["head"]
    dense_names.clear()
    lm = models.LSTMLanguageModel(vocab_size=50, embed_dim=8, hidden=12, layers=2, dense=dense)
    params = jax.eval_shape(lambda: lm.init(jax.random.PRNGKey(0), jnp.zeros((3, 5), jnp.int32)))
    assert {"lstm0_input", "recurrent", "output"} <= set(dense_names)
    out = jax.eval_shape(lambda v: lm.apply(v, jnp.zeros((3, 5), jnp.int32)), params)
    assert out.shape == (3, 5, 50)
    with pytest.raises(ValueError, match="unknown classifier"):
        models.classifier("vgg16", 10)
    with pytest.raises(ValueError, match="6n\\+2"):
        models.classifier("resnet21", 10)
    with pytest.raises(ValueError, match="6n\\+4"):
        models.classifier("wrn-27-2", 10)


def test_batch_norm_updates_in_training_only(ban_config):
    from jaxcomp.distill.task import ClassificationTask

    task = ClassificationTask(ban_config)
    rng = np.random.default_rng(0)
    batch = {"image": rng.normal(2.0, 3.0, (8, 8, 8, 1)).astype(np.float32), "label": np.arange(8) % 10}
    state = jit_init(task.init)(jax.random.PRNGKey(0), batch)
    before = jax.tree.map(np.asarray, state.model_state["batch_stats"])
    new, metrics = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1))
    after = jax.tree.map(np.asarray, new.model_state["batch_stats"])
    stem = nn.Conv(16, (3, 3), padding=((1, 1), (1, 1)), use_bias=False).apply(
        {"params": state.params["stem"]}, batch["image"])
    expected = 0.9 * before["stem_bn"]["mean"] + 0.1 * np.asarray(stem).mean((0, 1, 2))  # PyTorch momentum 0.1
    np.testing.assert_allclose(after["stem_bn"]["mean"], expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(after["stem_bn"]["mean"], before["stem_bn"]["mean"])
    # evaluation uses the running statistics: an example's logits do not depend on its batch
    predict = jax.jit(task.predict)
    full = np.asarray(predict(new, batch))
    alone = np.asarray(predict(new, {"image": batch["image"][:1]}))
    np.testing.assert_allclose(full[:1], alone, rtol=1e-4, atol=1e-5)
    eval_apply = jax.jit(lambda v, x: task.model.apply(v, x, train=False, mutable=["batch_stats"]))
    _, vars_out = eval_apply({"params": new.params, "batch_stats": new.model_state["batch_stats"]}, batch["image"])
    for a, b in zip(jax.tree.leaves(vars_out["batch_stats"]), jax.tree.leaves(new.model_state["batch_stats"])):
        np.testing.assert_array_equal(a, b)


# ---- data ------------------------------------------------------------------------------------


def test_digits_batches_are_deterministic_epochs(ban_config):
    x, y = load_digits_arrays("train")
    xt, yt = load_digits_arrays("test")
    assert x.shape == (1300, 8, 8, 1) and xt.shape == (497, 8, 8, 1) and x.dtype == np.uint8
    assert np.bincount(yt).min() >= 49  # stratified hold-out
    data = build_classification_data(apply_overrides(ban_config, ["data.batch_size=100", "data.augment=none"]).data)
    seen = np.concatenate([data._indices(s) for s in range(13)])
    np.testing.assert_array_equal(np.sort(seen), np.arange(1300))  # one epoch = every example once
    a, b = data.train_batch(3), data.train_batch(3)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["label"], data.train_batch(4)["label"])
    assert abs(float(np.mean(data.normalize(x)))) < 1e-3
    aug = ClassificationBatches((x, y), (xt, yt), 32, augment="crop_flip", pad=2, seed=1)
    assert aug.train_batch(0)["image"].shape == (32, 8, 8, 1)
    batches = list(data.eval_batches(200))
    assert [b["image"].shape[0] for b in batches] == [200, 200, 200]
    assert sum(int(b["valid"].sum()) for b in batches) == 497


def test_epoch_order_follows_the_seed_host_flips_are_mirrors_and_channels_standardise_alone():
    """The data seed changes the epoch permutation (the same seed repeats it); the host-side
    ``crop_flip`` mirrors left-right, some images and not others; RGB inputs are standardised per
    channel (each channel to std 1, whatever the others' spread)."""
    from jaxcomp.data.classification import augment

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 6, 6, 3), dtype=np.uint8)
    y = rng.integers(0, 4, 64)
    order = [ClassificationBatches((x, y), None, 16, seed=seed)._indices(0) for seed in (0, 0, 1)]
    np.testing.assert_array_equal(order[0], order[1])
    assert not np.array_equal(order[0], order[2])
    # every epoch is a new permutation (64 examples, 4 steps an epoch); host augmentation draws anew each step
    data = ClassificationBatches((x, y), None, 16, seed=0)
    epochs = [np.concatenate([data._indices(4 * e + s) for s in range(4)]) for e in range(3)]
    assert all(np.array_equal(np.sort(e), np.arange(64)) for e in epochs)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    same = np.repeat(x[:1], 64, 0)  # one image everywhere: a batch differs only by its crops and flips
    shifted = ClassificationBatches((same, y), None, 16, augment="crop_flip", pad=2, seed=0)
    crops = [shifted.train_batch(s)["image"] for s in range(3)]
    assert not np.array_equal(crops[0], crops[1]) and not np.array_equal(crops[1], crops[2])
    out = augment(x, np.random.default_rng(1), "crop_flip", 0)
    mirrored = np.array([np.array_equal(o, xi[:, ::-1]) for o, xi in zip(out, x)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(out, x)])
    assert np.all(mirrored | kept) and mirrored.any() and kept.any()
    spread = np.stack([x[..., 0] // 16, x[..., 1], x[..., 2] // 2 + 64], -1).astype(np.uint8)
    data = ClassificationBatches((spread, y), None, 16)
    np.testing.assert_allclose(data.normalize(spread).std((0, 1, 2)), 1.0, rtol=1e-4)
    np.testing.assert_allclose(data.normalize(spread).mean((0, 1, 2)), 0.0, atol=1e-4)


def test_classification_data_errors(ban_config, tmp_path):
    with pytest.raises(DataError, match="MNIST file not found"):
        build_classification_data(apply_overrides(ban_config, ["data.source=mnist",
                                                               f"data.path={tmp_path / 'none.npz'}"]).data)
    with pytest.raises(DataError, match="unknown data.source 'imagenet'"):
        build_classification_data(apply_overrides(ban_config, ["data.source=imagenet"]).data)
    with pytest.raises(DataError, match=r"pip install -e '\.\[tf\]'.*`tfds build cifar10 --file_format"):
        build_classification_data(apply_overrides(ban_config, ["data.source=tfds", "data.tfds_name=cifar10",
                                                               f"data.tfds_data_dir={tmp_path}"]).data)
    with pytest.raises(DataError, match="unknown data.augment"):
        build_classification_data(apply_overrides(ban_config, ["data.augment=mixup"]).data)
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), y_train=np.arange(40) % 10,
             x_test=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8), y_test=np.arange(10))
    data = build_classification_data(apply_overrides(ban_config, ["data.source=mnist", f"data.path={path}",
                                                                  "data.train_size=20", "data.downsample=2"]).data)
    assert data.train_batch(0)["image"].shape == (32, 14, 14, 1) and len(data.train_labels) == 20
    assert np.bincount(data.train_labels).tolist() == [2] * 10
    np.savez(path, images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="lacks"):
        build_classification_data(apply_overrides(ban_config, ["data.source=mnist", f"data.path={path}"]).data)


def test_text_reader_vocabulary_and_exact_evaluation_windows(tmp_path, repo):
    (tmp_path / "ptb.train.txt").write_text(" a b c\n a b <unk>\n a\n")
    (tmp_path / "ptb.valid.txt").write_text(" a z c\n b\n")
    words = read_words(str(tmp_path / "ptb.train.txt"))
    assert words[:4] == ["a", "b", "c", "<eos>"]
    vocab = Vocabulary(words)
    assert vocab.words[:3] == ["<eos>", "a", "b"]  # 3 each: ties alphabetically and len(vocab) == 5
    np.testing.assert_array_equal(vocab.encode(["z", "a"]), [vocab.ids["<unk>"], 1])
    config = load_config(str(repo / "configs" / "ban_lm.py") + ":tiny",
                         [f"data.path={tmp_path}", "data.train_tokens=0", "data.val_tokens=0", "data.seq_len=2",
                          "data.burn_in=1", "data.batch_size=2"])
    data, _ = build_lm_data(config.data)
    arrays = data.eval_arrays()
    assert arrays["weights"].sum() == 5  # 6 validation tokens: 5 predictions, each scored once
    val = vocab.encode(read_words(str(tmp_path / "ptb.valid.txt")))
    scored = arrays["weights"] > 0
    np.testing.assert_array_equal(arrays["targets"][scored], val[1:])
    np.testing.assert_array_equal(arrays["tokens"][1:, 1:], arrays["targets"][1:, :-1])  # row 0: padded context
    batch = data.train_batch(0)
    assert batch["tokens"].shape == (2, 3) and batch["weights"][:, 0].sum() == 0
    np.testing.assert_array_equal(batch["tokens"][:, 1:], batch["targets"][:, :-1])
    with pytest.raises(DataError, match="language-model data folder not found"):
        build_lm_data(apply_overrides(config, [f"data.path={tmp_path / 'nope'}"]).data)
    assert isinstance(data, LMBatches)
    (tmp_path / "ptb.valid.txt").write_bytes(" a c\n".encode("utf-8-sig"))  # an editor's byte-order mark
    assert read_words(str(tmp_path / "ptb.valid.txt")) == ["a", "c", "<eos>"]
    (tmp_path / "ptb.train.txt").write_text(" a b c\n")  # without <unk>: a word it lacks names both files
    (tmp_path / "ptb.valid.txt").write_text(" a z\n")
    with pytest.raises(DataError, match=r"ptb\.valid\.txt: word 'z' is not in the vocabulary .* of .*ptb\.train\.txt"):
        build_lm_data(config.data)
    (tmp_path / "ptb.train.txt").write_text(" a b c\n a b <unk>\n a\n")
    (tmp_path / "ptb.valid.txt").write_text("\n \n")  # empty: an evaluation of nothing, a KeyError later
    with pytest.raises(DataError, match=r"ptb\.valid\.txt: holds no words"):
        build_lm_data(config.data)
    (tmp_path / "ptb.valid.txt").write_bytes(b"\x1f\x8b\x08\x00\xe8\xff")  # gzip bytes, not text
    with pytest.raises(DataError, match=r"ptb\.valid\.txt: not UTF-8 text"):
        build_lm_data(config.data)


def test_all_config_variants_load(repo):
    from jaxcomp.configs import _module_from_file as module_from_file
    from jaxcomp.configs import variants

    for name in ("ban.py", "ban_lm.py"):
        path = str(repo / "configs" / name)
        for variant in variants(module_from_file(path)):
            config = load_config(f"{path}:{variant}")
            assert config.steps > 0
            if config.task == "classification":
                models.classifier(config.model.name, config.model.num_classes)


# ---- training ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_generations(tiny_config, tmp_path_factory):
    """The generations driver on the linear model and synthetic data: 2 seeds x (teacher, BAN-1, BAN-2),
    3 steps each. Returns the config, the driver's rows, per model (``seed0/ban-2``...) the config, task
    and final state ``trainer.train`` returned, and the driver's workdir."""
    import importlib

    from jaxcomp.distill import generations
    from jaxcomp.distill import task as task_module

    trainer = importlib.import_module("jaxcomp.train")
    config = apply_overrides(tiny_config, ["ban.generations=2", "ban.seeds=(0, 1)", "ban.variants=()",
                                           "ban.loss=ban"])
    root = tmp_path_factory.mktemp("ban_generations")
    trained = {}
    real_train = trainer.train

    def train(c, workdir, task, data, **kwargs):
        state, metrics = real_train(c, workdir, task, data, **kwargs)
        trained[os.path.relpath(workdir, root)] = (c, task, state)
        return state, metrics

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(task_module, "build_model", _linear_model)
        mp.setattr(trainer, "train", train)
        rows = generations.run_generations(config, str(root), progress=False, log=lambda *_: None)
    return config, rows, trained, root


def _eval_logits(tiny_config, state):
    from jaxcomp.data.classification import build_classification_data

    arrays = build_classification_data(tiny_config.data).eval_arrays()
    return np.asarray(_Linear(5).apply({"params": state.params}, arrays["image"]), np.float64), arrays["label"]


def _mean_prob_metrics(logits, labels):
    """error / nll / confidence of the average of the members' softmax, in float64 numpy."""
    probs = np.mean([_softmax(x) for x in logits], axis=0)
    return {"error": 100.0 * np.mean(probs.argmax(-1) != labels),
            "nll": -np.mean(np.log(probs[np.arange(len(labels)), labels])), "confidence": np.mean(probs.max(-1))}


def _assert_row(row, expected):
    assert row["error"] == pytest.approx(expected["error"], abs=1e-6)
    assert row["nll"] == pytest.approx(expected["nll"], rel=1e-5)
    assert row["confidence"] == pytest.approx(expected["confidence"], rel=1e-5)


def test_generation_k_is_taught_by_generation_k_minus_1(tiny_generations):
    """BAN-k's teacher (in its train step's state and in its saved config) is BAN-(k-1)'s trained
    parameters, for k = 1, 2.

    Guards against: every generation taught by the original teacher (``[chain[-1]]`` -> ``[teacher]``)."""
    _, _, trained, root = tiny_generations
    assert set(trained) == {f"seed{s}/{m}" for s in (0, 1) for m in ("teacher", "ban-1", "ban-2")}
    for seed in (0, 1):
        chain = [trained[f"seed{seed}/{m}"] for m in ("teacher", "ban-1", "ban-2")]
        assert chain[0][0].distill.loss == "ce" and chain[0][1].teachers == ()
        for k in (1, 2):
            config, task, state = chain[k]
            assert config.distill.loss == "ban" and len(task.teachers) == 1
            assert tuple(config.distill.teachers) == (str(root / f"seed{seed}" / ("teacher", "ban-1")[k - 1]),)
            taught_by = state.model_state["teachers"][0]["params"]
            for a, b in zip(jax.tree.leaves(taught_by), jax.tree.leaves(chain[k - 1][2].params)):
                np.testing.assert_array_equal(a, b)
        gen0 = jax.tree.leaves(chain[0][2].params)
        assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(
            chain[2][2].model_state["teachers"][0]["params"]), gen0))


def test_bane_averages_the_generations_probabilities(tiny_config, tiny_generations):
    """The rows ``BANE-1..2`` and ``teacher + BAN-1..2`` are the metrics of the mean of the members'
    softmax (recomputed here from their trained parameters), not of the mean logits, nor of one member.

    Guards against: BANE replaced by the teacher; BANE averaging logits instead of probabilities."""
    _, rows, trained, _ = tiny_generations
    for seed in (0, 1):
        by_name = {r["model"]: r for r in rows if r["seed"] == seed}
        assert {"teacher", "BAN-1", "BAN-2", "BANE-1..2", "teacher + BAN-1..2"} <= set(by_name)
        logits = {}
        for name in ("teacher", "BAN-1", "BAN-2"):
            logits[name], labels = _eval_logits(tiny_config, trained[f"seed{seed}/{name.lower()}"][2])
            _assert_row(by_name[name], _mean_prob_metrics([logits[name]], labels))
        bane = _mean_prob_metrics([logits["BAN-1"], logits["BAN-2"]], labels)
        _assert_row(by_name["BANE-1..2"], bane)
        _assert_row(by_name["teacher + BAN-1..2"], _mean_prob_metrics(list(logits.values()), labels))
        # the alternatives are told apart: the mean logits, and any single member
        mean_logits = _mean_prob_metrics([(logits["BAN-1"] + logits["BAN-2"]) / 2], labels)
        for other in [mean_logits] + [_mean_prob_metrics([v], labels) for v in logits.values()]:
            assert abs(other["nll"] - bane["nll"]) > 1e-3


def test_independent_ensemble_control_uses_teachers_of_different_seeds(tiny_config, tiny_generations):
    """The ``2 independent`` row is the probability average of the two seeds' teachers, which were
    trained with different seeds (init and data order) and so differ.

    Guards against: the independent ensemble using one seed for all teachers (or one teacher twice)."""
    _, rows, trained, _ = tiny_generations
    (c0, _, s0), (c1, _, s1) = trained["seed0/teacher"], trained["seed1/teacher"]
    assert (c0.seed, c0.data.seed) == (0, 0) and (c1.seed, c1.data.seed) == (1000, 1000)
    assert not np.allclose(s0.params["head"]["kernel"], s1.params["head"]["kernel"])
    (row,) = [r for r in rows if r["model"] == "2 independent"]
    assert row["seed"] == 0
    (l0, labels), (l1, _) = _eval_logits(tiny_config, s0), _eval_logits(tiny_config, s1)
    expected = _mean_prob_metrics([l0, l1], labels)
    _assert_row(row, expected)
    for alone in (l0, l1):
        assert abs(_mean_prob_metrics([alone], labels)["nll"] - expected["nll"]) > 1e-3


def test_tiny_generations_train_and_chain_teachers(ban_config, tmp_path, monkeypatch, capsys, repo):
    from jaxcomp.distill.generations import run_generations, summarize
    from jaxcomp.distill.task import build_task, load_teacher

    config = apply_overrides(ban_config, ["ban.variants=()"])
    rows = run_generations(config, str(tmp_path), progress=False, log=lambda *_: None)
    by_name = {r["model"]: r for r in rows}
    assert set(by_name) == {"teacher", "BAN-1"}
    assert by_name["teacher"]["error"] < 50 and by_name["BAN-1"]["error"] < 60  # chance: 90% error
    student_dir = tmp_path / "seed0" / "ban-1"
    saved = json.loads((student_dir / "config.json").read_text())
    assert saved["distill"]["loss"] == "ban" and saved["distill"]["teachers"] == [str(tmp_path / "seed0" / "teacher")]
    lines = [json.loads(x) for x in open(student_dir / "metrics.jsonl")]
    assert any("agreement" in x for x in lines)  # the teacher ran inside the student's step
    # the student reloads as a teacher of its own (its teacher only as shapes), and as a config-built task
    teacher = load_teacher(str(student_dir))
    x = np.zeros((3, 8, 8, 1), np.float32)
    assert teacher.model.apply(teacher.variables, x).shape == (3, 10)
    task = build_task(apply_overrides(config, ["distill.loss=dkpp", f"distill.teachers=('{student_dir}',)"]))
    assert len(task.teachers) == 1
    # a teacher whose outputs cannot be compared with the student's is refused by name, before loading
    from jaxcomp.distill.task import check_teacher, read_workdir_config

    with pytest.raises(ValueError, match=r"has model\.num_classes=10, this run model\.num_classes=20"):
        build_task(apply_overrides(config, ["distill.loss=dkpp", f"distill.teachers=('{student_dir}',)",
                                            "model.num_classes=20"]))
    language_model = ml_collections.ConfigDict({"task": "lm", "model": {"vocab_size": 10}})
    with pytest.raises(ValueError, match=r"is a 'classification' model; this run trains a 'lm' model"):
        check_teacher(language_model, read_workdir_config(str(student_dir)), str(student_dir))
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "config.json").write_text('{"task": "classifi')
    with pytest.raises(ValueError, match=r"cut/config\.json: unreadable run config"):
        read_workdir_config(str(tmp_path / "cut"))
    table = summarize(rows)
    assert table[1]["model"] == "BAN-1" and "better than teacher" in table[1]
    with pytest.raises(ValueError, match="needs a teacher"):
        build_task(apply_overrides(config, ["distill.loss=ban"]))
    with pytest.raises(ValueError, match="ban.seeds is empty"):  # an IndexError deep in the summary before
        run_generations(apply_overrides(config, ["ban.seeds=()"]), str(tmp_path / "none"), progress=False)
    with pytest.raises(ValueError, match="distill.temperature must be > 0 for a 'kd' student"):  # before the teacher
        run_generations(apply_overrides(config, ["ban.variants=('kd',)", "distill.temperature=0.0"]),
                        str(tmp_path / "none"), progress=False)
    assert not (tmp_path / "none").exists()
    with pytest.raises(ValueError, match="distill.temperature must be > 0"):  # NaN losses from the first step
        build_task(apply_overrides(config, ["distill.loss=kd", "distill.temperature=0.0",
                                            f"distill.teachers=('{tmp_path / 'seed0' / 'teacher'}',)"]))
    # a rerun skips finished models and reproduces the numbers, even past its time limit (nothing to train),
    # also with another plan (the ban section: seeds, generations, variants, baselines)
    again = run_generations(apply_overrides(config, ["ban.time_limit=1e-9", "ban.student_baseline=False"]),
                            str(tmp_path), progress=False, log=lambda *_: None)
    assert [(r["model"], r["error"]) for r in again] == [(r["model"], r["error"]) for r in rows]
    # a rerun with other settings is refused by name, before anything is restored: it reported the old
    # models under the new settings; bookkeeping and where the inputs lie may change
    lr = config.optimizer.learning_rate
    with pytest.raises(ValueError, match=rf"a run with other settings: optimizer\.learning_rate \({lr!r} -> 0\.5"):
        run_generations(apply_overrides(config, ["optimizer.learning_rate=0.5"]), str(tmp_path), progress=False,
                        log=lambda *_: None)
    from experiments import ban_collect  # tabulating the chain as another config's is refused too

    digits = f"{repo}/configs/ban.py:digits"
    assert ban_collect.main(["--config", digits, "--workdir", str(tmp_path), "--seeds", "0"]) == 2
    assert "teacher holds a run with other settings" in capsys.readouterr().err
    tiny = f"{repo}/configs/ban.py:tiny"  # overrides name the settings the chain was trained with
    assert ban_collect.main(["--config", tiny, "--workdir", str(tmp_path), "--seeds", "0",
                             "--config.optimizer.learning_rate=0.5"]) == 2
    assert "other settings: optimizer.learning_rate" in capsys.readouterr().err
    assert ban_collect.main(["--config", tiny, "--workdir", str(tmp_path), "--config.no_such_key=1"]) == 2
    assert "config has no key 'no_such_key'" in capsys.readouterr().err
    from experiments import ban_regime  # its --chains summary scored another config's models on its images

    assert ban_regime.main(["--chains", str(tmp_path), "--config", digits]) == 2
    assert "teacher holds a run with other settings" in capsys.readouterr().err
    assert ban_regime.main(["--chains", str(tmp_path), "--config", tiny, "--config.optimizer.learning_rate=0.5"]) == 2
    assert "other settings: optimizer.learning_rate" in capsys.readouterr().err
    # the chain's own config and overrides (ban.variants is the driver's plan, not a setting): summarised
    assert ban_regime.main(["--chains", str(tmp_path), "--config", tiny, "--config.ban.variants=()"]) == 0
    assert [r.split("|")[2].strip() for r in (tmp_path / "train_outputs.md").read_text().splitlines()[4:]] == \
        ["teacher", "ban-1"]
    from jaxcomp.train import check_same_settings

    moved = apply_overrides(read_workdir_config(str(student_dir)), ["log_every=7", "distill.teachers=('x',)"])
    check_same_settings(moved, str(student_dir))
    # a student stopped by the limit is checkpointed where it stopped, and neither evaluated nor reported (the
    # same command continues it); the budget each unfinished model is given is cut to 1 us, so that it stops
    # after its first step whatever the machine's load
    from jaxcomp.deadline import Deadline, OutOfTime
    from jaxcomp.files import latest_complete_checkpoint

    given = Deadline.for_training
    monkeypatch.setattr(Deadline, "for_training", lambda self, wd, steps: given(self, wd, steps) and 1e-6)
    monkeypatch.setattr(Deadline, "left", lambda self: self.ends and 1e-6)
    shutil.copytree(tmp_path / "seed0" / "teacher", tmp_path / "sliced" / "seed0" / "teacher")
    with pytest.raises(OutOfTime, match=rf"ban\.time_limit reached: .*ban-1 stopped at step 1 of {config.steps}"):
        run_generations(apply_overrides(config, ["ban.time_limit=3600"]), str(tmp_path / "sliced"), progress=False,
                        log=lambda *_: None)
    assert 0 < latest_complete_checkpoint(tmp_path / "sliced" / "seed0" / "ban-1") < config.steps
    assert "time_limit" not in json.loads((student_dir / "config.json").read_text())["ban"]  # not a model setting
    assert os.path.isdir(student_dir / "checkpoints")
    # evaluating a finished run (experiments/train.py --eval-only) reports without training
    from jaxcomp import tasks
    from jaxcomp import train as trainer

    finished = apply_overrides(config, ["steps=0", "eval_every=40"])
    _, metrics = trainer.train(finished, str(tmp_path / "seed0" / "teacher"), *tasks.build(finished), progress=False)
    assert metrics["accuracy"] == pytest.approx(1 - rows[0]["error"] / 100, abs=1e-6)


def test_language_model_trains_with_a_ban_label_student(tmp_path, repo):
    from jaxcomp import train as trainer
    from jaxcomp.distill.task import build_task, teacher_from_state

    words = ("the cat sat on the mat\n" * 200).split("\n")
    (tmp_path / "ptb.train.txt").write_text("\n".join(words))
    (tmp_path / "ptb.valid.txt").write_text("the cat sat on the mat\n" * 10)
    config = load_config(str(repo / "configs" / "ban_lm.py") + ":tiny",
                         [f"data.path={tmp_path}", "model.vocab_size=6", "steps=30", "data.train_tokens=0"])
    data, _ = build_lm_data(config.data)
    task = build_task(config)
    state, _ = trainer.train(config, str(tmp_path / "teacher"), task, data, progress=False)
    metrics = trainer.evaluate(jax.jit(task.eval_step), state, data.eval_batches(64), trainer.make_mesh())
    perplexity = np.exp(metrics["nll_sum"] / metrics["tokens"])
    assert perplexity < 2.5  # 6 words, a deterministic sentence after "the" is 50/50: well below 6
    student_config = apply_overrides(config, ["distill.loss=ban_label", "steps=2"])
    student = build_task(student_config, teachers=[teacher_from_state(task, state)])
    s_state = jit_init(student.init)(jax.random.PRNGKey(1), data.train_batch(0))
    _, m = jax.jit(student.train_step)(s_state, data.train_batch(0), jax.random.PRNGKey(2))
    assert np.isfinite(float(m["loss"])) and "agreement" in m
    # the student's loss leaves out the tokens a window does not score (weights 0): other targets
    # there change nothing, at a scored token they do
    batch = dict(data.train_batch(0))
    w = np.array(batch["weights"], np.float32)
    w[:, w.shape[1] // 2:] = 0.0
    batch["weights"] = w
    targets = np.asarray(batch["targets"])
    loss = jax.jit(lambda b: student.loss(s_state.params, s_state, b, jax.random.PRNGKey(2))[0])
    base = float(loss(batch))
    late, early = targets.copy(), targets.copy()
    late[:, -1] = (late[:, -1] + 1) % 6
    rows = np.flatnonzero(w.max(1) > 0)
    assert len(rows)
    cols = np.argmax(w[rows] > 0, axis=1)  # each such row's first scored token
    early[rows, cols] = (early[rows, cols] + 1) % 6
    assert float(loss(dict(batch, targets=late))) == pytest.approx(base, rel=1e-6)
    assert abs(float(loss(dict(batch, targets=early))) - base) > 1e-4
    # evaluation counts the scored tokens only; perplexity is exp of the mean NLL per scored token
    ev = jax.jit(task.eval_step)(state, batch)
    np.testing.assert_allclose(np.asarray(ev["tokens"]), w.sum(-1))
    hits = np.argmax(np.asarray(jax.jit(task.predict)(state, batch)), -1) == targets
    np.testing.assert_allclose(np.asarray(ev["correct"]), (hits * w).sum(-1))  # scored tokens only
    assert (hits * (w == 0)).sum() > 0  # unscored tokens the model gets right: a count without w differs
    # the student's "agreement" is with the teacher's argmax, not the labels (no dropout here, so the
    # training forward pass is the inference one); every label set to word 0, so the two differ
    shifted = dict(batch, targets=np.zeros_like(targets))
    m = jax.jit(student.loss)(s_state.params, s_state, shifted, jax.random.PRNGKey(2))[1][0]
    s_top = np.argmax(np.asarray(jax.jit(student.predict)(s_state, batch)), -1)
    t_top = np.argmax(np.asarray(jax.jit(task.predict)(state, batch)), -1)
    scored = w > 0
    assert float(m["agreement"]) == pytest.approx(np.mean((s_top == t_top)[scored]), abs=1e-6)
    assert float(m["agreement"]) != pytest.approx(np.mean((s_top == shifted["targets"])[scored]), abs=1e-3)
    from jaxcomp.distill.generations import lm_metrics
    from jaxcomp.distill.task import build_model

    assert build_model(apply_overrides(config, ["model.dropout=0.35"])).dropout == 0.35  # reaches the LSTM

    assert lm_metrics({"nll_sum": 10 * np.log(4.0), "tokens": 10.0, "correct": 3.0}) == pytest.approx(
        {"perplexity": 4.0, "accuracy": 30.0})


# ---- the paper's configs (CIFAR / PTB, for an accelerator) -----------------------------------


def _paper_module(repo, name="ban.py"):
    from jaxcomp.configs import _module_from_file as module_from_file

    return module_from_file(str(repo / "configs" / name))


def _paper_counts(repo, archs):
    from jaxcomp.distill.task import build_model

    ban = _paper_module(repo)
    counts = {}
    for variant, (dataset, arch, _) in ban.PAPER.items():
        if dataset == "cifar100" and arch in archs and arch not in counts:
            config = load_config(str(repo / "configs" / "ban.py") + f":{variant}")
            counts[arch] = models.count_params(build_model(config), (1, 32, 32, 3))
    for arch, n in counts.items():
        rel = n / ban.PAPER_PARAMS[arch] - 1
        assert abs(rel) < (0.07 if arch == "densenet_112_33" else 0.02), (arch, n, rel)
    return counts


def test_paper_architectures_have_the_papers_parameter_counts(repo):
    """The networks the paper configs build (abstract init) against the paper's counts, within 2%: here
    WRN-28-1 and DenseNet-90-60 (whose count needs the rounding up of the layers per block and the
    16-channel stem); every network in the slow test below. The PTB LSTM's count with tied embeddings
    (the untied count minus the output kernel) within 3% of 52M."""
    from jaxcomp.distill.task import build_model

    counts = _paper_counts(repo, ("wrn_28_1", "densenet_90_60"))
    assert counts == {"wrn_28_1": 375_348, "densenet_90_60": 16_120_538}
    lm = load_config(str(repo / "configs" / "ban_lm.py") + ":paper_lstm")
    assert lm.model.tie_embeddings
    tied = models.count_params(build_model(lm), (1, 4))
    assert tied == 51_022_000  # 2 x 1500, tied: embedding 15M + 2 x 18.006M LSTM + 10k output bias
    assert abs(tied / _paper_module(repo, "ban_lm.py").PAPER_PARAMS["paper_lstm"] - 1) < 0.02
    untied = models.count_params(build_model(apply_overrides(lm, ["model.tie_embeddings=False"])), (1, 4))
    assert untied - tied == lm.model.hidden * lm.model.vocab_size


def _count(model, shape=(1, 4)):
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.int32)))
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(variables["params"]))), variables["params"]


def test_paper_cnn_lstm_has_the_papers_parameter_count(repo):
    """configs/ban_lm.py:paper_cnn_lstm is Kim et al.'s large character-aware model: 19,367,965 parameters
    (abstract init, no text read), the paper's "19M" (Kim et al.'s Torch model has 5,200 more: a second
    LSTM bias per gate); with the shipped PTB, its words spell into 51 character ids and 21 positions."""
    from jaxcomp.distill.task import build_model
    from jaxcomp.models.charcnn import CharCNNLanguageModel

    config = load_config(str(repo / "configs" / "ban_lm.py") + ":paper_cnn_lstm")
    model = build_model(config, shapes_only=True)
    assert isinstance(model, CharCNNLanguageModel)
    n, params = _count(model)
    assert n == 19_367_965 and models.count_params(model, (1, 4)) == n  # the zoo's counter feeds word ids
    assert round(n / 1e6) == _paper_module(repo, "ban_lm.py").PAPER_PARAMS["paper_cnn_lstm"] / 1e6  # "19M"
    assert params["char_embed"]["embedding"].shape == (51, 15)
    assert [params[f"conv{w}"]["kernel"].shape for w in range(1, 8)] == [
        (w, 15, min(200, 50 * w)) for w in range(1, 8)]
    assert params["highway"]["highway1_gate"]["kernel"].shape == (1100, 1100)
    assert params["lstm0_input"]["kernel"].shape == (1100, 2600) and params["lstm1"]["recurrent"]["kernel"].shape == (
        650, 2600)
    assert params["output"]["kernel"].shape == (650, 10_000)
    ptb = repo.parent / "shared" / "data" / "ptb"
    if (ptb / "ptb.train.txt").is_file():
        from jaxcomp.data.text import lm_word_characters

        table, chars = lm_word_characters(apply_overrides(config, [f"data.path={ptb}"]).data, 0)
        assert table.shape == (10_000, 21) and len(chars) == 46 and table.max() == 50


def test_word_characters_spell_the_vocabulary():
    """Each row: start marker, the word's character ids (by sorted character), end marker, padding;
    ``<unk>`` / ``<eos>`` one reserved character each; longer words keep their first ``L - 2`` characters."""
    from jaxcomp.data import text

    words = ["<eos>", "ba", "a", "<unk>", "abcab"]
    table, chars = text.word_characters(words)
    assert chars == ["a", "b", "c"]
    a, b, c = 5, 6, 7
    S, E, P = text.CHAR_START, text.CHAR_END, text.CHAR_PAD
    np.testing.assert_array_equal(table, [[S, text.CHAR_EOS, E, P, P, P, P], [S, b, a, E, P, P, P],
                                          [S, a, E, P, P, P, P], [S, text.CHAR_UNK, E, P, P, P, P],
                                          [S, a, b, c, a, b, E]])
    short, _ = text.word_characters(words, max_word_len=4)
    np.testing.assert_array_equal(short[4], [S, a, b, E])
    with pytest.raises(DataError, match="max_word_len"):
        text.word_characters(words, max_word_len=2)


def _random_params(model, tokens, rng):
    """Random float32 parameters of ``model``'s structure (abstract init: nothing runs)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens))["params"]
    return jax.tree.map(lambda v: rng.normal(0, 0.5, v.shape).astype(np.float32), shapes)


def test_char_cnn_reads_characters_through_convolutions_and_highways():
    """The features the LSTM receives are, per token, the highway layers (``t = sigmoid(W_t x + b_t - 2)``,
    ``t relu(W_h x + b_h) + (1 - t) x``) of the max over positions of ``tanh`` of each width's valid
    convolution of the embedded characters of that token's word (numpy reference); two word ids spelled
    alike get the same logits; characters outside the embedding, or words narrower than a filter, are
    clear errors."""
    from jaxcomp.models.charcnn import CharCNNLanguageModel, char_table

    rng = np.random.default_rng(0)
    table = rng.integers(0, 9, (12, 6))
    table[7] = table[3]  # two words spelled alike
    model = CharCNNLanguageModel(vocab_size=12, word_chars=char_table(table), char_vocab_size=9, char_embed=4,
                                 kernel_widths=(1, 3), filters=(3, 5), highway_layers=2, hidden=5, layers=1,
                                 dropout=0.0)
    tokens = jnp.asarray([[3, 1, 7, 0], [7, 2, 3, 11]], jnp.int32)
    params = _random_params(model, tokens, rng)
    apply = jax.jit(lambda p: model.apply({"params": p}, tokens, capture_intermediates=True))
    logits, inter = jax.tree.map(np.asarray, apply(params))
    features = inter["intermediates"]["highway"]["__call__"][0]
    p = jax.tree.map(lambda v: np.asarray(v, np.float64), params)
    emb = p["char_embed"]["embedding"][table[np.asarray(tokens)]]               # [B, T, L, E]
    pooled = []
    for w in (1, 3):
        k, bias = p[f"conv{w}"]["kernel"], p[f"conv{w}"]["bias"]
        conv = sum(np.einsum("btle,ef->btlf", emb[:, :, i : emb.shape[2] - w + 1 + i], k[i]) for i in range(w)) + bias
        pooled.append(np.tanh(conv).max(2))
    x = np.concatenate(pooled, -1)
    for i in range(2):
        g, h = p["highway"][f"highway{i}_gate"], p["highway"][f"highway{i}_transform"]
        t = 1 / (1 + np.exp(-(x @ g["kernel"] + g["bias"] - 2)))
        x = t * np.maximum(x @ h["kernel"] + h["bias"], 0) + (1 - t) * x
    np.testing.assert_allclose(features, x, rtol=1e-4, atol=1e-5)
    assert logits.shape == (2, 4, 12)
    np.testing.assert_allclose(logits[0, 0], logits[1, 0], rtol=1e-6)  # words 3 and 7: the same characters
    assert not np.allclose(logits[0, 1], logits[1, 1])
    for bad, match in ((dict(char_vocab_size=5), "char_vocab_size"),
                       (dict(char_vocab_size=9, kernel_widths=(7,), filters=(2,)), "widest filter")):
        with pytest.raises(ValueError, match=match):
            jax.eval_shape(lambda m=CharCNNLanguageModel(vocab_size=12, word_chars=char_table(table), **bad):
                           m.init(jax.random.PRNGKey(0), tokens))


def test_tied_lstm_predicts_with_its_embedding_matrix():
    """With ``tie_embeddings`` the logit of word ``j`` is ``h . E[j] + b[j]``: changing ``E[j]`` moves that
    logit at every position even where ``j`` is not an input, and there is no separate output kernel."""
    lm = models.LSTMLanguageModel(vocab_size=9, embed_dim=6, hidden=6, layers=1, tie_embeddings=True)
    tokens = jnp.asarray([[0, 1, 2, 1]], jnp.int32)
    params = _random_params(lm, tokens, np.random.default_rng(0))
    assert "output" not in params and params["output_bias"].shape == (9,)
    moved = jax.tree.map(np.array, params)
    moved["embed"]["embedding"][5] += 1.0
    both = jax.jit(lambda ps: jnp.stack([lm.apply({"params": q}, tokens) for q in ps]))
    base, out = np.asarray(both((params, moved)))
    changed = np.abs(out - base) > 1e-6
    assert changed[..., 5].all() and not changed[..., :5].any() and not changed[..., 6:].any()
    with pytest.raises(ValueError, match="embed_dim == hidden"):
        jax.eval_shape(lambda: models.LSTMLanguageModel(vocab_size=9, embed_dim=4, hidden=6, tie_embeddings=True)
                       .init(jax.random.PRNGKey(0), tokens))
    # an id outside the vocabulary (-1 or 9) reads a zero embedding, never another word's (-1 once read
    # word 8's), and a masked padding position leaves the gradients finite
    out = np.asarray(lm.apply({"params": params}, jnp.asarray([[0, -1, 2, 1], [0, 9, 2, 1], [0, 8, 2, 1]])))
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
    assert np.abs(out[0, 1:] - out[2, 1:]).max() > 1e-4
    padded, weights = jnp.asarray([[0, 1, 2, -1]]), jnp.asarray([[1.0, 1.0, 1.0, 0.0]])
    grads = jax.grad(lambda p: distill.label_loss(lm.apply({"params": p}, padded), jnp.asarray([[1, 2, 1, 0]]),
                                                  weights))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))


def test_example_batch_asks_the_data_layer_for_the_input_shape(ban_config):
    """A classifier's example input has the shape the data layer gives (a batches object's ``image_shape``,
    else ``model.input_shape``, else the data the config describes: the digits are 8x8x1), not a fixed guess."""
    from jaxcomp.distill.task import example_batch, input_shape

    class Batches:
        image_shape = (5, 7, 3)

    assert example_batch(ban_config, 2, Batches())["image"].shape == (2, 5, 7, 3)
    assert input_shape(ban_config) == (8, 8, 1)
    stated = apply_overrides(ban_config, ["data.source=tfds"])
    stated.model.input_shape = (32, 32, 3)
    assert example_batch(stated, 1)["image"].shape == (1, 32, 32, 3)  # stated: tfds is not read


@pytest.mark.slow
def test_all_paper_architectures_have_the_papers_parameter_counts(repo):
    """All 8 networks of the paper's Tables 1-3 within 2% of the paper's count, except DenseNet-112-33
    (6.72M where the paper's table has 6.3M and its text 6.5M: within 7%), which the paper does not
    describe in enough detail."""
    ban = _paper_module(repo)
    counts = _paper_counts(repo, tuple(ban.PAPER_PARAMS))
    assert set(counts) == set(ban.PAPER_PARAMS)


def test_paper_configs_cover_the_papers_tables(repo):
    """Tables 1 (CIFAR-10, 8 networks), 2 (CIFAR-100 DenseNets: BAN-1..3, BAN+L, CWTM, DKPP without labels),
    3 (WRNs, and WRN teachers of DenseNet-90-60 students trained with their own recipe); 3 seeds each."""
    ban = _paper_module(repo)
    path = str(repo / "configs" / "ban.py")
    tables = {"cifar10": set(), "cifar100": set()}
    for variant, (dataset, arch, teacher) in ban.PAPER.items():
        c = load_config(f"{path}:{variant}")
        tables[dataset].add(arch)
        assert c.data.tfds_name == dataset and c.ban.seeds == (0, 1, 2) and c.data.augment == "crop_flip_device"
        assert c.model.densenet_stem == (16 if arch.startswith("densenet") else 0)
        # the WRN paper's setting for every network (Section 4), dropout for the WRNs only
        epoch = 50_000 // 128 + 1
        assert (c.data.batch_size, c.steps, c.optimizer.l2, c.optimizer.decay_rate) == (128, 200 * epoch, 5e-4, 0.2)
        assert tuple(c.optimizer.boundaries) == (60 * epoch, 120 * epoch, 160 * epoch)
        assert c.model.dropout == (0.0 if arch.startswith("densenet") else 0.3)
        if teacher:
            t = load_config(teacher)
            assert c.ban.teacher_config == teacher and t.model.name != c.model.name and t.data.tfds_name == dataset
    assert tables["cifar10"] == tables["cifar100"] == set(ban.PAPER_PARAMS)
    table2 = load_config(f"{path}:paper_densenet_80_80")
    assert table2.ban.generations == 3 and tuple(table2.ban.variants) == ("ban_label:1", "cwtm", "dkpp:0")
    crosses = {v for v, (_, arch, t) in ban.PAPER.items() if t and arch == "densenet_90_60"}
    assert len(crosses) == 4


def test_device_augmentation_crops_windows_of_the_padded_images():
    """``device_augment`` returns, per example, one of the ``(2 pad + 1)^2`` windows of the padded image,
    flipped or not; every offset and both flips occur; the batches hand it padded, normalised images."""
    from jaxcomp.data.classification import device_augment

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (200, 6, 5, 2)).astype(np.uint8)
    data = ClassificationBatches((x, np.arange(200) % 3), None, 200, augment="crop_flip_device", pad=2, seed=0)
    batch = data.train_batch(0)
    assert batch["image"].shape == (200, 10, 9, 2) and batch["image"].dtype == np.float32
    padded = batch["image"]
    np.testing.assert_allclose(padded[:, 2:-2, 2:-2], data.normalize(x[data._indices(0)]), rtol=1e-6)
    out = np.asarray(device_augment(jnp.asarray(padded), jax.random.PRNGKey(1), 2, True))
    assert out.shape == (200, 6, 5, 2)
    seen = set()
    for i in range(200):
        match = [(y, x0, f) for y in range(5) for x0 in range(5) for f in (0, 1)
                 if np.array_equal(out[i], (padded[i, y : y + 6, x0 : x0 + 5][:, ::-1] if f else
                                            padded[i, y : y + 6, x0 : x0 + 5]))]
        assert match, i
        seen.update(match)
    assert {(y, x0) for y, x0, _ in seen} == {(y, x0) for y in range(5) for x0 in range(5)}
    assert {f for *_, f in seen} == {0, 1}
    no_flip = np.asarray(device_augment(jnp.asarray(padded), jax.random.PRNGKey(1), 2, False))
    assert not np.array_equal(no_flip, out)
    with pytest.raises(DataError, match="pad >= 1"):
        ClassificationBatches((x, np.arange(200) % 3), None, 8, augment="shift_device", pad=0)


class _PooledTeacher(nn.Module):
    """Logits from the spatial mean and mean square of the image: accepts any image size, so a teacher
    fed the padded batch instead of the crop gives other logits rather than a shape error."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(5, name="head")(jnp.concatenate([x.mean((1, 2)), (x ** 2).mean((1, 2))], -1))


def test_the_task_augments_on_the_device(tiny_config, monkeypatch):
    """With ``data.augment=crop_flip_device`` the train step crops the padded batch before the student and
    its teacher see it: the step (KD from a teacher) equals a plain step on ``device_augment`` of the batch
    with the step's key.

    Guards against: the crop skipped, another key, the teacher given the padded, uncropped batch (its soft
    targets would not describe the student's input)."""
    from jaxcomp.data.classification import device_augment
    from jaxcomp.distill import task as task_module

    monkeypatch.setattr(task_module, "build_model", _linear_model)
    teacher_model = _PooledTeacher()
    teacher = task_module.Teacher(teacher_model, jit_init(teacher_model.init)(jax.random.PRNGKey(9),
                                                                               jnp.zeros((1, 6, 6, 1))))
    kd = ["distill.loss=kd", "distill.temperature=2.0"]
    device = task_module.ClassificationTask(apply_overrides(tiny_config, ["data.augment=crop_flip_device",
                                                                         "data.pad=1"] + kd), teachers=[teacher])
    plain = task_module.ClassificationTask(apply_overrides(tiny_config, kd), teachers=[teacher])
    rng = np.random.default_rng(2)
    padded = rng.normal(size=(16, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 5, 16).astype(np.int32)
    key = jax.random.PRNGKey(3)
    state = jit_init(plain.init)(jax.random.PRNGKey(0), {"image": padded[:, 1:-1, 1:-1], "label": y})

    def both(state):
        cropped = device_augment(padded, jax.random.fold_in(key, 7), 1, True)
        return (device.train_step(state, {"image": padded, "label": y}, key)[0].params,
                plain.train_step(state, {"image": cropped, "label": y}, key)[0].params)

    a, b = jax.jit(both)(state)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(u, v, rtol=1e-6)


class _DiagonalOracle(nn.Module):
    """The tiny digits' class from their bright diagonal pixel (``x[y, y]``): always the clean label."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return 100.0 * jnp.diagonal(x[..., 0], axis1=1, axis2=2)[:, :5]


def test_regime_outputs_score_the_teacher_against_the_given_and_the_clean_labels(tiny_config, monkeypatch):
    """``experiments/ban_regime.py`` reports a teacher's training-set accuracy against the labels it was
    trained on (40 % of them flipped here) and against the clean ones: a teacher that always names the
    true class scores 100 % clean and the unflipped share against the given labels.

    Guards against: the clean-label accuracy computed against the noisy labels (it would equal the
    given-label one and hide how much noise a teacher memorised), the noise not applied."""
    from experiments.ban_regime import training_set_outputs
    from jaxcomp.data.classification import build_classification_data
    from jaxcomp.distill import task as task_module

    config = apply_overrides(tiny_config, ["data.label_noise=0.4"])
    teacher = task_module.Teacher(_DiagonalOracle(), {})
    monkeypatch.setattr(task_module, "load_teacher", lambda workdir, data=None: teacher)
    out = training_set_outputs("unused", config)
    noisy = build_classification_data(config.data).train_labels
    clean = build_classification_data(tiny_config.data).train_labels
    assert 0.1 < np.mean(noisy != clean) < 0.6
    assert out["train_acc_clean_labels"] == 100.0
    assert out["train_acc_given_labels"] == pytest.approx(100.0 * np.mean(noisy == clean))
    assert 0.0 <= out["train_entropy"] < 1e-3 and out["share_max_prob_gt_0.99"] == 1.0


def test_results_title_names_the_model_split_seeds_and_spread(repo):
    """experiments/ban.py's table said neither the split nor the seeds nor what ± is, and titled every LM
    "LSTM LM", the character-CNN one too."""
    from experiments.ban import table_title

    title = table_title(load_config(f"{repo}/configs/ban.py:mnist", ["ban.seeds=(0, 1, 2)"]))
    assert title == "resnet8 on mnist (test split); seeds 0, 1, 2, mean ± sample std (ddof 1) over seeds"
    lm = load_config(f"{repo}/configs/ban_lm.py:tiny", ["model.arch=char_cnn"])
    assert table_title(lm).startswith("character-CNN LM (1 x 32) on ptb (valid split); seeds 0")


@pytest.mark.parametrize("override, message", [
    ("ban.loss=bann", r"ban\.loss='bann' is not a loss"),
    ("ban.variants=('cwtmm',)", r"ban\.variants: 'cwtmm' names no loss"),
    ("ban.variants=('dkpp:abc',)", r"ban\.variants: 'dkpp:abc': the label weight after ':' must be a number"),
    ("ban.generations=-2", r"ban\.generations must be a whole number >= 0, got -2"),
])
def test_generations_plan_is_checked_before_the_teacher_trains(tiny_config, tmp_path, override, message):
    """A misspelt loss or variant failed after the teacher (and BAN-1) had trained; generations=-2 ran as 0."""
    from jaxcomp.distill.generations import run_generations

    with pytest.raises(ValueError, match=message):
        run_generations(apply_overrides(tiny_config, [override]), str(tmp_path / "w"), progress=False)
    assert not (tmp_path / "w").exists()


def test_regime_shares_one_budget_across_its_settings(tmp_path, monkeypatch, capsys):
    """``experiments/ban_regime.py --time-limit`` is the whole command's budget: one Deadline goes to
    every setting's run_generations (the budget was per call, and the script had no way to set it);
    out of time, it stops with exit 0 and keeps the settings finished so far."""
    import jaxcomp.distill.generations as generations
    from experiments import ban_regime
    from jaxcomp.deadline import OutOfTime

    given = []

    def run_generations(config, workdir, progress=True, log=print, deadline=None):
        given.append(deadline)
        if len(given) == 2:
            raise OutOfTime("--time-limit reached")
        return [{"model": "teacher", "error": 2.0}, {"model": "BAN-1", "error": 1.5}]

    monkeypatch.setattr(generations, "run_generations", run_generations)
    monkeypatch.setattr(ban_regime, "training_set_outputs", lambda workdir, config: {"train_entropy": 0.1})
    w = tmp_path / "w"
    assert ban_regime.main(["--workdir", str(w), "--settings", "base,short", "--time-limit", "600"]) == 0
    assert len(given) == 2 and given[0] is given[1] and given[0].ends is not None
    assert "stopped: --time-limit reached" in capsys.readouterr().err
    assert "| base |" in (w / "regime.md").read_text() and "short" not in (w / "regime.md").read_text()
    assert ban_regime.main(["--workdir", str(w), "--time-limit", "-1"]) == 2
    assert "--time-limit must be a finite number of seconds > 0" in capsys.readouterr().err


_SMALL_RUN = ["steps=2", "data.batch_size=2", "eval_batch_size=4", "checkpoint_every=2", "eval_every=2", "log_every=1",
              "optimizer.decay_steps=2", "optimizer.boundaries=(1,)", "ban.seeds=(0,)"]


def _paper_variants():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "ban.py"
    spec = importlib.util.spec_from_file_location("_ban_config_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.PAPER)


@pytest.mark.slow
@pytest.mark.parametrize("variant", _paper_variants())
def test_paper_config_trains_a_few_steps_on_synthetic_cifar(repo, variant, tmp_path, monkeypatch):
    """Each paper config runs its generations driver for 2 steps per model on random 32x32x3 images of
    its dataset's shape (tfds is not touched), with its own architecture, recipe, on-device
    augmentation, teacher config (cross pairs: the teacher's own recipe) and students; the DenseNet
    configs of Table 2 with their BAN+L / CWTM / DKPP students."""
    from jaxcomp.data import classification
    from jaxcomp.distill.generations import run_generations

    def synthetic(name, split, data_dir=""):
        n = 4
        rng = np.random.default_rng(0 if split == "train" else 1)
        return (rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
                (np.arange(n) * 7 % (10 if name == "cifar10" else 100)).astype(np.int32))

    monkeypatch.setattr(classification, "load_tfds_arrays", synthetic)
    config = load_config(str(repo / "configs" / "ban.py") + f":{variant}", _SMALL_RUN)
    keep_variants = variant == "paper"  # one config trains the Table 2 variant students too
    config = apply_overrides(config, ["ban.generations=1"] + ([] if keep_variants else ["ban.variants=()"]) + (
        [f"ban.teacher_overrides={tuple(_SMALL_RUN)!r}"] if config.ban.teacher_config else []))
    rows = run_generations(config, str(tmp_path), progress=False, log=lambda *_: None)
    names = [r["model"] for r in rows]
    assert names[:2] == ["teacher", "BAN-1"] and all(np.isfinite(r["nll"]) for r in rows)
    if keep_variants:
        assert names[2:] == ["BAN_LABEL", "CWTM", "DKPP"]
        saved = json.loads((tmp_path / "seed0" / "dkpp" / "config.json").read_text())
        assert saved["distill"]["label_weight"] == 0.0 and saved["model"]["densenet_stem"] == 16
    teacher = json.loads((tmp_path / "seed0" / "teacher" / "config.json").read_text())
    student = json.loads((tmp_path / "seed0" / "ban-1" / "config.json").read_text())
    assert student["model"]["name"] == config.model.name and teacher["steps"] == 2
    if config.ban.teacher_config:
        assert teacher["model"]["name"] != student["model"]["name"]
        assert teacher["data"]["batch_size"] == 2


@pytest.mark.slow
def test_paper_lstm_config_trains_a_few_steps(repo, tmp_path):
    """configs/ban_lm.py:paper_lstm (2 x 1500, 66M parameters untied) runs a teacher and a BAN+L student for
    2 steps on a synthetic PTB-layout folder."""
    from jaxcomp.distill.generations import run_generations

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(9_999)]  # + <eos>: the paper's 10k-word vocabulary
    train = rng.permutation(words)
    (tmp_path / "ptb.train.txt").write_text("\n".join(" ".join(train[i : i + 10]) for i in range(0, 9_999, 10)))
    for split in ("valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text("\n".join(" ".join(rng.choice(words, 10)) for _ in range(8)))
    config = load_config(str(repo / "configs" / "ban_lm.py") + ":paper_lstm",
                         [f"data.path={tmp_path}", "data.batch_size=2", "data.seq_len=35", "eval_batch_size=4"]
                         + [o for o in _SMALL_RUN if not o.startswith("data.batch_size")])
    rows = run_generations(config, str(tmp_path / "runs"), progress=False, log=lambda *_: None)
    assert [r["model"] for r in rows] == ["teacher", "BAN-1"] and all(np.isfinite(r["perplexity"]) for r in rows)


@pytest.mark.slow
def test_paper_cnn_lstm_config_trains_a_few_steps(repo, tmp_path):
    """configs/ban_lm.py:paper_cnn_lstm (Kim et al.'s large CNN-LSTM, 19.4M parameters) runs a teacher and a
    BAN+L student for 2 steps on the shipped PTB (its words spelled into characters), and each reloads."""
    from jaxcomp.distill.generations import run_generations
    from jaxcomp.distill.task import load_teacher

    ptb = repo.parent / "shared" / "data" / "ptb"
    if not (ptb / "ptb.train.txt").is_file():
        pytest.skip(f"PTB not found at {ptb}")
    config = load_config(str(repo / "configs" / "ban_lm.py") + ":paper_cnn_lstm",
                         [f"data.path={ptb}", "data.batch_size=2", "data.val_tokens=200", "eval_batch_size=4"]
                         + [o for o in _SMALL_RUN if not o.startswith("data.batch_size")])
    rows = run_generations(config, str(tmp_path / "runs"), progress=False, log=lambda *_: None)
    assert [r["model"] for r in rows] == ["teacher", "BAN-1"] and all(np.isfinite(r["perplexity"]) for r in rows)
    assert all(r["perplexity"] < 2 * 10_000 for r in rows)  # 2 steps: near the uniform 10k, not diverged
    student = load_teacher(str(tmp_path / "runs" / "seed0" / "ban-1"))
    assert student.model.apply(student.variables, jnp.zeros((1, 3), jnp.int32)).shape == (1, 3, 10_000)


def test_driver_wires_variant_label_weights_and_teacher_configs(repo, tmp_path, monkeypatch):
    """Without training (``train_member`` recorded): a variant ``"dkpp:0"`` trains DKPP with label weight 0
    and ``"ban_label:1"`` with 1; ``ban.teacher_config`` trains the teacher from that config, with the
    students' data location and ``ban.teacher_overrides`` applied, and no label-only student baseline."""
    from jaxcomp.deadline import Deadline
    from jaxcomp.distill import generations

    calls = []

    def fake_train_member(config, workdir, name, teachers, progress=True, deadline=None):
        calls.append((name, config, [t.workdir for t in teachers]))
        return generations.Member(name, workdir, {"error": 1.0, "nll": 1.0, "confidence": 0.5}, None, None)

    monkeypatch.setattr(generations, "train_member", fake_train_member)
    path = str(repo / "configs" / "ban.py")
    config = load_config(f"{path}:paper_cross_wrn_28_2", [
        "data.tfds_data_dir=/somewhere/tfds", "ban.seeds=(4,)", "ban.variants=('dkpp:0', 'ban_label:1', 'cwtm')",
        "ban.teacher_overrides=('steps=7',)", "distill.label_weight=0.5"])
    config = apply_overrides(config, [f"ban.teacher_config={path}:paper_wrn_28_2"])
    generations._run_seed(config, 4, str(tmp_path), False, lambda *_: None, [], Deadline(None))
    by_name = {name: (c, t) for name, c, t in calls}
    assert list(by_name) == ["teacher", "BAN-1", "DKPP", "BAN_LABEL", "CWTM"]
    teacher, _ = by_name["teacher"]
    assert teacher.model.name == "wrn-28-2" and teacher.model.dropout == 0.3 and teacher.steps == 7
    assert teacher.data.tfds_data_dir == "/somewhere/tfds" and teacher.seed == 4000
    student, taught_by = by_name["BAN-1"]
    assert student.model.name == "densenet-bc-90-60" and student.model.dropout == 0.0  # each its own recipe
    assert taught_by == [str(tmp_path / "teacher")]
    assert by_name["DKPP"][0].distill.label_weight == 0.0 and by_name["DKPP"][0].distill.loss == "dkpp"
    assert by_name["BAN_LABEL"][0].distill.label_weight == 1.0
    assert by_name["CWTM"][0].distill.label_weight == 0.5
    for variant in ("DKPP", "BAN_LABEL", "CWTM"):  # the variants are taught by the teacher, not by BAN-k
        assert by_name[variant][1] == [str(tmp_path / "teacher")], variant


def test_collected_table_ensembles_the_students_not_the_teacher(ban_config, tmp_path):
    """``experiments/ban_collect.py`` over per-seed logits: BANE-1..k averages BAN-1 .. BAN-k (the
    teacher enters only the row that names it), the same metrics ``run_generations`` reports."""
    import csv

    from experiments.ban_collect import collect
    from jaxcomp import tasks
    from jaxcomp.distill.generations import Member, ensemble_metrics

    labels = tasks.build_data(ban_config, "classification").eval_arrays()["label"]
    rng = np.random.default_rng(0)
    def chain():
        return {m: (rng.normal(0, 2, (len(labels), 10)) + 3 * np.eye(10)[labels] * (rng.random((len(labels), 1)) < 0.6))
                .astype(np.float32) for m in ("teacher", "ban-1", "ban-2")}

    logits, other = chain(), chain()
    for seed, chain_logits in ((0, logits), (1, other)):
        (tmp_path / f"seed{seed}").mkdir()
        np.savez(tmp_path / f"seed{seed}" / "logits.npz", __config__=ban_config.to_json_best_effort(), **chain_logits)
    # logits saved under other settings (the tiny run's under the paper config's title) are not tabulated
    with pytest.raises(ValueError, match=r"seed0/logits\.npz was saved under other settings than --config gives: "
                                         r"optimizer\.learning_rate"):
        collect(apply_overrides(ban_config, ["optimizer.learning_rate=0.5"]), str(tmp_path))
    collect(ban_config.copy_and_resolve_references(), str(tmp_path))
    with open(tmp_path / "per_seed.csv") as f:
        every = list(csv.DictReader(f))
    rows = {r["model"]: r for r in every if r["seed"] == "0"}
    # the independent control ensembles the two seeds' teachers (generation 0), not their last students
    (pair,) = [r for r in every if r["model"] == "2 independent"]
    teachers = ensemble_metrics([Member("t", "", {}, logits["teacher"], None),
                                 Member("t", "", {}, other["teacher"], None)], labels)
    assert float(pair["nll"]) == pytest.approx(teachers["nll"], rel=1e-5)
    # three seeds: every cyclic window of 2 consecutive seeds is a row (0-1, 1-2, 2-0)
    from jaxcomp.distill.generations import independent_ensembles

    three = [(s, Member("t", "", {}, chain()["teacher"], None)) for s in (5, 6, 7)]
    pairs = [r for r in independent_ensembles(ban_config, three) if r["model"] == "2 independent"]
    assert [r["seed"] for r in pairs] == [5, 6, 7]
    assert pairs[2]["nll"] == pytest.approx(ensemble_metrics([three[2][1], three[0][1]], labels)["nll"], rel=1e-6)
    members = {m: Member(m, "", {}, logits[m], None) for m in logits}
    bane = ensemble_metrics([members["ban-1"], members["ban-2"]], labels)
    assert float(rows["BANE-1..2"]["error"]) == pytest.approx(bane["error"], abs=1e-6)
    assert float(rows["BANE-1..2"]["nll"]) == pytest.approx(bane["nll"], rel=1e-5)
    everyone = ensemble_metrics(list(members.values()), labels)
    assert float(rows["teacher + BAN-1..2"]["nll"]) == pytest.approx(everyone["nll"], rel=1e-5)
    assert bane["nll"] != pytest.approx(everyone["nll"], rel=1e-3)
    # one generation: the rows experiments/ban.py writes (no "teacher + BAN-1..1" ensemble of its own)
    one = tmp_path / "one"
    for seed in (0, 1):
        (one / f"seed{seed}").mkdir(parents=True)
        np.savez(one / f"seed{seed}" / "logits.npz", __config__=ban_config.to_json_best_effort(),
                 **{m: v for m, v in chain().items() if m != "ban-2"})
    collect(ban_config.copy_and_resolve_references(), str(one))
    with open(one / "per_seed.csv") as f:
        assert {r["model"] for r in csv.DictReader(f)} == {"teacher", "BAN-1", "2 independent"}


def test_paired_interval_is_the_student_t_interval():
    from jaxcomp.distill.generations import paired_interval, summarize

    lo, hi = paired_interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    half = 2.7764451051977987 * np.std([1, 2, 3, 4, 5], ddof=1) / np.sqrt(5)  # t_{0.975, 4}
    assert (lo, hi) == pytest.approx((3 - half, 3 + half), rel=1e-9)
    rows = [{"seed": s, "model": m, "error": e} for s, (t, b) in enumerate([(3.0, 2.0), (4.0, 3.5), (5.0, 4.0)])
            for m, e in (("teacher", t), ("BAN-1", b))]
    (row,) = [r for r in summarize(rows) if r["model"] == "BAN-1"]
    lo, hi = paired_interval(np.array([-1.0, -0.5, -1.0]))
    assert row["95% CI"] == f"[{lo:+.2f}, {hi:+.2f}]" and row["better than teacher"] == "3/3"
    # mean ± sample std (ddof 1) of the errors, and of the paired differences student - teacher
    (teacher,) = [r for r in summarize(rows) if r["model"] == "teacher"]
    assert teacher["error"] == "4.00 ± 1.00"
    assert row["error - teacher"] == f"-0.83 ± {np.std([-1.0, -0.5, -1.0], ddof=1):.2f}"
    # a tie is not "better": lower on one seed, equal on one, higher on one -> 1/3
    tied = [{"seed": s, "model": m, "error": e} for s, (t, b) in enumerate([(3.0, 2.0), (4.0, 4.0), (5.0, 6.0)])
            for m, e in (("teacher", t), ("BAN-1", b))]
    assert [r for r in summarize(tied) if r["model"] == "BAN-1"][0]["better than teacher"] == "1/3"
    with pytest.raises(ValueError, match="at least 2"):
        paired_interval(np.array([1.0]))


def test_mnist_validation_holdout_and_label_noise(ban_config, tmp_path):
    """``data.holdout_last`` keeps the training split's last N images out of training and, with
    ``eval_on=holdout``, evaluates on them instead of the test split; ``data.label_noise`` moves exactly
    ``round(f N)`` training labels, each to another class, the same ones for every run seed."""
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    x = rng.integers(0, 255, (60, 4, 4), dtype=np.uint8)
    np.savez(path, x_train=x, y_train=np.arange(60) % 10, x_test=x[:7], y_test=np.arange(7))
    base = ["data.source=mnist", f"data.path={path}", "data.augment=none", "data.holdout_last=20"]
    test_eval = build_classification_data(apply_overrides(ban_config, base).data)
    held_eval = build_classification_data(apply_overrides(ban_config, base + ["data.eval_on=holdout"]).data)
    np.testing.assert_array_equal(test_eval.train_images[..., 0], x[:40])
    np.testing.assert_array_equal(held_eval.train_images[..., 0], x[:40])
    assert len(test_eval.eval_arrays()["label"]) == 7
    np.testing.assert_array_equal(held_eval.val[0][..., 0], x[40:])
    clean = held_eval.train_labels
    noisy = [build_classification_data(apply_overrides(ban_config, base + [
        "data.label_noise=0.25", f"data.seed={s}"]).data).train_labels for s in (0, 3)]
    np.testing.assert_array_equal(noisy[0], noisy[1])
    assert int(np.sum(noisy[0] != clean)) == 10 and noisy[0].max() < 10
    with pytest.raises(DataError, match="holdout_last"):
        build_classification_data(apply_overrides(ban_config, base[:-1] + ["data.holdout_last=60"]).data)
    with pytest.raises(DataError, match="label_noise"):
        build_classification_data(apply_overrides(ban_config, base + ["data.label_noise=1.5"]).data)

"""The Fréchet distance (closed forms, FID's sqrtm route) and the shipped MNIST feature classifier
(accuracy, the training normalisation, the padding, and that the distance orders blurred and noisy
digits)."""

import numpy as np
import pytest
import scipy.linalg
from conftest import SHARED_DATA

from jaxcomp.metrics import frechet

MNIST = SHARED_DATA / "mnist" / "mnist.npz"


def _closed_form(m1, v1, m2, v2):
    """Independent Gaussians per dimension: sum of (m1 - m2)^2 + s1 + s2 - 2 sqrt(s1 s2)."""
    return float(np.sum((m1 - m2) ** 2 + v1 + v2 - 2 * np.sqrt(v1 * v2)))


def _sqrtm_route(m1, c1, m2, c2):
    """FID's reference computation: scipy's general sqrtm of the product, imaginary round-off dropped."""
    return float(np.sum((m1 - m2) ** 2) + np.trace(c1 + c2 - 2 * scipy.linalg.sqrtm(c1 @ c2).real))


def test_one_dimensional_and_diagonal_gaussians_are_the_closed_form():
    assert frechet.frechet_distance([0.3], [[2.0]], [-1.2], [[0.5]]) == pytest.approx(1.5 ** 2 + 2.5 - 2.0, rel=1e-12)
    m1, m2 = np.array([0.0, 1.0, -2.0, 3.0]), np.array([0.5, 1.0, 1.0, 3.0])
    v1, v2 = np.array([1.0, 4.0, 0.25, 0.0]), np.array([2.0, 1.0, 0.25, 3.0])  # a zero variance: singular
    got = frechet.frechet_distance(m1, np.diag(v1), m2, np.diag(v2))
    assert got == pytest.approx(_closed_form(m1, v1, m2, v2), rel=1e-10)


def test_full_covariances_match_the_sqrtm_route_and_the_commuting_closed_form():
    c1 = np.array([[2.0, 0.5, 0.0], [0.5, 1.0, 0.3], [0.0, 0.3, 0.5]])
    c2 = np.array([[1.0, -0.4, 0.2], [-0.4, 2.0, 0.0], [0.2, 0.0, 0.8]])
    m1, m2 = np.array([0.1, -0.2, 0.3]), np.array([1.0, 0.0, -0.5])
    assert frechet.frechet_distance(m1, c1, m2, c2) == pytest.approx(_sqrtm_route(m1, c1, m2, c2), rel=1e-10)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2, m1, m2 = a @ a.T + 0.1 * np.eye(6), b @ b.T, rng.normal(size=6), rng.normal(size=6)
    assert frechet.frechet_distance(m1, c1, m2, c2) == pytest.approx(_sqrtm_route(m1, c1, m2, c2), rel=1e-8)
    # commuting covariances (one rotation q): the distance is |m1 - m2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    q = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    ea, eb = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    got = frechet.frechet_distance(m1, q @ np.diag(ea) @ q.T, m2, q @ np.diag(eb) @ q.T)
    assert got == pytest.approx(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(ea) - np.sqrt(eb)) ** 2), rel=1e-10)
    # singular: a point mass against a Gaussian, and a rank-2 covariance against itself
    assert frechet.frechet_distance(m1, np.zeros((6, 6)), m2, c2) == pytest.approx(
        np.sum((m1 - m2) ** 2) + np.trace(c2), rel=1e-10)
    low = rng.normal(size=(6, 2))
    assert frechet.frechet_distance(m1, low @ low.T, m1, low @ low.T) == pytest.approx(0.0, abs=1e-6)
    # what is not a covariance gives no distance (it gave 0.0 for -I against I)
    for bad in (-np.eye(6), c1 + np.triu(np.ones((6, 6)), 1)):
        with pytest.raises(ValueError, match="cov1 is not a covariance"):
            frechet.frechet_distance(m1, bad, m2, c2)


def test_zero_for_identical_statistics_and_symmetric():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(300, 8)), rng.normal(size=(200, 8)) @ rng.normal(size=(8, 8)) + 1.0
    mx, cx = frechet.gaussian_stats(x)
    my, cy = frechet.gaussian_stats(y)
    assert frechet.frechet_distance(mx, cx, mx, cx) == pytest.approx(0.0, abs=1e-9)
    assert frechet.frechet_distance(mx, cx, my, cy) == pytest.approx(frechet.frechet_distance(my, cy, mx, cx),
                                                                     rel=1e-10)
    assert frechet.frechet_distance_features(x, y) == pytest.approx(frechet.frechet_distance(mx, cx, my, cy))


def test_gaussian_stats_are_the_mean_and_unbiased_covariance():
    x = np.random.default_rng(2).normal(size=(7, 3)).astype(np.float32)
    mu, cov = frechet.gaussian_stats(x)
    d = x.astype(np.float64) - x.astype(np.float64).mean(0)
    assert mu.dtype == cov.dtype == np.float64 and mu.shape == (3,) and cov.shape == (3, 3)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, d.T @ d / 6, rtol=1e-12)


def test_refuses_mismatched_shapes_and_non_finite_input():
    mu, cov = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="do not agree"):
        frechet.frechet_distance(mu, cov, np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="do not agree"):
        frechet.frechet_distance(mu, cov, mu, np.eye(2))
    with pytest.raises(ValueError, match="do not agree"):
        frechet.frechet_distance(np.zeros((1, 3)), cov, mu, cov)
    with pytest.raises(ValueError, match="non-finite"):
        frechet.frechet_distance(mu, np.diag([1.0, np.nan, 1.0]), mu, cov)
    with pytest.raises(ValueError, match="N >= 2"):
        frechet.gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="finite"):
        frechet.gaussian_stats(np.array([[0.0, np.inf], [1.0, 2.0]]))
    features = np.random.default_rng(3).normal(size=(100, 8))
    with pytest.warns(UserWarning, match="transposed"):  # [D, N]: 286 where the [N, D] set gives 8.9
        frechet.gaussian_stats(features.T)


def test_classification_data_pads_mnist_as_dplc_does(tmp_path):
    """data.pad_to=32 centres MNIST's 28x28 in zeros exactly as np.pad by 2 on each side; train_first
    keeps x_train[:N] (the rest is DPLC's validation split)."""
    import ml_collections

    from jaxcomp.data.classification import build_classification_data

    rng = np.random.default_rng(3)
    x_train, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (12, 5))
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(12) % 10, x_test=x_test, y_test=np.arange(5))
    data = build_classification_data(ml_collections.ConfigDict(dict(
        source="mnist", path=str(path), train_first=8, pad_to=32, batch_size=4)), 0, 1)
    pad = ((0, 0), (2, 2), (2, 2), (0, 0))
    np.testing.assert_array_equal(data.train_images, np.pad(x_train[:8, ..., None], pad))
    np.testing.assert_array_equal(data.val[0], np.pad(x_test[..., None], pad))
    assert data.mean[0] == pytest.approx(np.pad(x_train[:8], pad[:3]).mean() / 255, rel=1e-6)


# ---- the shipped classifier ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist():
    if not MNIST.exists():
        pytest.skip("../shared/data/mnist is absent")
    with np.load(MNIST) as f:
        x_train, x_test, y_test = f["x_train"], f["x_test"], f["y_test"].astype(np.int32)
    pad = ((0, 0), (2, 2), (2, 2), (0, 0))
    return dict(train=x_train[:50_000], val=np.pad(x_train[50_000:, ..., None], pad),
                test=np.pad(x_test[..., None], pad), test_labels=y_test)


@pytest.fixture(scope="module")
def features():
    return frechet.MNISTFeatures()


def test_shipped_classifier_is_accurate_and_takes_28_or_32_pixels(mnist, features):
    test, labels = mnist["test"], mnist["test_labels"]
    assert np.mean(features.predict(test[:2000]) == labels[:2000]) >= 0.98
    f32 = features.features(test[:300])
    assert f32.dtype == np.float32 and f32.shape == (300, 64) and features.dim == 64
    np.testing.assert_array_equal(features.features(test[:300, 2:-2, 2:-2]), f32)  # 28x28: padded 2 a side
    assert features.predict(test[:3]).dtype == np.int32
    for bad in (test[:4].astype(np.float32), np.zeros((2, 30, 30, 1), np.uint8), test[:4, ..., 0],
                np.zeros((2, 32, 32, 3), np.uint8)):
        with pytest.raises(ValueError, match="MNISTFeatures takes"):
            features.features(bad)


def test_extractor_normalises_as_training_did(mnist, features):
    """The recorded normalisation is the statistics of the training images (x_train[:50000] padded to
    32x32, / 255), and the extractor's logits are the network's on images normalised with them."""
    from jaxcomp.distill.task import build_model
    from jaxcomp.modelfile import load_model

    counts = np.bincount(mnist["train"].ravel(), minlength=256).astype(np.float64)
    counts[0] += len(mnist["train"]) * (32 * 32 - 28 * 28)  # the padding's zeros count
    levels = np.arange(256) / 255.0
    mean = counts @ levels / counts.sum()
    std = np.sqrt(counts @ np.square(levels - mean) / counts.sum())
    norm = features.notes["normalization"]
    assert norm["train_images"] == 50_000 and norm["image_shape"] == [32, 32, 1]
    assert norm["mean"][0] == pytest.approx(mean, rel=1e-5) and norm["std"][0] == pytest.approx(std, rel=1e-5)
    config, variables, _ = load_model(frechet.MNIST_CLASSIFIER, task="classification")
    images = mnist["test"][:100]
    logits = np.asarray(build_model(config).apply(variables, (images / 255.0 - mean) / std, train=False))
    head = variables["params"]["head"]
    np.testing.assert_allclose(features.features(images) @ head["kernel"] + head["bias"], logits, rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_array_equal(features.predict(images), np.argmax(logits, -1))


def test_distance_is_small_between_halves_and_grows_with_blur_and_noise(mnist, features):
    from scipy.ndimage import gaussian_filter

    test = mnist["test"]
    a, b = test[:1000], test[1000:2000]
    fa = features.features(a)

    def fd(images):
        return frechet.frechet_distance_features(fa, features.features(images))

    def blur(sigma):
        return np.round(gaussian_filter(b.astype(np.float32), (0, sigma, sigma, 0))).astype(np.uint8)

    noisy = np.clip(np.round(b + np.random.default_rng(0).normal(0, 25, b.shape)), 0, 255).astype(np.uint8)
    same, val, blur1, blur2, noise = fd(b), fd(mnist["val"][:1000]), fd(blur(1.0)), fd(blur(2.0)), fd(noisy)
    # measured (1000 vs 1000): same 0.05, val 0.10, blur 1: 7, blur 2: 72, noise 25: 23
    assert 0 < same < 1 and 0 < val < 1
    assert 20 * max(same, val) < blur1 < blur2 / 3
    assert 20 * max(same, val) < noise


def test_export_model_ships_a_classifier_with_batch_stats_and_normalization(repo, tmp_path):
    """experiments/export_model.py on a classification workdir: the file holds the Flax variables
    (params and batch-norm running statistics) and its .json the normalisation the training batches
    had, and the exported model evaluated on images normalised with it gives the task's logits."""
    import importlib
    import json
    import os
    import sys

    import jax
    import orbax.checkpoint as ocp

    from jaxcomp import tasks
    from jaxcomp import train as trainer
    from jaxcomp.configs import load_config
    from jaxcomp.distill.task import build_model
    from jaxcomp.modelfile import load_model

    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    export_model = importlib.import_module("experiments.export_model")
    config = load_config(str(repo / "configs" / "ban.py") + ":tiny")
    task, data = tasks.build(config)
    # a checkpoint as the trainer writes it, with running statistics that are not the initial ones
    state = trainer.jit_init(task.init)(jax.random.PRNGKey(0), data.train_batch(0))
    stats = jax.tree.map(lambda a: a * 1.5 + 0.25, state.model_state["batch_stats"])
    state = state.replace(model_state=dict(state.model_state, batch_stats=stats))
    workdir, out = tmp_path / "run", str(tmp_path / "model.msgpack")
    os.makedirs(workdir)
    (workdir / "config.json").write_text(config.to_json_best_effort())
    with trainer.checkpoint_manager(str(workdir)) as manager:
        manager.save(3, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
    assert export_model.main(["--workdir", str(workdir), "--out", out]) == 0
    with pytest.raises(SystemExit):  # parameters over the notes: refused before anything is loaded
        export_model.main(["--workdir", str(workdir), "--out", str(tmp_path / "model.json")])
    shipped = open(out, "rb").read()
    with pytest.raises(SystemExit):  # an existing model is replaced only with --force
        export_model.main(["--workdir", str(workdir), "--out", out])
    assert open(out, "rb").read() == shipped
    assert export_model.main(["--workdir", str(workdir), "--out", out, "--force", "--note", "again"]) == 0
    assert json.load(open(tmp_path / "model.json"))["training"]["note"] == "again"
    _, variables, notes = load_model(out, task="classification")
    assert set(variables) == {"params", "batch_stats"}
    norm = json.load(open(tmp_path / "model.json"))["training"]["normalization"]
    assert norm == notes["normalization"] and norm["image_shape"] == list(data.image_shape)
    np.testing.assert_array_equal(np.float32(norm["mean"]), data.mean)
    np.testing.assert_array_equal(np.float32(norm["std"]), data.std)
    images = data.val[0][:16]
    x = (images / 255.0 - np.float32(norm["mean"])) / np.float32(norm["std"])
    exported = build_model(config).apply(variables, x, train=False)
    np.testing.assert_allclose(exported, task.predict(state, {"image": data.normalize(images)}), rtol=1e-5, atol=1e-5)

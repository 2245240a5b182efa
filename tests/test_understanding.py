"""Understanding on compressed representations (ICLR'18): the task, its inputs, joint training."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcomp.configs import apply_overrides, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "understanding.py")


@pytest.fixture(scope="module")
def tiny_codec(tmp_path_factory) -> str:
    """A tiny CPM model (C=4) as an exported .msgpack; its bottleneck scaled up so that the latents spread
    over several centres (a fresh one maps every value to one centre: a constant latent)."""
    from jaxcomp.codecs.cpm import CPM, spec_from_config
    from jaxcomp.modelfile import export_params

    config = load_config(os.path.join(ROOT, "configs", "cpm.py") + ":tiny")
    model = CPM(spec_from_config(config.model))
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))["params"]
    params = jax.tree.map(lambda a: a, params)
    params["encoder"]["to_bottleneck"]["kernel"] = params["encoder"]["to_bottleneck"]["kernel"] * 40.0
    path = str(tmp_path_factory.mktemp("codec") / "cpm_tiny.msgpack")
    export_params(params, config, path, {"note": "test"})
    return path


def _config(inp: str, kind: str = "classification", codec: str = "", precomputed: bool = True,
            train_codec: bool = False) -> ml_collections.ConfigDict:
    c = load_config(CONFIG + ":tiny")
    c.unlock()
    c.model.width = 0.125
    c.experiment.update(latent_net="cresnet-1-1-1", rgb_net="resnet-1-1-1-1")
    _config_module().set_input(c, inp, kind)
    c.model.num_classes = c.data.num_classes = 10 if kind == "classification" else 11
    c.understanding.update(codec=codec, precomputed=precomputed, train_codec=train_codec)
    c.data.update(codec=codec, precomputed=precomputed)
    return c


def _config_module():
    from jaxcomp.configs import config_module

    return config_module(CONFIG)


def _batch(kind: str, size: int = 32, n: int = 4, latent_channels: int | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    if latent_channels:
        image = rng.normal(size=(n, size // 8, size // 8, latent_channels)).astype(np.float32)
    else:
        image = rng.uniform(0, 255, size=(n, size, size, 3)).astype(np.float32)
    label = rng.integers(0, 10, n) if kind == "classification" else rng.integers(0, 11, (n, size, size))
    return {"image": jnp.asarray(image), "label": jnp.asarray(label, jnp.int32)}


def _build(config):
    from jaxcomp.vision import UnderstandingTask

    return UnderstandingTask(config)


def test_shipped_operating_points_fit_the_cresnet():
    """Every shipped CPM operating point's latent shape (C = 32, 32, 64) goes through the cResNet."""
    from jaxcomp.codecs.cpm import spec_from_config
    from jaxcomp.modelfile import load_model
    from jaxcomp.models.cresnet import understanding_network

    net = understanding_network("cresnet-1-1-1", 10, width=0.125)
    seg = understanding_network("cresnet-1-1-1", 11, task="segmentation", width=0.125)
    for name in ("cpm_low", "cpm_med", "cpm_high"):
        config, _, _ = load_model(os.path.join(ROOT, "jaxcomp", "codecs", "pretrained", f"{name}.msgpack"), "cpm")
        c = spec_from_config(config.model).channels
        y = jnp.zeros((2, 8, 8, c))
        variables = jax.eval_shape(lambda y=y: net.init(jax.random.PRNGKey(0), y))
        assert jax.eval_shape(lambda v, y: net.apply(v, y), variables, y).shape == (2, 10)
        variables = jax.eval_shape(lambda y=y: seg.init(jax.random.PRNGKey(0), y))
        assert jax.eval_shape(lambda v, y: seg.apply(v, y), variables, y).shape == (2, 64, 64, 11)


def test_latent_network_never_sees_decoded_pixels(tiny_codec):
    """With the codec in the graph, the latent classifier's logits do not depend on the decoder: the same
    with a decoder of NaNs; the decoded-input classifier's do (a check that the probe can fail)."""
    logits = {}
    for inp, name in (("latent", "latent"), ("decoded", "decoded")):
        task = _build(_config(inp, codec=tiny_codec, precomputed=False))
        batch = _batch("classification", size=16, n=2)
        state = jax.jit(task.init)(jax.random.PRNGKey(0), batch)
        predict = jax.jit(task.predict)  # one compilation, two calls
        good = predict(state, batch)
        broken = dict(state.model_state, codec=dict(state.model_state["codec"],
                                                    decoder=jax.tree.map(lambda a: a * jnp.nan,
                                                                         state.model_state["codec"]["decoder"])))
        bad = predict(state.replace(model_state=broken), batch)
        logits[name] = (good, bad)
    good, bad = logits["latent"]
    np.testing.assert_array_equal(np.asarray(good), np.asarray(bad))
    assert np.all(np.isnan(np.asarray(logits["decoded"][1])))


def test_joint_training_updates_both_networks_and_frozen_codec_stays(tiny_codec):
    """Joint training changes the codec and the task network (and the task loss reaches the encoder);
    the control with a frozen codec changes only the network, its codec bit-equal."""
    batch = _batch("classification", size=16, n=2)
    joint = _build(_config("latent", codec=tiny_codec, precomputed=False, train_codec=True))
    state = jax.jit(joint.init)(jax.random.PRNGKey(0), batch)
    new, metrics = jax.jit(joint.train_step)(state, batch, jax.random.PRNGKey(1))
    changed = lambda a, b: any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa: E731
    assert changed(state.params["codec"]["encoder"], new.params["codec"]["encoder"])
    assert changed(state.params["codec"]["decoder"], new.params["codec"]["decoder"])
    assert changed(state.params["net"], new.params["net"])
    assert "codec_bpp" in metrics and np.isfinite(float(metrics["loss"]))
    # the task loss alone reaches the encoder (through the straight-through quantizer), not the decoder
    x = batch["image"]

    def task_only(codec_params):
        logits, _, _ = joint.forward(dict(state.params, codec=codec_params), state.model_state, x, True,
                                     jax.random.PRNGKey(0))
        return joint.task_loss(logits, batch["label"])

    g = jax.jit(jax.grad(task_only))(state.params["codec"])
    assert float(sum(jnp.sum(jnp.abs(v)) for v in jax.tree.leaves(g["encoder"]))) > 0
    assert float(sum(jnp.sum(jnp.abs(v)) for v in jax.tree.leaves(g["decoder"]))) == 0

    frozen = _build(_config("latent", codec=tiny_codec, precomputed=False, train_codec=False))
    fstate = jax.jit(frozen.init)(jax.random.PRNGKey(0), batch)
    fnew, _ = jax.jit(frozen.train_step)(fstate, batch, jax.random.PRNGKey(1))
    assert "codec" not in fnew.params
    for a, b in zip(jax.tree.leaves(fstate.model_state["codec"]), jax.tree.leaves(fnew.model_state["codec"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert changed(fstate.params["net"], fnew.params["net"])


def test_precomputed_and_in_graph_inputs_agree(tiny_codec, tmp_path):
    """Latents made once on the host (:func:`codec_outputs`) are what the codec in the graph feeds the
    network: the same logits from both paths."""
    from jaxcomp.vision.data import codec_outputs

    images = np.random.default_rng(3).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    out = codec_outputs(tiny_codec, images, batch_size=4, progress=False)
    assert out["latent"].shape == (4, 4, 4, 4) and out["decoded"].shape == images.shape
    assert out["decoded"].dtype == np.uint8 and np.all(out["bpp"] > 0) and np.all(out["ms_ssim"] <= 1)
    # a last partial batch (6 images, batches of 4) keeps its own images' outputs, in order
    more = np.concatenate([images, images[:2][:, ::-1]])
    six = codec_outputs(tiny_codec, more, batch_size=4, progress=False)
    tail = codec_outputs(tiny_codec, np.concatenate([more[4:], more[4:]]), batch_size=4, progress=False)
    for k in ("latent", "decoded", "bits"):
        np.testing.assert_array_equal(six[k][:4], out[k])
        np.testing.assert_array_equal(six[k][4:], tail[k][:2])
    # the cache is keyed by the images as well as the model: another set is not served the first's
    cache = str(tmp_path / "cache")
    first = codec_outputs(tiny_codec, images, batch_size=4, cache_dir=cache, progress=False)
    other = codec_outputs(tiny_codec, more[2:], batch_size=4, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(first["latent"], out["latent"])
    np.testing.assert_array_equal(other["latent"], six["latent"][2:])
    assert len(os.listdir(cache)) == 2
    # a damaged cache file (truncated, or another array set) is rebuilt, not served or raised from numpy
    for path in (os.path.join(cache, name) for name in os.listdir(cache)):
        with open(path, "r+b") as f:
            f.truncate(100)
    again = codec_outputs(tiny_codec, images, batch_size=4, cache_dir=cache, progress=False)
    np.testing.assert_array_equal(again["latent"], out["latent"])
    path = next(p for p in (os.path.join(cache, n) for n in os.listdir(cache)) if os.path.getsize(p) > 100)
    np.savez(path.removesuffix(".npz"), latent=np.zeros(3))  # np.savez appends .npz
    np.testing.assert_array_equal(codec_outputs(tiny_codec, images, batch_size=4, cache_dir=cache,
                                                progress=False)["decoded"], out["decoded"])
    # the key holds the codec's config too (it builds the task that measures bits and quality): the same
    # parameters under an edited config are computed again, not served the old config's outputs
    edited = tmp_path / "edited" / "cpm_tiny.msgpack"
    edited.parent.mkdir()
    shutil.copy(tiny_codec, edited)
    with open(tiny_codec.removesuffix(".msgpack") + ".json") as f:
        notes = json.load(f)
    notes["config"]["model"]["sigma"] = 2.0
    (tmp_path / "edited" / "cpm_tiny.json").write_text(json.dumps(notes))
    before = set(os.listdir(cache))
    codec_outputs(str(edited), images, batch_size=4, cache_dir=cache, progress=False)
    assert len(set(os.listdir(cache)) - before) == 1
    in_graph = _build(_config("latent", codec=tiny_codec, precomputed=False))
    pre = _build(_config("latent", codec=tiny_codec, precomputed=True))
    b_img = {"image": jnp.asarray(images, jnp.float32), "label": jnp.zeros(4, jnp.int32)}
    b_lat = {"image": jnp.asarray(out["latent"]), "label": jnp.zeros(4, jnp.int32)}
    s_img = in_graph.init(jax.random.PRNGKey(0), b_img)
    s_lat = pre.init(jax.random.PRNGKey(0), b_lat)
    np.testing.assert_allclose(np.asarray(in_graph.predict(s_img, b_img)), np.asarray(pre.predict(s_lat, b_lat)),
                               rtol=1e-4, atol=1e-4)


def test_loss_weights_the_task_and_decays_the_network(tiny_codec):
    """The joint training loss is ``codec loss + task_weight * task loss + 0.5 * l2 * ||net||²``,
    recomputed here from the forward pass (the decay was once dropped from it); the task trained alone
    (on precomputed latents: a small compilation) is ``task loss + 0.5 * l2 * ||net||²``, unweighted."""
    rng = jax.random.PRNGKey(3)
    sumsq = lambda tree: sum(float(jnp.sum(jnp.square(v))) for v in jax.tree.leaves(tree))  # noqa: E731
    for train_codec in (True, False):
        if train_codec:
            c = _config("latent", codec=tiny_codec, precomputed=False, train_codec=True)
            batch = _batch("classification", size=16, n=2)
        else:
            c = _config("latent")
            batch = _batch("classification", size=16, n=2, latent_channels=4)
        c.understanding.task_weight = 0.3
        c.optimizer.l2 = 0.1
        task = _build(c)
        state = jax.jit(task.init)(jax.random.PRNGKey(0), batch)

        def both(state, batch, rng, task=task, train_codec=train_codec):  # one compilation for both
            loss, (metrics, _) = task.loss(state.params, state, batch, rng)
            logits, _, codec = task.forward(state.params, state.model_state, batch["image"], True, rng)
            return loss, metrics, task.task_loss(logits, batch["label"]), codec[0] if train_codec else 0.0

        loss, metrics, task_loss, codec_loss = jax.jit(both)(state, batch, rng)
        expected = float(codec_loss) + 0.3 * float(task_loss) if train_codec else float(task_loss)
        expected += 0.05 * sumsq(state.params["net"])
        assert float(loss) == pytest.approx(expected, rel=1e-5)
        assert float(metrics["loss"]) == float(loss)


def test_rgb_inputs_reach_the_network_in_minus_one_to_one():
    """Original (and decoded) RGB enters the ResNet as ``x / 127.5 - 1``; a latent as it is."""
    image = jnp.asarray(np.array([0.0, 51.0, 127.5, 255.0]).reshape(1, 2, 2, 1).repeat(3, -1), jnp.float32)
    x, codec = _build(_config("original")).network_input(image, None)
    assert codec is None
    np.testing.assert_allclose(np.asarray(x[0, ..., 0]), [[-1.0, -0.6], [0.0, 1.0]], atol=1e-7)


def test_segmentation_counts_and_void_labels():
    """Per-class intersections and unions against a hand count; VOC-style void labels are ignored by both
    the loss and the counts."""
    from jaxcomp.vision import confusion_counts, mean_iou

    pred = jnp.array([[[0, 1], [1, 2]]])
    labels = jnp.array([[[0, 1], [2, 255]]])
    inter, union = confusion_counts(pred, labels, 3)
    np.testing.assert_array_equal(np.asarray(inter), [[1, 1, 0]])
    np.testing.assert_array_equal(np.asarray(union), [[1, 2, 1]])  # the void pixel's prediction not counted
    ignored = confusion_counts(pred, labels.at[0, 1, 1].set(-1), 3)  # an ignore label -1: void as well
    np.testing.assert_array_equal(np.asarray(ignored[0]), [[1, 1, 0]])
    np.testing.assert_array_equal(np.asarray(ignored[1]), [[1, 2, 1]])
    assert mean_iou(np.asarray(inter), np.asarray(union)) == pytest.approx((1 + 0.5 + 0) / 3)
    # a class neither predicted nor labelled is left out of the mean, not counted as 0 or NaN (guards
    # the mutant `understanding/miou-over-absent-classes`)
    assert mean_iou(np.array([[3.0, 1.0, 0.0]]), np.array([[4.0, 2.0, 0.0]])) == pytest.approx((0.75 + 0.5) / 2)
    # wrong shapes or float predictions are named (they failed inside numpy / jnp, or counted as no class)
    for bad_pred, message in ((pred[:, :1], "one shape"), (jax.nn.one_hot(pred, 3), "one shape"),
                              (pred.astype(jnp.float32) + 0.7, "integer class indices")):
        with pytest.raises(ValueError, match=message):
            confusion_counts(bad_pred, labels, 3)
    with pytest.raises(ValueError, match="one shape"):
        mean_iou(np.ones((2, 5)), np.ones((2, 4)))

    task = _build(_config("original", kind="segmentation"))
    logits = jnp.zeros((1, 2, 2, 11)).at[..., 0].set(5.0)
    all_void = task.task_loss(logits, jnp.full((1, 2, 2), 255))
    assert float(all_void) == 0.0
    one = task.task_loss(logits, jnp.array([[[0, 255], [255, 255]]]))
    assert float(one) == pytest.approx(float(-jax.nn.log_softmax(logits[0, 0, 0])[0]), rel=1e-6)
    assert float(task.task_loss(logits, jnp.array([[[0, -1], [255, -1]]]))) == pytest.approx(float(one), rel=1e-6)


def test_segmentation_task_trains_on_latents():
    """A segmentation step on precomputed latents: full-resolution logits, finite loss, metrics per example."""
    task = _build(_config("latent", kind="segmentation"))
    batch = _batch("segmentation", latent_channels=8)
    state = task.init(jax.random.PRNGKey(0), batch)
    assert task.predict(state, batch).shape == (4, 32, 32, 11)
    new, metrics = jax.jit(task.train_step)(state, batch, jax.random.PRNGKey(1))
    assert np.isfinite(float(metrics["loss"])) and 0 <= float(metrics["pixel_accuracy"]) <= 1
    # the step moves the network's running batch statistics (evaluation uses them)
    stats = [(np.asarray(a), np.asarray(b)) for a, b in zip(jax.tree.leaves(state.model_state["batch_stats"]),
                                                           jax.tree.leaves(new.model_state["batch_stats"]))]
    assert stats and all(not np.array_equal(a, b) for a, b in stats)
    m = task.eval_step(new, batch)
    assert m["pixel_accuracy"].shape == (4,) and m["inter_0"].shape == (4,)
    # void pixels (255) leave the pixel accuracy: correct predictions on the rest score 1.0
    pred = np.asarray(jnp.argmax(task.predict(new, batch), -1))
    void = np.zeros(pred.shape, bool)
    void[:, :, 16:] = True
    m = task.eval_step(new, dict(batch, label=jnp.asarray(np.where(void, 255, pred), jnp.int32)))
    np.testing.assert_array_equal(np.asarray(m["pixel_accuracy"]), 1.0)
    m = task.eval_step(new, dict(batch, label=jnp.asarray(np.where(void, 255, (pred + 1) % 11), jnp.int32)))
    np.testing.assert_array_equal(np.asarray(m["pixel_accuracy"]), 0.0)


@pytest.mark.parametrize("change, message", [
    (dict(model_name="resnet-1-1-1-1", input="latent"), "does not fit"),
    (dict(input="pixels"), "understanding.input"),
    (dict(train_codec=True), "precomputed=False"),
    (dict(precomputed=False), "needs understanding.codec"),
])
def test_clear_config_errors(change, message):
    c = _config("latent")
    if "model_name" in change:
        c.model.name = change["model_name"]
    if "input" in change:
        c.understanding.input = change["input"]
    for key in ("train_codec", "precomputed"):
        if key in change:
            c.understanding[key] = change[key]
    with pytest.raises(ValueError, match=message):
        _build(c)


@pytest.mark.parametrize("key, value, message", [
    ("input", "decoded", "config.data.input"),
    ("normalize", True, "normalize must be False"),
    ("num_classes", 12, r"config.data.num_classes=12 differs from config.model.num_classes=10"),
])
def test_data_block_must_describe_the_same_input(key, value, message):
    c = _config("latent")
    c.data[key] = value
    with pytest.raises(ValueError, match=message):
        _build(c)


def test_rgb_batch_for_a_latent_network_is_named():
    task = _build(_config("latent"))
    with pytest.raises(ValueError, match="RGB"):
        task.init(jax.random.PRNGKey(0), _batch("classification"))


def test_config_variants_load():
    for v in _config_module().VARIANTS:
        c = load_config(f"{CONFIG}:{v}")
        assert c.task in ("understanding", "cpm")
        if c.task == "understanding":
            assert c.data.input == c.understanding.input
            assert c.model.name.startswith("cresnet") == (c.understanding.input == "latent")


def test_voc_loader_reads_the_original_layout(tmp_path):
    """The original VOC 2012 layout: JPEGs, palette PNG label maps (255 = void), the split listing."""
    from PIL import Image

    from jaxcomp.vision.data import load_voc_segmentation

    for d in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (tmp_path / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in (("2007_000001", (40, 60)), ("2007_000002", (50, 30))):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "JPEGImages" / f"{name}.jpg")
        lab = np.zeros((h, w), np.uint8)
        lab[: h // 2] = 15
        lab[h // 2, :] = 255
        im = Image.fromarray(lab, mode="P")
        im.putpalette([0, 0, 0] * 256)
        im.save(tmp_path / "SegmentationClass" / f"{name}.png")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000001\n2007_000002\n")
    images, labels = load_voc_segmentation(str(tmp_path), "val", 24)
    assert images.shape == (2, 24, 24, 3) and images.dtype == np.uint8
    assert labels.shape == (2, 24, 24) and set(np.unique(labels)) <= {0, 15, 255}
    assert (labels[0] == 15).any() and (labels[0] == 0).any()
    from jaxcomp.data.images import DataError

    with pytest.raises(DataError, match="VOC 2012"):
        load_voc_segmentation(str(tmp_path / "nowhere"), "train", 24)
    # VOC has no public test masks: the report split ("test") and "val" read val.txt
    from jaxcomp.vision.data import split_images

    voc = ml_collections.ConfigDict(dict(source="voc", path=str(tmp_path), size=24))
    for split in ("val", "test"):
        np.testing.assert_array_equal(split_images(voc, split)[1], labels)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n2007_000003\n")
    with pytest.raises(DataError, match=r"VOC train image '2007_000003' \(listed in .*train\.txt\)"):
        load_voc_segmentation(str(tmp_path), "train", 24)  # listed, but no JPEG
    colour = np.zeros((40, 60, 3), np.uint8)
    colour[:20] = (192, 128, 128)  # a mask saved as colours, not class indices
    Image.fromarray(colour).save(tmp_path / "SegmentationClass" / "2007_000001.png")
    with pytest.raises(DataError, match=r"2007_000001\.png: a RGB image; VOC class masks are palette"):
        load_voc_segmentation(str(tmp_path), "val", 24)
    from jaxcomp.vision.data import model_digest

    with pytest.raises(DataError, match=r"codec model not found: '.*missing\.msgpack'"):
        model_digest(str(tmp_path / "missing.msgpack"))


def test_imagenet_stream_without_prepared_data_names_the_fix(tmp_path):
    from jaxcomp.data.images import DataError
    from jaxcomp.vision.data import TfdsStreamBatches

    c = load_config(CONFIG + ":paper_imagenet_latent")
    c.unlock()
    c.data.tfds_data_dir = str(tmp_path)
    # building needs TensorFlow (the [tf] extra) and ImageNet's archives downloaded by hand (--manual_dir)
    with pytest.raises(DataError, match=r"pip install -e '\.\[tf\]'.*tfds build imagenet2012 --manual_dir="):
        TfdsStreamBatches(c.data)


def test_imagenet_stream_epochs_crops_and_flips():
    """The streamed ImageNet batches (a fake source in place of tfds): every epoch a new permutation
    that visits each example once; training crops and flips drawn anew per step (some flipped, some
    not; none with flip off); evaluation the deterministic centre crop."""
    from jaxcomp.data.images import resize_centre_crop, resize_shorter_side
    from jaxcomp.vision.data import TfdsStreamBatches

    rng = np.random.default_rng(0)
    pictures = rng.integers(0, 256, (8, 20, 26, 3), dtype=np.uint8)

    class Source:  # TfdsImageSource's interface: examples; the label is the example's index
        image_key = "image"

        def __len__(self):
            return len(pictures)

        def example(self, i, *keys):
            return {"image": pictures[i], "label": i}

        def describe(self, i):
            return f"example {i}"

    def stream(flip):
        s = object.__new__(TfdsStreamBatches)
        s.size, s.resize, s.train, s.val = 12, 16, Source(), Source()
        s.batch_size = s.local = 4
        s.seed, s.flip, s.process_index, s.num_classes, s._perm = 3, flip, 0, 8, None
        return s

    data = stream(True)
    epochs = [np.concatenate([data.train_batch(2 * e + k)["label"] for k in range(2)]) for e in range(3)]
    assert all(sorted(e) == list(range(8)) for e in epochs) and len({tuple(e) for e in epochs}) == 3
    flips, crops = 0, set()
    for step in range(12):
        batch = data.train_batch(step)
        for image, label in zip(batch["image"], batch["label"]):
            big = resize_shorter_side(pictures[label], 16).astype(np.float32)
            found = [(y, x, f) for f in (False, True) for y in range(5) for x in range(10)
                     if np.array_equal((big[:, ::-1] if f else big)[y:y + 12, x:x + 12], image)]
            assert found, (step, label)
            flips += found[0][2]
            crops.add(found[0][:2])
    assert 0 < flips < 48 and len(crops) > 10
    plain = stream(False)
    for step in range(6):
        batch = plain.train_batch(step)
        for image, label in zip(batch["image"], batch["label"]):
            big = resize_shorter_side(pictures[label], 16).astype(np.float32)
            assert any(np.array_equal(big[y:y + 12, x:x + 12], image) for y in range(5) for x in range(10))
    ev = list(data.eval_batches(3))
    assert [len(b["label"]) for b in ev] == [3, 3, 3] and [int(b["valid"].sum()) for b in ev] == [3, 3, 2]
    for i in range(8):
        np.testing.assert_array_equal(ev[i // 3]["image"][i % 3], resize_centre_crop(pictures[i], 16)[2:14, 2:14])
    np.testing.assert_array_equal(list(data.eval_batches(3))[1]["image"], ev[1]["image"])


SHARED = os.path.join(ROOT, "..", "shared", "data")
needs_shared = pytest.mark.skipif(not (os.path.isfile(os.path.join(SHARED, "mnist", "mnist.npz"))
                                       and os.path.isdir(os.path.join(SHARED, "photos"))),
                                  reason="../shared/data (MNIST and the photos) not present")


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("variant", ["paper_imagenet_latent", "paper_imagenet_decoded", "paper_voc_latent"])
def test_paper_configs_train_a_few_steps(variant, tmp_path):
    """The paper's networks (cResNet-51 on the 28x28 latent of a 224x224 image, ResNet-50 on its decoding,
    DeepLab on cResNet-51 features) with the codec in the graph, two steps through the trainer, on the
    local scenes at the paper's image size in place of ImageNet / VOC."""
    from jaxcomp import tasks
    from jaxcomp import train as trainer

    c = load_config(f"{CONFIG}:{variant}")
    c.unlock()
    kind = c.understanding.task
    size = 224 if kind == "classification" else 96
    scenes = load_config(CONFIG + (":seg_latent" if kind == "segmentation" else ":latent")).data
    c.data = ml_collections.ConfigDict(dict(
        scenes.to_dict(), size=size, num_train=4, num_val=2, num_test=2, batch_size=2, cache_dir="",
        mnist_path=os.path.join(SHARED, "mnist", "mnist.npz"), photos_path=os.path.join(SHARED, "photos"),
        input=c.understanding.input, codec=c.understanding.codec, precomputed=False,
        digit_size=(60, 120) if kind == "classification" else (20, 36)))
    c.model.num_classes = int(c.data.num_classes)
    c.understanding.codec = os.path.join(ROOT, c.understanding.codec)
    c.data.codec = c.understanding.codec
    c.steps, c.log_every, c.checkpoint_every, c.eval_every, c.eval_batch_size = 2, 1, 2, 2, 2
    task, data = tasks.build(c)
    state, metrics = trainer.train(c, str(tmp_path), task, data, progress=False)
    assert int(state.step) == 2 and metrics
    assert all(np.isfinite(v) for v in metrics.values())


def test_study_scores_on_the_report_split_with_each_seed_and_mode(tmp_path, monkeypatch):
    """The study's wiring, with training and data stubbed: every row and the logistic-regression
    baseline are fitted on "train" and scored on ``experiment.report_split``; a row's seed is also its
    data seed (batch order); joint training trains the codec and the control does not, each reported
    under its own name; ``evaluate`` averages over the examples, not the padding of the last batch."""
    import jaxcomp.vision.data as vdata
    from experiments import understanding as study

    evaluate = study.evaluate
    config = load_config(CONFIG + ":tiny")
    config.experiment.update(seeds=(0, 1), inputs=("latent",), report_split="test")
    s = object.__new__(study.Study)  # without __init__'s compilation cache (global JAX state)
    s.config, s.workdir, s.exp, s.cfg = config, str(tmp_path), config.experiment, study._module()
    s.started, s.results = 0.0, {"rows": [], "codecs": {}, "flops": {}, "joint": [], "linear": []}
    rng = np.random.default_rng(0)
    splits = {name: (rng.normal(size=(12, 2, 2, 1)).astype(np.float32) + 3 * (np.arange(12) % 2)[:, None, None, None],
                     np.arange(12) % 2) for name in ("train", "val", "test")}
    asked, trained = [], []
    monkeypatch.setattr(vdata, "understanding_arrays", lambda data, split: (asked.append(split), splits[split])[1])
    monkeypatch.setattr(vdata, "split_images", lambda data, split: (asked.append(split), splits[split])[1])
    monkeypatch.setattr(s, "train", lambda c, wd: (trained.append(c), os.makedirs(wd), ("task", "state"))[2])
    row_key = study._row_key
    monkeypatch.setattr(study, "_row_key", lambda c: "key")  # (the codec's parameters are not made here)
    monkeypatch.setattr(study, "evaluate", lambda task, state, x, y, b, codec_metrics=False:
                        {"accuracy": float(np.mean(x == splits["test"][0]))})
    s.rows("classification")
    assert [c.seed for c in trained] == [c.data.seed for c in trained] == [0, 1]
    assert [r["accuracy"] for r in s.results["rows"]] == [1.0, 1.0]  # scored on the report split's inputs
    assert asked.count("train") == 1 and "val" not in asked  # the baseline's fit; nothing chosen on val
    assert s.results["linear"][0]["accuracy"] == 1.0  # separable: fitted on train, scored on test
    # a row's key holds its codec's parameters, not the codec's path in the workdir, nor the command's budget:
    # a study unpacked under another path (pack_run), or continued with another time limit, keeps its rows
    monkeypatch.setattr(vdata, "model_digest", lambda path: "the codec's parameters")
    row = s.row_config("classification", "latent", "low", 0)
    moved = ml_collections.ConfigDict(row.to_dict())
    moved.data.codec = "/elsewhere/study/codec_low"
    assert row_key(row) == row_key(moved) != row_key(s.row_config("classification", "latent", "low", 1))
    s.config = apply_overrides(config, ["experiment.time_limit=540", "experiment.points=('low',)",
                                        "experiment.codecs_from=/elsewhere/gpu_study"])
    assert row_key(s.row_config("classification", "latent", "low", 0)) == row_key(row)  # which rows run
    s.config = apply_overrides(config, ["experiment.report_split=val"])
    assert row_key(s.row_config("classification", "latent", "low", 0)) != row_key(row)  # what a row reports
    s.config = config
    trained.clear()
    s.joint()
    assert [(c.understanding.train_codec, c.seed) for c in trained] == [(True, 0), (False, 0), (True, 1), (False, 1)]
    assert [(r["mode"], r["seed"]) for r in s.results["joint"]] == [("joint", 0), ("classifier_only", 0),
                                                                     ("joint", 1), ("classifier_only", 1)]

    class Task:  # per-example accuracy: does the first input value equal the label
        def eval_step(self, state, batch):
            return {"accuracy": (batch["image"][:, 0] == batch["label"]).astype(jnp.float32)}

    x, y = np.array([[1.0], [0.0], [1.0], [1.0], [1.0]]), np.array([1, 1, 1, 1, 1])
    assert evaluate(Task(), None, x, y, 2)["accuracy"] == pytest.approx(0.8)  # not 5 / 5 with a pad copy

    # codecs trained elsewhere: an exported codec_<point>.msgpack, else another study's codec_<point>/ workdir
    assert s.codec_dir("low") == str(tmp_path / "codec_low")
    other = tmp_path / "gpu_study"
    (other / "codec_low").mkdir(parents=True)
    (other / "codec_med.msgpack").write_bytes(b"")
    s.exp = ml_collections.ConfigDict(dict(codecs_from=str(other)))
    assert s.codec_dir("low") == str(other / "codec_low")
    assert s.codec_dir("med") == str(other / "codec_med.msgpack")
    with pytest.raises(FileNotFoundError, match="neither codec_high.msgpack"):
        s.codec_dir("high")


@pytest.mark.slow
@needs_shared
def test_study_runs_end_to_end(tmp_path, capsys):
    """``experiments.understanding`` on the tiny config: every stage, every table of the report."""
    from experiments.understanding import main

    assert main(["--config", CONFIG + ":tiny", "--workdir", str(tmp_path)]) == 0
    report = (tmp_path / "results.md").read_text()
    for section in ("Codec operating points", "Classification", "Segmentation", "Compute per image",
                    "Joint training"):
        assert section in report
    assert (tmp_path / "accuracy_vs_bpp.png").is_file()
    # the same study with another codec learning rate: its finished codecs are refused, not reused (the
    # codec stage once checked only their step count)
    assert main(["--config", CONFIG + ":tiny", "--workdir", str(tmp_path),
                 "--config.experiment.codec_learning_rate=0.5"]) == 2
    assert "codec_low holds a run with other settings: optimizer.learning_rate" in capsys.readouterr().err


@needs_shared
@pytest.mark.parametrize("inp", ["latent", "decoded", "original"])
def test_trainer_batches_carry_the_codec_outputs_unnormalised(inp, tiny_codec):
    """Through the trainer's data pipeline (digit scenes -> codec -> ClassificationBatches): the batches
    hold exactly the codec's latents / decodings / the images, as float32 and not standardised (the task
    normalises in its graph, the same way as with the codec in the graph)."""
    from jaxcomp import tasks
    from jaxcomp.vision.data import codec_outputs, split_images

    c = _config(inp, codec=tiny_codec if inp != "original" else "")
    c.data.update(size=16, digit_size=(8, 14), num_train=8, num_val=4, batch_size=4, codec_batch_size=4,
                  mnist_path=os.path.join(SHARED, "mnist", "mnist.npz"), photos_path=os.path.join(SHARED, "photos"))
    data = tasks.build_data(c, "classification")
    images, labels = split_images(c.data, "val")
    batch = next(iter(data.eval_batches(4)))
    expected = images if inp == "original" else codec_outputs(tiny_codec, images, 4, progress=False)[inp]
    np.testing.assert_array_equal(batch["image"], np.asarray(expected, np.float32))
    np.testing.assert_array_equal(batch["label"], labels)


def test_jpeg_baseline_at_a_generous_rate_decodes_each_tile_in_place():
    """The JPEG baseline codes tiles as mosaics (one header for many): at 4 bpp every decoded tile must
    be its own image (PSNR well above what a tile swap gives), at about the asked rate."""
    pytest.importorskip("imagecodecs")
    from experiments.understanding import jpeg_at_bpp
    from jaxcomp.data import load_image, sample_image_paths

    photo = load_image(sample_image_paths()[0])
    tiles = np.stack([photo[y:y + 64, x:x + 64] for y in (0, 100, 200) for x in (0, 150, 300)][:4])
    out = jpeg_at_bpp(tiles, 4.0, grid=2)
    assert out["psnr"] > 30 and out["reachable"] == 1.0 and 2.0 < out["bpp"] <= 4.0


def test_study_refuses_a_finished_codec_of_other_settings(tmp_path, monkeypatch):
    """The codec stage reused a codec workdir once it had the step count (a re-run with another codec
    learning rate or other scenes reported the old codec); a codec of other settings is now refused
    before it is reused or trained further. Data stubbed, nothing trains."""
    import jaxcomp.vision.data as vdata
    from experiments import understanding as study

    config = load_config(CONFIG + ":tiny")
    s = object.__new__(study.Study)  # without __init__'s compilation cache (global JAX state)
    s.config, s.workdir, s.exp, s.cfg = config, str(tmp_path), config.experiment, study._module()
    s.results = {"rows": [], "codecs": {}, "flops": {}, "joint": [], "linear": []}
    monkeypatch.setattr(vdata, "split_images", lambda data, split: (np.zeros((2, 8, 8, 3), np.uint8), np.zeros(2)))
    point = config.experiment.points[0]
    other = study.Study.codec_config(s, point)
    other.optimizer.learning_rate = 0.5
    os.makedirs(s.codec_dir(point))
    with open(os.path.join(s.codec_dir(point), "config.json"), "w") as f:
        f.write(other.to_json_best_effort(indent=2, sort_keys=True))
    monkeypatch.setattr(s, "train", lambda c, wd: pytest.fail("trained a codec of other settings further"))
    with pytest.raises(ValueError, match=rf"codec_{point} holds a run with other settings: optimizer\.learning_rate"):
        s.codecs()


def test_study_checks_its_plan_first_and_keeps_earlier_sections(tmp_path, monkeypatch):
    """A study's plan is checked before any stage runs (a misspelt last stage once failed after the codecs
    had trained): repeated seeds (counted as more seeds in the spread), empty lists, negative seeds, a
    report split the scenes lack, joint and segmentation points whose codecs the study does not train.
    A command that runs fewer stages keeps the earlier command's sections in results.json / results.md
    (the compute table was lost), saying which; the stages it runs replace theirs."""
    from experiments import understanding as study

    config = load_config(CONFIG + ":tiny")
    s = object.__new__(study.Study)  # without __init__'s compilation cache (global JAX state)
    s.config, s.workdir, s.cfg = config, str(tmp_path), study._module()
    for override, message in [
        ("experiment.stages=('codecs', 'clasification')", r"unknown experiment stage\(s\) \['clasification'\]"),
        ("experiment.stages=()", "experiment.stages is empty"),
        ("experiment.stages=('codecs', 'compute', 'codecs')", r"experiment.stages repeats \['codecs'\]"),
        ("experiment.seeds=(0, 0)", r"experiment.seeds repeats \[0\]"),
        ("experiment.seeds=(-1,)", "experiment.seeds must be whole numbers >= 0, got -1"),
        ("experiment.report_split=tst", "experiment.report_split must be 'val' or 'test', got 'tst'"),
        ("experiment.joint_point=high", r"joint_point='high' is not among experiment.points"),
        ("experiment.seg_points=('high',)", r"seg_points \['high'\] are not among experiment.points"),
    ]:
        s.exp = apply_overrides(config, [override]).experiment
        with pytest.raises(ValueError, match=message):
            s.check_plan()
    s.exp = apply_overrides(config, ["experiment.joint_point=high",
                                     "experiment.codecs_from=/elsewhere/gpu_study"]).experiment
    s.check_plan()  # codecs trained elsewhere may hold other points

    def row(task, seed, accuracy):
        return dict(task=task, input="latent", point="low", seed=seed, net="cresnet", key="k",
                    accuracy=accuracy, miou=accuracy)

    earlier = {"rows": [row("classification", 0, 0.5), row("segmentation", 0, 0.2)], "linear": [],
               "codecs": {"low": dict(bpp=0.3, bpp_std=0.0, ms_ssim=0.9, psnr=24.0, latent_shape=[8, 8, 32],
                                      jpeg_bpp=0.3, jpeg_ms_ssim=0.8, jpeg_psnr=22.0, jpeg_reachable=1.0)},
               "flops": {"decoder_low": dict(flops=2e6, xla=2e6, ms_per_image=0.1)}, "joint": []}
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    s.exp = apply_overrides(config, ["experiment.stages=('classification',)"]).experiment
    s.results = {"rows": [row("classification", 0, 0.7)], "codecs": {}, "flops": {}, "joint": [], "linear": []}
    monkeypatch.setattr(s, "classification", lambda: None)
    report = s.run()
    merged = json.loads((tmp_path / "results.json").read_text())
    assert merged["flops"] == earlier["flops"] and merged["codecs"] == earlier["codecs"]
    assert sorted((r["task"], r["accuracy"]) for r in merged["rows"]) == [("classification", 0.7),
                                                                          ("segmentation", 0.2)]
    assert merged["carried_over"] == ["codecs", "segmentation", "compute"]
    assert "Compute per image" in report and "come from an earlier command" in report and "0.700" in report
    # a stage stopped part-way by the time limit: its new rows, and the earlier ones it did not redo
    from jaxcomp.deadline import OutOfTime

    earlier["rows"].append(row("classification", 1, 0.6))
    (tmp_path / "results.json").write_text(json.dumps(earlier))
    s.results = {"rows": [row("classification", 0, 0.7)], "codecs": {}, "flops": {}, "joint": [], "linear": []}

    def stopped():
        raise OutOfTime("experiment.time_limit")

    monkeypatch.setattr(s, "classification", stopped)
    s.run()
    merged = json.loads((tmp_path / "results.json").read_text())
    assert sorted((r["task"], r["seed"], r["accuracy"]) for r in merged["rows"]) == [
        ("classification", 0, 0.7), ("classification", 1, 0.6), ("segmentation", 0, 0.2)]
    assert "classification" in merged["carried_over"]

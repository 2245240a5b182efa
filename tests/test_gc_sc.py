"""Selective generative compression (SC): model inputs, heatmap modes, masked distortion, label-map
data (colour clusters, tfds cityscapes keys), a short training and the SC codec."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxcomp import tasks
from jaxcomp import train as trainer
from jaxcomp.codecs import gc
from jaxcomp.codecs.gc import sc_codec
from jaxcomp.codecs.gc import semantic as sc
from jaxcomp.coding import BitstreamError, ModelMismatchError, TruncatedError, pack, unpack
from jaxcomp.configs import apply_overrides, load_config
from jaxcomp.data import DataError, build_image_data, load_image, sample_image_paths
from jaxcomp.data.labels import check_labels, colour_clusters, random_crop_pair

K = 4  # sc_tiny's classes


@pytest.fixture(scope="module")
def config(repo):
    return load_config(str(repo / "configs" / "gc.py") + ":sc_tiny")


@pytest.fixture(scope="module")
def task(config):
    return tasks.build_task(config)[0]


@pytest.fixture(scope="module")
def state(task):
    batch = {"image": np.zeros((1, 32, 32, 3), np.uint8), "semantic": np.zeros((1, 32, 32), np.int32)}
    return trainer.jit_init(task.init)(jax.random.PRNGKey(0), batch)


@pytest.fixture(scope="module")
def photo():
    image = load_image(sample_image_paths()[1])[:72, :88]  # not a multiple of 16: padded
    return image, colour_clusters(image, K)


def _map(rng, b, h, w):
    return jnp.asarray(np.random.default_rng(rng).integers(0, K, (b, h, w)), jnp.int32)


def test_encoder_and_f_see_the_map_and_the_heatmap_zeroes_the_latent(config, state):
    model = gc.GC(gc.spec_from_config(config.model))
    params = state.params["generator"]
    # E takes [x, one-hot s]; F takes the one-hot map; D is conditioned on it
    assert params["encoder"]["c7"]["kernel"].shape[2] == 3 + K
    assert params["map_encoder"]["c7"]["kernel"].shape[2] == K
    assert state.params["discriminator"]["scale0"]["conv0"]["kernel"].shape[2] == 3 + K
    apply = jax.jit(lambda x, s, h: model.apply({"params": params}, x, None, s, h))
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, 32, 48, 3), maxval=255.0)
    s = _map(0, 1, 32, 48)
    heat = jnp.asarray([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    full = apply(x, s, jnp.ones_like(heat))
    masked = apply(x, s, heat)
    w_hat, keep = np.asarray(masked["w_hat"]), np.asarray(heat, bool)
    np.testing.assert_array_equal(w_hat[~keep], 0.0)
    np.testing.assert_array_equal(w_hat[keep], np.asarray(full["w_hat"])[keep])
    assert float(jnp.abs(apply(x, _map(1, 1, 32, 48), heat)["w"] - masked["w"]).max()) > 0  # E sees s
    # nothing preserved: G's output is a function of the map alone, whatever the image
    zero = jnp.zeros_like(heat)
    other = jax.random.uniform(jax.random.PRNGKey(1), x.shape, maxval=255.0)
    np.testing.assert_array_equal(np.asarray(apply(x, s, zero)["x_hat"]), np.asarray(apply(other, s, zero)["x_hat"]))
    assert float(jnp.abs(apply(x, _map(1, 1, 32, 48), zero)["x_hat"] - apply(x, s, zero)["x_hat"]).max()) > 0
    # partly preserved: G sees heatmap * w_hat, so any values in the zeroed cells give the same image
    decode = jax.jit(lambda w, s: model.apply({"params": params}, w, None, s, method=gc.GC.decode))
    junk = jnp.where(heat[..., None] > 0, full["w_hat"], 7.0)
    # two programs (float rounding apart: ~7e-6 with XLA's legacy CPU fusion emitters); junk that reached G
    # would move the image by far more
    np.testing.assert_allclose(np.asarray(decode(junk * heat[..., None], s)), np.asarray(masked["x_hat"]), atol=1e-4)


def test_distortion_ignores_the_masked_pixels(config, state):
    x = jax.random.uniform(jax.random.PRNGKey(2), (2, 32, 32, 3), minval=-1, maxval=1)
    x_hat = jax.random.uniform(jax.random.PRNGKey(3), x.shape, minval=-1, maxval=1)
    heat = jnp.asarray([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 1.0]]])
    pix = np.asarray(sc.upsample(heat))[..., 0] > 0
    base = float(sc.masked_mse(x, x_hat, heat))
    in_masked = jnp.where(pix[..., None], x, -x)  # changed where synthesised only
    assert float(sc.masked_mse(in_masked, x_hat, heat)) == pytest.approx(base, rel=1e-6)
    in_kept = jnp.where(pix[..., None], -x, x)
    assert float(sc.masked_mse(in_kept, x_hat, heat)) != pytest.approx(base, rel=1e-3)
    expected = np.sum(np.square(np.asarray(x - x_hat))[pix]) / (3 * pix.sum())
    assert base == pytest.approx(expected, rel=1e-5)
    assert float(sc.masked_mse(x, x_hat, jnp.zeros_like(heat))) == 0.0
    # the task's loss uses it: with the adversarial terms off, loss = lambda * masked MSE + prior fit
    box = apply_overrides(config, ["sc.mode=box"])
    task, _ = tasks.build_task(box)
    image = jnp.asarray(load_image(sample_image_paths()[2])[:64, :64][None])
    batch = {"image": image, "semantic": _map(4, 1, 64, 64)}
    rng = jax.random.PRNGKey(5)
    heat = task.heatmap(batch, rng)
    assert 0 < float(heat.mean()) < 1
    loss, (metrics, x_hat) = jax.jit(task.generator_loss)(state.params, batch, rng, jnp.float32(0.0))
    mse = float(sc.masked_mse(image / 127.5 - 1.0, x_hat, heat))
    assert mse != pytest.approx(float(jnp.mean(jnp.square(image / 127.5 - 1.0 - x_hat))), rel=1e-3)
    assert float(loss) == pytest.approx(box.loss.lambda_mse * mse + float(metrics["prior_bits_per_symbol"]), rel=1e-5)
    assert float(metrics["preserved"]) == pytest.approx(float(heat.mean()))


def test_sc_train_metrics_are_honest_when_a_step_keeps_no_pixels(config, state):
    """SC's logged train metrics: no per-step MSE/PSNR of the preserved pixels (a step that keeps none
    logged MSE 0, PSNR 148 dB, averaged into the window); the whole image's MSE/PSNR, and the preserved
    pixels' squared error as a sum, so that a window's preserved_sq_err / preserved is their MSE."""
    image = jnp.asarray(load_image(sample_image_paths()[2])[:64, :64][None])
    batch = {"image": image, "semantic": _map(4, 1, 64, 64)}
    rng = jax.random.PRNGKey(5)
    rows = []
    for overrides in (["sc.mode=classes", "sc.class_fraction=0.0"], ["sc.mode=box"]):  # none kept; a box kept
        task, _ = tasks.build_task(apply_overrides(config, overrides))
        heat = task.heatmap(batch, rng)
        _, (metrics, x_hat) = jax.jit(task.generator_loss)(state.params, batch, rng, jnp.float32(1.0))
        decoded = gc.model.to_pixels(x_hat)
        whole = float(jnp.mean(jnp.square(decoded - image)))
        assert not {"mse", "psnr"} & set(metrics)
        assert float(metrics["mse_image"]) == pytest.approx(whole, rel=1e-5)
        assert float(metrics["psnr_image"]) == pytest.approx(10 * np.log10(255.0**2 / whole), rel=1e-5)
        assert float(metrics["preserved"]) == pytest.approx(float(heat.mean()))
        rows.append((metrics, float(sc.masked_mse(image.astype(jnp.float32), decoded, heat)), float(heat.mean())))
    (none, _, kept0), (box, box_mse, kept1) = rows
    assert kept0 == 0.0 and 0 < kept1 < 1
    assert float(none["preserved_sq_err"]) == 0.0 and float(none["psnr_image"]) < 60
    assert float(box["preserved_sq_err"]) / kept1 == pytest.approx(box_mse, rel=1e-5)
    # a window of both steps, averaged as the trainer does: the MSE of the one step's preserved pixels
    window = {k: np.mean([float(m[k]) for m, _, _ in rows]) for k in ("preserved_sq_err", "preserved")}
    assert window["preserved_sq_err"] / window["preserved"] == pytest.approx(box_mse, rel=1e-5)


def test_per_image_masked_mse_and_the_codecs_heatmap_by_hand():
    """masked_mse_per_image: each image's squared error over its preserved pixels and 3 channels;
    heatmap_from_classes: 1 in the latent cells holding any pixel of a class that is not synthesised."""
    from jaxcomp.codecs.gc.sc_codec import heatmap_from_classes

    x = jnp.zeros((2, 32, 32, 3))
    x_hat = x.at[0, :16, :16, 0].set(2.0).at[1].set(1.0)
    heat = jnp.asarray([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]]])
    # image 0: 256 pixels kept, error 4 in one channel of each; image 1: 512 kept, error 1 everywhere
    np.testing.assert_allclose(sc.masked_mse_per_image(x, x_hat, heat), [4 * 256 / (3 * 256), 1.0], rtol=1e-6)
    semantic = np.zeros((40, 20), np.int64)  # 3 x 2 latent cells (the last row padded)
    semantic[0:16, 0:16] = 3          # cell (0, 0): class 3 only
    semantic[20, 17] = 3              # cell (1, 1): one pixel of class 3 among class 0
    semantic[32:, :] = 5              # the last row of cells: class 5 only
    np.testing.assert_array_equal(heatmap_from_classes(semantic, [0, 5], 6), [[1, 0], [0, 1], [0, 0]])
    np.testing.assert_array_equal(heatmap_from_classes(semantic, {5, 0}, 6), [[1, 0], [0, 1], [0, 0]])  # a set
    np.testing.assert_array_equal(heatmap_from_classes(semantic, [3], 6), [[0, 1], [1, 1], [1, 1]])


def test_heatmap_from_classes_refuses_maps_and_classes_it_cannot_honour():
    """A class outside the model's, a float or 3-D map, or non-integer classes gave an all-ones heatmap
    (nothing synthesised) or an unpacking error; each is now refused by name."""
    from jaxcomp.codecs.gc.sc_codec import heatmap_from_classes

    sem = np.repeat(np.repeat(np.asarray([[0, 1, 2], [3, 0, 1]], np.int32), 16, 0), 16, 1)  # a class per cell
    np.testing.assert_array_equal(heatmap_from_classes(sem, [], K), 1)  # nothing asked: all kept
    np.testing.assert_array_equal(heatmap_from_classes(sem, [3, 1], K), [[1, 0, 1], [0, 1, 0]])
    for semantic, classes, message in (
            (sem, [99], r"classes to synthesise holds classes in \[99, 99\], outside 0\.\.3"),
            (sem, [-1], r"outside 0\.\.3"),
            (sem, [4], r"outside 0\.\.3"),
            (sem, [1.0], "the classes to synthesise must be integer classes, got float64"),
            (sem + 0.5, [3], "label map must hold integer classes, got dtype float64"),
            (sem.astype(bool), [1], "integer classes"),
            (sem[None], [3], r"label map has shape \(1, 32, 48\); it must be \[H, W\]"),
            (sem[0], [3], r"shape \(48,\)"),
            (sem + K, [3], r"lie in 0\.\.3 \(this model has 4\), got 4\.\.7")):
        with pytest.raises(ValueError, match=message):
            heatmap_from_classes(semantic, classes, K)
    with pytest.raises(ValueError, match="classes"):
        heatmap_from_classes(sem, [3], 0)


def test_sc_codec_synthesise_checks_its_inputs_as_compress_does(config, state):
    """synthesise took labels out of range (one_hot made zero vectors) and a non-binary heatmap (0.5
    scaled the latent); it refuses them with compress's own checks (check_semantic, check_heatmap)."""
    codec = sc_codec.SCCodec(gc.spec_from_config(config.model), state.params["generator"])
    labels = np.asarray(_map(3, 1, 40, 40))[0]
    symbols = np.full((3, 3, config.model.channels), 2, np.int32)
    heat = np.ones((3, 3), np.uint8)
    for semantic, heatmap, message in (
            (labels + K, heat, r"lie in 0\.\.3"),
            (labels - 1, heat, r"lie in 0\.\.3"),
            (labels.astype(np.float32), heat, "integer classes"),
            (labels[None], heat, r"shape \(1, 40, 40\)"),
            (labels, heat * 0.5, "binary"),
            (labels, heat.astype(np.float32), "binary"),
            (labels, heat * 2, "binary")):
        with pytest.raises(ValueError, match=message):
            codec.synthesise(symbols, heatmap, semantic)
    assert codec.synthesise(symbols, heat.astype(bool), labels).shape == (40, 40, 3)


def test_sc_evaluation_scores_the_whole_latent_and_the_drawn_heatmap(config, state):
    """SC's eval_step: mse / psnr of the image decoded from its whole latent; under the heatmap drawn
    with the fixed key, the MSE of the preserved pixels and the bits of the coded symbols only."""
    task, _ = tasks.build_task(apply_overrides(config, ["sc.mode=box"]))
    image = load_image(sample_image_paths()[2])[:64, :64][None]
    batch = {"image": jnp.asarray(image), "semantic": _map(4, 1, 64, 64)}
    key = jax.random.PRNGKey(0)

    @jax.jit
    def both(state):  # the task's evaluation and the formula's pieces, in one compilation
        heat = task.heatmap(batch, key)
        return (task.eval_step(state, batch), task.forward(state.params, batch, key, jnp.ones((1, 4, 4))), heat,
                task.forward(state.params, batch, key, heat))

    ev, full, heat, out = both(state)
    x_full = np.round(np.asarray(gc.model.to_pixels(full["x_hat"])))
    # rtol 1e-4: the two passes may round a few of the 12,288 subpixels to neighbouring values
    np.testing.assert_allclose(ev["mse"], np.mean((x_full - image) ** 2, axis=(1, 2, 3)), rtol=1e-4)
    assert 0 < float(heat.mean()) < 1
    bits = np.asarray(gc.prior_bits(out["prior_logits"], out["symbols"])) * np.asarray(heat)
    np.testing.assert_allclose(ev["bpp_prior"], bits.sum((1, 2)) / (64 * 64), rtol=1e-5)
    x_sel = jnp.round(gc.model.to_pixels(out["x_hat"]))
    np.testing.assert_allclose(ev["mse_preserved"], sc.masked_mse_per_image(jnp.asarray(image, jnp.float32), x_sel,
                                                                            heat), rtol=1e-5)
    np.testing.assert_allclose(ev["preserved"], np.asarray(heat).mean((1, 2)), rtol=1e-6)


def test_training_modes_draw_their_heatmaps():
    b, k = 16, 6
    cells = np.random.default_rng(0).integers(0, k, (b, 4, 5))
    semantic = jnp.asarray(np.repeat(np.repeat(cells, 16, 1), 16, 2), jnp.int32)  # one class per latent cell
    draw = jax.jit(lambda s, key: sc.sample_heatmap(s, key, semantic, k, return_choice=True), static_argnums=0)
    key = jax.random.PRNGKey(7)
    heat, _ = draw(sc.SCSettings(mode="none"), key)
    np.testing.assert_array_equal(np.asarray(heat), 1.0)
    for chosen in ("preserve", "synthesize"):  # RI with classes: a cell is kept iff its class was drawn
        heat, choice = draw(sc.SCSettings(mode="classes", chosen=chosen, class_fraction=0.5), key)
        picked = np.take_along_axis(np.asarray(choice["classes"]), cells.reshape(b, -1), 1).reshape(cells.shape)
        np.testing.assert_array_equal(np.asarray(heat), picked if chosen == "preserve" else ~picked)
        assert 0.2 < np.asarray(choice["classes"]).mean() < 0.8
    # a cell touched by a single pixel of a drawn class is kept
    one = semantic.at[:, 5, 21].set(k - 1)
    heat, choice = jax.jit(lambda key: sc.sample_heatmap(sc.SCSettings(class_fraction=0.5), key, one, k, True))(key)
    drawn = np.asarray(choice["classes"])[:, k - 1]
    np.testing.assert_array_equal(np.asarray(heat)[drawn, 0, 1], 1.0)
    # RB: one box per image with sides in [box_min, box_max] of the latent's, inside the latent
    settings = sc.SCSettings(mode="box", box_min=0.25, box_max=0.75)
    heat, choice = draw(settings, key)
    for hm, (top, left, bh, bw) in zip(np.asarray(heat), np.asarray(choice["boxes"])):
        assert 1 <= bh <= 3 and 1 <= bw <= 4 and top + bh <= 4 and left + bw <= 5
        expected = np.zeros((4, 5))
        expected[top:top + bh, left:left + bw] = 1
        np.testing.assert_array_equal(hm, expected)
    # every place where a box fits is drawn, the far edges included (uniform over the places)
    boxes = np.asarray(jax.jit(lambda key: sc.draw_boxes(key, 4000, (4, 5), 0.5, 0.5))(key))  # 2x2 boxes (rounded)
    assert set(map(tuple, boxes[:, 2:])) == {(2, 2)}
    assert set(boxes[:, 0]) == {0, 1, 2} and set(boxes[:, 1]) == {0, 1, 2, 3}
    assert np.bincount(boxes[:, 0]).min() > 1000  # each of the 3 rows about 1/3 of the time
    # p_mask: the images not drawn to be masked keep their whole latent
    heat, choice = draw(sc.SCSettings(mode="box", p_mask=0.5), key)
    masked = np.asarray(choice["masked"])
    assert masked.any() and not masked.all()
    np.testing.assert_array_equal(np.asarray(heat)[~masked], 1.0)
    assert (np.asarray(heat)[masked] == 0).any()
    with pytest.raises(ValueError, match="mode"):
        sc.SCSettings(mode="instances")
    with pytest.raises(ValueError, match="unknown config.sc keys.*p_mak"):
        sc.settings_from_config(ml_collections.ConfigDict(dict(mode="box", p_mak=0.5)))


def test_colour_clusters_are_deterministic_with_k_classes(config):
    for path in sample_image_paths()[:2]:
        image = load_image(path)
        labels = colour_clusters(image, 6)
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
        assert set(np.unique(labels)) == set(range(6))
        np.testing.assert_array_equal(labels, colour_clusters(image.copy(), 6))
        lum = image.astype(np.float64) @ [0.299, 0.587, 0.114]
        means = [lum[labels == c].mean() for c in range(6)]
        assert means[0] < means[-1]  # numbered by brightness
    # batches: a function of (seed, step, process), the same images as the unlabelled pipeline
    data = build_image_data(config.data)
    again = build_image_data(config.data)
    batch = data.train_batch(5)
    assert batch["semantic"].dtype == np.int32 and batch["semantic"].shape == batch["image"].shape[:3]
    assert batch["semantic"].max() < K
    for key in ("image", "semantic"):
        np.testing.assert_array_equal(batch[key], again.train_batch(5)[key])
    plain = build_image_data(apply_overrides(config, ["data.labels="]).data)
    np.testing.assert_array_equal(batch["image"], plain.train_batch(5)["image"])
    assert not np.array_equal(batch["image"], data.train_batch(6)["image"])
    evals = next(data.eval_batches(2))
    assert evals["semantic"].shape == evals["image"].shape[:3]
    # the label crop is the image crop: labels that are a function of the pixels stay so
    image = load_image(sample_image_paths()[0])
    labels = (image[..., 0] // 64).astype(np.uint8)
    for seed in range(4):
        crop, lab = random_crop_pair(image, labels, np.random.default_rng(seed), 48, True)
        np.testing.assert_array_equal(lab, crop[..., 0] // 64)
    # scaled windows: labels resized nearest, images bicubic; flat blocks agree away from their edges
    blocks = np.repeat(np.repeat(np.random.default_rng(0).integers(0, 4, (12, 16)), 32, 0), 32, 1).astype(np.uint8)
    image = np.repeat(blocks[..., None] * 60, 3, -1).astype(np.uint8)
    for seed in range(3):
        crop, lab = random_crop_pair(image, blocks, np.random.default_rng(seed), 48, True, (0.5, 0.5))
        assert crop.shape == (48, 48, 3) and lab.shape == (48, 48)
        assert np.mean(lab == np.round(crop[..., 0] / 60)) > 0.9
    with pytest.raises(DataError, match="label 7 >= data.label_classes=4"):
        check_labels(np.full((2, 2), 7), (2, 2), 4)
    np.testing.assert_array_equal(check_labels(np.full((2, 2), 7), (2, 2), 4, outside=0), 0)
    with pytest.raises(DataError, match="does not match"):
        check_labels(np.zeros((2, 3), np.uint8), (2, 2), 4)
    for classes in (300, 0, True):  # 290 of 300 classes came back as 290 % 256 = 34
        with pytest.raises(DataError, match=r"integer in \[1, 256\]"):
            check_labels(np.full((3, 3), 290), (3, 3), classes)
    with pytest.raises(DataError, match="not one of 4"):
        check_labels(np.full((2, 2), 7), (2, 2), 4, outside=4)


def test_tfds_cityscapes_keys(repo, monkeypatch):
    """paper_sc reads tfds cityscapes' image_left and segmentation_label ([H, W, 1], label ids)."""
    import tensorflow_datasets as tfds

    rng = np.random.default_rng(0)
    examples = [{"image_id": f"aachen_{i}", "image_left": rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
                 "segmentation_label": rng.integers(0, 40, (48, 64, 1), dtype=np.uint8)} for i in range(3)]
    calls = []

    def data_source(name, split, data_dir=None, download=True):
        calls.append((name, split, download))
        return examples

    monkeypatch.setattr(tfds, "data_source", data_source)
    config = load_config(str(repo / "configs" / "gc.py") + ":paper_sc")
    config = apply_overrides(config, ["data.crop=32", "data.downscale=(1.0, 1.0)", "data.batch_size=2",
                                      "data.eval_crop=32", "data.flip=False"])
    data = build_image_data(config.data)
    assert calls == [("cityscapes/semantic_segmentation", "train", False),
                     ("cityscapes/semantic_segmentation", "validation", False)]
    batch = data.train_batch(0)
    assert batch["image"].shape == (2, 32, 32, 3) and batch["semantic"].shape == (2, 32, 32)
    assert batch["semantic"].max() < 34  # ids >= 34 become data.label_outside = 0
    # without flips or scaling the crop is a window of an example, label map and image alike
    found = False
    for ex in examples:
        lab = np.where(ex["segmentation_label"][..., 0] >= 34, 0, ex["segmentation_label"][..., 0])
        for y in range(48 - 31):
            for x in range(64 - 31):
                if np.array_equal(ex["image_left"][y:y + 32, x:x + 32], batch["image"][0]):
                    np.testing.assert_array_equal(lab[y:y + 32, x:x + 32], batch["semantic"][0])
                    found = True
    assert found
    # evaluation at the scale it trains at (paper_sc: 0.5, 1024x2048 -> 512x1024): 48x64 -> 24x32, two
    # 16-pixel tiles an image instead of twelve; label maps by nearest neighbour, ids never blended
    from PIL import Image

    from jaxcomp.data.images import scale_image

    small = build_image_data(apply_overrides(config, ["data.eval_crop=16"]).data).eval_arrays()
    assert config.data.eval_downscale == 0.5 and small["image"].shape == (6, 16, 16, 3)
    lab0 = np.where(examples[0]["segmentation_label"][..., 0] >= 34, 0, examples[0]["segmentation_label"][..., 0])
    np.testing.assert_array_equal(small["image"][0], scale_image(examples[0]["image_left"], 0.5)[:16, :16])
    np.testing.assert_array_equal(small["semantic"][0], scale_image(lab0, 0.5, Image.NEAREST)[:16, :16])
    assert set(np.unique(small["semantic"][0])) <= set(np.unique(lab0))
    full = build_image_data(apply_overrides(config, ["data.eval_crop=16", "data.eval_downscale=1.0"]).data)
    assert len(full.eval_arrays()["image"]) == 36
    monkeypatch.setattr(tfds, "data_source", lambda *a, **k: [{"image": examples[0]["image_left"]}])
    with pytest.raises(DataError, match="no 'image_left'"):
        build_image_data(config.data).train_batch(0)


def test_sc_training_through_the_trainer(config, tmp_path):
    config = apply_overrides(config, ["steps=2", "eval_every=2", "checkpoint_every=2"])
    task, data = tasks.build(config)
    final, metrics = trainer.train(config, str(tmp_path / "sc"), task, data, progress=False)
    assert int(final.step) == 2
    assert {"mse", "mse_preserved", "preserved", "bpp_prior", "ms_ssim"} <= set(metrics)
    assert all(np.isfinite(v) for v in metrics.values())
    init = trainer.init_state(task, data.train_batch(0), jax.random.split(jax.random.PRNGKey(config.seed))[0],
                              trainer.make_mesh())  # the trainer's own compiled init, reused
    for player in ("generator", "discriminator"):  # step 0 warm-up, step 1 both players
        assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init.params[player]),
                                                            jax.tree.leaves(final.params[player]))), player
    with pytest.raises(ValueError, match="label map 'semantic'"):
        task.init(jax.random.PRNGKey(0), {"image": np.zeros((1, 32, 32, 3), np.uint8)})
    with pytest.raises(ValueError, match="label_classes=5"):
        tasks.build_task(apply_overrides(config, ["data.label_classes=5"]))


def test_the_latent_sampler_refuses_an_sc_model_before_it_writes(config, state, repo, tmp_path, capsys):
    """An SC model as config.gc_model failed at init, inside the workdir (config.json and checkpoints/
    left behind), with a message that did not say the sampler needs a global GC model."""
    from experiments.train import main as train_main
    from jaxcomp.modelfile import export_params

    model = str(tmp_path / "sc_tiny.msgpack")
    export_params(state.params, config, model, {"note": "untrained, for tests"})
    workdir = tmp_path / "sampler"
    assert train_main(["--config", str(repo / "configs" / "gc_sampler.py") + ":tiny", "--workdir", str(workdir),
                       f"--config.gc_model={model}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "a selective (SC) model" in err and "needs a global, non-selective GC model" in err and model in err
    assert not workdir.exists()


def test_label_map_coder_is_lossless_and_adapts():
    rng = np.random.default_rng(0)
    flat = np.repeat(np.repeat(rng.integers(0, 5, (6, 5)), 8, 0), 8, 1)  # 48x40, piecewise constant
    for labels, k in ((flat, 5), (rng.integers(0, 2, (7, 3)), 2), (np.zeros((1, 1), int), 3)):
        words = sc_codec.encode_label_map(labels, k)
        np.testing.assert_array_equal(sc_codec.decode_label_map(words, labels.shape, k), labels)
    bits = 32 * len(sc_codec.encode_label_map(flat, 5))
    assert bits < 0.15 * flat.size * np.log2(5)  # far below the raw code
    assert bits == pytest.approx(sc_codec.label_map_bits(flat, 5), abs=64)


def test_sc_codec_roundtrip_and_part_bits(config, state, photo):
    image, labels = photo
    codec = sc_codec.SCCodec(gc.spec_from_config(config.model), state.params["generator"])
    heat = sc_codec.heatmap_from_classes(labels, [0, 1], K)
    assert heat.shape == (5, 6) and 0 < heat.mean() < 1
    data = codec.compress(image, labels, heat)
    decoded, dec_labels, dec_heat = codec.decompress(data, maps=True)
    assert decoded.shape == image.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, codec.reconstruct(image, labels, heat))
    np.testing.assert_array_equal(dec_labels, labels)
    np.testing.assert_array_equal(dec_heat, heat)
    bits = codec.part_bits(data)
    assert bits["map"] + bits["heatmap"] + bits["latent"] + bits["header"] == bits["total"] == 8 * len(data)
    full = codec.part_bits(codec.compress(image, labels))
    c = config.model.channels
    assert full["latent"] <= 32 * (np.ceil(30 * c * np.log2(5) / 32) + 2)  # the 30 cells' symbols
    assert bits["latent"] <= 32 * (np.ceil(heat.sum() * c * np.log2(5) / 32) + 2) < full["latent"]
    # nothing preserved: no latent bits, and the image is synthesised from the map alone
    none = np.zeros_like(heat)
    empty = codec.compress(image, labels, none)
    assert codec.part_bits(empty)["latent"] <= 64
    other = np.ascontiguousarray(image[::-1, ::-1])
    np.testing.assert_array_equal(codec.decompress(empty), codec.decompress(codec.compress(other, labels, none)))
    gray = image[..., 1]
    assert codec.decompress(codec.compress(gray, labels, heat)).shape == gray.shape


def test_sc_codec_refuses_bad_input(config, state, photo):
    image, labels = photo
    spec = gc.spec_from_config(config.model)
    codec = sc_codec.SCCodec(spec, state.params["generator"])
    heat = sc_codec.heatmap_from_classes(labels, [2], K)
    bad_inputs = [
        (None, heat, "needs the image's label map"),
        (labels[:, :80], heat, r"shape \(72, 80\)"),
        (labels.astype(np.float32), heat, "integer classes"),
        (labels.astype(bool), heat, "integer classes"),
        (labels.astype(np.int64) + K - 1, heat, "lie in 0..3"),
        (labels.astype(np.int64) - 1, heat, "lie in 0..3"),
        (labels, heat[:4], r"needs \(5, 6\)"),
        (labels, heat.astype(np.float32), "binary"),
        (labels, heat * 2, "binary"),
    ]
    for semantic, heatmap, message in bad_inputs:
        with pytest.raises(ValueError, match=message):
            codec.compress(image, semantic, heatmap)
    with pytest.raises(ValueError, match="uint8"):
        codec.compress(image.astype(np.float32), labels, heat)
    symbols = codec.analyse(image, labels)
    with pytest.raises(ValueError, match=r"outside 0\.\.4"):
        codec.synthesise(symbols + 5, heat, labels)
    with pytest.raises(ValueError, match=r"needs symbols and a heatmap of \(5, 6\) positions"):
        codec.synthesise(symbols[:4], heat[:4], labels)
    data = codec.compress(image, labels, heat)
    with pytest.raises(TruncatedError):
        codec.decompress(data[:-5])
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 8
    with pytest.raises(BitstreamError, match="corrupt"):
        codec.decompress(bytes(flipped))
    with pytest.raises(ModelMismatchError):
        sc_codec.SCCodec(spec, jax.tree.map(lambda a: a * 1.01, state.params["generator"])).decompress(data)
    meta, payloads = unpack(data, "gc", codec.fingerprint)
    with pytest.raises(BitstreamError, match="checksum"):  # pixels that differ from the encoder's
        codec.decompress(pack("gc", codec.fingerprint, dict(meta, c=meta["c"] ^ 1), payloads))
    with pytest.raises(BitstreamError, match="not an SC bitstream"):
        codec.decompress(pack("gc", codec.fingerprint, {k: v for k, v in meta.items() if k != "sc"}, payloads))
    with pytest.raises(BitstreamError, match="invalid"):
        codec.decompress(pack("gc", codec.fingerprint, meta, payloads[:2]))
    codec.numerics, saved = "tpu", codec.numerics
    try:
        with pytest.raises(BitstreamError, match="numerics"):
            codec.decompress(data)
    finally:
        codec.numerics = saved
    # a GC codec cannot take an SC model, nor an SC codec a GC one
    with pytest.raises(ValueError, match="SCCodec"):
        gc.GCCodec(spec, state.params["generator"])
    with pytest.raises(ValueError, match="GCCodec"):
        sc_codec.SCCodec(gc.GCSpec(channels=spec.channels), state.params["generator"])

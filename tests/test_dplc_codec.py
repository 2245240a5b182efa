"""The DPLC codec: exact roundtrips under the stored noise seed, the fixed-rate payload, 0 bits,
refusals, the command line, and G frozen in stage 2. One tiny stage-1 generator and one tiny
stage-2 model (trained a few steps by the trainer, exported) serve the whole module."""

import importlib.util
import json
import math
import re
import types

import jax
import numpy as np
import pytest
from PIL import Image

from jaxcomp import cli, tasks
from jaxcomp import train as trainer
from jaxcomp.codecs.dplc import codec as dc
from jaxcomp.codecs.dplc import model as dm
from jaxcomp.codecs.dplc.task import DPLCGeneratorTask, DPLCTask
from jaxcomp.coding import (
    BitstreamError,
    ChecksumError,
    ModelMismatchError,
    TruncatedError,
    UnsupportedError,
    pack,
    unpack,
)
from jaxcomp.configs import apply_overrides, load_config
from jaxcomp.data import load_image, sample_image_paths
from jaxcomp.modelfile import ModelLoadError, export_params, load_model
from jaxcomp.train import TwoPlayerState


def _config(repo, variant, *overrides):
    return apply_overrides(load_config(str(repo / "configs" / "dplc.py") + ":" + variant), list(overrides))


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _equal(a, b):
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b)))


@pytest.fixture(scope="module")
def models(repo, tmp_path_factory):
    """The tiny stage-1 generator (initialised, exported: the codec needs a G, not a good one) and
    ``tiny_compress`` trained from it for 2 steps by the trainer, exported by experiments/export_model."""
    # experiments/ is not a package on the path of a bare `pytest`: load the script from its file
    spec = importlib.util.spec_from_file_location("export_model", repo / "experiments" / "export_model.py")
    export_model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_model)
    root = tmp_path_factory.mktemp("dplc")
    g_config = _config(repo, "tiny")
    batch = {"image": np.zeros((4, 16, 16, 3), np.uint8)}
    g_state = trainer.jit_init(DPLCGeneratorTask(g_config).init)(jax.random.PRNGKey(0), batch)
    generator = str(root / "generator.msgpack")
    export_params(g_state.params, g_config, generator, {"note": "untrained, for tests"})

    config = _config(repo, "tiny_compress", "steps=2", "eval_every=0", "checkpoint_every=2",
                     f"compress.generator={generator}")
    task, data = tasks.build(config)
    workdir = str(root / "compress")
    steps = {}  # the generator player's parameters after each step, on the host

    def keep(step, state, _):
        steps[step] = jax.tree.map(np.asarray, state.params["generator"])

    trainer.train(config, workdir, task, data, callbacks=[keep], progress=False)
    model = str(root / "dplc_tiny.msgpack")
    assert export_model.main(["--workdir", workdir, "--out", model]) == 0
    return types.SimpleNamespace(generator=generator, workdir=workdir, model=model, config=config, batch=batch,
                                 steps=steps)


@pytest.fixture(scope="module")
def codec(models):
    return dc.load_codec(models.model)


@pytest.fixture(scope="module")
def gray(repo, tmp_path_factory):
    """An untrained grayscale stage-2 model whose rate fields all differ (m = 3, L = 4, nz = 8: g = 1,
    k = 8), exported, and its codec."""
    config = _config(repo, "tiny_compress", "model.channels=1", "model.code_channels=3", "model.levels=4",
                     "compress.decoder=train", "compress.decoder_init=scratch")
    task = DPLCTask(config)
    state = trainer.jit_init(task.init)(jax.random.PRNGKey(3), {"image": np.zeros((1, 16, 16, 1), np.uint8)})
    path = str(tmp_path_factory.mktemp("gray") / "gray.msgpack")
    export_params(state.params, config, path, {"note": "untrained, for tests"})
    return types.SimpleNamespace(path=path, codec=dc.load_codec(path), config=config)


@pytest.fixture(scope="module")
def photo():
    return load_image(sample_image_paths()[1])[40:56, 60:76]  # uint8 [16, 16, 3]


def _decoded_by_the_task(config, params, image, seed):
    """``G(B(E(x), u))`` in float ``[0, 255]`` by the training task's own functions, and E's symbols."""
    task = DPLCTask(config, generator_params=params["generator"]["decoder"])
    spec = task.spec

    @jax.jit
    def decode(params, image):
        code, symbols = task.encode(params, dm.to_model_range(image))
        z = task.latent(params, code, dm.map_noise(spec, jax.random.PRNGKey(seed), 1))
        return dm.to_pixels(task.decode(params, z)), symbols

    image = np.reshape(image, (1, spec.image_size, spec.image_size, spec.channels))
    pixels, symbols = decode(params, image)
    return np.asarray(pixels)[0], np.asarray(symbols)[0]


def test_roundtrip_decodes_the_reconstruction_of_the_stored_seed(codec, models, photo):
    data = codec.compress(photo)
    meta, _ = unpack(data, "dplc", codec.fingerprint)
    assert meta["s"] == dc.default_seed(photo)
    decoded = codec.decompress(data)
    assert decoded.shape == photo.shape and decoded.dtype == np.uint8
    assert decoded.flags.writeable and codec.reconstruct(photo).flags.writeable  # the caller's arrays
    np.testing.assert_array_equal(decoded, codec.reconstruct(photo, meta["s"]))
    np.testing.assert_array_equal(codec.decompress(data), decoded)  # twice the same
    assert codec.compress(photo) == data  # the default seed comes from the image: one image, one file
    # the same model from its training workdir decodes the file bit-exactly
    np.testing.assert_array_equal(dc.load_codec(models.workdir).decompress(data), decoded)
    # a caller's seed is stored and used; the decoder is stochastic, so seeds give different images
    for seed in (0, 7, 2**32 - 1):
        coded = codec.compress(photo, seed=seed)
        assert unpack(coded, "dplc", codec.fingerprint)[0]["s"] == seed
        np.testing.assert_array_equal(codec.decompress(coded), codec.reconstruct(photo, seed))
    assert len({codec.reconstruct(photo, s).tobytes() for s in range(4)}) > 1


@pytest.mark.parametrize("which", ["trained", "gray"])
def test_codec_computes_what_the_task_trains(which, models, codec, gray, photo):
    """The decoded pixels are G(B(E(x), u)) as the stage-2 task computes it, rounded, with u the
    task's ``map_noise`` of the stored seed; the symbols are E's."""
    path, c, image = (models.model, codec, photo) if which == "trained" else (gray.path, gray.codec, photo[..., 1])
    config, params, _ = load_model(path, task="dplc")
    seed = 12345
    expected, symbols = _decoded_by_the_task(config, params, image, seed)
    np.testing.assert_array_equal(c.analyse(image), symbols)
    decoded = c.reconstruct(image, seed).reshape(expected.shape).astype(np.float32)
    assert np.abs(decoded - expected).max() <= 0.5 + 1e-3


def test_payload_is_the_fixed_rate(codec, gray, photo):
    """The payload is the uniform ANS code of the g*g*m symbols: at most ceil(bits / 32) + 1 words for
    m * g^2 * log2(L) bits; the file is the container around it."""
    for c, image in ((codec, photo), (gray.codec, photo[..., 0])):
        data = c.compress(image)
        meta, payloads = unpack(data, "dplc", c.fingerprint)
        bits = c.spec.code_channels * c.spec.grid ** 2 * math.log2(c.spec.levels)
        assert c.bits == bits and c.bpp == bits / c.spec.image_size ** 2
        assert len(payloads[0]) <= 4 * (math.ceil(bits / 32) + 1)
        meta_bytes = len(json.dumps(meta, sort_keys=True, separators=(",", ":")))
        assert len(data) == 26 + meta_bytes + 2 + 4 + len(payloads[0]) + 4
    # the paper's and the MNIST sweep's rates (g = 4: m = 8, L = 2; g = 2: m up to 32, L = 4), and L = 5
    rng = np.random.default_rng(0)
    for g, m, levels in ((4, 8, 2), (2, 1, 2), (2, 4, 2), (2, 16, 2), (2, 32, 4), (2, 3, 5), (1, 1, 3)):
        symbols = rng.integers(0, levels, (g, g, m))
        payload = dc.encode_symbols(symbols, levels)
        bits = m * g * g * math.log2(levels)
        # at most: the ANS coder can end in a state it does not need to write (1 symbol 0 of 3: no bytes)
        assert len(payload) <= 4 * (math.ceil(bits / 32) + 1), (g, m, levels)
        np.testing.assert_array_equal(dc.decode_symbols(payload, symbols.size, levels), symbols.reshape(-1))


def test_zero_bits_decodes_a_sample_of_the_generator(repo, models, photo, tmp_path):
    """At 0 bits the file carries only the seed: the decoded image is G(B(u)), whatever the image."""
    config = _config(repo, "tiny_compress", "model.code_channels=0", f"compress.generator={models.generator}")
    other = "transposed" if config.model.upsample == "resize" else "resize"  # a G of other layers: named
    with pytest.raises(ModelLoadError, match=rf"its generator has model\.upsample=.* but this config has '{other}'"):
        tasks.build_task(apply_overrides(config, [f"model.upsample={other}"]))
    task, _ = tasks.build_task(config)
    state = trainer.jit_init(task.init)(jax.random.PRNGKey(1), models.batch)
    path = str(tmp_path / "zero.msgpack")
    export_params(state.params, config, path, {"note": "0 bits, for tests"})
    zero = dc.load_codec(path)
    assert zero.bits == 0 and zero.bpp == 0
    data = zero.compress(photo)
    meta, payloads = unpack(data, "dplc", zero.fingerprint)
    assert payloads == [b""] and set(meta) == {"c", "n", "s"}
    decoded = zero.decompress(data)
    np.testing.assert_array_equal(decoded, zero.reconstruct(photo))
    np.testing.assert_array_equal(zero.decompress(data), decoded)
    other = np.ascontiguousarray(photo[::-1])
    np.testing.assert_array_equal(zero.decompress(zero.compress(other, seed=meta["s"])), decoded)
    assert not np.array_equal(zero.decompress(zero.compress(photo, seed=meta["s"] ^ 1)), decoded)
    # the sample is of the stage-1 generator: G's parameters are the loaded ones
    stage1 = load_model(models.generator, task="dplc_generator")[1]
    assert _equal(zero.params["decoder"], stage1["generator"]["decoder"])


def test_refuses_images_it_does_not_code(codec, gray, photo):
    for bad in (photo[:8], photo[..., :1], photo[..., 0], np.zeros((16, 16, 4), np.uint8),
                np.zeros((32, 32, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"takes uint8 \[16, 16, 3\], got shape " + re.escape(str(bad.shape))):
            codec.compress(bad)
    for bad in (photo.astype(np.float32), np.full((16, 16, 3), np.nan), photo.astype(np.int64)):
        with pytest.raises(ValueError, match=r"8-bit images: this model takes uint8 \[16, 16, 3\]"):
            codec.compress(bad)
    with pytest.raises(ValueError, match=r"takes uint8 \[16, 16\] or \[16, 16, 1\] \(grayscale\), got shape"):
        gray.codec.compress(photo)
    with pytest.raises(ValueError, match=r"seed is an integer in \[0, 2\^32\)"):
        codec.compress(photo, seed=2**32)
    with pytest.raises(ValueError, match="seed"):
        codec.compress(photo, seed=-1)
    symbols = codec.analyse(photo)  # symbols outside the centres were decoded as others
    levels = codec.spec.levels
    for bad, message in ((symbols * 0 - 1, rf"outside 0\.\.{levels - 1}"), (symbols + levels, "outside"),
                         (symbols + 0.7, "integer values")):
        with pytest.raises(ValueError, match=message):
            codec.synthesise(bad, 0)
    # the grayscale model takes [S, S] and [S, S, 1] and gives back what it was given
    gray_image = photo[..., 2]
    assert gray.codec.decompress(gray.codec.compress(gray_image)).shape == (16, 16)
    assert gray.codec.decompress(gray.codec.compress(gray_image[..., None])).shape == (16, 16, 1)


def _repack(codec, data, **changes):
    """``data`` with its meta entries or payload changed, in a valid container (its CRC recomputed)."""
    meta, payloads = unpack(data, "dplc", codec.fingerprint)
    payloads = [changes.pop("payload")] if "payload" in changes else payloads
    meta.update(changes)
    return pack("dplc", codec.fingerprint, {k: v for k, v in meta.items() if v is not None}, payloads)


def test_refuses_files_it_cannot_decode_exactly(codec, gray, photo):
    data = codec.compress(photo)
    with pytest.raises(TruncatedError, match="truncated"):
        codec.decompress(data[:-3])
    flipped = bytearray(data)
    flipped[-5] ^= 1  # the payload's last byte
    with pytest.raises(ChecksumError, match="corrupt"):
        codec.decompress(bytes(flipped))
    for other in ("gc", "l3c"):
        with pytest.raises(UnsupportedError, match=f"codec '{other}', not 'dplc'"):
            codec.decompress(pack(other, codec.fingerprint, {"h": 16, "w": 16}, [b""]))
    with pytest.raises(ModelMismatchError, match="another model"):
        gray.codec.decompress(data)
    with pytest.raises(BitstreamError, match="not a jaxcomp bitstream"):
        codec.decompress(b"P6 16 16 255\n")
    saved, codec.numerics = codec.numerics, "tpu"
    try:
        with pytest.raises(BitstreamError, match="compressed with cpu/.* numerics"):
            codec.decompress(data)
    finally:
        codec.numerics = saved
    # valid containers whose contents do not decode to the encoder's pixels
    meta, payloads = unpack(data, "dplc", codec.fingerprint)
    with pytest.raises(BitstreamError, match="checksum"):
        codec.decompress(_repack(codec, data, c=meta["c"] ^ 1))
    with pytest.raises(BitstreamError, match="checksum"):
        codec.decompress(_repack(codec, data, s=meta["s"] ^ 1))  # the decoder's noise is the stored seed's
    symbols = codec.analyse(photo)
    with pytest.raises(BitstreamError, match="checksum"):
        codec.decompress(_repack(codec, data, payload=dc.encode_symbols(1 - symbols, 2)))
    with pytest.raises(BitstreamError, match="32-bit words"):
        codec.decompress(_repack(codec, data, payload=payloads[0][:-1]))
    with pytest.raises(BitstreamError, match="holds more than was decoded"):  # words left over
        codec.decompress(_repack(codec, data, payload=payloads[0] + b"\0\0\0\1"))
    for bad in (dict(s=None), dict(s=-1), dict(c="x"), dict(d=2), dict(n=None)):
        with pytest.raises(BitstreamError, match="metadata"):
            codec.decompress(_repack(codec, data, **bad))


def test_load_codec_refuses_other_models(models, tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="holds a 'dplc_generator' model, not 'dplc'.*needs a stage-2 model"):
        dc.load_codec(models.generator)
    from jaxcomp.codecs.pretrained import DEFAULT_L3C

    with pytest.raises(ModelLoadError, match="holds a 'l3c' model, not 'dplc'"):
        dc.load_codec(DEFAULT_L3C)
    with pytest.raises(ModelLoadError, match="not found"):
        dc.load_codec(str(tmp_path / "missing.msgpack"))
    monkeypatch.setattr(dc, "PRETRAINED_DIR", str(tmp_path))
    with pytest.raises(ModelLoadError, match="no shipped DPLC model dplc_mnist.msgpack is installed"):
        dc.load_codec()
    assert dc.DEFAULT_MODEL in dc.SHIPPED and dc.shipped_model("mnist").endswith("dplc_mnist.msgpack")


def test_codec_refuses_parameters_of_another_architecture(codec, gray):
    """The colour model's parameters under the grayscale spec, or with a player's tree missing, are
    refused by name (:func:`jaxcomp.modelfile.check_params`), before any tracing."""
    with pytest.raises(ModelLoadError, match=r"do not fit config\.model \(DPLCSpec\(.*instead of"):
        dc.DPLCCodec(gray.codec.spec, codec.params)
    params = {k: v for k, v in codec.params.items() if k != "map"}
    with pytest.raises(ModelLoadError, match="missing map/"):
        dc.DPLCCodec(codec.spec, params)
    extra = dict(codec.params, decoder={**codec.params["decoder"], "Dense_99": {"kernel": np.zeros((2, 2))}})
    with pytest.raises(ModelLoadError, match="unused decoder/Dense_99/kernel"):
        dc.DPLCCodec(codec.spec, extra)
    assert dc.DPLCCodec(codec.spec, codec.params).bits == codec.bits


def test_command_line_roundtrip(models, codec, gray, photo, tmp_path, capsys, monkeypatch):
    Image.fromarray(photo).save(tmp_path / "p.png")
    args = ["--checkpoint", models.model, "--cache-dir", ""]
    assert cli.main(["compress", "--codec", "dplc", *args, str(tmp_path / "p.png"), str(tmp_path / "p.jxc")]) == 0
    rate = f"{8 * (tmp_path / 'p.jxc').stat().st_size / (16 * 16):.4f} bits per pixel"
    assert rate in capsys.readouterr().out
    assert cli.main(["decompress", *args, str(tmp_path / "p.jxc"), str(tmp_path / "d.png")]) == 0
    assert rate in capsys.readouterr().out  # a lossy file's rate, per pixel, decoding too
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d.png")), codec.reconstruct(photo))
    # without --checkpoint: a file of a model that is not shipped, and no shipped model to compress with
    assert cli.main(["decompress", "--cache-dir", "", str(tmp_path / "p.jxc"), str(tmp_path / "e.png")]) == 1
    assert "not shipped" in capsys.readouterr().err
    monkeypatch.setattr(dc, "PRETRAINED_DIR", str(tmp_path))
    assert cli.main(["compress", "--codec", "dplc", "--cache-dir", "", str(tmp_path / "p.png"),
                     str(tmp_path / "q.jxc")]) == 2
    assert "no shipped DPLC model dplc_mnist.msgpack" in capsys.readouterr().err
    # grayscale: a gray PNG loads as [S, S] and decodes to a gray PNG; an RGB PNG of equal channels is gray
    g_args = ["--checkpoint", gray.path, "--cache-dir", "", "--quiet"]
    Image.fromarray(photo[..., 1]).save(tmp_path / "g.png")
    Image.fromarray(np.repeat(photo[..., 1:2], 3, -1)).save(tmp_path / "g3.png")
    for name in ("g", "g3"):
        assert cli.main(["compress", "--codec", "dplc", *g_args, str(tmp_path / f"{name}.png"),
                         str(tmp_path / f"{name}.jxc")]) == 0
        assert cli.main(["decompress", *g_args, str(tmp_path / f"{name}.jxc"), str(tmp_path / f"{name}d.png")]) == 0
        out = Image.open(tmp_path / f"{name}d.png")
        assert out.mode == "L"
        np.testing.assert_array_equal(np.asarray(out), gray.codec.reconstruct(photo[..., 1]))
    assert cli.main(["compress", "--codec", "dplc", *g_args, str(tmp_path / "p.png"), str(tmp_path / "x.jxc")]) == 1
    assert "takes uint8 [16, 16] or [16, 16, 1] (grayscale), got shape (16, 16, 3)" in capsys.readouterr().err


def test_generator_stays_frozen_in_stage_2(repo, models):
    """DPLC (compress.decoder='frozen'): after the trainer's steps G is bit-equal to the loaded stage-1
    generator while E and B moved; the baselines' compress.decoder='train' moves G."""
    loaded = load_model(models.generator, task="dplc_generator")[1]["generator"]["decoder"]
    trained = load_model(models.model, task="dplc")[1]["generator"]
    assert _equal(trained["decoder"], loaded)
    first, last = models.steps[1], models.steps[2]
    assert _equal(last["decoder"], trained["decoder"]) and _equal(first["decoder"], loaded)
    for part in ("encoder", "map"):
        assert not _equal(first[part], last[part]), part
    config = apply_overrides(models.config, ["compress.decoder=train"])
    task, _ = tasks.build_task(config)
    # the trained E, B and critic, G back at the stage-1 generator, and this variant's optimizers
    params = load_model(models.model, task="dplc")[1]
    state = TwoPlayerState.create(dict(params["generator"], decoder=loaded), params["discriminator"],
                                  task.tx_g, task.tx_d)
    step = trainer.jit_init(task.train_step)  # compiles sooner; the same values as jax.jit
    batch = {"image": np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)}
    for i in range(2):
        state, _ = step(state, batch, jax.random.PRNGKey(i))
    assert not _equal(state.params["generator"]["decoder"], loaded)


def test_a_file_decodes_the_same_whatever_the_processs_jax_settings(codec, photo):
    """What a DPLC file decodes to does not depend on process-wide JAX settings its stream does not record:
    with 64-bit floats on, the non-partitionable threefry, or another default PRNG (rbg), the same bytes
    are written and decoded (the noise was drawn in float64 under x64 and by the default PRNG, so such a
    file failed its checksum elsewhere; rbg was a raw TypeError)."""
    data, decoded = codec.compress(photo), codec.decompress(codec.compress(photo))
    with jax.enable_x64(True), jax.threefry_partitionable(False), jax.default_prng_impl("rbg"):
        fresh = dc.DPLCCodec(codec.spec, codec.params)  # its functions traced under these settings
        assert fresh.compress(photo) == data
        np.testing.assert_array_equal(fresh.decompress(data), decoded)

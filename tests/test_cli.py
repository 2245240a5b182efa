"""The jaxcomp command: files and folders, exit codes, no overwrites, no tracebacks."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from jaxcomp import cli, xla
from jaxcomp.data import load_image, sample_image_paths
from jaxcomp.modelfile import export_params


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, l3c_tiny_config, l3c_tiny_params):
    params = l3c_tiny_params
    path = str(tmp_path_factory.mktemp("model") / "tiny.msgpack")
    export_params(params, l3c_tiny_config, path, {"note": "untrained, for tests"})
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for i, p in enumerate(sample_image_paths()[:2]):
        Image.fromarray(load_image(p)[:40, :56]).save(folder / f"p{i}.png")
    Image.fromarray(load_image(sample_image_paths()[2])[:24, :24, 0]).save(folder / "gray.png")
    return folder


def test_folder_roundtrip_is_exact(model_file, photos, tmp_path, capsys):
    args = ["--checkpoint", model_file, "--tile", "32", "--quiet"]
    assert cli.main(["compress", str(photos), str(tmp_path / "c"), *args]) == 0
    args = ["--checkpoint", model_file, "--quiet"]  # decoding reads the tile from the file
    assert sorted(os.listdir(tmp_path / "c")) == ["gray.jxc", "p0.jxc", "p1.jxc"]
    assert cli.main(["decompress", str(tmp_path / "c"), str(tmp_path / "d"), *args]) == 0
    for name in ("p0", "p1", "gray"):
        a = np.asarray(Image.open(photos / f"{name}.png"))
        b = np.asarray(Image.open(tmp_path / "d" / f"{name}.png"))
        np.testing.assert_array_equal(a, b)
    # outputs are never overwritten silently
    assert cli.main(["decompress", str(tmp_path / "c"), str(tmp_path / "d"), *args]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["decompress", str(tmp_path / "c"), str(tmp_path / "d"), *args, "--force"]) == 0

    # a damaged file fails alone with a message; the others are still written
    data = (tmp_path / "c" / "p0.jxc").read_bytes()
    (tmp_path / "c" / "p0.jxc").write_bytes(data[: len(data) - 10])
    assert cli.main(["decompress", str(tmp_path / "c"), str(tmp_path / "e"), *args]) == 1
    err = capsys.readouterr().err
    assert "p0.jxc" in err and "truncated" in err
    assert sorted(os.listdir(tmp_path / "e")) == ["gray.png", "p1.png"]

    # two images of one name in one folder (p0.png, p0.bmp) would share p0.jxc: refused before anything is written
    twins = tmp_path / "twins"
    twins.mkdir()
    for ext in (".png", ".bmp"):
        Image.open(photos / "p0.png").save(twins / f"p0{ext}")
    assert cli.main(["compress", str(twins), str(tmp_path / "t"), *args]) == 2
    assert "would both be written to p0.jxc" in capsys.readouterr().err and not (tmp_path / "t").exists()

    # a grayscale image's rate counts the 3 equal channels L3C codes, and says so
    assert cli.main(["compress", str(photos / "gray.png"), str(tmp_path / "g.jxc"), *args[:2]]) == 0
    out, nbytes = capsys.readouterr().out, (tmp_path / "g.jxc").stat().st_size
    assert f"{8 * nbytes / (3 * 24 * 24):.3f} bits per subpixel (a grayscale image" in out
    assert f"{8 * nbytes / (24 * 24):.3f} bits per gray pixel" in out


def test_streams_of_earlier_shipped_l3c_models_decode_without_a_checkpoint(l3c_tiny_config, l3c_tiny_params,
                                                                           photos, tmp_path, monkeypatch, capsys):
    """``jaxcomp decompress`` without ``--checkpoint`` decodes a stream written by a model shipped
    before the current one (``pretrained.PREVIOUS_L3C``, picked by the stream's fingerprint), so
    replacing the shipped model loses no one's files; a stream of a model never shipped still fails
    with the hint to give its checkpoint, also when an earlier model's file is unreadable. (Tiny
    stand-ins for the shipped files.)"""
    import jax

    from jaxcomp.codecs import pretrained
    shifted = lambda d: jax.tree.map(lambda x: x + d, l3c_tiny_params)  # noqa: E731
    export_params(l3c_tiny_params, l3c_tiny_config, str(tmp_path / "current.msgpack"), {})
    export_params(shifted(0.01), l3c_tiny_config, str(tmp_path / "earlier.msgpack"), {})
    export_params(shifted(0.02), l3c_tiny_config, str(tmp_path / "never_shipped.msgpack"), {})
    monkeypatch.setattr(pretrained, "DEFAULT_L3C", str(tmp_path / "current.msgpack"))
    monkeypatch.setattr(pretrained, "PRETRAINED_DIR", str(tmp_path))
    (tmp_path / "broken.msgpack").write_bytes(b"not a model")
    monkeypatch.setattr(pretrained, "PREVIOUS_L3C",
                        ("earlier.msgpack", "deleted_by_the_user.msgpack", "broken.msgpack"))
    src = str(photos / "p0.png")
    for model in ("earlier", "never_shipped", "current"):
        assert cli.main(["compress", src, str(tmp_path / f"{model}.jxc"), "--quiet", "--tile", "32",
                         "--checkpoint", str(tmp_path / f"{model}.msgpack")]) == 0
    for model in ("earlier", "current"):
        assert cli.main(["decompress", str(tmp_path / f"{model}.jxc"), str(tmp_path / f"{model}.png"),
                         "--quiet"]) == 0
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / f"{model}.png")), load_image(src))
    capsys.readouterr()
    assert cli.main(["decompress", str(tmp_path / "never_shipped.jxc"), str(tmp_path / "n.png"), "--quiet"]) == 1
    assert "another model" in capsys.readouterr().err and not os.path.exists(tmp_path / "n.png")


def test_usage_errors_exit_2(model_file, tmp_path, capsys):
    assert cli.main(["compress", str(tmp_path / "missing.png"), str(tmp_path / "x.jxc"),
                     "--checkpoint", model_file]) == 2
    assert "input not found" in capsys.readouterr().err
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    assert cli.main(["compress", str(img), str(tmp_path / "a.jxc"), "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "cannot load the l3c model" in capsys.readouterr().err
    # the tiny test model learns its representation: no top levels (only the subsampled RGB pyramid has them)
    assert cli.main(["compress", str(img), str(tmp_path / "a.jxc"), "--checkpoint", model_file,
                     "--top-levels", "1"]) == 2
    assert "top_levels > 0 needs a model whose step 0 is the coarser scale" in capsys.readouterr().err
    assert cli.main(["compress", str(img), str(tmp_path / "a.jxc"), "--codec", "cpm", "--top-levels", "0"]) == 2
    assert "--top-levels applies to the lossless codec only" in capsys.readouterr().err
    for extra, message in ((["--codec", "cpm", "--window", "32"], "--window applies to the lossless codec only"),
                           (["--tile", "0"], "--tile must be > 0 pixels, got 0"),
                           (["--codec", "gc", "--tile", "64"], "--tile applies to --codec l3c and cpm only")):
        assert cli.main(["compress", str(img), str(tmp_path / "a.jxc"), *extra]) == 2
        assert message in capsys.readouterr().err
    # a model whose .json was edited to another architecture: one clear error, not a Flax traceback
    import json
    import shutil

    edited = tmp_path / "edited.msgpack"
    shutil.copy(model_file, edited)
    notes = json.load(open(model_file[:-len(".msgpack")] + ".json"))
    notes["config"]["model"]["features"] += 4
    (tmp_path / "edited.json").write_text(json.dumps(notes))
    assert cli.main(["compress", str(img), str(tmp_path / "a.jxc"), "--checkpoint", str(edited)]) == 2
    assert "the model's parameters do not fit the architecture its .json describes" in capsys.readouterr().err
    assert not (tmp_path / "a.jxc").exists()


def test_outputs_that_would_lose_data_are_refused(model_file, tmp_path, capsys):
    """Refused before anything is written (exit 2): an output that is the input itself, even with
    --force (the source would be gone); an output in a folder that does not exist; a decompressed
    file named other than .png (its bytes are PNG); an L3C window the decoder does not accept
    (> 256: the file would be written and never decode); decoding options on decompress (they
    come from the file). A window of 256 (every level) writes a file that decodes exactly."""
    img = tmp_path / "a.png"
    Image.fromarray(load_image(sample_image_paths()[0])[:16, :24]).save(img)
    pixels = img.read_bytes()
    model = ["--checkpoint", model_file, "--quiet", "--tile", "32"]
    for argv, message in (
            (["compress", str(img), str(img), *model, "--force"], "is the input itself"),
            (["compress", str(img), str(tmp_path / "no" / "such" / "a.jxc"), *model], "does not exist"),
            (["compress", str(img), str(tmp_path / "w.jxc"), *model, "--window", "300"], "window must be"),
            (["compress", str(img), str(tmp_path / "w.jxc"), *model, "--window", "-1"], "window must be")):
        assert cli.main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert img.read_bytes() == pixels and not (tmp_path / "w.jxc").exists()
    assert cli.main(["compress", str(img), str(tmp_path / "w.jxc"), *model, "--window", "256"]) == 0
    stream = (tmp_path / "w.jxc").read_bytes()
    for argv, message in ((["decompress", str(tmp_path / "w.jxc"), str(tmp_path / "w.jxc"), "--force"],
                           "is the input itself"),
                          (["decompress", str(tmp_path / "w.jxc"), str(tmp_path / "w.jpg")], "name the output .png")):
        assert cli.main([*argv, "--checkpoint", model_file]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert (tmp_path / "w.jxc").read_bytes() == stream and not (tmp_path / "w.jpg").exists()
    with pytest.raises(SystemExit) as exit_:
        cli.main(["decompress", str(tmp_path / "w.jxc"), str(tmp_path / "w.png"), "--tile", "7"])
    assert exit_.value.code == 2
    assert cli.main(["decompress", str(tmp_path / "w.jxc"), str(tmp_path / "w.png"), "--checkpoint", model_file]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "w.png")), load_image(str(img)))


def test_console_errors_have_no_traceback(tmp_path, repo):
    (tmp_path / "junk.jxc").write_bytes(b"not a bitstream at all, just text")
    out = subprocess.run([sys.executable, "-m", "jaxcomp.cli", "decompress", str(tmp_path / "junk.jxc"),
                          str(tmp_path / "junk.png"), "--checkpoint", str(tmp_path / "missing.msgpack")],
                         capture_output=True, text=True, cwd=repo)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "checkpoint not found" in out.stderr


def test_compilation_cache_folder(tmp_path, monkeypatch, capsys):
    for var in ("JAXCOMP_CACHE_DIR", "JAX_COMPILATION_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert xla.default_cache_dir() == os.path.join(str(tmp_path), "jaxcomp", "xla")
    assert xla.driver_cache_dir("runs/x") == os.path.join("runs/x", "jax_cache")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/jax/own")
    # a cache carried between leased machines serves the drivers too, not only experiments.train
    assert xla.default_cache_dir() == xla.driver_cache_dir("runs/x") == "/jax/own"
    monkeypatch.setenv("JAXCOMP_CACHE_DIR", "/ours")
    assert xla.default_cache_dir() == xla.driver_cache_dir("runs/x") == "/ours"
    assert not xla.enable_compilation_cache("")
    (tmp_path / "a_file").write_text("x")
    assert not xla.enable_compilation_cache(str(tmp_path / "a_file" / "cache"))
    assert "no compilation cache" in capsys.readouterr().err
    # every function is stored (idle, the coder's compile in 0.2-0.3 s each: a 0.5 s threshold kept
    # none); the environment's setting wins
    import jax

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    before = {n: getattr(jax.config, n) for n in names}
    try:
        monkeypatch.delenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", raising=False)
        assert xla.enable_compilation_cache(str(tmp_path / "cache"))
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 7.0)
        monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "7")
        assert xla.enable_compilation_cache(str(tmp_path / "cache"))
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 7.0
    finally:
        for n, v in before.items():
            jax.config.update(n, v)


def test_second_call_reuses_the_compiled_model(model_file, tmp_path, repo):
    """A shell user's second ``jaxcomp`` call loads the model's compiled functions from the
    cache folder instead of compiling them again, and the stream still decodes exactly."""
    img = tmp_path / "a.png"
    Image.fromarray(load_image(sample_image_paths()[0])[:32, :40]).save(img)
    cache = tmp_path / "cache"
    # the command's own threshold decides what is stored: this tiny model's functions compile in
    # well under 0.5 s, which the old threshold never stored
    env = dict(os.environ, JAX_LOG_COMPILES="1")
    env.pop("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", None)
    common = ["--checkpoint", model_file, "--cache-dir", str(cache), "--force"]
    runs = []
    steps = (("compress", img, tmp_path / "a.jxc"), ("decompress", tmp_path / "a.jxc", tmp_path / "b.png"))
    for command, src, dst in steps:
        tile = ["--tile", "32"] if command == "compress" else []
        out = subprocess.run([sys.executable, "-m", "jaxcomp.cli", command, str(src), str(dst), *common, *tile],
                             capture_output=True, text=True, cwd=repo, env=env)
        assert out.returncode == 0, out.stderr
        runs.append(out.stderr)
    assert len(os.listdir(cache)) > 0
    # decoding runs the encoder's jitted model functions: the coder's four (jaxcomp.xla.CachedFunction,
    # compiled afresh by the encoder under names of their own) are loaded from the executables the
    # encoder stored, without tracing; the rest come from JAX's cache
    coder = ("symbols", "decode_scale", "step_raw", "scale_pmf")
    names = [(f"jaxcomp_fresh_l3c_{n}", f"_{n}_fn") for n in coder]
    traced = [[name for pair in names for name in pair if f"Finished tracing {name} for" in r] for r in runs]
    assert traced[0] and all(n.startswith("jaxcomp_fresh_") for n in traced[0]) and not traced[1], traced
    assert len(os.listdir(cache / "jaxcomp-executables")) >= len(traced[0])
    assert "Persistent compilation cache hit" in runs[1]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "b.png")), np.asarray(Image.open(img)))


@pytest.fixture(scope="module")
def cpm_model_file(tmp_path_factory, cpm_tiny_config, cpm_tiny_params):
    path = str(tmp_path_factory.mktemp("cpm") / "tiny_cpm.msgpack")
    export_params(cpm_tiny_params, cpm_tiny_config, path, {"note": "untrained, for tests"})
    return path


def test_lossy_codec_through_the_command(cpm_model_file, photos, tmp_path, capsys):
    from jaxcomp.codecs import cpm

    args = ["--checkpoint", cpm_model_file, "--quiet"]
    assert cli.main(["compress", "--codec", "cpm", str(photos), str(tmp_path / "c"), *args]) == 0
    assert cli.main(["decompress", str(tmp_path / "c"), str(tmp_path / "d"), *args]) == 0
    codec = cpm.load_codec(cpm_model_file)
    for name in ("p0", "gray"):
        original = np.asarray(Image.open(photos / f"{name}.png"))
        decoded = np.asarray(Image.open(tmp_path / "d" / f"{name}.png"))
        np.testing.assert_array_equal(decoded, codec.reconstruct(original))
    # without --checkpoint, a stream of a model that is not shipped fails clearly (exit 1)
    assert cli.main(["decompress", str(tmp_path / "c" / "p0.jxc"), str(tmp_path / "e.png")]) == 1
    assert "not shipped" in capsys.readouterr().err
    # an unusable model for the lossy codec is a usage error
    assert cli.main(["compress", "--codec", "cpm", str(photos / "p1.png"), str(tmp_path / "p1.jxc"),
                     "--checkpoint", "nope"]) == 2
    assert "cannot load the cpm model" in capsys.readouterr().err
    # --refine: the refined file decodes with the plain command, to the refined codec's reconstruction
    assert cli.main(["compress", "--codec", "cpm", "--refine", "3", str(photos / "p0.png"), str(tmp_path / "r.jxc"),
                     *args]) == 0
    assert cli.main(["decompress", str(tmp_path / "r.jxc"), str(tmp_path / "r.png"), *args]) == 0
    original = np.asarray(Image.open(photos / "p0.png"))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")),
                                  cpm.load_codec(cpm_model_file, refine=3).reconstruct(original))
    for bad, message in ((["--codec", "cpm", "--refine", "-2"], "--refine must be >= 0"),
                         (["--refine", "5"], "lossy codec only")):
        assert cli.main(["compress", *bad, str(photos / "p1.png"), str(tmp_path / "x.jxc"), *args]) == 2
        assert message in capsys.readouterr().err


def test_a_folder_of_new_sizes_in_a_compiled_bucket_compiles_nothing(model_file, photos, tmp_path):
    """After one folder (tiles of 20x28 computed at that bucket), a folder of two images of other
    sizes whose tiles fall in the same bucket (38x54 and 37x53: tiles padded to 20x28) compresses and
    decompresses, exactly, without a single new trace or compilation."""
    import jax

    args = ["--checkpoint", model_file, "--tile", "32", "--quiet", "--cache-dir", ""]
    assert cli.main(["compress", str(photos / "p0.png"), str(tmp_path / "p0.jxc"), *args]) == 0
    folder = tmp_path / "new_sizes"
    folder.mkdir()
    for (h, w), p in zip([(38, 54), (37, 53)], sample_image_paths()[3:5], strict=True):
        Image.fromarray(load_image(p)[:h, :w]).save(folder / f"{h}x{w}.png")
    traces = []
    listener = lambda event, duration, **kw: traces.append(kw) if event.endswith("jaxpr_trace_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        assert cli.main(["compress", str(folder), str(tmp_path / "c"), *args]) == 0
        assert cli.main(["decompress", str(tmp_path / "c"), str(tmp_path / "d"), *args[:2], *args[4:]]) == 0
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert traces == []
    for name in ("38x54", "37x53"):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "d" / f"{name}.png")),
                                      np.asarray(Image.open(folder / f"{name}.png")))

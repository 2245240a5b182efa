"""The trainer: resume after a kill, sharding over devices, evaluation masks, config errors."""

import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxcomp import tasks
from jaxcomp import train as trainer
from jaxcomp.configs import ConfigError, apply_overrides, load_config
from jaxcomp.data import DataError, build_image_data
from jaxcomp.files import read_jsonl
from jaxcomp.train import state as trainer_state


class Killed(Exception):
    pass


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


def test_kill_and_resume_continues_from_the_same_state(l3c_tiny_config, tmp_path):
    config = apply_overrides(l3c_tiny_config, ["steps=6", "checkpoint_every=2", "eval_every=0"])
    task, data = tasks.build(config)
    per_step = []  # the training log holds the mean of each log_every interval's steps
    reference, _ = trainer.train(apply_overrides(config, ["log_every=3"]), str(tmp_path / "straight"), task, data,
                                 progress=False, callbacks=[lambda step, state, m: per_step.append(jax.device_get(m))])
    logged = [r for r in read_jsonl(str(tmp_path / "straight" / "metrics.jsonl")) if r["split"] == "train"]
    assert [r["step"] for r in logged] == [3, 6]
    for r, steps in zip(logged, (per_step[:3], per_step[3:])):
        assert r["bpsp"] == pytest.approx(np.mean([float(m["bpsp"]) for m in steps]), rel=1e-6)
    assert len({float(m["bpsp"]) for m in per_step[:3]}) == 3  # so the mean is not any one step's value

    def kill_at_5(step, state, metrics):
        if step == 5:
            raise Killed

    workdir = str(tmp_path / "killed")
    with pytest.raises(Killed):
        trainer.train(config, workdir, task, data, callbacks=[kill_at_5], progress=False)
    manager = trainer.checkpoint_manager(workdir)
    assert manager.latest_step() == 4  # step 5 was lost with the kill
    manager.close()
    log_path = os.path.join(workdir, "metrics.jsonl")
    unsaved = {"step": 5, "split": "train", "bpsp": 99.0}  # a row logged after the last checkpoint
    torn = '{"step": 5, "split": "tra'  # the kill cut a line of the log short
    with open(log_path, "a") as f:
        f.write(json.dumps(unsaved) + "\n" + torn)
    # one process at a time: a second one is refused by name while the workdir is held
    with trainer.workdir_lock(workdir, "a test"), pytest.raises(
            trainer.CheckpointError, match=r"killed is in use by another process \(pid \d+ on .*, a test, since"):
        trainer.train(config, workdir, task, data, progress=False)
    resumed, _ = trainer.train(config, workdir, task, data, progress=False)
    assert int(resumed.step) == 6
    # the unsaved row was set aside (its step was trained again), not kept beside the new one
    assert read_jsonl(os.path.join(workdir, "metrics.discarded.jsonl")) == [unsaved]
    for a, b in zip(_params(reference), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    # a time limit stops after the step that ran out of time, checkpointed even off the
    # checkpoint_every grid; the next call continues to the same end state
    limited = str(tmp_path / "limited")
    stopped, metrics = trainer.train(config, limited, task, data, progress=False, time_limit=1e-9)
    assert int(stopped.step) == 1 and metrics == {}
    # the steps since the last train row are logged before the stop (none lost from the log)
    assert [r["step"] for r in read_jsonl(os.path.join(limited, "metrics.jsonl"))] == [1]
    manager = trainer.checkpoint_manager(limited)
    assert manager.latest_step() == 1
    manager.close()
    # ... also on another machine: only the latest checkpoint and the run's files travel
    from experiments import pack_run
    archive = str(tmp_path / "run.tar")
    assert pack_run.pack(limited, archive)[0] == "1"
    moved = str(tmp_path / "elsewhere" / "run")
    assert pack_run.unpack(archive, moved) == "1"
    assert sorted(os.listdir(moved)) == ["checkpoints", "config.json", "metrics.jsonl"]  # no train.lock
    with pytest.raises(pack_run.PackError, match="already has checkpoints"):
        pack_run.unpack(archive, moved)
    seen = []
    finished, _ = trainer.train(config, moved, task, data, progress=False, time_limit=3600.0,
                                callbacks=[lambda step, state, metrics: seen.append(step)])
    assert int(finished.step) == 6 and seen[0] == 2  # continued from the moved step-1 checkpoint
    for a, b in zip(_params(reference), _params(finished)):
        np.testing.assert_array_equal(a, b)
    assert [r["step"] for r in read_jsonl(os.path.join(moved, "metrics.jsonl")) if r["split"] == "train"] == [1, 5, 6]
    # evaluating the finished run, here or with --eval-only's function, logs nothing and keeps its config
    before = {n: open(os.path.join(moved, n)).read() for n in ("config.json", "metrics.jsonl")}
    scored = apply_overrides(config, ["eval_every=2", "optimizer.learning_rate=0.5"])
    _, again = trainer.train(scored, moved, task, data, progress=False)
    state, only = trainer.evaluate_run(scored, moved, task, data)
    assert int(state.step) == 6 and again and only == pytest.approx(again, rel=1e-6)
    assert {n: open(os.path.join(moved, n)).read() for n in before} == before
    # an export's training time counts a step once, also from a log of before the rows were set aside
    import shutil

    from experiments import export_model

    rows = read_jsonl(os.path.join(moved, "metrics.jsonl"))
    seconds = sum((r["step"] - p) / r["steps_per_sec"] for r, p in zip(rows, [0, 1, 5]))
    repeated = str(tmp_path / "repeated")
    shutil.copytree(moved, repeated)
    with open(os.path.join(repeated, "metrics.jsonl"), "a") as f:  # steps 1 and 5 logged again, slowly
        f.write("".join(json.dumps({**r, "steps_per_sec": 1e-3}) + "\n" for r in rows[:2]))
    for run in (moved, repeated):
        assert export_model.main(["--workdir", run, "--out", f"{run}.msgpack"]) == 0
        assert json.load(open(f"{run}.json"))["training"]["train_seconds"] == round(seconds)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"]["features"] == config.model.features
    raw = open(log_path).read().splitlines()
    after = raw[raw.index(torn) + 1:]  # the resumed run's records start on a line of their own
    assert after and all(json.loads(x)["step"] >= 5 for x in after)
    with pytest.warns(UserWarning, match=rf"metrics.jsonl, line {raw.index(torn) + 1}: not a JSON record"):
        lines = read_jsonl(log_path)
    assert len(lines) == len(raw) - 1 and lines[-1]["step"] == 6
    assert any(x["split"] == "train" and "bpsp" in x for x in lines)
    assert os.listdir(os.path.join(workdir, "tensorboard"))

    # the saved state restores for evaluation; a checkpoint of another architecture is refused
    batch = data.train_batch(0)
    restored = trainer.restore_for_eval(config, workdir, task, batch)
    for a, b in zip(_params(reference), _params(restored)):
        np.testing.assert_array_equal(a, b)
    earlier = trainer.restore_for_eval(config, workdir, task, batch, step=4)  # a kept earlier step, by request
    assert int(earlier.step) == 4 and any(not np.array_equal(a, b) for a, b in zip(_params(earlier), _params(restored)))
    # a model file's loader reads the same parameters without building the task (no target tree)
    from jaxcomp.modelfile import load_model

    _, params, notes = load_model(workdir, task=config.task)
    assert notes == {"workdir": os.path.abspath(workdir), "step": 6}
    assert jax.tree.structure(params) == jax.tree.structure(jax.device_get(restored.params))
    for a, b in zip(_params(restored), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)
    # a damaged copy of the run: each damage named, as a ModelLoadError
    from jaxcomp.modelfile import ModelLoadError

    damaged = tmp_path / "damaged"
    shutil.copytree(workdir, damaged)
    (damaged / "config.json").write_text("[1, 2]")
    with pytest.raises(ModelLoadError, match=r"damaged/config\.json: a run config is a JSON object, not list"):
        load_model(str(damaged), task=config.task)
    (damaged / "config.json").write_text("{cut")
    with pytest.raises(ModelLoadError, match=r"damaged/config\.json: unreadable run config"):
        load_model(str(damaged), task=config.task)
    shutil.copy(os.path.join(workdir, "config.json"), damaged / "config.json")
    step_dir = damaged / "checkpoints" / "6" / "default"
    biggest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[: biggest.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"unreadable checkpoint of step 6"):
        load_model(str(damaged), task=config.task)
    # ... and through the trainer (continuing or evaluating it), a cut data file (tensorstore's plain Exception
    # was a ~2000-line traceback with no error line) or cut metadata (a JSON error)
    for name, pattern in (("cut_data", "ocdbt.process_0/d/*"), ("cut_metadata", "_METADATA")):
        shutil.copytree(workdir, tmp_path / name)
        cut = max((tmp_path / name / "checkpoints" / "6" / "default").glob(pattern), key=lambda p: p.stat().st_size)
        cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
        with pytest.raises(trainer.CheckpointError, match=r"checkpoints/6 is damaged: a file in it cannot be read"):
            trainer.restore_for_eval(config, str(tmp_path / name), task, batch)
    (damaged / "checkpoints" / "9").mkdir()  # an empty step folder hid the others behind "does not match"
    with pytest.raises(trainer.CheckpointError, match=r"checkpoints/9 is incomplete .* resume from step 6"):
        trainer.restore_for_eval(config, str(damaged), task, batch)
    wider = apply_overrides(config, ["model.features=12"])
    with pytest.raises(trainer.CheckpointError, match=r"does not match .*has shape"):  # named before restoring
        trainer.restore_for_eval(wider, workdir, tasks.build(wider)[0], batch)
    # ... and continuing the run with it is refused before its config replaces the run's
    saved = open(os.path.join(workdir, "config.json")).read()
    with pytest.raises(trainer.CheckpointError, match="does not match"):
        trainer.train(apply_overrides(wider, ["steps=8"]), workdir, *tasks.build(wider), progress=False)
    assert open(os.path.join(workdir, "config.json")).read() == saved
    assert sorted(os.listdir(workdir)) == ["checkpoints", "config.json", "metrics.discarded.jsonl", "metrics.jsonl",
                                           "tensorboard", "train.lock"]


def test_workdir_lock_refuses_a_second_holder_only(tmp_path, monkeypatch, caplog):
    """A held workdir is refused naming its holder; a filesystem without ``flock`` (ENOSYS) runs
    unlocked with a warning instead of every run being refused as "in use"; a read-only workdir is
    evaluated (``read_only``) without the lock, with a warning, and refused for training."""
    import errno
    import logging

    from jaxcomp.train import trainer as loop

    workdir = str(tmp_path / "w")
    with trainer.workdir_lock(workdir, "first"):
        with pytest.raises(trainer.CheckpointError, match=r"in use by another process \(pid \d+ .*, first, since"):
            with trainer.workdir_lock(workdir):
                pass
    with trainer.workdir_lock(workdir), trainer.workdir_lock(str(tmp_path / "other")):
        pass  # released after the block; another workdir is independent

    def no_flock(*_):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(loop.fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING, logger="jaxcomp.train"), trainer.workdir_lock(workdir):
        pass
    assert "cannot be locked (" in caplog.text and "Function not implemented" in caplog.text

    def read_only_filesystem(path, *args, **kwargs):  # a workdir on a read-only mount (root ignores chmod)
        raise OSError(errno.EROFS, "Read-only file system", path)

    monkeypatch.setattr(loop, "open", read_only_filesystem, raising=False)
    with pytest.raises(OSError, match="Read-only file system"):
        with trainer.workdir_lock(workdir):  # training must write: refused
            pass
    with caplog.at_level(logging.WARNING, logger="jaxcomp.train"), trainer.workdir_lock(workdir, read_only=True):
        pass  # --eval-only only reads: goes on, unlocked, and says so
    assert "is not writable (" in caplog.text and "without its lock" in caplog.text


def test_loop_settings_that_cannot_work_are_refused_before_anything_runs(l3c_tiny_config, tmp_path):
    """keep=0 would train and keep no checkpoint; log_every=0 would fail after compiling."""
    cases = [("keep=0", r"config\.keep must be an integer >= 1, got 0 \(0 would keep no checkpoint\)"),
             ("log_every=0", r"config\.log_every must be an integer >= 1, got 0"),
             ("checkpoint_every=-2", r"config\.checkpoint_every must be an integer >= 1"),
             ("eval_every=-1", r"config\.eval_every must be an integer >= 0"),
             ("eval_batch_size=0", r"config\.eval_batch_size must be"),
             ("data.batch_size=0", r"config\.data\.batch_size must be an integer >= 1"),
             ("steps=-1", r"config\.steps must be an integer >= 0"),
             # a negative rate ascended the loss (exit 0, a checkpoint); inf gave NaN metrics, saved too
             ("optimizer.learning_rate=-1e-3", r"config\.optimizer\.learning_rate must be > 0, got -0\.001"),
             ("optimizer.learning_rate=1e400", r"config\.optimizer\.learning_rate must be a finite number > 0, got inf"
                                               ),
             ("optimizer.warmup_steps=-5", r"config\.optimizer\.warmup_steps must be an integer >= 0")]
    for override, match in cases:
        with pytest.raises(ConfigError, match=match):
            trainer.check_settings(apply_overrides(l3c_tiny_config, [override]))
    with pytest.raises(ConfigError, match=r"config\.optimizer\.decay_steps must be an integer >= 1"):  # cosine over 0
        trainer.check_settings(apply_overrides(l3c_tiny_config, ["optimizer.schedule=cosine"]))
    # steps overridden without decay_steps (the configs tie them): a rate of 0 for half the run, or most left
    cosine = ["optimizer.schedule=cosine", "optimizer.decay_steps=2000"]
    with pytest.warns(UserWarning, match=r"decay_steps=2000 .* but steps=4000: the learning rate is 0 for the "
                                         r"last 2000 steps"):
        trainer.check_settings(apply_overrides(l3c_tiny_config, cosine + ["steps=4000"]))
    with pytest.warns(UserWarning, match=r"steps=500: the run ends with 85% of the peak learning rate left"):
        trainer.check_settings(apply_overrides(l3c_tiny_config, cosine + ["steps=500"]))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trainer.check_settings(apply_overrides(l3c_tiny_config, cosine + ["steps=2000"]))
        # warm-up first, the cosine after it: a run one step short of its end leaves ~0 % (no warning)
        trainer.check_settings(apply_overrides(l3c_tiny_config, cosine + ["optimizer.warmup_steps=100", "steps=2099"]))
        trainer.check_settings(apply_overrides(l3c_tiny_config, cosine + ["steps=0", "eval_every=0"]))  # --eval-only
    trainer.check_settings(l3c_tiny_config)
    trainer.check_settings(apply_overrides(l3c_tiny_config, ["steps=0", "eval_every=0"]))  # --eval-only
    with pytest.raises(ConfigError, match="keep"):  # train() checks before it creates the workdir
        trainer.train(apply_overrides(l3c_tiny_config, ["keep=0"]), str(tmp_path / "run"), None, None)
    assert not (tmp_path / "run").exists()


def test_init_from_starts_a_new_run_from_an_exported_model(l3c_tiny_config, tmp_path):
    """Fine-tuning: a new run starts from another model's parameters (shapes checked, task checked)."""
    from jaxcomp.modelfile import export_params

    task, data = tasks.build(l3c_tiny_config)
    mesh = trainer.make_mesh()
    start = trainer.init_state(task, data.train_batch(0), jax.random.PRNGKey(7), mesh)
    path = str(tmp_path / "start.msgpack")
    export_params(start.params, l3c_tiny_config, path, {"note": "test"})

    config = apply_overrides(l3c_tiny_config, [f"init_from={path}", "steps=0", "eval_every=0"])
    state, _ = trainer.train(config, str(tmp_path / "run"), task, data, progress=False)
    for a, b in zip(_params(state), _params(start)):
        np.testing.assert_array_equal(a, b)
    assert int(state.step) == 0
    wider = apply_overrides(config, ["model.features=12"])
    wide_task = tasks.build(wider)[0]
    with pytest.raises(trainer.CheckpointError, match="different architecture.*init_grow"):
        trainer.train(wider, str(tmp_path / "wider"), wide_task, data, progress=False)
    # init_grow: the wider model's parameters hold the narrower ones in their leading block and
    # keep their fresh initialisation elsewhere; a narrower model still cannot start from a wider one
    fresh = trainer.init_state(wide_task, data.train_batch(0), jax.random.PRNGKey(3), mesh)
    grown = trainer.warm_start(fresh, start.params, path, grow=True)
    n_grown = 0
    for old, new, init in zip(_params(start), _params(grown), _params(fresh)):
        block = tuple(slice(0, n) for n in old.shape)
        np.testing.assert_array_equal(new[block], old)
        rest = np.ones(new.shape, bool)
        rest[block] = False
        np.testing.assert_array_equal(new[rest], init[rest])
        n_grown += old.shape != new.shape
    assert n_grown > 0
    state, _ = trainer.train(apply_overrides(wider, ["init_grow=True"]), str(tmp_path / "grown"), wide_task,
                             data, progress=False)
    for a, b in zip(_params(state), _params(start)):
        np.testing.assert_array_equal(a[tuple(slice(0, n) for n in b.shape)], b)
    with pytest.raises(trainer.CheckpointError, match="different architecture"):
        trainer.warm_start(start, grown.params, "wide.msgpack", grow=True)
    missing = apply_overrides(config, ["init_from=/nonexistent/model.msgpack"])
    with pytest.raises(trainer.CheckpointError, match="not found"):
        trainer.train(missing, str(tmp_path / "missing"), task, data, progress=False)
    other = apply_overrides(config, ["task=cpm"])
    with pytest.raises(trainer.CheckpointError, match="not 'cpm'"):
        trainer.load_init_params(other)
    # the run records the starting file's hash when it starts: replacing that file in place later
    # (as when a fine-tuned model is copied over the one it started from) does not change it
    from jaxcomp.modelfile import lineage, workdir_lineage

    recorded = workdir_lineage(str(tmp_path / "run"), path)
    assert recorded == lineage(path) and len(recorded) == 1
    # the hash recorded is that of the bytes the run loaded (load_init_params' notes), one read
    loaded, notes = trainer.load_init_params(config)
    assert notes["sha256"] == recorded[0]["sha256"] and lineage(path, notes["sha256"]) == recorded
    export_params(jax.tree.map(lambda a: np.asarray(a) + 1, start.params), l3c_tiny_config, path, {})
    assert workdir_lineage(str(tmp_path / "run"), path) == recorded != lineage(path)


def test_warm_start_carries_batch_norm_statistics(caplog):
    """init_from of a model with batch norm (Flax variables {"params", "batch_stats"}) replaces the
    running statistics too, checked by name and shape; a model without batch norm refuses such a
    source, and a batch-norm model warned when its source has none."""
    import optax

    from jaxcomp.train.state import TrainState

    params = {"dense": {"kernel": np.zeros((2, 3), np.float32), "bias": np.zeros(3, np.float32)}}
    stats = {"bn": {"mean": np.zeros(3, np.float32), "var": np.ones(3, np.float32)}}
    fresh = TrainState.create(params, optax.sgd(0.1), model_state={"batch_stats": stats, "other": np.int32(5)})
    loaded = {"params": jax.tree.map(lambda a: a + 2, params), "batch_stats": jax.tree.map(lambda a: a + 3, stats)}
    warm = trainer.warm_start(fresh, loaded, "src")
    np.testing.assert_array_equal(warm.params["dense"]["kernel"], np.full((2, 3), 2))
    np.testing.assert_array_equal(warm.model_state["batch_stats"]["bn"]["mean"], np.full(3, 3))
    np.testing.assert_array_equal(warm.model_state["batch_stats"]["bn"]["var"], np.full(3, 4))
    assert int(warm.model_state["other"]) == 5
    bad = {"params": loaded["params"], "batch_stats": {"bn": {"mean": np.zeros(4, np.float32),
                                                              "var": np.ones(3, np.float32)}}}
    with pytest.raises(trainer.CheckpointError, match="batch_stats/bn/mean has shape"):
        trainer.warm_start(fresh, bad, "src")
    plain = TrainState.create(params, optax.sgd(0.1))
    with pytest.raises(trainer.CheckpointError, match="has none"):
        trainer.warm_start(plain, loaded, "src")
    # variables without statistics (a model without batch norm) start a model without them
    warm = trainer.warm_start(plain, {"params": loaded["params"], "batch_stats": {}}, "src")
    np.testing.assert_array_equal(warm.params["dense"]["bias"], np.full(3, 2))
    with caplog.at_level("WARNING", logger="jaxcomp.train"):
        warm = trainer.warm_start(fresh, loaded["params"], "src")
    assert "no batch-norm statistics" in caplog.text
    np.testing.assert_array_equal(warm.model_state["batch_stats"]["bn"]["var"], np.ones(3))


def test_lineage_follows_a_chain_of_exported_models(l3c_tiny_config, tmp_path):
    """An exported model records every round it continues, with the hash of each starting file."""
    import hashlib

    from jaxcomp.modelfile import ModelLoadError, export_params, lineage, workdir_lineage

    params = {"w": np.arange(3, dtype=np.float32)}
    first, second = str(tmp_path / "first.msgpack"), str(tmp_path / "second.msgpack")
    export_params(params, l3c_tiny_config, first, {"steps": 5, "command": "train first", "note": "round 1"})
    export_params(params, l3c_tiny_config, second, {"steps": 7, "command": "train second",
                                                    "lineage": lineage(first)})
    chain = lineage(second)
    assert [(e["model"], e["steps"], e["command"]) for e in chain] == [
        (first, 5, "train first"), (second, 7, "train second")]
    with open(first, "rb") as f:
        assert chain[0]["sha256"] == hashlib.sha256(f.read()).hexdigest()
    assert chain[0]["note"] == "round 1" and "lineage" not in chain[1]
    # a pair torn apart (an export interrupted between its two files, a copy of one of them) is refused
    from jaxcomp.modelfile import load_model

    other = str(tmp_path / "other.msgpack")
    export_params({"w": np.arange(4, dtype=np.float32)}, l3c_tiny_config, other, {})
    with open(other, "rb") as f:
        other_bytes = f.read()
    with open(second, "wb") as f:
        f.write(other_bytes)
    for load in (lambda: load_model(second, task="l3c"), lambda: lineage(second)):
        with pytest.raises(ModelLoadError, match=r"second\.msgpack: its parameters are not the ones second\.json "
                                                 r"describes .* torn apart"):
            load()
    assert load_model(other, task="l3c")[2]["params_sha256"] == hashlib.sha256(other_bytes).hexdigest()
    with pytest.raises(ValueError, match=r"other\.json: a model's parameters cannot go to a \.json file"):
        export_params(params, l3c_tiny_config, str(tmp_path / "other.json"), {})
    with pytest.raises(ValueError, match=r"is a folder: give the model file's path"):
        export_params(params, l3c_tiny_config, str(tmp_path), {})
    # the notes given where the parameters are meant: named as such, not as a torn pair
    notes = str(tmp_path / "other.json")
    for load in (lambda: load_model(notes, task="l3c"), lambda: lineage(notes)):
        with pytest.raises(ModelLoadError, match=r"other\.json is a model's notes; give the parameters file beside it "
                                                 r"\(.*other\.msgpack\)"):
            load()
    # bfloat16 parameters are stored in the export's dtype and come back as float32, like any float
    bf = str(tmp_path / "bf16.msgpack")
    export_params({"w": np.arange(3, dtype=np.float32).astype(jnp.bfloat16), "i": np.arange(2)}, l3c_tiny_config,
                  bf, {}, dtype="float16")
    loaded = load_model(bf, task="l3c")[1]
    assert loaded["w"].dtype == np.float32 and loaded["i"].dtype == np.arange(2).dtype
    from flax import serialization

    with open(bf, "rb") as f:
        assert serialization.msgpack_restore(f.read())["w"].dtype == np.float16
    assert load_model(other, task="l3c")[2]["params_sha256"] == hashlib.sha256(other_bytes).hexdigest()
    with open(str(tmp_path / "other.json"), "w") as f:
        f.write('{"training": {}}')
    with pytest.raises(ModelLoadError, match=r"other\.json: not a model's notes"):
        load_model(other, task="l3c")
    assert lineage("") == []
    assert lineage(str(tmp_path)) == [{"workdir": str(tmp_path)}]
    gone = str(tmp_path / "gone.msgpack")
    assert lineage(gone) == [{"model": gone, "missing": True}]
    with open(str(tmp_path / "first.json"), "w") as f:
        f.write("[1, 2]")
    with pytest.raises(ModelLoadError, match="model notes are a JSON object, not list"):
        lineage(first)
    with open(str(tmp_path / "first.json"), "w") as f:
        f.write("{truncated")
    with pytest.raises(ModelLoadError, match="unreadable model notes"):
        lineage(first)
    # a workdir without a recorded lineage (older runs) falls back to the files as they are now
    run = tmp_path / "run"
    run.mkdir()
    assert workdir_lineage(str(run), gone) == lineage(gone)
    (run / "lineage.json").write_text("[truncated")
    with pytest.raises(ModelLoadError, match="unreadable lineage"):
        workdir_lineage(str(run), gone)


MULTI_DEVICE_SCRIPT = r"""
import json, jax, numpy as np
from jaxcomp import tasks, train as trainer
from jaxcomp.configs import load_config
config = load_config(CONFIG)
task, data = tasks.build(config)
batch = data.train_batch(0)
rng = jax.random.PRNGKey(0)
out = {}
for n in (1, 4):
    mesh = trainer.make_mesh(jax.devices()[:n])
    state = trainer.init_state(task, batch, rng, mesh)
    before = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    step, _ = trainer.compile_steps(task, mesh)
    sharded = trainer.shard_batch(batch, mesh)
    assert len(sharded["image"].sharding.device_set) == n
    state, metrics = step(state, sharded, rng, np.int32(0))
    after = [np.asarray(x) for x in jax.tree.leaves(state.params)]
    out[n] = dict(loss=float(metrics["bpsp"]), update=[(a - b).tolist() for a, b in zip(after, before)])
print(json.dumps(dict(devices=jax.device_count(), one=out[1], four=out[4])))
"""


def test_four_devices_give_the_same_loss_and_update_as_one(repo):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu")
    script = MULTI_DEVICE_SCRIPT.replace("CONFIG", repr(str(repo / "configs" / "l3c.py") + ":tiny"))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=repo)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["devices"] == 4
    np.testing.assert_allclose(result["four"]["loss"], result["one"]["loss"], rtol=1e-5)
    for a, b in zip(result["four"]["update"], result["one"]["update"]):
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, atol=1e-6 + 1e-3 * np.abs(b).max())


def test_batches_that_do_not_split_over_the_devices_are_refused_when_the_run_starts(l3c_tiny_config):
    """A paper batch of 30 on 8 GPUs, or an evaluation batch of 100: a ConfigError naming the key and
    the device counts that work, when the run starts (the evaluation's failure came after training,
    before that step's checkpoint, on every rerun)."""
    from jaxcomp.configs import ConfigError, apply_overrides

    trainer.check_devices(apply_overrides(l3c_tiny_config, ["data.batch_size=16", "eval_batch_size=8"]), 8)
    for override, key, fits in (("data.batch_size=30", "data.batch_size=30", "2"), ("eval_batch_size=100",
                                                                                   "eval_batch_size=100", "4")):
        # the count offered splits both batches (30 and 8: 2; 16 and 100: 4), not only the refused one
        config = apply_overrides(l3c_tiny_config, ["data.batch_size=16", "eval_batch_size=8", override])
        with pytest.raises(ConfigError, match=rf"config\.{key} cannot be split over the 8 devices.*run on {fits} of"):
            trainer.check_devices(config, 8)
        trainer.check_devices(config, 1)
    # a run that never evaluates does not need its evaluation batch to split
    trainer.check_devices(apply_overrides(l3c_tiny_config, ["data.batch_size=16", "eval_batch_size=100",
                                                            "eval_every=0"]), 8)
    # the trainer checks before anything is built (a stand-in mesh of 8 devices; no task or data needed)
    import types

    eight = types.SimpleNamespace(devices=np.zeros(8))
    with pytest.raises(ConfigError, match=r"config\.data\.batch_size=30 cannot be split over the 8 devices"):
        trainer.train(apply_overrides(l3c_tiny_config, ["data.batch_size=30"]), "unused", None, None, mesh=eight)


def test_evaluation_ignores_padding(l3c_tiny_config):
    task, data = tasks.build(l3c_tiny_config)
    mesh = trainer.make_mesh()
    state = trainer.init_state(task, data.train_batch(0), jax.random.PRNGKey(0), mesh)
    _, eval_step = trainer.compile_steps(task, mesh)
    tiles = data.eval_tiles()
    assert len(tiles) % 7 != 0  # so the last batch of 7 is padded
    padded = trainer.evaluate(eval_step, state, data.eval_batches(7), mesh)
    exact = eval_step(state, {"image": tiles})
    np.testing.assert_allclose(padded["bpsp"], float(np.mean(exact["bpsp"])), rtol=1e-5)


def test_benchmark_times_the_training_step_it_compiles(l3c_tiny_config):
    task, data = tasks.build(l3c_tiny_config)
    r = trainer.benchmark_train_step(task, data.train_batch(0), steps=2, warmup=1)
    assert r["compile_s"] > 0 and r["step_s"] > 0 and r["peak_mem_mb"] > 0
    assert int(r["state"].step) == 3  # warm-up and timed steps all trained
    assert r["params"] == sum(x.size for x in jax.tree.leaves(r["state"].params)) > 0
    assert np.isfinite(r["metrics"]["bpsp"]) and r["metrics"]["bpsp"] > 0


def test_validation_data_that_cannot_be_evaluated_fails_before_training(l3c_tiny_config, tmp_path):
    """Validation images all smaller than data.eval_crop: the error comes before step 1 (not after the
    first eval_every steps), with no checkpoint written."""
    from PIL import Image

    from jaxcomp.data import DataError

    rng = np.random.default_rng(0)
    for folder, side, n in (("train", 40, 3), ("val", 20, 2)):
        (tmp_path / folder).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (side, side, 3), np.uint8)).save(tmp_path / folder / f"{i}.png")
    config = apply_overrides(l3c_tiny_config, ["data.source=folder", f"data.path={tmp_path / 'train'}",
                                               f"data.val_path={tmp_path / 'val'}", "steps=4", "eval_every=4",
                                               "data.eval_downscale=1.0"])
    task, data = tasks.build(config)
    with pytest.raises(DataError, match="every validation image is smaller than data.eval_crop=32"):
        trainer.train(config, str(tmp_path / "run"), task, data, progress=False)
    assert not os.path.isdir(tmp_path / "run" / "checkpoints") or not os.listdir(tmp_path / "run" / "checkpoints")


def test_optimizers_and_schedules(l3c_tiny_config):
    opt = apply_overrides(l3c_tiny_config, ["optimizer.name=rmsprop", "optimizer.schedule=step",
                                            "optimizer.decay_every=5", "optimizer.decay_rate=0.75"]).optimizer
    _, schedule = trainer.make_optimizer(opt)
    np.testing.assert_allclose([schedule(0), schedule(4), schedule(5), schedule(10)],
                               [3e-3, 3e-3, 3e-3 * 0.75, 3e-3 * 0.75**2], rtol=1e-6)
    with pytest.raises(ValueError, match="optimizer.name"):
        trainer.make_optimizer(apply_overrides(l3c_tiny_config, ["optimizer.name=lbfgs"]).optimizer)


def test_schedules_and_optimizers_give_the_hand_computed_values():
    """Learning rates and updates computed by hand, not by optax: cosine to 0, linear warm-up before
    it, Adam with the config's b1 / b2, RMSprop with PyTorch's defaults, Nesterov momentum, clipping
    by the global norm."""
    import jax.numpy as jnp

    def opt(**kw):
        base = dict(name="sgd", momentum=0.0, learning_rate=1.0, schedule="constant")
        return ml_collections.ConfigDict(dict(base, **kw))

    _, cosine = trainer.make_optimizer(opt(schedule="cosine", decay_steps=10))
    np.testing.assert_allclose([cosine(0), cosine(5), cosine(10)], [1.0, 0.5, 0.0], atol=1e-6)
    _, warm = trainer.make_optimizer(opt(schedule="cosine", decay_steps=10, warmup_steps=4))
    np.testing.assert_allclose([warm(0), warm(2), warm(4), warm(9), warm(14)], [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    # piecewise (the CIFAR recipes): x0.2 at each boundary, every boundary applied
    _, piecewise = trainer.make_optimizer(opt(schedule="piecewise", boundaries=(3, 6, 9), decay_rate=0.2))
    np.testing.assert_allclose([piecewise(s) for s in (0, 2, 3, 5, 6, 8, 9, 20)],
                               [1.0, 1.0, 0.2, 0.2, 0.04, 0.04, 0.008, 0.008], rtol=1e-6)
    # per-boundary scales: a restart at a higher rate (StrassenNets' LM ternary phase)
    _, restart = trainer.make_optimizer(opt(schedule="piecewise", boundaries=(3, 6, 9), decay_rate=0.2,
                                            boundary_scales=(0.5, 4.0, 0.5)))
    np.testing.assert_allclose([restart(s) for s in (0, 2, 3, 5, 6, 8, 9, 20)],
                               [1.0, 1.0, 0.5, 0.5, 2.0, 2.0, 1.0, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="2 entries for 3 boundaries"):
        trainer.make_optimizer(opt(schedule="piecewise", boundaries=(3, 6, 9), decay_rate=0.2,
                                   boundary_scales=(0.5, 4.0)))

    def updates(config, grads):
        tx, _ = trainer.make_optimizer(config)
        params = jax.tree.map(jnp.zeros_like, grads[0])
        state, out = tx.init(params), []
        for g in grads:
            u, state = tx.update(g, state, params)
            out.append(jax.tree.map(float, u))
        return out

    # Adam, b1 = 0.5, b2 = 0.9, lr 0.1: bias-corrected moments of the gradients 1 then 3
    m = v = 0.0
    expected = []
    for t, g in enumerate((1.0, 3.0), start=1):
        m, v = 0.5 * m + 0.5 * g, 0.9 * v + 0.1 * g * g
        expected.append(-0.1 * (m / (1 - 0.5**t)) / (np.sqrt(v / (1 - 0.9**t)) + 1e-8))
    got = updates(opt(name="adam", learning_rate=0.1, b1=0.5, b2=0.9), [jnp.float32(1.0), jnp.float32(3.0)])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    # RMSprop as PyTorch's (the L3C reference): decay 0.99, eps 1e-8 added *outside* the root; on a
    # gradient of 1e-6 eps inside the root would shrink the update ~900x
    v, expected = 0.0, []
    for g in (1e-6, 3e-6):
        v = 0.99 * v + 0.01 * g * g
        expected.append(-0.1 * g / (np.sqrt(v) + 1e-8))
    got = updates(opt(name="rmsprop", learning_rate=0.1), [jnp.float32(1e-6), jnp.float32(3e-6)])
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    # Nesterov: the first step is g + 0.9 g
    assert updates(opt(momentum=0.9, nesterov=True), [jnp.float32(1.0)])[0] == pytest.approx(-1.9)
    # clipping scales the whole gradient to global norm 1: (3, 4) -> (0.6, 0.8), not each value to 1
    got = updates(opt(grad_clip=1.0), [{"a": jnp.float32(3.0), "b": jnp.float32(4.0)}])[0]
    assert got["a"] == pytest.approx(-0.6) and got["b"] == pytest.approx(-0.8)


def test_l2_penalty_is_half_the_coefficient_times_the_squared_norm():
    """The weight-decay term the BAN, understanding and CPM losses add: 0.5 * l2 * sum w^2 by hand,
    ``min_ndim=2`` leaves vectors (biases, scales) out, a zero coefficient adds exactly 0."""
    import jax.numpy as jnp

    tree = {"w": jnp.array([[1.0, 2.0], [3.0, -1.0]]), "b": jnp.array([2.0, 2.0]), "s": jnp.float32(3.0)}
    assert float(trainer.l2_penalty(tree, 0.1)) == pytest.approx(0.5 * 0.1 * (15.0 + 8.0 + 9.0))
    assert float(trainer.l2_penalty(tree, 0.1, min_ndim=2)) == pytest.approx(0.5 * 0.1 * 15.0)
    assert float(trainer.l2_penalty(tree, 0.0)) == 0.0
    assert float(trainer.l2_penalty({"b": tree["b"]}, 0.1, min_ndim=2)) == 0.0


def test_each_step_draws_its_own_randomness():
    """The compiled step hands the task ``fold_in(rng, step)``: another key at every step (dropout,
    GAN noise, augmentation), the same key for the same step (resume)."""
    import jax.numpy as jnp

    class Draw:
        def train_step(self, state, batch, rng):
            return state, {"u": jax.random.uniform(rng)}

        def eval_step(self, state, batch):
            return {}

    train, _ = trainer.compile_steps(Draw(), trainer.make_mesh())
    rng = jax.random.PRNGKey(0)
    draws = [float(train(jnp.zeros(()), {}, rng, step)[1]["u"]) for step in (0, 1, 0)]
    assert draws[0] != draws[1] and draws[0] == draws[2]
    assert draws[0] == float(jax.random.uniform(jax.random.fold_in(rng, 0)))
    # the same task object gets its jitted steps back (a continued run does not trace the model
    # again); another task, even an equal one, gets its own; the cache keeps the last few only
    mesh = trainer.make_mesh()
    task = Draw()
    assert trainer.compile_steps(task, mesh) is trainer.compile_steps(task, mesh)
    other = Draw()
    assert trainer.compile_steps(other, mesh)[0] is not trainer.compile_steps(task, mesh)[0]
    first = trainer.compile_steps(task, mesh)
    for _ in range(20):
        trainer.compile_steps(Draw(), mesh)
    assert trainer.compile_steps(task, mesh) is not first


def test_train_only_freezes_the_rest_and_clips_the_trained_alone(l3c_tiny_config):
    import jax.numpy as jnp

    opt = ml_collections.ConfigDict(dict(name="sgd", momentum=0.0, learning_rate=1.0, schedule="constant",
                                         grad_clip=1.0, train_only="heads"))
    tx, _ = trainer.make_optimizer(opt)
    params = {"D1": {"heads": {"w": jnp.ones(())}, "body": {"w": jnp.ones(())}}}
    grads = {"D1": {"heads": {"w": jnp.full((), 3.0)}, "body": {"w": jnp.full((), 4.0)}}}
    updates, _ = tx.update(grads, tx.init(params), params)
    # the frozen gradient (4) neither moves its parameter nor enters the clipping norm (else 3/5)
    assert float(updates["D1"]["body"]["w"]) == 0.0
    np.testing.assert_allclose(float(updates["D1"]["heads"]["w"]), -1.0, rtol=1e-6)

    none = apply_overrides(l3c_tiny_config, ["optimizer.train_only=step_heads"]).optimizer
    with pytest.raises(ValueError, match=r"train_only='step_heads' matches none of the 2 parameters.*D1/body/w"):
        trainer.make_optimizer(none)[0].init(params)
    with pytest.raises(ValueError, match="not a regular expression"):
        trainer.make_optimizer(apply_overrides(l3c_tiny_config, ["optimizer.train_only=heads("]).optimizer)


def test_train_only_step_heads_keeps_the_trained_model_bit_identical(l3c_tiny_config):
    config = apply_overrides(l3c_tiny_config, ["model.subpixel_steps=4", "optimizer.train_only=step_heads"])
    task, data = tasks.build(config)
    batch = data.train_batch(0)
    state = task.init(jax.random.PRNGKey(0), batch)
    step = jax.jit(task.train_step)
    new = state
    for i in range(3):
        new, metrics = step(new, data.train_batch(i), jax.random.PRNGKey(i))
    flat = dict(jax.tree_util.tree_flatten_with_path(state.params)[0])
    moved = {trainer.param_path(p): not np.array_equal(flat[p], v)
             for p, v in jax.tree_util.tree_flatten_with_path(new.params)[0]}
    heads = {k: m for k, m in moved.items() if "step_heads" in k}
    assert heads and all(heads.values()), heads  # every head weight learned (the zero 'out' convs first)
    assert not any(m for k, m in moved.items() if "step_heads" not in k)  # the paper model: bit-identical
    assert np.isfinite(float(metrics["bpsp"]))


def test_config_errors_are_clear(repo, tmp_path):
    spec = str(repo / "configs" / "l3c.py")
    with pytest.raises(ConfigError, match=r"no key 'model.featurs'.*did you mean 'model.features'"):
        load_config(spec + ":tiny", ["model.featurs=3"])
    with pytest.raises(ConfigError, match="no variant 'huge'"):
        load_config(spec + ":huge")
    with pytest.raises(ConfigError, match="expects int"):
        load_config(spec + ":tiny", ["model.features=wide"])
    with pytest.raises(ConfigError, match=r"'data' is a section \(keys allow_samples, batch_size, .*data\.allow_"):
        load_config(spec + ":tiny", ["data=3"])  # its 18 keys named on one line, not the section's YAML dump
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.py"))
    config = load_config(spec + ":tiny", ["data.source=folder", f"data.path={tmp_path / 'missing'}"])
    with pytest.raises(DataError, match="image folder not found"):
        build_image_data(config.data)
    with pytest.raises(AttributeError):
        config.model.featurs  # noqa: B018 — the loaded config is locked against typos


def test_command_line_reports_errors_without_traceback(repo, tmp_path, l3c_tiny_config, l3c_tiny_params,
                                                       capsys, monkeypatch):
    cmd = [sys.executable, "-m", "experiments.train", "--config", "configs/l3c.py:tiny",
           "--workdir", str(tmp_path), "--config.data.pth=x"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    assert out.returncode == 2
    assert "no key 'data.pth'" in out.stderr and "Traceback" not in out.stderr
    base = cmd[:-1]
    for limit in ("0", "nan"):
        out = subprocess.run(base + ["--time-limit", limit], capture_output=True, text=True, cwd=repo)
        assert out.returncode == 2
        assert "--time-limit must be > 0 seconds" in out.stderr and "Traceback" not in out.stderr
    # --eval-only of a workdir without a checkpoint would score an untrained model
    out = subprocess.run(base + ["--eval-only", "--no-progress"], capture_output=True, text=True, cwd=repo)
    assert out.returncode == 2 and "--eval-only: no checkpoint in" in out.stderr, out.stderr[-500:]
    assert not (tmp_path / "checkpoints").exists()
    # ... but with config.init_from it scores that model (the docs' "step 0" rows), writing no checkpoint
    import jax

    from experiments.train import main as train_main
    from jaxcomp.modelfile import export_params

    monkeypatch.chdir(repo)
    scores = []
    for shift in (0.0, 0.05):
        model = str(tmp_path / f"model{shift}.msgpack")
        export_params(jax.tree.map(lambda x, s=shift: x + s, l3c_tiny_params), l3c_tiny_config, model, {})
        assert train_main(["--config", "configs/l3c.py:tiny", "--workdir", str(tmp_path / f"eval{shift}"),
                           "--eval-only", "--no-progress", f"--config.init_from={model}"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["step"] == 0 and not (tmp_path / f"eval{shift}").exists()  # nothing written
        scores.append(printed["eval"]["bpsp"])
    assert scores[0] != scores[1]  # the model named, not a fresh initialisation, is scored
    # a config's own default starting model (CPM's cpu_low starts from the cpu_med run) is not scored
    # in place of a mistyped workdir: only a model named on the command line is
    assert train_main(["--config", "configs/cpm.py:cpu_low", "--workdir", str(tmp_path / "typo"), "--eval-only"]) == 2
    assert "no checkpoint in" in capsys.readouterr().err
    # a workdir whose saved config has other settings is refused before anything is built (a continuation
    # would mix both and carry the new settings only); more steps and bookkeeping may change
    from jaxcomp.configs import load_config

    saved = load_config(f"{repo}/configs/l3c.py:tiny", ["optimizer.learning_rate=0.5", "log_every=3"])
    (tmp_path / "changed").mkdir()
    (tmp_path / "changed" / "config.json").write_text(saved.to_json_best_effort(indent=2, sort_keys=True))
    assert train_main(["--config", f"{repo}/configs/l3c.py:tiny", "--workdir", str(tmp_path / "changed"),
                       "--config.steps=7", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds a run with other settings: optimizer.learning_rate (0.5 -> " in err and "log_every" not in err
    assert "--allow-changed-config" in err
    # a config of another task (--config.task changed) is named, not a TypeError traceback
    assert train_main(["--config", "configs/cpm.py:tiny", "--workdir", str(tmp_path / "other"), "--config.task=l3c",
                       "--no-progress"]) == 2
    assert "unknown config.model keys for L3C: ['center_init'" in capsys.readouterr().err
    # paths that are not workdirs are named as such (they gave a bare [Errno 17] / [Errno 2])
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SystemExit):
        train_main(["--config", "configs/l3c.py:tiny", "--workdir", str(tmp_path / "a_file")])
    assert "is a file, not a folder" in capsys.readouterr().err
    from experiments import export_model

    for workdir, why in (("a_file", "(a file)"), ("no_run", "(no such folder)")):
        assert export_model.main(["--workdir", str(tmp_path / workdir), "--out", str(tmp_path / "x.msgpack")]) == 2
        assert f"is not a training workdir {why}" in capsys.readouterr().err


def test_benchmark_scripts_refuse_unknown_configs_without_traceback(repo):
    cmd = [sys.executable, "-m", "experiments.bench_train", "--config", "configs/l3c.py:nope"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    assert out.returncode == 2
    assert "no variant 'nope'" in out.stderr and "Traceback" not in out.stderr


def test_bench_train_keeps_the_samples_swap_unless_the_data_is_named():
    from experiments.bench_train import names_its_data

    assert not names_its_data(["data.batch_size=8", "data.crop=64", "model.encoder_head_conv=False"])
    assert names_its_data(["data.batch_size=8", "data.source=folder"])
    assert names_its_data(["data.path=/my/images"])


def test_reference_benchmark_refuses_a_folder_that_is_not_the_reference(repo, tmp_path):
    # the PyTorch-side harness checks the checkout before it imports torch or the reference
    cmd = [sys.executable, "experiments/bench_l3c_reference.py", "--checkout", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    assert out.returncode == 2
    assert "is not a checkout of L3C-PyTorch" in out.stderr and "Traceback" not in out.stderr
    from experiments.bench_l3c_reference import parse_cf

    (tmp_path / "x.cf").write_text("optim = 'RMSprop'\nlr.initial = 0.0001  # comment\nq.levels_range = (-1, 1)\n")
    cfg = parse_cf(str(tmp_path / "x.cf"))
    assert cfg == {"optim": "RMSprop", "lr": {"initial": 1e-4}, "q": {"levels_range": (-1, 1)}}
    assert cfg.lr.initial == 1e-4


MULTI_HOST_SCRIPT = r"""
import json, sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=sys.argv[3], num_processes=2, process_id=int(sys.argv[1]))
import numpy as np
from jaxcomp import tasks, train as trainer
from jaxcomp.configs import load_config
config = load_config(sys.argv[4], ["steps=4", "checkpoint_every=2", "eval_every=4", "log_every=1"])
task, data = tasks.build(config)
# process 0's clock decides when a time limit stops the run: both stop at the same step
stopped, _ = trainer.train(config, sys.argv[2], task, data, progress=False, time_limit=1e-9)
state, metrics = trainer.train(config, sys.argv[2], task, data, progress=False)
leaves = [np.asarray(x.addressable_data(0)) for x in jax.tree.leaves(state.params)]
print(json.dumps(dict(hosts=jax.process_count(), local_batch=data.local_batch_size, eval=metrics,
                      stopped=int(stopped.step), checksum=float(sum(np.abs(x).sum() for x in leaves)))))
"""


@pytest.mark.slow
def test_two_hosts_train_in_lockstep(repo, tmp_path):
    """Two processes (hosts) with gloo collectives: each reads its own shard, both end identical.
    (Slow set: two JAX processes, ~25 s of a worker; one process over four devices stays in the default
    suite, test_four_devices_give_the_same_loss_and_update_as_one.)"""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    config = str(repo / "configs" / "l3c.py") + ":tiny"
    procs = [subprocess.Popen([sys.executable, "-c", MULTI_HOST_SCRIPT, str(i), str(tmp_path / "run"), address, config],
                              env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert all(r["hosts"] == 2 and r["local_batch"] == 2 and r["stopped"] == 1 for r in results)
    assert results[0]["checksum"] == results[1]["checksum"]
    assert results[0]["eval"] == results[1]["eval"] and np.isfinite(results[0]["eval"]["bpsp"])
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["1", "2", "4"]
    # what two hosts saved loads in this one-device process, without the task (jaxcomp.modelfile)
    from jaxcomp.modelfile import load_model

    _, params, notes = load_model(str(tmp_path / "run"), task="l3c")
    assert notes["step"] == 4
    assert float(sum(np.abs(x).sum() for x in jax.tree.leaves(params))) == results[0]["checksum"]


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["l3c.py:tiny", "cpm.py:tiny", "ecg.py:tiny_crnn", "ban.py:tiny", "strassen.py:tiny"])
def test_jit_init_gives_the_parameters_of_the_default_compile(repo, spec, user_compile):
    """The faster-compiled initialisation must not change a run's starting point (compared with a
    user's default compile, not the level 0 the rest of this module's tests compile at)."""
    config = load_config(str(repo / "configs" / spec))
    task, data = tasks.build(config)
    batch, rng = data.train_batch(0), jax.random.PRNGKey(config.seed)
    fast = jax.tree.leaves(trainer.jit_init(task.init)(rng, batch))
    default = jax.tree.leaves(jax.jit(task.init)(rng, batch))
    assert len(fast) == len(default)
    for a, b in zip(fast, default):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pack_run_refuses_what_is_not_a_packed_run(tmp_path):
    """A truncated archive, one with foreign members, and a workdir without checkpoints are refused by name."""
    import tarfile

    from experiments import pack_run
    run = tmp_path / "run"
    (run / "checkpoints" / "3").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    with pytest.raises(pack_run.PackError, match="no complete checkpoint"):
        pack_run.pack(str(run), str(tmp_path / "a.tar"))
    (run / "checkpoints" / "3" / "commit_success.txt").write_text("ok")
    (run / "checkpoints" / "3" / "state").write_bytes(b"x" * 4096)
    archive = tmp_path / "a.tar"
    assert pack_run.pack(str(run), str(archive))[0] == "3"
    (run / "checkpoints" / "12").mkdir()  # the newest complete checkpoint travels, not an unfinished save
    (run / "checkpoints" / "12" / "commit_success.txt").write_text("ok")
    (run / "checkpoints" / "20").mkdir()
    assert pack_run.pack(str(run), str(tmp_path / "b.tar"))[0] == "12"
    truncated = tmp_path / "t.tar"
    truncated.write_bytes(archive.read_bytes()[:700])
    with pytest.raises(pack_run.PackError, match="truncated or corrupt|not a packed run"):
        pack_run.unpack(str(truncated), str(tmp_path / "t"))
    foreign = tmp_path / "f.tar"
    with tarfile.open(foreign, "w") as tar:
        tar.add(str(run / "config.json"), arcname="../evil.json")
    with pytest.raises(pack_run.PackError, match="not a packed run"):
        pack_run.unpack(str(foreign), str(tmp_path / "f"))
    assert not (tmp_path / "evil.json").exists()
    assert pack_run.main(["--workdir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.tar")]) == 2
    # an existing archive is replaced only with --force
    before = archive.read_bytes()
    with pytest.raises(pack_run.PackError, match="exists"):
        pack_run.pack(str(run), str(archive))
    assert archive.read_bytes() == before
    assert pack_run.pack(str(run), str(archive), force=True)[0] == "12"
    # an archive without the run's description or without a finished checkpoint is not a run
    for name, members in (("dirs", ()), ("noconfig", ("state", "commit_success.txt")), ("unfinished", ("state",))):
        odd = tmp_path / f"{name}.tar"
        with tarfile.open(odd, "w") as tar:
            if name != "noconfig":
                tar.add(str(run / "config.json"), arcname="config.json")
            tar.add(str(run / "checkpoints" / "3"), arcname="checkpoints/7", recursive=False)
            for m in members:
                tar.add(str(run / "checkpoints" / "3" / m), arcname=f"checkpoints/7/{m}")
        with pytest.raises(pack_run.PackError, match="not a complete packed run"):
            pack_run.unpack(str(odd), str(tmp_path / name))
    # a workdir with files of its own (another run's description) is left alone
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"mine": 1}')
    with pytest.raises(pack_run.PackError, match="not empty"):
        pack_run.unpack(str(archive), str(other))
    assert (other / "config.json").read_text() == '{"mine": 1}' and sorted(os.listdir(other)) == ["config.json"]
    # an archive with a special file (a FIFO) among the checkpoint's members: refused, and nothing is left
    # behind for a training command to resume (before: config.json and the checkpoint were already out)
    fifo = tmp_path / "fifo.tar"
    with tarfile.open(archive) as src, tarfile.open(fifo, "w") as tar:
        for m in src.getmembers():
            tar.addfile(m, src.extractfile(m) if m.isfile() else None)
        special = tarfile.TarInfo("checkpoints/12/fifo")
        special.type = tarfile.FIFOTYPE
        tar.addfile(special)
    with pytest.raises(pack_run.PackError, match="not plain files or folders"):
        pack_run.unpack(str(fifo), str(tmp_path / "un" / "fifo"))
    assert not (tmp_path / "un").exists() or os.listdir(tmp_path / "un") == []  # no workdir, no staging folder
    assert pack_run.unpack(str(archive), str(tmp_path / "un" / "good")) == "12"  # a new folder, made whole
    assert sorted(os.listdir(tmp_path / "un")) == ["good"] and (tmp_path / "un" / "good" / "config.json").is_file()
    # an existing empty workdir that links to scratch space stays the link, and receives the run
    (tmp_path / "scratch").mkdir()
    os.symlink(tmp_path / "scratch", tmp_path / "un" / "linked")
    assert pack_run.unpack(str(archive), str(tmp_path / "un" / "linked")) == "12"
    assert os.path.islink(tmp_path / "un" / "linked")
    assert sorted(os.listdir(tmp_path / "scratch")) == ["checkpoints", "config.json"]
    # an unpack killed midway (SIGKILL at a per-command time limit) leaves its hidden staging folder: the
    # same command then runs again instead of calling the visibly empty workdir "not empty"
    (tmp_path / "un" / "again" / ".unpacking-killed" / "checkpoints").mkdir(parents=True)
    assert pack_run.unpack(str(archive), str(tmp_path / "un" / "again")) == "12"
    assert sorted(os.listdir(tmp_path / "un" / "again")) == ["checkpoints", "config.json"]
    # the archive is never written inside the run it packs (it could replace the run's own files)
    with pytest.raises(pack_run.PackError, match="inside the run it packs"):
        pack_run.pack(str(run), str(run / "config.json"), force=True)
    assert (run / "config.json").read_text() == "{}"
    assert pack_run.pack(str(run), str(tmp_path / "new" / "folder" / "c.tar"))[0] == "12"


def test_conv_gradient_benchmark_divides_by_the_fastest_torch_layout_per_operation(repo):
    # JAX 2/4/6 ms against torch NCHW 1/8/2 and channels_last 4/2/3 ms: each operation is divided by
    # its own fastest layout (forward 2/1, dx 4/2, dw 6/2) and the total by the faster total (12/9)
    from experiments.bench_conv_grads import markdown

    rows = [dict(impl="jax x", size=8, forward=2e-3, dx=4e-3, dw=6e-3),
            dict(impl="torch nchw", size=8, forward=1e-3, dx=8e-3, dw=2e-3),
            dict(impl="torch channels_last", size=8, forward=4e-3, dx=2e-3, dw=3e-3)]
    table = markdown(rows).splitlines()
    assert "| jax x | 8 | 2.0 | 4.0 | 6.0 | 12.0 |" in table
    assert table[-1] == "| jax x / fastest torch | 8 | 2.00x | 2.00x | 3.00x | 1.33x |"
    assert len(markdown(rows[:1]).splitlines()) == 3  # no torch rows: no ratio row
    out = subprocess.run([sys.executable, "-m", "experiments.bench_conv_grads", "--sizes", "a"],
                         capture_output=True, text=True, cwd=repo)
    assert out.returncode == 2 and "--sizes must be comma-separated integers" in out.stderr
    from experiments.bench_conv_grads import run_torch_side

    args = SimpleNamespace(torch_python="/bin/false", batch=1, sizes="1", channels=1, repeats=1, threads=1, timeout=10)
    with pytest.raises(SystemExit, match="PyTorch side failed .*exit status 1"):
        run_torch_side(args)
    args.torch_python = "/no/such/python"
    with pytest.raises(SystemExit, match="could not run"):
        run_torch_side(args)


def test_the_winograd_rows_time_the_same_convolution():
    """``bench_conv_grads --winograd`` times Winograd's F(2x2, 3x3): the SAME 3x3 convolution, its
    values and both gradients (autodiff of the transform form) equal to XLA's convolution's."""
    import jax.numpy as jnp

    from experiments.bench_conv_grads import winograd_conv

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(2, 4, 6, 3)).astype(np.float32), rng.normal(size=(3, 3, 3, 5)).astype(np.float32)
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",  # noqa: E731
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    wino = winograd_conv(jnp)
    both = jax.jit(lambda x, w: [(f(x, w), jax.grad(lambda x, w, f=f: jnp.sum(f(x, w) ** 2), (0, 1))(x, w))
                                 for f in (conv, wino)])
    (ref, ref_grads), (out, grads) = both(x, w)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(grads, ref_grads):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_plateau_rule_cuts_the_rate_when_the_metric_stalls():
    """Kim et al.'s / StrassenNets' rule: after each evaluation, x factor when the value did not improve on
    the last one by more than min_delta; never at the first; the factor multiplies every update.
    Guards against comparing with the best instead of the last value, cutting on an improvement, or a
    factor that does not reach the updates (mutants plateau-compares-with-best, plateau-sign,
    plateau-scale-not-applied)."""
    plateau = ml_collections.ConfigDict(dict(metric="perplexity", factor=0.5, min_delta=0.5))
    tx = optax.chain(optax.sgd(1.0), trainer_state.scale_on_plateau())
    params = {"w": jnp.ones(3)}
    opt_state = tx.init(params)
    seen = []
    for value in (10.0, 9.8, 9.0, 12.0, 11.0, 10.7):  # cut at 9.8 (by 0.2), 12.0 (worse), 10.7 (by 0.3)
        opt_state = trainer_state.plateau_update(opt_state, value, plateau)
        seen.append(trainer_state.plateau_scale(opt_state))
    assert seen == [1.0, 0.5, 0.5, 0.25, 0.25, 0.125]
    tie = tx.init(params)
    for value in (10.0, 9.5, 100.1):  # 9.5 improves by exactly min_delta: no cut; 100.1: worse
        tie = trainer_state.plateau_update(tie, value, plateau)
    assert trainer_state.plateau_scale(tie) == 0.5
    again = ml_collections.ConfigDict(dict(metric="perplexity", factor=0.5, min_delta=0.0))
    tie = trainer_state.plateau_update(trainer_state.plateau_update(tx.init(params), 100.1, again), 100.1, again)
    assert trainer_state.plateau_scale(tie) == 1.0  # min_delta 0: an exact repeat is not worse (the reference's >)
    updates, _ = tx.update({"w": jnp.full(3, 2.0)}, opt_state, params)
    np.testing.assert_allclose(updates["w"], -2.0 * 0.125)
    up = ml_collections.ConfigDict(dict(metric="accuracy", factor=0.1, min_delta=0.0, mode="max"))
    s = trainer_state.plateau_update(trainer_state.plateau_update(tx.init(params), 0.5, up), 0.4, up)
    assert trainer_state.plateau_scale(s) == pytest.approx(0.1)
    assert trainer_state.plateau_scale(trainer_state.plateau_reset(s)) == 1.0
    with pytest.raises(ValueError, match="unknown optimizer.plateau key"):
        trainer_state.plateau_settings(ml_collections.ConfigDict(dict(plateau=dict(metric="x", patience=3))))


def test_plateau_factor_is_checkpointed_resumed_and_reset(l3c_tiny_config, tmp_path):
    """Through the trainer: every evaluation after the first cuts (min_delta huge), the factor is saved
    with the step's checkpoint (a killed run resumes to the same factor and parameters), reset_steps
    restart it, a metric the evaluation lacks is refused by name. Guards against saving the checkpoint
    before the rule's update or skipping the reset (mutants plateau-saved-before-update,
    plateau-reset-ignored)."""
    plateau = ["optimizer.plateau.metric=bpsp", "optimizer.plateau.factor=0.5", "optimizer.plateau.min_delta=100.0"]
    config = apply_overrides(l3c_tiny_config, ["steps=4", "checkpoint_every=2", "eval_every=1", "log_every=1"])
    config.optimizer.plateau = ml_collections.ConfigDict(dict(metric="", factor=0.5, min_delta=0.0,
                                                              reset_steps=()))
    config = apply_overrides(config, plateau)
    task, data = tasks.build(config)
    straight, _ = trainer.train(config, str(tmp_path / "straight"), task, data, progress=False)
    assert trainer_state.plateau_scale(straight.opt_state) == 0.125  # cuts at evaluations 2, 3, 4

    def kill_at_3(step, state, metrics):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        trainer.train(config, str(tmp_path / "killed"), task, data, progress=False, callbacks=[kill_at_3])
    resumed, _ = trainer.train(config, str(tmp_path / "killed"), task, data, progress=False)
    assert trainer_state.plateau_scale(resumed.opt_state) == 0.125
    for a, b in zip(_params(straight), _params(resumed)):
        np.testing.assert_array_equal(a, b)
    reset = apply_overrides(config, ["optimizer.plateau.reset_steps=(3,)"])
    trainer.train(reset, str(tmp_path / "reset"), task, data, progress=False)
    logged = [r["lr_factor"] for r in read_jsonl(str(tmp_path / "reset" / "metrics.jsonl")) if "lr_factor" in r]
    assert logged == [1.0, 0.5, 0.25, 1.0]  # reset after step 3's evaluation: step 4's is a first again
    # the logged learning rate is the one used: the schedule's times the factor in force at that step
    rows = [r for r in read_jsonl(str(tmp_path / "reset" / "metrics.jsonl")) if "learning_rate" in r]
    _, schedule = trainer.make_optimizer(reset.optimizer)
    ratios = [r["learning_rate"] / float(schedule(r["step"] - 1)) for r in rows]
    np.testing.assert_allclose(ratios, [1.0, 1.0, 0.5, 1.0], rtol=1e-6)
    with pytest.raises(ConfigError, match="not among the evaluation's metrics"):
        trainer.train(apply_overrides(config, ["optimizer.plateau.metric=perplexity"]), str(tmp_path / "bad"),
                      task, data, progress=False)
    with pytest.raises(ConfigError, match="needs evaluations to watch"):
        trainer.check_settings(apply_overrides(config, ["eval_every=0"]))
    with pytest.raises(ConfigError, match="factor"):
        trainer.check_settings(apply_overrides(config, ["optimizer.plateau.factor=1.5"]))
    two_player = config.copy_and_resolve_references()
    two_player.optimizer_d = ml_collections.ConfigDict(config.optimizer.to_dict())
    trainer.check_settings(apply_overrides(two_player, ["optimizer_d.plateau.metric=''"]))
    with pytest.raises(ConfigError, match="reads the plateau rule from config.optimizer only"):
        trainer.check_settings(apply_overrides(two_player, ["optimizer_d.plateau.metric=bpsp"]))


def test_pack_run_carries_a_drivers_tree_of_runs(tmp_path):
    """A driver's workdir (runs below it): each run travels with its latest complete checkpoint only, the
    drivers' own files as they are, no TensorBoard logs or compilation caches; the unpacked tree is that
    selection, and archives whose runs hold other or unfinished checkpoints are refused."""
    import tarfile

    from experiments import pack_run

    root = tmp_path / "ban"

    def put(rel: str, text: str = "x") -> None:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)

    put("seed0/teacher/config.json", "{}")
    put("seed0/teacher/metrics.jsonl")
    for step in (20, 40):  # an older and the newest complete checkpoint
        put(f"seed0/teacher/checkpoints/{step}/state")
        put(f"seed0/teacher/checkpoints/{step}/_CHECKPOINT_METADATA")
    put("seed0/teacher/checkpoints/60/state")  # a save cut short: not complete
    put("seed0/teacher/tensorboard/events")
    put("seed0/ban-1/config.json", "{}")  # started, killed before its first checkpoint
    put("runs/dplc_b4_s0/config.json", "{}")
    put("runs/dplc_b4_s0/decoded.npz")  # a driver's cache inside a run
    put("runs/dplc_b4_s0/checkpoints/400/commit_success.txt")
    put("jax_cache/compiled")
    put("results.md", "| table |")
    runs, files = pack_run.tree_files(str(root))
    assert runs == {"seed0/teacher": 40, "seed0/ban-1": None, "runs/dplc_b4_s0": 400}
    assert pack_run.pack(str(root), str(tmp_path / "tree.tar"))[0] == "3 runs"
    with tarfile.open(tmp_path / "tree.tar") as tar:
        names = tar.getnames()
    assert len(names) == len(set(names))  # each file once (a checkpoint's files were in twice)
    moved = tmp_path / "elsewhere"
    assert pack_run.unpack(str(tmp_path / "tree.tar"), str(moved)) == "3 runs"
    got = sorted(str(p.relative_to(moved)) for p in moved.rglob("*") if p.is_file())
    assert got == ["results.md", "runs/dplc_b4_s0/checkpoints/400/commit_success.txt", "runs/dplc_b4_s0/config.json",
                   "runs/dplc_b4_s0/decoded.npz", "seed0/ban-1/config.json",
                   "seed0/teacher/checkpoints/40/_CHECKPOINT_METADATA", "seed0/teacher/checkpoints/40/state",
                   "seed0/teacher/config.json", "seed0/teacher/metrics.jsonl"]
    assert pack_run.main(["--workdir", str(tmp_path / "empty_dir_is_no_tree"), "--out", str(tmp_path / "e.tar")]) == 2
    # a tree whose run holds another checkpoint than its list says, or an unfinished one, is refused
    for name, step_dir, manifest in (("other", "20", {"seed0/teacher": 40}),
                                     ("unfinished", "60", {"seed0/teacher": 60}),
                                     ("noconfig", "40", {"seed0/teacher": 40, "seed0/missing": None})):
        odd = tmp_path / f"{name}.tar"
        with tarfile.open(odd, "w") as tar:
            data = json.dumps({"format": 1, "runs": manifest}).encode()
            info = tarfile.TarInfo(pack_run.TREE_MANIFEST)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            tar.add(str(root / "seed0/teacher/config.json"), arcname="seed0/teacher/config.json")
            tar.add(str(root / f"seed0/teacher/checkpoints/{step_dir}"),
                    arcname=f"seed0/teacher/checkpoints/{step_dir}")
        with pytest.raises(pack_run.PackError, match="not a complete packed tree"):
            pack_run.unpack(str(odd), str(tmp_path / name))
        assert not (tmp_path / name).exists()

"""The one training loop: jitted steps over a device mesh, orbax checkpoints, metrics.

A system plugs in through a :class:`Task` (pure functions) and a :class:`Batches` source
(host-side numpy batches). The loop owns everything else: placing the global batch
sharded over the ``data`` axis of a :class:`jax.sharding.Mesh` with the state replicated,
compiling each step once, checkpointing every ``checkpoint_every`` steps (keeping the last
``keep``) and resuming automatically from ``workdir``, logging to a progress bar,
TensorBoard and ``metrics.jsonl``, and evaluating every ``eval_every`` steps.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import logging
import math
import os
import shutil
import socket
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxcomp.checks import is_whole
from jaxcomp.configs import ConfigError
from jaxcomp.files import LOCK_FILE, open_appending, write_atomic
from jaxcomp.train.state import make_schedule, plateau_reset, plateau_scale, plateau_settings, plateau_update

try:
    import fcntl
except ImportError:  # not POSIX (Windows): workdirs are not locked
    fcntl = None

log = logging.getLogger("jaxcomp.train")

Batch = dict[str, np.ndarray]
Metrics = dict[str, Any]


class Task(Protocol):
    """What a system gives the trainer. All three are pure and jit-compatible.

    ``init(rng, batch) -> state``: a pytree (usually :class:`~jaxcomp.train.TrainState`).
    ``train_step(state, batch, rng) -> (state, metrics)``: metrics are scalars.
    ``eval_step(state, batch) -> metrics``: per-example arrays ``[B]`` (or scalars);
    the trainer drops padded examples and averages.
    """

    def init(self, rng: jax.Array, batch: Batch) -> Any: ...
    def train_step(self, state: Any, batch: Batch, rng: jax.Array) -> tuple[Any, Metrics]: ...
    def eval_step(self, state: Any, batch: Batch) -> Metrics: ...


class Batches(Protocol):
    """Host-side data: each host yields its own shard of every global batch."""

    batch_size: int  # global

    def train_batches(self, start_step: int = 0) -> Iterator[Batch]: ...
    def eval_batches(self, batch_size: int) -> Iterator[Batch]: ...


class CheckpointError(RuntimeError):
    """A checkpoint that is missing or does not fit the model the config describes."""


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> None:
    """Calls ``jax.distributed.initialize()`` when ``config.distributed`` is true (multi-host)."""
    if config.get("distributed", False) and jax.process_count() == 1:
        jax.distributed.initialize()


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (default: all devices of all hosts)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), ("data",))


def check_devices(config: ml_collections.ConfigDict, n_devices: int) -> None:
    """:class:`jaxcomp.configs.ConfigError` unless ``data.batch_size`` and ``eval_batch_size`` (where the
    config has them) split evenly over ``n_devices``: checked when a run starts, not at the first
    evaluation, which on a multi-GPU machine would fail before that step's checkpoint on every rerun.
    ``eval_batch_size`` counts only where the run evaluates (``eval_every`` > 0)."""
    sizes = [("data.batch_size", config.data.get("batch_size") if "data" in config else None)]
    if config.get("eval_every", 1):
        sizes.append(("eval_batch_size", config.get("eval_batch_size")))
    sizes = [(k, v) for k, v in sizes if is_whole(v)]
    for key, value in sizes:
        if value % n_devices:
            # a device count that splits every batch of the run, not only this one
            fits = [d for d in range(1, n_devices + 1) if all(v % d == 0 for _, v in sizes)]
            raise ConfigError(f"config.{key}={value} cannot be split over the {n_devices} devices of this run: "
                              f"set --config.{key} to a multiple of {n_devices}, or run on {fits[-1]} of them "
                              f"(e.g. CUDA_VISIBLE_DEVICES; every batch is split evenly over all devices)")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec("data"))


def shard_batch(batch: Batch, mesh: Mesh) -> dict[str, jax.Array]:
    """Makes global arrays from this host's part of a batch, split over the ``data`` axis."""
    sharding = batch_sharding(mesh)
    n = mesh.devices.size
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
        if global_shape[0] % n:
            raise ValueError(
                f"global batch of {global_shape[0]} examples ({key!r}) cannot be split over {n} devices; "
                f"use a batch size divisible by {n}"
            )
        out[key] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out


# The jitted functions of the last few (kind, task, mesh) triples: a second ``train`` of the same task
# object (a run continued after its time limit, a warm start, a test) reuses them, and so JAX's
# compiled executables, instead of tracing and lowering the model again (gc.py:tiny: 9.8-15.3 s a
# call without, 1.7-2.0 s with, the persistent compilation cache on in both). Host-side helpers of
# other modules (ECG's predictions, GC's latent sampler) keep theirs here too, through
# :func:`per_task`. A task is treated as immutable once built. Bounded, because the entries hold
# their task.
_JITTED: collections.OrderedDict = collections.OrderedDict()
_JITTED_MAX = 16


def per_task(kind: str, task: Any, build: Callable[[], Any], mesh: Mesh | None = None) -> Any:
    """``build()`` once per (``kind``, ``task`` object, ``mesh``), then the same value back.

    For jitted functions of a task (``build`` returns ``jax.jit(...)``): a caller that asks again
    reuses the traced and compiled function instead of tracing the model again. ``kind`` names the
    function (``"predict"``, ``"sample"``...), unique per task; the last few entries are kept.
    """
    key = (kind, id(task), mesh)  # the entry holds its task, so no other object takes that id meanwhile
    hit = _JITTED.get(key)
    if hit is not None:
        _JITTED.move_to_end(key)
        return hit[1]
    value = build()
    _JITTED[key] = (task, value)
    while len(_JITTED) > _JITTED_MAX:
        _JITTED.popitem(last=False)
    return value


def compile_steps(task: Task, mesh: Mesh) -> tuple[Callable, Callable]:
    """Jitted ``train_step(state, batch, rng, step)`` and ``eval_step(state, batch)``.

    The per-step rng is ``fold_in(rng, step)``, computed inside the compiled function so
    that a resumed run draws the same randomness as an uninterrupted one. The same ``task``
    object and mesh get the same jitted functions back (compiled once per input shape).
    """
    def build() -> tuple[Callable, Callable]:
        rep = replicated(mesh)

        def train_step(state, batch, rng, step):
            return task.train_step(state, batch, jax.random.fold_in(rng, step))

        train = jax.jit(train_step, out_shardings=(rep, rep), donate_argnums=(0,))
        evaluate = jax.jit(task.eval_step, out_shardings=rep)
        return train, evaluate

    return per_task("steps", task, build, mesh)


# An initialisation runs once, but on the CPU its compile takes longer than the training step's:
# every parameter initialiser unrolls the threefry random-number rounds, and LLVM's default
# optimisation level spends most of the time on that code. Level 1 compiles the inits of the 11
# configs checked 1.3-6x faster (e.g. cpm.py:tiny 27 s -> 4 s, l3c.py:tiny 13 s -> 4 s, with
# the execution) and gives bit-identical parameters (all 11, from all five tasks;
# tests/test_train.py keeps a slow check), so training runs stay reproducible.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def jit_init(fn: Callable, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fn, **jit_kwargs)`` compiled for a one-off initialisation (see ``INIT_COMPILER_OPTIONS``).

    Use it for ``task.init`` or ``model.init``: the same values as ``jax.jit``, sooner. The options
    apply on the CPU only; other backends compile with their defaults.
    """
    options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(fn, compiler_options=options, **jit_kwargs)


def init_state(task: Task, batch: Batch, rng: jax.Array, mesh: Mesh) -> Any:
    """The task's initial state, replicated over the mesh (its jitted init reused per task, as
    :func:`compile_steps`)."""
    init = per_task("init", task, lambda: jit_init(task.init, out_shardings=replicated(mesh)), mesh)
    return init(rng, shard_batch(batch, mesh))


def abstract_state(task: Task, batch: Batch, rng: jax.Array, mesh: Mesh) -> Any:
    """Shapes, dtypes and shardings of the task's state, without computing it."""
    rep = replicated(mesh)
    shapes = jax.eval_shape(task.init, rng, {k: jax.ShapeDtypeStruct(v.shape, v.dtype)
                                              for k, v in batch.items()})
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=rep), shapes)


def load_init_params(config: ml_collections.ConfigDict) -> tuple[Any, dict]:
    """``(params, notes)`` of the model named by ``config.init_from`` (a training workdir or an
    exported ``.msgpack``; the notes as :func:`jaxcomp.codecs.pretrained.load_model` gives them,
    with the file's ``"sha256"`` for a ``.msgpack``). A model with batch norm comes as its Flax
    variables ``{"params", "batch_stats"}`` (see :func:`jaxcomp.modelfile.load_workdir`).

    The model must be of the same ``config.task``; read on the host, as float32 numpy arrays.
    """
    from jaxcomp.modelfile import ModelLoadError, load_model

    try:
        _, params, notes = load_model(config.init_from, task=config.task)
        return params, notes
    except ModelLoadError as e:
        raise CheckpointError(f"init_from: {e}") from e


def _is_variables(tree: Any) -> bool:
    return isinstance(tree, dict) and set(tree) == {"params", "batch_stats"}


def warm_start(state: Any, loaded: Any, source: str, mesh: Mesh | None = None, grow: bool = False) -> Any:
    """``state`` with its ``params`` replaced by ``loaded``, which must match them in names and shapes.

    ``loaded`` may also be Flax variables ``{"params", "batch_stats"}`` (a model with batch norm):
    then the running statistics replace ``state.model_state["batch_stats"]`` as well, checked the
    same way, so the warm-started model evaluates as the loaded one did. (A source without them,
    for a model that has batch norm, starts its statistics fresh, with a warning.)

    ``grow``: a parameter may instead be at least as large as the loaded one in every dimension
    (a wider model, e.g. a CPM bottleneck of 64 channels started from one of 32): the loaded values
    fill its leading block, the rest keeps ``state``'s fresh initialisation. Names must still match.

    The optimizer state and step stay as initialised: fine-tuning starts a new schedule. Raises
    :class:`CheckpointError` naming the parameters that differ (another architecture).
    """
    stats = None
    if _is_variables(loaded):
        loaded, stats = loaded["params"], (loaded["batch_stats"] or None)  # {}: a model without batch norm
    own_stats = (state.model_state or {}).get("batch_stats") if isinstance(state.model_state, dict) else None
    params = _replace_leaves(state.params, loaded, source, grow, "")
    if stats is not None:
        if not own_stats:
            raise CheckpointError(f"init_from={source!r} is a model with batch norm; this config's model has none")
        new_stats = _replace_leaves(own_stats, stats, source, grow, "batch_stats/")
        if mesh is not None:
            new_stats = jax.device_put(new_stats, replicated(mesh))
        state = state.replace(model_state={**state.model_state, "batch_stats": new_stats})
    elif own_stats:
        log.warning("init_from=%r has no batch-norm statistics: they start fresh", source)
    if mesh is not None:
        params = jax.device_put(params, replicated(mesh))
    return state.replace(params=params)


def _replace_leaves(current: Any, loaded: Any, source: str, grow: bool, prefix: str) -> Any:
    """``current``'s tree with the values of ``loaded`` (same names; shapes equal, or inside with ``grow``)."""
    flat_old = {_path_name(p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    expected = _shapes(current)
    saved = {k: np.shape(v) for k, v in flat_old.items()}
    if grow:  # shapes that fit inside the new ones are not a mismatch
        saved = {k: (expected[k] if k in expected and _fits(v, expected[k]) else v) for k, v in saved.items()}
    mismatch = _shape_mismatch(expected, saved)
    if mismatch:
        hint = "" if grow else " (init_grow=True starts a wider model from a narrower one)"
        raise CheckpointError(f"init_from={source!r} is a different architecture: {prefix}{mismatch}{hint}")
    flat_new, treedef = jax.tree_util.tree_flatten_with_path(current)
    leaves = []
    for p, v in flat_new:
        old = np.asarray(flat_old[_path_name(p)], v.dtype)
        if old.shape != v.shape:
            grown = np.array(v)
            grown[tuple(slice(0, n) for n in old.shape)] = old
            log.info("init_grow: %s%s %s -> %s", prefix, _path_name(p), old.shape, v.shape)
            old = grown
        leaves.append(old)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _fits(small: tuple, big: tuple) -> bool:
    return len(small) == len(big) and all(a <= b for a, b in zip(small, big, strict=True))


def checkpoint_manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def restore_checkpoint(manager: ocp.CheckpointManager, abstract: Any, step: int | None = None) -> Any:
    """Restores ``step`` (default: the latest) into the structure of ``abstract``."""
    step = manager.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {manager.directory}")
    if step not in manager.all_steps():
        raise CheckpointError(f"no checkpoint for step {step} in {manager.directory}; "
                              f"available: {sorted(manager.all_steps())}")
    if not os.path.isdir(os.path.join(str(manager.directory), str(step), "default")):  # e.g. a folder made by hand
        earlier = sorted(s for s in manager.all_steps() if s < step)
        raise CheckpointError(f"checkpoint {manager.directory}/{step} is incomplete (no 'default' item in it): "
                              f"remove that folder to resume from "
                              f"{f'step {earlier[-1]}' if earlier else 'the start'}")
    mismatch = _param_mismatch(manager, step, abstract)
    if mismatch:
        # checked before restoring: a failing orbax restore leaves background futures whose
        # errors asyncio reports at interpreter exit
        raise CheckpointError(f"checkpoint {manager.directory}/{step} does not match the model of this config "
                              f"(different architecture or task?): {mismatch}")
    try:
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many types, plain Exception too)
        root = e
        while root.__cause__ is not None:  # the innermost cause names the file and the bytes it lacks
            root = root.__cause__
        detail = _error_text(e) + ("" if root is e else f" <- {_error_text(root)}")
        damaged = isinstance(root, (json.JSONDecodeError, UnicodeDecodeError)) or any(  # metadata or data cut
            code in detail for code in ("OUT_OF_RANGE", "DATA_LOSS", "Error reading"))
        if damaged:
            raise CheckpointError(
                f"checkpoint {manager.directory}/{step} is damaged: a file in it cannot be read (cut short or "
                f"removed in a copy?); restore its files, or remove that step to resume from an earlier one "
                f"({detail})") from e
        if not isinstance(root, (ValueError, KeyError, TypeError)):
            raise CheckpointError(
                f"checkpoint {manager.directory}/{step} could not be restored ({detail}); "
                f"if its files were damaged or removed in a copy, restore them, or remove that step to resume "
                f"from an earlier one") from e
        raise CheckpointError(
            f"checkpoint {manager.directory}/{step} does not match the model of this config "
            f"(different architecture or task; an optimizer state saved by an older version of its "
            f"task: start a new run from its parameters with init_from; or its files are damaged, cut "
            f"short in a copy: restore them, or resume from an earlier step): {detail}"
        ) from e


def _error_text(error: BaseException) -> str:
    """``Type: message`` on one line, without tensorstore's multi-line spec dump, at most 300 characters."""
    text = " ".join(str(error).split(" See full TensorStore details")[0].split())
    return f"{type(error).__name__}: {text}"[:300]


def _path_name(path: tuple) -> str:
    parts = []
    for k in path:
        parts.append(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))))
    return "/".join(parts)


def _param_mismatch(manager: ocp.CheckpointManager, step: int, abstract: Any) -> str:
    """Differences between the saved and the expected ``params`` (names, shapes); "" if none or unknown."""
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # orbax warns that a metadata file it does not need is absent
    try:
        saved = ocp.StandardCheckpointer().metadata(os.path.join(str(manager.directory), str(step), "default"))
        saved = getattr(saved, "item_metadata", saved)
        saved_shapes = {_path_name(p): tuple(m.shape) for p, m in jax.tree_util.tree_flatten_with_path(saved)[0]
                        if getattr(m, "shape", None) is not None}
    except Exception:  # no metadata to compare with: let the restore itself decide
        return ""
    finally:
        absl_log.setLevel(level)
    saved_p = {k: v for k, v in saved_shapes.items() if k.startswith("params/")}
    expected_p = {k: v for k, v in _shapes(abstract).items() if k.startswith("params/")}
    if not saved_p or not expected_p:
        return ""
    return _shape_mismatch(expected_p, saved_p)


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    """``{"a/b/kernel": shape}`` for every leaf of ``tree``."""
    return {_path_name(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _shape_mismatch(expected: dict[str, tuple], saved: dict[str, tuple]) -> str:
    """Names missing from / unexpected in ``saved`` and shapes that differ; "" if they match."""
    problems = [f"{k} missing" for k in sorted(expected.keys() - saved.keys())]
    problems += [f"{k} unexpected" for k in sorted(saved.keys() - expected.keys())]
    problems += [f"{k} has shape {tuple(saved[k])}, expected {tuple(expected[k])}"
                 for k in sorted(saved.keys() & expected.keys()) if tuple(saved[k]) != tuple(expected[k])]
    return "; ".join(problems[:4]) + (f" (and {len(problems) - 4} more)" if len(problems) > 4 else "")


def evaluate(eval_step: Callable, state: Any, batches: Iterator[Batch], mesh: Mesh) -> dict[str, float]:
    """Mean of the per-example metrics of ``eval_step`` over all valid examples (and, for a language
    model's ``nll_sum`` and ``tokens`` per window, the per-token ``perplexity`` they make)."""
    sums: dict[str, float] = {}
    count = 0
    for batch in batches:
        valid = np.asarray(batch.pop("valid", np.ones(len(next(iter(batch.values()))), bool)))
        metrics = eval_step(state, shard_batch(batch, mesh))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            metrics = multihost_utils.process_allgather(metrics, tiled=True)
            valid = multihost_utils.process_allgather(valid, tiled=True)
        metrics = jax.device_get(metrics)
        n = int(valid.sum())
        for key, value in metrics.items():
            value = np.asarray(value, np.float64)
            total = float((value * valid).sum()) if value.ndim else float(value) * n
            sums[key] = sums.get(key, 0.0) + total
        count += n
    if count == 0:
        return {}
    means = {key: value / count for key, value in sums.items()}
    if "nll_sum" in means and "tokens" in means and "perplexity" not in means and means["tokens"] > 0:
        # a language model's windows (jaxcomp.distill.task.LanguageModelTask.eval_step): the ratio of the
        # means is the exact per-token perplexity of the whole validation stream
        nll = means["nll_sum"] / means["tokens"]
        means["perplexity"] = math.exp(nll) if nll < 709.0 else float("inf")  # a diverged model: inf, not a crash
    return means


class MetricWriter:
    """TensorBoard (tensorboardX) and ``metrics.jsonl`` on host 0; nothing elsewhere."""

    def __init__(self, workdir: str):
        self.active = jax.process_index() == 0
        self._tb = None
        self._jsonl = None
        if self.active:
            os.makedirs(workdir, exist_ok=True)
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            except ImportError:
                log.warning("tensorboardX not installed: no TensorBoard summaries")
            self._jsonl = open_appending(os.path.join(workdir, "metrics.jsonl"))

    def write(self, step: int, metrics: dict[str, float], prefix: str) -> None:
        if not self.active:
            return
        if self._tb is not None:
            for key, value in metrics.items():
                self._tb.add_scalar(f"{prefix}/{key}", value, step)
            self._tb.flush()
        self._jsonl.write(json.dumps({"step": step, "split": prefix, **metrics}) + "\n")
        self._jsonl.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def check_settings(config: ml_collections.ConfigDict) -> None:
    """Raises :class:`jaxcomp.configs.ConfigError` for a loop setting that cannot work, before
    anything is built or compiled: ``steps``, ``eval_every`` >= 0; ``log_every``,
    ``checkpoint_every``, ``keep`` (checkpoints kept: 0 would keep none), ``eval_batch_size`` and
    ``data.batch_size`` (where the config has them) >= 1; in every ``optimizer*`` section a finite
    ``learning_rate`` > 0, whole ``warmup_steps`` >= 0 and, for a cosine schedule, ``decay_steps`` >= 1
    (a warning when that schedule ends long before the run or leaves more than 5 % of its rate at
    the end: ``steps`` overridden without ``decay_steps``); ``optimizer.plateau`` well formed and, when
    on, evaluations to watch (``eval_every`` > 0); no plateau rule on another optimizer section (a
    two-player task's ``optimizer_d``): the trainer reads the rule from ``config.optimizer`` only
    (and applies its factor to every optimizer's state)."""
    rules = {"steps": 0, "eval_every": 0, "log_every": 1, "checkpoint_every": 1, "keep": 1, "eval_batch_size": 1}
    values = {k: config.get(k) for k in rules}
    if "data" in config and "batch_size" in config.data:
        rules["data.batch_size"], values["data.batch_size"] = 1, config.data.batch_size
    for key, least in rules.items():
        value = values[key]
        if value is None and key != "steps":
            continue
        if not is_whole(value) or value < least:
            raise ConfigError(f"config.{key} must be an integer >= {least}, got {value!r}"
                              + (" (0 would keep no checkpoint)" if key == "keep" else ""))
    try:
        plateau = plateau_settings(config.optimizer) if "optimizer" in config else None
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for key in sorted(k for k in config.keys() if k.startswith("optimizer")):
        if isinstance(config[key], ml_collections.ConfigDict) and "learning_rate" in config[key]:
            try:
                make_schedule(config[key])
            except ValueError as e:
                raise ConfigError(f"config.{key}.{e}") from None
            _warn_on_schedule_length(config, key)
    for key in sorted(k for k in config.keys() if k.startswith("optimizer") and k != "optimizer"):
        section = config[key]
        if isinstance(section, ml_collections.ConfigDict) and section.get("plateau", None) is not None \
                and section.plateau.get("metric", ""):
            raise ConfigError(f"{key}.plateau.metric={section.plateau.metric!r}: the trainer reads the plateau rule "
                              f"from config.optimizer only (set there, it cuts every optimizer's rate, {key}'s "
                              f"included, with those settings); set it there, or {key}.plateau.metric='' to "
                              f"switch it off")
    if plateau is not None and not config.get("eval_every"):
        raise ConfigError(f"optimizer.plateau.metric={plateau.metric!r} needs evaluations to watch: set "
                          "config.eval_every > 0 (or optimizer.plateau.metric='' to switch the rule off)")


def _warn_on_schedule_length(config: ml_collections.ConfigDict, key: str) -> None:
    """Warns when a cosine schedule does not end with the run: ``steps`` overridden without
    ``decay_steps`` (the configs tie them) leaves the rate at 0 for the last steps, or ends the run
    with most of the rate left."""
    opt, steps = config[key], config.get("steps")
    if opt.get("schedule", "constant") != "cosine" or not is_whole(steps) or steps == 0:  # 0: nothing trained
        return
    decay, warmup = int(opt.decay_steps), int(opt.get("warmup_steps", 0))
    left = 0.5 * (1 + math.cos(math.pi * min(max(steps - warmup, 0) / decay, 1.0)))
    if steps > warmup + decay:
        warnings.warn(f"{key}.decay_steps={decay} (after {warmup} warm-up steps) but steps={steps}: the learning "
                      f"rate is 0 for the last {steps - warmup - decay} steps; set {key}.decay_steps with steps",
                      stacklevel=3)
    elif left > 0.05:  # more than 5 % of the peak rate left at the last step
        warnings.warn(f"{key}.decay_steps={decay} but steps={steps}: the run ends with {left:.0%} of the peak "
                      f"learning rate left; set {key}.decay_steps with steps", stacklevel=3)


# Settings that change how a run is logged and checkpointed, or where its inputs are found (a run
# carried to another machine), never the model it trains.
BOOKKEEPING_KEYS = ("log_every", "checkpoint_every", "keep", "eval_every", "eval_batch_size", "distributed",
                    "data.path", "data.tfds_data_dir", "distill.teachers")


def settings_differences(config: ml_collections.ConfigDict, saved: dict, may_differ: Sequence[str] = ()) -> str:
    """The settings in which ``config`` differs from ``saved`` (a config as a nested dict, e.g. a run's
    ``config.json``), as ``"key (old -> new), ..."`` (at most 6 named), or ``""``. The dotted keys
    ``may_differ`` and those under them aside, and keys only one side has (settings added to the configs
    since, or no longer read: their default then was the code's)."""
    import json

    from flax import traverse_util

    new = traverse_util.flatten_dict(json.loads(config.to_json_best_effort()), sep=".")
    old = traverse_util.flatten_dict(saved, sep=".")
    differ = sorted(k for k in set(old) & set(new)
                    if new[k] != old[k] and not any(k == m or k.startswith(m + ".") for m in may_differ))
    shown = ", ".join(f"{k} ({old[k]!r} -> {new[k]!r})" for k in differ[:6])
    return shown + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")


def check_same_settings(config: ml_collections.ConfigDict, workdir: str,
                        may_differ: Sequence[str] = BOOKKEEPING_KEYS) -> None:
    """``ValueError`` if ``workdir`` holds a run saved with other settings than ``config`` (dotted keys
    named; the keys ``may_differ`` and those under them aside, and keys only one side has: settings
    added to the configs since the run, or no longer read). For drivers that restore or continue finished
    runs and report them: a re-run with, say, other label noise would otherwise continue or report the
    old models under the new settings (the library's ``train`` keeps the old config aside and continues;
    ``experiments/train.py`` refuses unless ``--allow-changed-config``)."""
    from jaxcomp.files import read_run_config

    saved = read_run_config(workdir)
    if saved is None:
        return
    differ = settings_differences(config, saved, may_differ)
    if differ:
        raise ValueError(f"{workdir} holds a run with other settings: {differ}; use a new --workdir "
                         f"(or the settings it was run with; experiments/train.py: --allow-changed-config to "
                         f"continue it anyway)")


DISCARDED_METRICS = "metrics.discarded.jsonl"  # rows logged after the last checkpoint of a stopped run


@contextlib.contextmanager
def workdir_lock(workdir: str, purpose: str = "training", read_only: bool = False) -> Iterator[None]:
    """Holds an exclusive lock on ``WORKDIR/train.lock`` (taken by process 0, its outcome shared
    with the others; released when the block ends or the process dies): a second process training
    or evaluating the same workdir is refused by name instead of both writing the same checkpoint
    steps and interleaving their logs. (POSIX ``flock``; where Python has no ``fcntl``, e.g. on
    Windows, or the filesystem has no ``flock``, nothing is locked: a warning says so.)

    ``read_only``: the holder only reads the workdir (``--eval-only``): where the lock file cannot be
    made (a read-only workdir, another user's run) it goes on unlocked, with a warning, since nothing
    that it does can clash with a writer.

    Raises:
      CheckpointError: another process holds the workdir (its pid, host and purpose are named).
    """
    f, holder = None, None
    if jax.process_index() == 0 and fcntl is not None:
        os.makedirs(workdir, exist_ok=True)
        try:
            f = open(os.path.join(workdir, LOCK_FILE), "a+", encoding="utf-8")
        except OSError as e:
            if not (read_only and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS)):
                raise
            log.warning("%s is not writable (%s): %s without its lock", workdir, e, purpose)
    if f is not None:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                f.seek(0)
                holder = f.read().strip() or "a process that did not say which"
            else:  # e.g. a filesystem without flock (ENOSYS, EOPNOTSUPP): run, as before there were locks
                log.warning("%s cannot be locked (%s): nothing stops a second process from using it meanwhile",
                            workdir, e)
            f.close()
            f = None
    busy = holder is not None
    if jax.process_count() > 1:  # every process stops, not only process 0
        from jax.experimental import multihost_utils

        busy = bool(multihost_utils.broadcast_one_to_all(np.bool_(busy)))
    if busy:
        raise CheckpointError(f"{workdir} is in use by another process ({holder or 'seen by process 0'}): two runs "
                              "in one workdir overwrite each other's checkpoints and interleave their logs; wait "
                              "for it to finish, stop it, or use another --workdir")
    try:
        if f is not None:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()}, {purpose}, since "
                    f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
            f.flush()
        yield
    finally:
        if f is not None:
            f.close()  # releases the lock


def _set_aside_rows_past(workdir: str, step: int) -> None:
    """Moves the rows of ``metrics.jsonl`` logged after ``step`` (a run stopped after its last
    checkpoint: training that was not saved and is about to be redone) to
    ``metrics.discarded.jsonl``, so the log holds each step once and nothing is lost."""
    path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() != 0 or not os.path.exists(path):
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    keep, later = [], []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:  # a torn line stays where it is (read_jsonl skips it with a warning)
            row = None
        later_row = isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step
        (later if later_row else keep).append(line)
    if not later:
        return
    with open_appending(os.path.join(workdir, DISCARDED_METRICS)) as f:  # first: a kill here loses nothing
        f.write("".join(later))
    write_atomic(path, "".join(keep))
    log.warning("%d rows of %s were logged after step %d, the checkpoint this run continues from (training "
                "that was not saved); moved to %s", len(later), path, step, DISCARDED_METRICS)


def _new_state(config: ml_collections.ConfigDict, task: Task, batch: Batch, rng: jax.Array,
               mesh: Mesh) -> tuple[Any, dict | None]:
    """``(state, notes)`` of a run's step 0: ``task.init``, warm-started from ``config.init_from``
    when set (``notes`` as :func:`load_init_params` gives them, else None). The starting model is
    read before init compiles, so a wrong path fails at once."""
    loaded, notes = load_init_params(config) if config.get("init_from", "") else (None, None)
    state = init_state(task, batch, rng, mesh)
    if loaded is not None:
        state = warm_start(state, loaded, config.init_from, mesh, grow=bool(config.get("init_grow", False)))
    return state, notes


def _save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, "config.json")
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path) as f:
            if f.read() != text:
                aside = path + f".{int(time.time())}"
                log.warning("config differs from the one saved in %s; the old one is kept as %s", workdir, aside)
                shutil.copy2(path, aside)  # the old one stays until the new is whole
    write_atomic(path, text)


def train(
    config: ml_collections.ConfigDict,
    workdir: str,
    task: Task,
    data: Batches,
    callbacks: Sequence[Callable[[int, Any, Metrics], None]] = (),
    mesh: Mesh | None = None,
    progress: bool = True,
    time_limit: float | None = None,
) -> tuple[Any, dict[str, float]]:
    """Trains ``task`` on ``data`` for ``config.steps`` steps; resumes from ``workdir``.

    Config keys read: ``seed``, ``steps``, ``log_every``, ``eval_every``,
    ``checkpoint_every``, ``keep``, ``eval_batch_size`` (all ints), and ``init_from`` if present:
    a workdir or exported ``.msgpack`` of the same task whose parameters a new run starts from
    (fine-tuning; a resumed run ignores it; its lineage goes to ``WORKDIR/lineage.json``), with
    ``init_grow`` (bool, if present) letting parameters of a wider model start from narrower ones
    (see :func:`warm_start`).
    ``callbacks(step, state, metrics)`` run on the host after every step (``metrics``
    holds device arrays; reading them synchronises).

    ``time_limit`` (seconds of wall clock from this call, initialisation and compilation included):
    stop after the first step that ends later, with a checkpoint of that step and no evaluation.
    Calling ``train`` again with the same config and workdir continues the run; batches and step
    keys depend only on (seed, step), so the result is that of an uninterrupted run. For leased
    machines with a per-command limit, and for sharing a CPU. With several processes, process
    0's clock decides, checked every ``log_every`` steps.

    Returns:
      The final state (``state.step < config.steps`` if stopped by ``time_limit``) and the last
      evaluation metrics (empty without validation data).

    The workdir is locked while this runs (:func:`workdir_lock`: a second process is refused). A
    run continued from a checkpoint first moves the log rows written after that checkpoint (by
    the stopped run, whose steps are redone) to ``metrics.discarded.jsonl``; a run stopped by
    ``time_limit`` logs the train metrics of its last, partial logging interval; a finished run
    called again reports its evaluation without logging it twice.
    """
    started = time.monotonic()
    check_settings(config)
    mesh = make_mesh() if mesh is None else mesh
    check_devices(config, mesh.devices.size)
    with workdir_lock(workdir, "training"):
        return _train(config, workdir, task, data, callbacks, mesh, progress, time_limit, started)


def _train(config: ml_collections.ConfigDict, workdir: str, task: Task, data: Batches,
           callbacks: Sequence[Callable[[int, Any, Metrics], None]], mesh: Mesh, progress: bool,
           time_limit: float | None, started: float) -> tuple[Any, dict[str, float]]:
    rng = jax.random.PRNGKey(config.seed)
    init_rng, train_rng = jax.random.split(rng)

    manager = checkpoint_manager(workdir, config.keep)
    start_step = manager.latest_step() or 0
    _set_aside_rows_past(workdir, start_step)
    batches = data.train_batches(start_step)
    first = next(batches)
    if config.eval_every and start_step < config.steps:
        # the validation data's own checks (e.g. every image smaller than data.eval_crop) before any training
        next(iter(data.eval_batches(config.eval_batch_size)), None)
    if start_step:
        state = restore_checkpoint(manager, abstract_state(task, first, init_rng, mesh), start_step)
        log.info("resumed from %s at step %d", manager.directory, start_step)
        if 0 < config.steps < start_step:  # (steps 0: evaluation is what is asked)
            log.warning("the checkpoint in %s is at step %d, past config.steps=%d: nothing is trained, "
                        "the step-%d model is evaluated", manager.directory, start_step, config.steps, start_step)
    else:
        state, notes = _new_state(config, task, first, init_rng, mesh)
        if notes is not None:
            log.info("started from the parameters of %s", config.init_from)
            if jax.process_index() == 0:
                from jaxcomp.modelfile import record_lineage

                # the hash of the bytes just loaded, not of the file when the model is exported
                record_lineage(workdir, config.init_from, notes.get("sha256"))
    # a run trained to its end (or past it) is reported with its config kept; a new one (also of 0
    # steps, a starting model's run) saves it, once the checkpoint or starting model fits this config
    if start_step < config.steps or not start_step:
        _save_config(config, workdir)
    train_step, eval_step = compile_steps(task, mesh)
    plateau = plateau_settings(config.optimizer) if "optimizer" in config else None
    plateau_resets = {int(s) for s in plateau.get("reset_steps", ())} if plateau is not None else set()
    if plateau is not None and plateau_scale(getattr(state, "opt_state", None)) is None:
        raise ConfigError("optimizer.plateau is set but the task's optimizer has no plateau factor (it does not "
                          "build its optimizer with jaxcomp.train.make_optimizer)")
    writer = MetricWriter(workdir)
    eval_metrics: dict[str, float] = {}

    def run_eval(step: int, log_it: bool = True) -> dict[str, float]:
        metrics = evaluate(eval_step, state, data.eval_batches(config.eval_batch_size), mesh)
        if metrics and log_it:
            writer.write(step, metrics, "eval")
            if progress and jax.process_index() == 0:
                tqdm.write(f"step {step} eval: " + _fmt(metrics))
        return metrics

    bar = tqdm(total=config.steps, initial=start_step, disable=not progress or jax.process_index() != 0,
               dynamic_ncols=True, mininterval=1.0 if sys.stderr.isatty() else 30.0, desc="train")
    pending: list[Metrics] = []
    last_log = [time.perf_counter(), start_step]  # time and step of the last train row

    def log_train(step: int) -> None:
        """The means of the steps since the last train row, as one row at ``step``."""
        means = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
        now = time.perf_counter()
        means["steps_per_sec"] = (step - last_log[1]) / max(now - last_log[0], 1e-9)
        if plateau is not None and "learning_rate" in means:  # the schedule's rate times the rule's factor
            means["learning_rate"] *= plateau_scale(state.opt_state)
        last_log[:] = [now, step]
        writer.write(step, means, "train")
        bar.set_postfix_str(_fmt(means))
        pending.clear()

    step = start_step
    batch = first
    try:
        while step < config.steps:
            state, metrics = train_step(state, shard_batch(batch, mesh), train_rng, np.int32(step))
            step += 1
            pending.append(metrics)
            for callback in callbacks:
                callback(step, state, metrics)
            bar.update(1)
            if step % config.log_every == 0 or step == config.steps:
                log_train(step)
            if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
                eval_metrics = run_eval(step)
                if plateau is not None:
                    state = _apply_plateau(state, eval_metrics, plateau, step, writer)
            if plateau is not None and step in plateau_resets:
                state = state.replace(opt_state=plateau_reset(state.opt_state))
            if step % config.checkpoint_every == 0 or step == config.steps:  # after the plateau rule's update
                manager.save(step, args=ocp.args.StandardSave(state))
            if step < config.steps and _out_of_time(started, time_limit, step, config.log_every):
                if pending:  # the steps since the last row, logged before the checkpoint that keeps them
                    log_train(step)
                if step % config.checkpoint_every:
                    manager.save(step, args=ocp.args.StandardSave(state))
                log.info("time limit of %.0f s reached: stopped at step %d of %d (checkpointed; "
                         "the same command continues the run)", time_limit, step, config.steps)
                break
            if step < config.steps:
                batch = next(batches)
        if not eval_metrics and step == start_step and config.eval_every:
            # already trained to the end: report, do not train (nor log the evaluation a second time)
            eval_metrics = run_eval(step, log_it=False)
    finally:
        bar.close()
        manager.wait_until_finished()
        manager.close()
        writer.close()
        getattr(batches, "close", lambda: None)()
    return state, eval_metrics


def _apply_plateau(state: Any, metrics: dict[str, float], plateau: ml_collections.ConfigDict, step: int,
                   writer: MetricWriter) -> Any:
    """:func:`jaxcomp.train.plateau_update` with the evaluation's ``plateau.metric``; logs the factor."""
    if plateau.metric not in metrics:
        raise ConfigError(f"optimizer.plateau.metric={plateau.metric!r} is not among the evaluation's metrics "
                          f"({', '.join(sorted(metrics)) or 'none: no validation data'})")
    before = plateau_scale(state.opt_state)
    state = state.replace(opt_state=plateau_update(state.opt_state, metrics[plateau.metric], plateau))
    after = plateau_scale(state.opt_state)
    writer.write(step, {"lr_factor": after}, "plateau")  # its own rows: readers of "train" rows expect losses
    if after != before:
        log.info("step %d: validation %s %.4g did not improve by more than %g: learning rate x%g (factor now %.4g)",
                 step, plateau.metric, metrics[plateau.metric], plateau.get("min_delta", 0.0),
                 plateau.get("factor", 0.5), after)
    return state


def _out_of_time(started: float, time_limit: float | None, step: int, every: int) -> bool:
    """Whether a run that began at ``started`` (``time.monotonic()``) has used ``time_limit``
    seconds; the same answer on every process (process 0's, checked every ``every`` steps)."""
    if not time_limit:
        return False
    if jax.process_count() == 1:
        return time.monotonic() - started > time_limit
    if step % every:
        return False
    from jax.experimental import multihost_utils

    late = np.bool_(time.monotonic() - started > time_limit)
    return bool(multihost_utils.broadcast_one_to_all(late))


def evaluate_run(config: ml_collections.ConfigDict, workdir: str, task: Task, data: Batches,
                 mesh: Mesh | None = None) -> tuple[Any, dict[str, float]]:
    """``(state, metrics)``: the latest checkpoint in ``workdir`` (or, with none there, the model
    ``config.init_from`` names, on a fresh initialisation) evaluated on ``data``'s validation
    batches (``{}`` when ``config.eval_every`` is 0: no validation data). What
    ``experiments/train.py --eval-only`` runs.

    Writes nothing into ``workdir`` but its lock file (held meanwhile, :func:`workdir_lock`): the run's
    ``config.json`` and ``metrics.jsonl`` stay those of its training, whatever this config
    overrides (another validation set, say). ``state.step`` is the checkpoint's step (0 for
    ``init_from``).

    Raises:
      CheckpointError: neither a checkpoint nor ``config.init_from``; the checkpoint or model does
        not fit the config's model; the workdir is in use.
    """
    check_settings(config)
    mesh = make_mesh() if mesh is None else mesh
    check_devices(config, mesh.devices.size)
    init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))
    batches = data.train_batches(0)
    try:
        first = next(batches)  # the shapes to build the model with
    finally:
        getattr(batches, "close", lambda: None)()
    from jaxcomp.files import latest_complete_checkpoint

    # a workdir that does not exist (a model named by init_from) is not made: nothing is written
    lock = workdir_lock(workdir, "--eval-only", read_only=True) if os.path.isdir(workdir) else contextlib.nullcontext()
    with lock:
        if latest_complete_checkpoint(workdir) is not None:
            state = restore_for_eval(config, workdir, task, first, mesh=mesh)
        elif config.get("init_from", ""):
            state, _ = _new_state(config, task, first, init_rng, mesh)
        else:
            raise CheckpointError(f"no checkpoint in {workdir} and no config.init_from to evaluate")
        _, eval_step = compile_steps(task, mesh)
        metrics = evaluate(eval_step, state, data.eval_batches(config.eval_batch_size), mesh) \
            if config.eval_every else {}
    return state, metrics


def restore_for_eval(
    config: ml_collections.ConfigDict, workdir: str, task: Task, example_batch: Batch,
    step: int | None = None, mesh: Mesh | None = None,
) -> Any:
    """The state saved in ``workdir`` (latest step by default), for evaluation or coding."""
    mesh = make_mesh() if mesh is None else mesh
    init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))
    manager = checkpoint_manager(workdir, config.keep)
    try:
        return restore_checkpoint(manager, abstract_state(task, example_batch, init_rng, mesh), step)
    finally:
        manager.close()


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4g}" for k, v in metrics.items())


__all__ = [
    "Batches", "CheckpointError", "Task", "abstract_state", "batch_sharding", "checkpoint_manager",
    "compile_steps", "evaluate", "evaluate_run", "init_state", "jit_init", "make_mesh", "maybe_initialize_distributed",
    "replicated", "restore_checkpoint", "restore_for_eval", "shard_batch", "train", "workdir_lock",
]


def benchmark_train_step(task: Task, batch: Batch, steps: int = 5, warmup: int = 1,
                         mesh: Mesh | None = None) -> dict[str, Any]:
    """Times the task's jitted train step on one fixed ``batch`` (for ``experiments/bench_*``).

    Compiles once (timed separately), runs ``warmup`` untimed steps, then ``steps`` timed
    ones. Returns ``compile_s``, ``step_s`` (median), ``peak_mem_mb`` (the process's max RSS
    on CPU, the allocator's peak on GPU/TPU), ``device``, ``params`` (count), ``metrics`` (of
    the last step, as floats) and ``state``.
    """
    import resource

    from jaxcomp.checks import count

    steps, warmup = count(steps, "steps", 1), count(warmup, "warmup", 0)  # a median of no steps is NaN
    mesh = make_mesh() if mesh is None else mesh
    rng = jax.random.PRNGKey(0)
    state = init_state(task, batch, rng, mesh)
    train_step, _ = compile_steps(task, mesh)
    sharded = shard_batch(batch, mesh)
    t0 = time.perf_counter()
    compiled = train_step.lower(state, sharded, rng, np.int32(0)).compile()
    compile_s = time.perf_counter() - t0
    metrics: Metrics = {}
    for i in range(warmup):
        state, metrics = compiled(state, sharded, rng, np.int32(i))
    jax.block_until_ready(state)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, metrics = compiled(state, sharded, rng, np.int32(i))
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    peak = stats.get("peak_bytes_in_use", 0) if stats else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = getattr(state, "params", state)
    return dict(compile_s=compile_s, step_s=float(np.median(times)), peak_mem_mb=peak / 2**20,
                device=f"{device.platform}:{device.device_kind} x{jax.device_count()}",
                params=int(sum(x.size for x in jax.tree.leaves(params))),
                metrics={k: float(v) for k, v in metrics.items()}, state=state)

"""Model files: exporting trained parameters, loading them back, and the lineage of trainings.

An exported model is ``NAME.msgpack`` (Flax-serialized parameters) beside ``NAME.json``
(``{"config": <the training config>, "training": <how it was trained>}``); a training workdir
holds ``config.json`` and orbax checkpoints of the trainer's state under ``checkpoints/``.

This module sits below both the trainer (which warm-starts from a model file and records the
lineage) and the codecs (which load one): it imports neither, nor :mod:`jaxcomp.tasks`. The
models shipped with the package are found by :mod:`jaxcomp.codecs.pretrained`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.files import check_output_file, sha256_file, write_atomic


class ModelLoadError(ValueError):
    """A checkpoint path that does not hold a usable model."""


@functools.lru_cache(maxsize=16)
def param_shapes(module: Any, *inputs: jax.ShapeDtypeStruct | None) -> Any:
    """The parameter tree of ``module.init(rng, *inputs)`` (a Flax module; ``inputs`` as
    ``jax.ShapeDtypeStruct`` or ``None``) with ``jax.ShapeDtypeStruct`` leaves: one abstract trace,
    once per module and input shapes in a process (``{}`` for a module without parameters). What
    :func:`check_params` compares against. Traced with 64-bit floats off, as the models compute (a
    process with ``jax_enable_x64`` on failed here, in a convolution of float32 and float64)."""
    with jax.enable_x64(False):
        return jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs).get("params", {})


def check_params(params: Any, expected: Any, path: str, architecture: str | None = None) -> None:
    """Raises :class:`ModelLoadError` unless ``params`` has exactly the tree and shapes of
    ``expected`` (e.g. :func:`param_shapes`): a model file whose notes name another architecture
    than its parameters (an edited ``.json``, a mismatched pair) is refused by name instead of
    failing inside Flax or, with parameters to spare, coding with part of them. ``path`` and
    ``architecture`` name the parameters' source and what they should fit in the message (by
    default the architecture that ``path``'s notes describe: a workdir's ``config.json``, an
    exported model's ``.json``)."""
    if architecture is None:
        notes = "config.json" if os.path.isdir(path) else ".json"
        architecture = f"the architecture its {notes} describes"
    def name(path: tuple) -> str:
        return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)

    got = {name(k): np.shape(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    want = {name(k): tuple(v.shape) for k, v in jax.tree_util.tree_leaves_with_path(expected)}
    if got == want:
        return
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    shapes = [f"{k}: {got[k]} instead of {want[k]}" for k in sorted(set(got) & set(want)) if got[k] != want[k]]
    parts = ([f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"] if missing else []) + (
        [f"unused {', '.join(extra[:3])}{' ...' if len(extra) > 3 else ''}"] if extra else []) + shapes[:3]
    raise ModelLoadError(f"{path}: the model's parameters do not fit {architecture} ({'; '.join(parts)})")


def export_params(params: Any, config: ml_collections.ConfigDict, path: str, training: dict[str, Any],
                  dtype: str = "float32") -> None:
    """Writes ``path`` (.msgpack parameters) and the ``.json`` beside it (making the folder if needed).

    Each file is written whole or not at all (:func:`jaxcomp.files.write_atomic`), the ``.json``
    second. It records ``training["params_sha256"]``, the SHA-256 of the ``.msgpack`` bytes, so a
    pair torn apart (a crash between the two writes, a copy of one file only) is refused on load
    instead of pairing parameters with another model's config and notes.

    ``dtype="float16"`` stores floating-point parameters in half precision (half the file);
    :func:`load_model` returns them as float32, so a codec computes with exactly the stored values.
    """
    import hashlib

    from flax import serialization

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, not {dtype!r}")
    _check_model_file_name(path)
    host = jax.tree.map(lambda a: np.asarray(a).astype(dtype) if _is_float(a) else np.asarray(a), params)
    data = serialization.msgpack_serialize(host)
    training = dict(training, stored_dtype=dtype, params_sha256=hashlib.sha256(data).hexdigest())
    record = json.dumps({"config": json.loads(config.to_json_best_effort()), "training": training}, indent=2)
    write_atomic(path, data, makedirs=True)
    write_atomic(os.path.splitext(path)[0] + ".json", record)


def _check_model_file_name(path: str) -> None:
    """``ValueError`` for a model path that is its ``.json`` notes' name or a folder."""
    if os.path.splitext(path)[1].lower() == ".json":
        raise ValueError(f"{path}: a model's parameters cannot go to a .json file, where its notes go; "
                         f"name it NAME.msgpack")
    if os.path.isdir(path):  # a bare IsADirectoryError from the atomic write before
        raise ValueError(f"{path} is a folder: give the model file's path, e.g. {os.path.join(path, 'model.msgpack')}")


def check_new_model_path(path: str, force: bool = False) -> None:
    """``ValueError`` unless ``path`` can take a new model: ``NAME.msgpack`` (not its ``.json`` notes,
    not a folder) whose ``NAME.msgpack`` and ``NAME.json`` do not exist yet, or ``force`` (replace them).
    Commands call it before they compute anything, so a user's model (a shipped one too) is never
    replaced by accident and a long run does not end in a refusal."""
    _check_model_file_name(path)
    check_output_file(path)  # its folder is one or can become one (export_params makes it)
    existing = [p for p in (path, os.path.splitext(path)[0] + ".json") if os.path.exists(p)]
    if existing and not force:
        raise ValueError(f"{' and '.join(existing)} exist(s): choose another --out, or pass --force to replace")


def params_digest(path: str) -> str:
    """A short hash (16 hex digits) of a model's parameters: the bytes of an exported ``.msgpack``, or
    the parameters of a training workdir's latest checkpoint. For caches of a model's outputs: keyed by
    what the model computes, not by its path (a model trained further in the same place is another)."""
    if not os.path.exists(path):
        raise ModelLoadError(f"model not found: {path!r} (an exported .msgpack or a training workdir)")
    if os.path.isdir(path):
        return _tree_digest(load_workdir(path, batch_stats=False)[1])
    return sha256_file(path)[:16]


def _tree_digest(params: Any) -> str:
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()[:16]


def model_digest(path: str) -> str:
    """A short hash (16 hex digits) of what a model computes: its parameters (:func:`params_digest`)
    and the config it is loaded with (an exported model's ``.json`` ``"config"``, a workdir's
    ``config.json``; the config builds the network and the metrics around it). For pure caches of
    a model's outputs, where a key too strict costs only a recomputation."""
    if os.path.isdir(path):  # one read of the workdir: its config.json and latest parameters
        run_config, params, _ = load_workdir(path, batch_stats=False)
        digest, config = _tree_digest(params), run_config.to_dict()
    else:
        digest = params_digest(path)  # names a missing model
        config_path = os.path.splitext(path)[0] + ".json"
        notes = _read_json(config_path, "model notes") if os.path.isfile(config_path) else {}
        config = notes.get("config") if isinstance(notes, dict) else None
        if not isinstance(config, dict):
            raise ModelLoadError(f"{path}: no model config in {config_path}")
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256((digest + "\n" + text).encode()).hexdigest()[:16]


def lineage(init_from: str, sha256: str | None = None) -> list[dict[str, Any]]:
    """The chain of trainings a run with ``config.init_from=init_from`` continues, oldest first.

    Each entry describes one earlier training round: for an exported ``.msgpack`` its path as given,
    the SHA-256 of the file and the ``steps``, ``train_seconds``, ``command``, ``note`` and
    ``last_eval`` of its ``.json``, preceded by that model's own recorded lineage; a training workdir
    is recorded by its path alone. A starting model that is no longer on disk is recorded with
    ``"missing": True``, so a chain is never silently cut short. ``""`` (no warm start) gives ``[]``.
    The hash is of the file as it is now; the trainer therefore records the lineage in the workdir
    when a run starts (:func:`record_lineage`), and export reads it from there
    (:func:`workdir_lineage`). ``sha256``: the digest of the model file if the caller has already
    read it (:func:`load_model` returns it as ``notes["sha256"]``), so the file is not read again
    and the hash is that of the very bytes that were loaded. Raises :class:`ModelLoadError` for
    notes that are not JSON.
    """

    if not init_from:
        return []
    if os.path.isdir(init_from):
        return [{"workdir": os.path.abspath(init_from)}]
    _check_notes_path(init_from)
    meta_path = os.path.splitext(init_from)[0] + ".json"
    if not (os.path.isfile(init_from) and os.path.isfile(meta_path)):
        return [{"model": init_from, "missing": True}]
    if sha256 is None:
        sha256 = sha256_file(init_from)
    notes = _read_json(meta_path, "model notes")
    if not isinstance(notes, dict):
        raise ModelLoadError(f"{meta_path}: model notes are a JSON object, not {type(notes).__name__}")
    training = notes.get("training", {})
    _check_pair(init_from, training, sha256)
    entry = {"model": init_from, "sha256": sha256}
    entry.update({k: training[k] for k in ("steps", "train_seconds", "command", "note", "last_eval")
                  if k in training})
    return list(training.get("lineage", [])) + [entry]


def _is_float(a: Any) -> bool:
    """A floating-point leaf, bfloat16 included (``np.issubdtype`` does not count ml_dtypes' floats)."""
    return bool(jnp.issubdtype(np.asarray(a).dtype, jnp.floating))


def _check_notes_path(path: str) -> None:
    """:class:`ModelLoadError` for the ``.json`` notes given where the ``.msgpack`` parameters are meant."""
    if os.path.splitext(path)[1].lower() == ".json":
        raise ModelLoadError(f"{path} is a model's notes; give the parameters file beside it "
                             f"({os.path.splitext(path)[0]}.msgpack)")


def _check_pair(path: str, training: Any, sha256: str) -> None:
    """Raises :class:`ModelLoadError` if the ``.json`` beside the model file ``path`` records the
    digest of other parameters than ``sha256`` (exports before 2026-12-06 record none)."""
    expected = training.get("params_sha256") if isinstance(training, dict) else None
    if expected is not None and expected != sha256:
        meta = os.path.basename(os.path.splitext(path)[0] + ".json")
        raise ModelLoadError(
            f"{path}: its parameters are not the ones {meta} describes (sha256 {sha256[:12]}... against "
            f"params_sha256 {str(expected)[:12]}... there): the file is damaged (cut short or altered in a copy or "
            f"download), or the pair was torn apart, by an export interrupted between the two files or a copy of "
            f"only one of them; export again, or copy both files together")


def _read_json(path: str, what: str) -> Any:
    """The JSON in ``path``; :class:`ModelLoadError` naming the file and ``what`` it holds if it is not JSON."""
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError as e:
        raise ModelLoadError(f"{path}: unreadable {what} ({e})") from e


LINEAGE_FILE = "lineage.json"


def record_lineage(workdir: str, init_from: str, sha256: str | None = None) -> list[dict[str, Any]]:
    """Writes ``lineage(init_from, sha256)`` to ``WORKDIR/lineage.json`` and returns it.

    Called by the trainer when a run warm-starts, so the hashes are those of the files the run
    actually started from, even if a starting model is later replaced in place (as when a
    fine-tuned model is copied over the shipped file it started from).
    """
    chain = lineage(init_from, sha256)
    write_atomic(os.path.join(workdir, LINEAGE_FILE), json.dumps(chain, indent=2))
    return chain


def workdir_lineage(workdir: str, init_from: str) -> list[dict[str, Any]]:
    """The lineage a training workdir recorded when it started (:func:`record_lineage`); for a
    workdir from before that was recorded, ``lineage(init_from)`` as the files are now."""
    path = os.path.join(workdir, LINEAGE_FILE)
    if not os.path.isfile(path):
        return lineage(init_from)
    chain = _read_json(path, "lineage")
    if not isinstance(chain, list):
        raise ModelLoadError(f"{path}: a lineage is a JSON list, not {type(chain).__name__}")
    return chain


def _load_exported(path: str) -> tuple[ml_collections.ConfigDict, Any, dict]:
    """``(config, params, notes)`` of an exported model; ``notes`` is its ``.json``'s ``training``
    plus ``"sha256"``, the digest of the bytes the parameters were read from."""
    import hashlib

    from flax import serialization

    _check_notes_path(path)
    meta_path = os.path.splitext(path)[0] + ".json"
    if not os.path.isfile(meta_path):
        raise ModelLoadError(f"{path}: no {os.path.basename(meta_path)} beside it (the model's config)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        with open(path, "rb") as f:
            data = f.read()
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: unreadable model file ({e})") from e
    if not (isinstance(meta, dict) and isinstance(meta.get("config"), dict)
            and isinstance(meta.get("training", {}), dict)):
        raise ModelLoadError(f"{meta_path}: not a model's notes (a JSON object with a \"config\" object)")
    notes = dict(meta.get("training", {}), sha256=hashlib.sha256(data).hexdigest())
    _check_pair(path, meta.get("training", {}), notes["sha256"])
    try:
        params = serialization.msgpack_restore(data)
    except ValueError as e:
        raise ModelLoadError(f"{path}: unreadable model file ({e})") from e
    return ml_collections.ConfigDict(meta["config"]), params, notes


def load_workdir(workdir: str, batch_stats: bool | None = None,
                 task: str | None = None) -> tuple[ml_collections.ConfigDict, Any, dict]:
    """``(config, params, notes)`` of the latest checkpoint of a training workdir; ``notes["step"]``
    is that checkpoint's step.

    A model with batch norm is returned, in place of ``params``, as its Flax variables
    ``{"params": ..., "batch_stats": ...}`` with the running statistics of the state's
    ``model_state`` (what it needs to evaluate, and what an exported model of it holds):
    ``batch_stats=None`` does so when the checkpoint has them, ``True`` requires them
    (:class:`ModelLoadError` if it has none), ``False`` returns the parameters alone.

    The checkpoint is restored without a target tree (and so without building the task, its
    model or a device mesh): as nested dicts of host ``numpy`` arrays, whatever the devices it
    was saved from; ``params`` is the trainer state's ``params``. Whether they fit the model of
    ``config`` is checked by whoever uses them (a codec, the trainer's warm start); ``task``, when
    given, is checked here against the run config's, before the checkpoint is read.
    """
    import orbax.checkpoint as ocp

    if not os.path.isdir(workdir):
        raise ModelLoadError(f"{workdir} is not a training workdir ("
                             f"{'a file' if os.path.exists(workdir) else 'no such folder'})")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise ModelLoadError(f"{workdir} is not a training workdir (no config.json)")
    config = _read_json(config_path, "run config")
    if not isinstance(config, dict):
        raise ModelLoadError(f"{config_path}: a run config is a JSON object, not {type(config).__name__}")
    if task is not None and config.get("task") != task:
        raise ModelLoadError(f"{workdir} holds a {config.get('task')!r} model, not {task!r}")
    config = ml_collections.ConfigDict(config)
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    step = None
    if os.path.isdir(directory):
        options = ocp.CheckpointManagerOptions(create=False, read_only=True)
        with ocp.CheckpointManager(directory, options=options) as manager:
            step = manager.latest_step()
    if step is None:
        raise ModelLoadError(f"no checkpoint in {directory}")
    item = os.path.join(directory, str(step), "default")  # the trainer's one (default) item
    try:
        with ocp.PyTreeCheckpointer() as checkpointer:
            metadata = checkpointer.metadata(item)
            tree = getattr(metadata, "item_metadata", metadata)
            tree = getattr(tree, "tree", tree)
            as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
            state = checkpointer.restore(item, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
        params = state["params"]
    except Exception as e:  # orbax and tensorstore raise many types for a damaged or foreign checkpoint
        raise ModelLoadError(f"{item}: unreadable checkpoint of step {step} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from e
    stats = (state.get("model_state") or {}).get("batch_stats") if batch_stats is not False else None
    if batch_stats and not stats:
        raise ModelLoadError(f"{workdir}: the checkpoint has no model_state.batch_stats")
    if stats:
        params = {"params": params, "batch_stats": stats}
    return config, params, {"workdir": os.path.abspath(workdir), "step": int(state["step"])}


def load_model(checkpoint: str, task: str) -> tuple[ml_collections.ConfigDict, Any, dict]:
    """``(config, params, training notes)`` from an exported ``.msgpack`` or a training workdir.

    ``params`` are the Flax variables ``{"params", "batch_stats"}`` for a model with batch norm
    (its exported file holds them; from a workdir see :func:`load_workdir`).

    The notes of a ``.msgpack`` carry ``"sha256"`` (of the file as read), those of a workdir its
    path and checkpoint ``"step"``. Floating-point parameters come back as ``float32`` numpy
    arrays. Raises :class:`ModelLoadError` for a path that does not hold a model of ``task``.
    (:func:`jaxcomp.codecs.pretrained.load_model` defaults to the shipped L3C model.)
    """
    path = checkpoint
    if not isinstance(path, (str, os.PathLike)):
        raise ModelLoadError(f"a checkpoint is a path (a .msgpack file or a training workdir), "
                             f"got {type(path).__name__}")
    if os.path.isdir(path):
        config, params, notes = load_workdir(path)  # names a folder without config.json
    elif os.path.isfile(path):
        config, params, notes = _load_exported(path)
    else:
        raise ModelLoadError(f"checkpoint not found: {path}")
    params = jax.tree.map(lambda a: np.asarray(a, np.float32) if _is_float(a) else a, params)
    if config.get("task") != task:
        raise ModelLoadError(f"{path} holds a {config.get('task')!r} model, not {task!r}")
    return config, params, notes

"""Training as the paper, and k-fold cross-validation of the CNN and the staged CRNN.

**Training as the reference code** (github.com/yruffiner/ecg-classification, ``models/*_paper.json``;
:func:`build_training_data`, :func:`train_with_validation`):

* a stratified *validation split* of ``validation.fraction`` of the training folds (reference:
  1/6), scored with the challenge F1 every ``validation.every`` steps; the best step's
  parameters and batch statistics are written to ``WORKDIR/best.msgpack`` (+ ``best.json``,
  :mod:`jaxcomp.modelfile`'s format) and are the result of the run; after ``validation.patience``
  scores without improvement training stops (*early stopping*; 0 = never);
* *class weights* ``loss.class_weights="reference"``: ``w_c = (1 - c) + c / p_c`` with
  ``c = loss.class_penalty`` (0.2) and ``p_c`` the class's share of the training split — a mix of
  uniform and inverse-frequency weights (the reference hard-codes the shares of the whole
  challenge set); ``"power"``: ``(n / (4 n_c)) ** data.class_weight_power`` (the data module's);
* *oversampling* ``sampling.oversample`` (the reference's ``dataset_compensation``, 0.2): a
  training recording of class ``c`` is drawn ``floor(oversample / p_c) + 1`` times as often.

**Cross-validation** (:func:`cross_validate`, ``experiments/ecg_cv.py``, the notebook): for every
seed and fold, train the CNN on the other folds (stage 1), score it on the held-out fold, then
train the CRNN with its conv blocks initialised from that CNN (stage 2) and score it (with
``"cnn_more"`` in ``cv.models`` also the control at equal total steps: the CNN continued for the
CRNN's stage-2 steps — its conv blocks, a new linear layer, all trained, same schedule; with
``"crnn_e2e"`` also the reference's end-to-end phases 2-4 after stage 2, :func:`end_to_end_config`,
scored after the last phase). With a
validation split, the scored model is the best one on validation (``f1``); the last step's
score is kept as ``last_f1``. Results go to ``workdir/results.jsonl`` (one line per run;
finished runs are skipped when the script is started again), ``workdir/results.md`` (a table per
fold and mean +- std) and ``workdir/confusion.png`` (confusion matrices summed over folds).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax
import ml_collections
import numpy as np

from jaxcomp.checks import nonempty, seed_list
from jaxcomp.configs import apply_overrides, config_digest
from jaxcomp.deadline import Deadline, without_budget
from jaxcomp.ecg.data import CLASSES, ECGBatches, ECGDataError, ECGDataset, check_indices, fold_indices, load_dataset
from jaxcomp.ecg.scoring import challenge_f1, confusion_matrix, plot_confusion, score
from jaxcomp.ecg.task import BEST_MODEL, ECGTask, best_model
from jaxcomp.files import append_jsonl, read_jsonl, write_atomic
from jaxcomp.xla import driver_cache_dir, enable_compilation_cache

if TYPE_CHECKING:
    from jaxcomp.train import TrainState

VALIDATION_LOG = "validation.json"


def class_shares(labels: np.ndarray) -> np.ndarray:
    """``[4]`` float64: each class's share of ``labels`` (int ``[n]``)."""
    counts = np.bincount(np.asarray(labels, np.int64), minlength=len(CLASSES)).astype(np.float64)
    return counts / max(counts.sum(), 1.0)


def reference_class_weights(labels: np.ndarray, class_penalty: float = 0.2) -> np.ndarray:
    """The reference code's loss weights ``(1 - c) + c / p_c`` (``c = class_penalty``), float32 ``[4]``.

    ``p_c`` is the class's share of ``labels`` (int ``[n]``); a class absent from them gets 0.
    ``class_penalty=0`` gives uniform weights, 1 pure inverse-frequency ones.
    """
    if not 0.0 <= class_penalty <= 1.0:
        raise ValueError(f"loss.class_penalty must be in [0, 1], got {class_penalty}")
    p = class_shares(labels)
    w = np.where(p > 0, (1.0 - class_penalty) + class_penalty / np.maximum(p, 1e-12), 0.0)
    return w.astype(np.float32)


def oversampling_repeats(labels: np.ndarray, oversample: float = 0.2) -> np.ndarray:
    """How many times each class is repeated in the training pool, int64 ``[4]``: ``floor(oversample / p_c) + 1``.

    The reference's ``batch_splitter`` (``dataset_compensation``): with the challenge's shares
    (59.5 / 8.9 / 28.3 / 3.3 %) and 0.2 that is N x1, A x3, O x1, ~ x7. ``oversample=0``: all 1.
    """
    if oversample < 0:
        raise ValueError(f"sampling.oversample must be >= 0, got {oversample}")
    p = class_shares(labels)
    return np.where(p > 0, np.floor(oversample / np.maximum(p, 1e-12) + 1e-9) + 1, 1).astype(np.int64)


def validation_split(labels: np.ndarray, train_idx: np.ndarray, fraction: float,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split of ``train_idx`` (int ``[n]``) into ``(train, validation)`` index arrays.

    Each class gives ``round(fraction * n_c)`` of its members (shuffled with
    ``default_rng([seed, class])``) to the validation set, at least one if it has two or more.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation.fraction must be in [0, 1), got {fraction}")
    train_idx = np.asarray(train_idx)
    if fraction == 0:
        return train_idx, train_idx[:0]
    labels = np.asarray(labels)[train_idx]
    val = []
    for c in np.unique(labels):
        members = np.random.default_rng([seed, int(c)]).permutation(train_idx[labels == c])
        k = int(round(fraction * len(members)))
        k = max(k, 1) if len(members) >= 2 else 0
        val.append(members[:k])
    val_idx = np.sort(np.concatenate(val))
    return np.setdiff1d(train_idx, val_idx), val_idx


class ECGTrainingBatches(ECGBatches):
    """:class:`ECGBatches` with a validation split, configurable class weights and oversampling.

    ``val_idx``: the validation recordings (scored by :func:`train_with_validation`, not trained
    on). ``repeats [4]``: a training recording of class ``c`` is drawn with probability
    proportional to ``repeats[c]`` (all ones: exactly :class:`ECGBatches`' batches).
    ``class_weights [4]``: the loss weight of each class (replaces the data module's).
    """

    def __init__(self, dataset: ECGDataset, train_idx: np.ndarray, val_idx: np.ndarray, eval_idx: np.ndarray,
                 batch_size: int, seed: int, buckets: Sequence[float], class_weights: np.ndarray,
                 repeats: np.ndarray,
                 process_index: int = 0, process_count: int = 1):
        super().__init__(dataset, train_idx, eval_idx, batch_size, seed, buckets, 1.0, process_index, process_count)
        self.val_idx = check_indices("val_idx", val_idx, len(dataset))
        if np.intersect1d(self.val_idx, self.train_idx).size:
            raise ECGDataError("val_idx and train_idx share recordings: the validation split would score "
                               "recordings the model trains on")
        weights, counts = np.asarray(class_weights), np.asarray(repeats)
        if weights.shape != (len(CLASSES),) or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ECGDataError(f"class_weights must be {len(CLASSES)} finite weights >= 0, got {class_weights!r}")
        if counts.shape != (len(CLASSES),) or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0) \
                or not np.any(counts[np.unique(dataset.labels[self.train_idx])] > 0):
            raise ECGDataError(f"repeats must be {len(CLASSES)} integers >= 0, one of a class that trains > 0; "
                               f"got {repeats!r}")
        self.weights = weights.astype(np.float32)
        self.repeats = counts.astype(np.int64)
        self.oversampled = bool(np.any(self.repeats != 1))
        if self.oversampled:
            mass = [self.repeats[dataset.labels[m]].astype(np.float64) for m in self.train_buckets]
            self.member_probs = [w / max(w.sum(), 1e-12) for w in mass]
            sizes = np.array([w.sum() for w in mass])
            self.bucket_probs = sizes / sizes.sum()

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        if not self.oversampled:
            return super().train_batch(step)
        rng = np.random.default_rng([self.seed, step, self.process_index])
        b = int(rng.choice(len(self.edges), p=self.bucket_probs))
        idx = rng.choice(self.train_buckets[b], self.local_batch_size, p=self.member_probs[b])
        return self._batch(idx, int(self.edges[b]))


def build_training_data(config: ml_collections.ConfigDict, fold: int | None = None) -> ECGTrainingBatches:
    """The batches of fold ``fold`` (default ``data.fold``) with the validation split, class weights and
    oversampling that ``config.validation``, ``config.loss`` and ``config.sampling`` describe.

    Without those blocks (older configs): no validation split, the data module's power-law
    weights, no oversampling — the batches :func:`jaxcomp.ecg.data.build_ecg_data` gives.
    """
    data = config.data
    dataset = load_dataset(data)
    train_idx, eval_idx = fold_indices(dataset, data, fold)
    validation = config.get("validation", ml_collections.ConfigDict({"fraction": 0.0, "seed": 0}))
    train_idx, val_idx = validation_split(dataset.labels, train_idx, validation.fraction, validation.get("seed", 0))
    train_labels = dataset.labels[train_idx]
    loss = config.get("loss", ml_collections.ConfigDict({"class_weights": "power"}))
    if loss.class_weights == "reference":
        weights = reference_class_weights(train_labels, loss.class_penalty)
    elif loss.class_weights == "power":
        from jaxcomp.ecg.data import class_weights
        weights = class_weights(train_labels, data.class_weight_power)
    else:
        raise ValueError(f"loss.class_weights must be 'reference' or 'power', got {loss.class_weights!r}")
    sampling = config.get("sampling", ml_collections.ConfigDict({"oversample": 0.0}))
    repeats = oversampling_repeats(train_labels, sampling.oversample)
    return ECGTrainingBatches(dataset, train_idx, val_idx, eval_idx, data.batch_size, data.seed, tuple(data.buckets),
                              weights, repeats, jax.process_index(), jax.process_count())


def predict_split(task: ECGTask, state: TrainState, data: ECGBatches, batch_size: int, idx: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(labels [n], predictions [n], probabilities [n, 4], indices [n])`` of a split (default: the eval fold)."""
    from jaxcomp.train import per_task

    predict = per_task("ecg-predict", task, lambda: jax.jit(task.predict))
    labels, preds, probs, index = [], [], [], []
    for batch in data.eval_batches(batch_size, idx):
        valid = batch.pop("valid")
        logits = np.asarray(predict(state, {k: batch[k] for k in ("signal", "length", "label", "weight")}))
        p = np.exp(logits - logits.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        labels.append(batch["label"][valid])
        preds.append(logits.argmax(-1)[valid])
        probs.append(p[valid])
        index.append(batch["index"][valid])
    return np.concatenate(labels), np.concatenate(preds), np.concatenate(probs), np.concatenate(index)


class _EarlyStop(Exception):
    pass


def state_from_variables(task: ECGTask, variables: dict) -> TrainState:
    """A :class:`jaxcomp.train.TrainState` holding ``{"params", "batch_stats"}`` (for ``task.predict``)."""
    from jaxcomp.train import TrainState

    params = jax.tree.map(jax.numpy.asarray, variables["params"])
    return TrainState.create(params, task.tx, model_state={"batch_stats": jax.tree.map(jax.numpy.asarray,
                                                                                      variables["batch_stats"])})


def train_with_validation(config: ml_collections.ConfigDict, workdir: str, task: ECGTask,
                          data: ECGTrainingBatches, progress: bool = False, time_limit: float | None = None,
                          note: str = "") -> tuple[TrainState, dict[str, Any]]:
    """Trains with the trainer, scoring ``data.val_idx`` every ``validation.every`` steps; keeps the best.

    Returns ``(state, info)``: the state with the best validation F1's parameters (the last
    state if there is no validation split) and ``info`` = ``dict(best_step, best_val_f1,
    stopped_at, history=[{step, f1}], last_state)``. The best variables are also written to
    ``WORKDIR/best.msgpack`` (:func:`jaxcomp.modelfile.export_params`, loadable with
    ``load_model(path, task="ecg")``) and the scores to ``WORKDIR/validation.json``. Started
    again on a finished (or early-stopped) workdir it trains no further.
    """
    from jaxcomp import train as trainer
    from jaxcomp.modelfile import export_params, load_model

    os.makedirs(workdir, exist_ok=True)
    val_idx = getattr(data, "val_idx", np.arange(0))
    validation = config.get("validation", ml_collections.ConfigDict({"every": 0, "patience": 0}))
    log_path, best_path = os.path.join(workdir, VALIDATION_LOG), os.path.join(workdir, BEST_MODEL)
    info = {"best_step": None, "best_val_f1": None, "stopped_at": None, "history": []}
    if os.path.isfile(log_path) and os.path.isfile(best_path):
        with open(log_path) as f:
            info.update(json.load(f))
    if len(val_idx) == 0 or not validation.every:
        state, _ = trainer.train(config, workdir, task, data, progress=progress, time_limit=time_limit)
        return state, dict(info, last_state=state)
    latest: list = [None]
    best: list = [None]
    every, patience = int(validation.every), int(validation.get("patience", 0))
    min_steps = int(validation.get("min_steps", 0))  # no early stop before it (the reference: 300 epochs)

    def save_log():
        write_atomic(log_path, json.dumps({k: v for k, v in info.items()}, indent=1))

    def on_step(step, state, metrics):
        latest[0] = state
        if step % every and step != config.steps:
            return
        if info["history"] and info["history"][-1]["step"] >= step:
            return
        labels, preds, _, _ = predict_split(task, state, data, config.eval_batch_size, val_idx)
        f1 = challenge_f1(confusion_matrix(labels, preds))
        info["history"].append({"step": int(step), "f1": round(f1, 5)})
        if info["best_val_f1"] is None or f1 >= info["best_val_f1"]:  # >= as the reference: the later one
            info["best_step"], info["best_val_f1"] = int(step), float(f1)
            variables = jax.device_get({"params": state.params, "batch_stats": state.model_state["batch_stats"]})
            best[0] = variables
            export_params(variables, config, best_path, dict(
                steps=int(step), best_step=int(step), val_f1=round(f1, 5), n_val=int(len(val_idx)),
                n_train=int(len(data.train_idx)), data=data.dataset.source, note=note))
        save_log()
        if progress:
            from tqdm.auto import tqdm
            tqdm.write(f"step {step} validation F1 {f1:.3f} (best {info['best_val_f1']:.3f} at {info['best_step']})")
        rounds_since = sum(1 for h in info["history"] if h["step"] > info["best_step"])
        if patience and rounds_since >= patience and min_steps <= step < config.steps:
            info["stopped_at"] = int(step)
            save_log()
            raise _EarlyStop

    last = None
    if info["stopped_at"] is None:
        try:
            last, _ = trainer.train(config, workdir, task, data, callbacks=[on_step], progress=progress,
                                    time_limit=time_limit)
        except _EarlyStop:
            last = latest[0]
    if best[0] is None:
        if not os.path.isfile(best_path):  # finished before validation was configured: the last state
            return last, dict(info, last_state=last)
        _, best[0], _ = load_model(best_path, "ecg")
    return state_from_variables(task, best[0]), dict(info, last_state=last if last is not None else latest[0])


def end_to_end_config(config: ml_collections.ConfigDict, phase: int, start: str,
                      overrides: tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """The config of phase ``phase`` (0-based) of the reference CRNN's end-to-end phases 2-4.

    It trains the whole CRNN (no frozen blocks) for ``cv.crnn_e2e_steps`` steps at
    ``optimizer.learning_rate * cv.crnn_e2e_lr_factors[phase]``, warm-started (``init_from``:
    parameters and batch-norm statistics) from ``start``: the staged CRNN (a workdir or its
    ``best.msgpack``) for phase 0, the previous phase's best model (:func:`best_model`) after
    that. Unlike the reference, which scores a phase's starting model too (its epoch 0), a
    phase's result is the best of its own validation scores, all after training steps.
    """
    phases, steps = int(config.cv.crnn_e2e_phases), int(config.cv.crnn_e2e_steps)
    factors = tuple(config.cv.crnn_e2e_lr_factors)
    if len(factors) != phases:
        raise ValueError(f"cv.crnn_e2e_lr_factors has {len(factors)} entries for cv.crnn_e2e_phases={phases}")
    if not 0 <= phase < phases:
        raise ValueError(f"phase {phase} of cv.crnn_e2e_phases={phases}")
    c = apply_overrides(config, list(overrides) + [
        "model.name=crnn", "stage.init_conv_from=", f"init_from={start}",
        f"steps={steps}", f"eval_every={steps}", f"checkpoint_every={steps}"])
    c.optimizer.learning_rate = float(config.optimizer.learning_rate) * float(factors[phase])
    if c.optimizer.get("decay_steps"):
        c.optimizer.decay_steps = steps
    return c


def _run_overrides(seed: int, fold: int) -> list[str]:
    """The settings of one cross-validation run: its seed (initialisation and batches) and held-out fold."""
    return [f"seed={seed}", f"data.seed={seed}", f"data.fold={fold}"]


def _stage_configs(config: ml_collections.ConfigDict, seed: int, fold: int, cnn_dir: str):
    common = _run_overrides(seed, fold)
    cnn = apply_overrides(config, common + ["model.name=cnn", "stage.init_conv_from="])
    crnn_steps = config.cv.crnn_steps
    crnn = apply_overrides(config, common + ["model.name=crnn", f"stage.init_conv_from={cnn_dir}",
                                             f"steps={crnn_steps}", f"eval_every={crnn_steps}",
                                             f"checkpoint_every={crnn_steps}"])
    # the control at equal total steps: the CNN's conv blocks, a new linear layer, everything trained
    # for the CRNN's stage-2 steps with the same schedule
    cnn_more = apply_overrides(crnn, ["model.name=cnn", "stage.freeze_conv=False"])
    for c in (crnn, cnn_more):
        if c.optimizer.get("decay_steps"):
            c.optimizer.decay_steps = crnn_steps
    return {"cnn": cnn, "crnn": crnn, "cnn_more": cnn_more}


_MODELS = ("cnn", "crnn", "cnn_more", "crnn_e2e")
_NEEDS = {"crnn": ("cnn",), "cnn_more": ("cnn",), "crnn_e2e": ("cnn", "crnn")}  # runs a model starts from


def results_digest(config: ml_collections.ConfigDict) -> str:
    """A digest of every setting of ``config`` that changes a cross-validation run's result: all of
    it but ``cv.seeds``, ``cv.folds`` and ``cv.models``, which only choose the runs, and the command's
    budget ``cv.time_limit``."""
    return config_digest(config, exclude=("cv.seeds", "cv.folds", "cv.models", "cv.time_limit"))


def cross_validate(config: ml_collections.ConfigDict, workdir: str, deadline: Deadline | None = None) -> str:
    """Runs the cross-validation a config's ``cv`` block describes; returns the Markdown table.

    Finished runs are read back from ``workdir/results.jsonl`` and not run again; each row records
    :func:`results_digest` of its config, and rows of another config raise ``ValueError`` (a
    changed setting would otherwise report the old runs as the new ones); rows written before
    rows carried the digest are reused with a warning. ``cv.time_limit`` (seconds for the whole
    command): the model in training stops there with a checkpoint and
    :class:`jaxcomp.deadline.OutOfTime` is raised; the same command continues it. ``deadline``: a
    budget shared with the caller's other work (a script that cross-validates several variants in one
    command, e.g. ``experiments/ecg_ablation.py``), used instead of the config's ``cv.time_limit``.
    """
    from tqdm.auto import tqdm

    if deadline is None:
        deadline = Deadline(config.cv.get("time_limit", 0.0), "cv.time_limit")
    digest = results_digest(config)
    config = without_budget(config, "cv.time_limit")  # the runs' configs (their config.json) hold no budget

    def train(cfg, run_dir):
        """``(task, data, state, info)`` of one run: built and trained within the budget."""
        from jaxcomp.train import BOOKKEEPING_KEYS, check_same_settings

        # a run folder of other settings (its results.jsonl moved aside, say) would be
        # restored and scored as this config's; the plan (cv) and the starting model's path may differ
        check_same_settings(cfg, run_dir, BOOKKEEPING_KEYS + ("cv", "init_from"))
        log_path, stopped_early = os.path.join(run_dir, VALIDATION_LOG), False
        if os.path.isfile(log_path):
            with open(log_path) as f:
                stopped_early = json.load(f).get("stopped_at") is not None
        # out of time: stop before the data is built (an early-stopped run trains no further: it goes ahead)
        limit = None if stopped_early else deadline.for_training(run_dir, cfg.steps)
        task, data = ECGTask(cfg), build_training_data(cfg)
        state, info = train_with_validation(cfg, run_dir, task, data, time_limit=limit and deadline.left())
        if info["stopped_at"] is None and info["last_state"] is not None:  # not stopped early by validation
            deadline.check_finished(info["last_state"], cfg.steps, run_dir)
        return task, data, state, info

    seeds = seed_list(config.cv.seeds, "cv.seeds")
    folds = list(config.cv.folds) or list(range(config.data.num_folds))
    models = nonempty(config.cv.models, "cv.models")
    unknown = set(models) - set(_MODELS)
    if unknown:
        raise ValueError(f"cv.models may hold {', '.join(map(repr, _MODELS))}, got {sorted(unknown)}")
    if "crnn_e2e" in models:
        if not config.cv.crnn_e2e_phases:
            raise ValueError("cv.models has 'crnn_e2e' but cv.crnn_e2e_phases is 0")
        end_to_end_config(config, 0, "")  # its settings' own checks, before hours of training
    os.makedirs(workdir, exist_ok=True)  # after the checks: a refused run leaves nothing behind
    enable_compilation_cache(driver_cache_dir(workdir), min_compile_secs=1.0)
    results_path = os.path.join(workdir, "results.jsonl")
    done = {}
    # recordings read from a directory can change under the same config (a relabelled REFERENCE.csv,
    # re-exported records): rows carry the data's digest too; generated data is fixed by the config
    data_digest = load_dataset(config.data).digest() if config.data.source != "synthetic" else None
    if os.path.exists(results_path):
        rows = read_jsonl(results_path)
        unchecked = sum("data_digest" not in r for r in rows) if data_digest is not None else 0
        if unchecked:  # written before rows carried the data's digest: the recordings cannot be checked
            warnings.warn(f"{results_path}: {unchecked} row(s) predate the check of the recordings they scored and "
                          f"are reused as they are; move the file aside if {config.data.path} changed since",
                          stacklevel=2)
        undigested = sum("config_digest" not in r for r in rows)
        if undigested:  # written before rows carried digests: their config cannot be checked
            warnings.warn(f"{results_path}: {undigested} row(s) predate the config check and are reused as "
                          f"they are; move the file aside if the config changed since", stacklevel=2)
        for r in rows:
            if r.get("config_digest", digest) != digest:
                raise ValueError(f"{results_path}: its runs were made with another config (digest "
                                 f"{r['config_digest']}, this config {digest}); use another --workdir (its run folders "
                                 f"hold that config's models too)")
            if r.get("data_digest", data_digest) != data_digest:
                raise ValueError(f"{results_path}: its runs were made on other recordings or labels than "
                                 f"{config.data.path} holds now (data digest {r['data_digest']}, now {data_digest}); "
                                 f"use another --workdir")
            done[(r["seed"], r["fold"], r["model"])] = r
    needed = set(models) | {n for m in models for n in _NEEDS.get(m, ())}
    runs = [(s, f, m) for s in seeds for f in folds for m in _MODELS if m in needed]
    bar = tqdm(runs, desc="cv runs", mininterval=10.0)
    for seed, fold, model in bar:
        bar.set_postfix_str(f"seed {seed} fold {fold} {model}")
        if (seed, fold, model) in done:
            continue
        run_dir = os.path.join(workdir, f"seed{seed}", f"fold{fold}")
        t0 = time.perf_counter()
        if model == "crnn_e2e":  # phases 2-4, each from the previous one's best model
            start = best_model(os.path.join(run_dir, "crnn"))
            for k in range(int(config.cv.crnn_e2e_phases)):
                cfg = end_to_end_config(config, k, start, tuple(_run_overrides(seed, fold)))
                phase_dir = os.path.join(run_dir, f"crnn_e2e{k}")
                task, data, state, info = train(cfg, phase_dir)
                start = best_model(phase_dir)
        else:
            cfg = _stage_configs(config, seed, fold, os.path.join(run_dir, "cnn"))[model]
            task, data, state, info = train(cfg, os.path.join(run_dir, model))
        train_s = time.perf_counter() - t0
        labels, preds, _, _ = predict_split(task, state, data, cfg.eval_batch_size)
        steps = cfg.steps * (int(config.cv.crnn_e2e_phases) if model == "crnn_e2e" else 1)
        r = dict(seed=seed, fold=fold, model=model, steps=steps, train_s=round(train_s, 1), n_eval=len(labels),
                 source=data.dataset.source, config_digest=digest, **score(labels, preds))
        if data_digest is not None:
            r["data_digest"] = data_digest
        if info["best_step"] is not None:
            last_state = info["last_state"]
            if last_state is not None:
                _, last_preds, _, _ = predict_split(task, last_state, data, cfg.eval_batch_size)
                r["last_f1"] = score(labels, last_preds)["f1"]
            r.update(best_step=info["best_step"], val_f1=info["best_val_f1"], stopped_at=info["stopped_at"],
                     n_val=int(len(data.val_idx)))
        done[(seed, fold, model)] = r
        if model in models:
            append_jsonl(results_path, [r])
            tqdm.write(f"seed {seed} fold {fold} {model}: F1 {r['f1']:.3f} (N {r['f1_N']:.3f} A {r['f1_A']:.3f} "
                       f"O {r['f1_O']:.3f} ~ {r['f1_~']:.3f}) acc {r['accuracy']:.3f} [{train_s:.0f} s]")
    rows = [done[k] for k in runs if k[2] in models]
    sources = sorted({r.get("source", "") for r in rows})
    table = f"Data: {', '.join(sources)}; F1 = mean(F1_N, F1_A, F1_O).\n\n" + results_table(rows)
    write_atomic(os.path.join(workdir, "results.md"), table + "\n")
    plot_cv_confusion(rows, os.path.join(workdir, "confusion.png"))
    return table


def results_table(rows: list[dict]) -> str:
    """Markdown: one line per (model, seed, fold), then mean +- std over all runs of each model (the
    population std, ddof 0, as every ECG table; docs/ecg.md says so)."""
    keys = ["f1", "f1_N", "f1_A", "f1_O", "f1_~", "accuracy"]
    head = "| model | seed | fold | n eval | " + " | ".join(k.replace("f1_~", "f1_noisy") for k in keys) + \
        " | train s |\n|" + "---|" * (len(keys) + 5)
    extra = [k for k in ("last_f1", "val_f1", "best_step") if rows and all(k in r for r in rows)]
    if extra:  # trained with a validation split: the last step's test F1, the best validation F1 and its step
        head = head.replace(" | train s |\n|", " | " + " | ".join(extra) + " | train s |\n|" + "---|" * len(extra))
    lines = [head]
    for r in rows:
        lines.append(f"| {r['model']} | {r['seed']} | {r['fold']} | {r['n_eval']} | "
                     + " | ".join(f"{r[k]:.3f}" for k in keys + extra[:2])
                     + "".join(f" | {r[k]}" for k in extra[2:]) + f" | {r['train_s']:.0f} |")
    for model in dict.fromkeys(r["model"] for r in rows):
        sel = [r for r in rows if r["model"] == model]
        stats = [f"{np.mean([r[k] for r in sel]):.3f} ± {np.std([r[k] for r in sel]):.3f}" for k in keys + extra[:2]]
        lines.append(f"| **{model} mean ± std** | | {len(sel)} runs | | " + " | ".join(stats)
                     + " |" * len(extra[2:]) + " | |")
    return "\n".join(lines)


def plot_cv_confusion(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(3.8 * len(models), 3.4), squeeze=False)
    for ax, model in zip(axes[0], models):
        cm = np.sum([np.asarray(r["confusion"]) for r in rows if r["model"] == model], axis=0)
        f1 = np.mean([r["f1"] for r in rows if r["model"] == model])
        plot_confusion(cm, ax, title=f"{model.upper()}: summed over {len([r for r in rows if r['model'] == model])} "
                                     f"runs\nmean F1 {f1:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = [
    "ECGTrainingBatches", "best_model", "build_training_data", "class_shares", "cross_validate",
    "end_to_end_config", "oversampling_repeats",
    "plot_cv_confusion", "predict_split", "reference_class_weights", "results_table", "state_from_variables",
    "train_with_validation", "validation_split",
]

"""The trainer's task for ECG classification, including the paper's staged CRNN training.

Stage 1 trains the CNN (``model.name="cnn"``). Stage 2 trains the CRNN
(``model.name="crnn"``) with ``stage.init_conv_from`` pointing at the stage-1 workdir: its
first ``crnn_conv_blocks`` conv blocks (weights and batch-norm statistics) initialise the
CRNN's, and with ``stage.freeze_conv`` they stay fixed (zero updates, batch norm in
inference mode) while the LSTMs and the classifier learn; ``freeze_conv=False`` fine-tunes
everything from that initialisation instead. Both stages are the one trainer with different
configs.

The reference code (github.com/yruffiner/ecg-classification, ``network/crnn.py``,
``train.py::trainCRNN``) runs one graph in five phases: phase 0 trains the CRNN's conv blocks
under a "mean branch" (time average, dense 200 + ReLU, linear; 500 epochs), phase 1 stops the
gradient at the conv features and trains the LSTMs and the linear layer (100 epochs), and
phases 2-4 train the whole CRNN end to end (200 epochs each, the learning rate divided by 10 and
then 100 — though its optimizer keeps 1e-3: the rate is a graph constant by then). Our two
stages are its phases 0 and 1; its phases 2-4 are the trainer's ``init_from`` of the staged
CRNN (parameters and batch statistics, every block trained; Adam's moments start fresh where the
reference restores them), run by :func:`jaxcomp.ecg.experiments.end_to_end_config`. Other
differences: stage 1 is the paper's CNN itself
(time average, linear; no hidden dense layer), so one stage-1 run serves both as the CNN
result and as the CRNN's initialisation, and with more conv blocks than the CRNN uses; and
the frozen blocks' batch norm uses its running statistics instead of batch statistics.

Batches (see :class:`jaxcomp.ecg.data.ECGBatches`): ``signal`` float32 ``[B, L]`` (mV),
``length`` int32 ``[B]``, ``label`` int32 ``[B]``, ``weight`` float32 ``[B]``. The train step
augments the raw signals (random resampling, dropout bursts), computes the log
spectrogram and minimises the class-weighted cross-entropy ``sum(w_i CE_i) / sum(w_i)``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp.ecg.data import MIN_SAMPLES
from jaxcomp.ecg.frontend import augment, log_spectrogram
from jaxcomp.ecg.models import build_model, spec_from_config
from jaxcomp.train.state import TrainState, make_optimizer

BEST_MODEL = "best.msgpack"  # in a workdir: the best step's variables by validation F1


def best_model(workdir: str) -> str:
    """A finished run's result as a path the loaders and ``init_from`` read: its ``best.msgpack``
    (the best step by validation F1, :func:`jaxcomp.ecg.experiments.train_with_validation`) if it
    has one, else the workdir itself (its latest checkpoint)."""
    best = os.path.join(workdir, BEST_MODEL)
    return best if os.path.isfile(best) else workdir


def load_conv_stage(workdir: str, blocks: int) -> tuple[Any, Any, ml_collections.ConfigDict]:
    """The first ``blocks`` conv blocks ``(params, batch stats, config)`` of a trained model.

    ``workdir``: a training workdir (its ``best.msgpack``, the best step by validation F1, if it
    has one — see :func:`jaxcomp.ecg.experiments.train_with_validation` — else its latest
    checkpoint) or an exported ``.msgpack`` of an ECG model (e.g. the shipped one).
    """
    from jaxcomp.modelfile import load_model
    from jaxcomp.train import CheckpointError, restore_for_eval

    best = workdir if workdir.endswith(".msgpack") else best_model(workdir)
    if os.path.isfile(best):
        config, variables, _ = load_model(best, task="ecg")
        params, stats = variables["params"].get("conv", {}), variables["batch_stats"].get("conv", {})
    else:
        path = os.path.join(workdir, "config.json")
        if not os.path.isfile(path):
            raise CheckpointError(f"stage.init_conv_from={workdir!r}: no config.json there (train the CNN first)")
        with open(path) as f:
            config = ml_collections.ConfigDict(json.load(f))
        config = _without_stage(config)
        task = ECGTask(config)
        example = {"signal": np.zeros((1, 64 * 8), np.float32), "length": np.full((1,), 64 * 8, np.int32),
                   "label": np.zeros((1,), np.int32), "weight": np.ones((1,), np.float32)}
        state = restore_for_eval(config, workdir, task, example)
        params, stats = state.params["conv"], state.model_state["batch_stats"]["conv"]
    missing = [f"block{b}" for b in range(blocks) if f"block{b}" not in params]
    if missing:
        raise CheckpointError(f"stage.init_conv_from={workdir!r} has no conv {', '.join(missing)} "
                              f"(it has {len(params)} blocks)")
    keep = lambda tree: {f"block{b}": jax.tree.map(np.asarray, tree[f"block{b}"]) for b in range(blocks)}
    return keep(params), keep(stats), config


def _without_stage(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` with ``stage.init_conv_from`` cleared (to rebuild a trained model without its stage 1)."""
    config = ml_collections.ConfigDict(config.to_dict())
    if "stage" in config:
        config.stage.init_conv_from = ""
    return config


class ECGTask:
    """Pure ``init`` / ``train_step`` / ``eval_step`` (and ``predict``) for the CNN and the CRNN."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.spec = spec_from_config(config.model)
        self.model = build_model(self.spec)
        self.normalize = config.model.get("normalize", True)
        self.augment_config = dict(config.get("augment", {}))
        stage = config.get("stage", ml_collections.ConfigDict({"init_conv_from": "", "freeze_conv": False}))
        self.freeze_conv = bool(stage.get("freeze_conv", False)) and bool(stage.get("init_conv_from", ""))
        tx, self.schedule = make_optimizer(config.optimizer)
        if self.freeze_conv:
            def labels(params):
                return {k: jax.tree.map(lambda _, k=k: "frozen" if k == "conv" else "train", v)
                        for k, v in params.items()}

            tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
        self.tx = tx
        self.stage1 = None
        if stage.get("init_conv_from", "") and config.get("init_from", ""):
            raise ValueError("stage.init_conv_from and init_from are both set; init_from (the whole model, e.g. "
                             "the CRNN's end-to-end phase) would replace the conv blocks: clear one of them")
        if stage.get("init_conv_from", ""):
            blocks = self.spec.crnn_conv_blocks if self.spec.name == "crnn" else self.spec.conv_blocks
            params, stats, stage1_config = load_conv_stage(stage.init_conv_from, blocks)
            for key in ("layers_per_block", "kernel", "channels", "growth"):
                if stage1_config.model[key] != config.model[key]:
                    raise ValueError(f"stage.init_conv_from: model.{key} is {stage1_config.model[key]} there but "
                                     f"{config.model[key]} here; the conv blocks must match")
            self.stage1 = (params, stats)

    def features(self, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
        return log_spectrogram(batch["signal"], batch["length"], self.normalize)

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
        if batch["signal"].ndim != 2 or batch["signal"].shape[1] < MIN_SAMPLES:
            raise ValueError(f"ECG batches must be signals [B, L >= {MIN_SAMPLES}], got {batch['signal'].shape}")
        feats, frames = self.features({k: v[:1] for k, v in batch.items()})
        variables = self.model.init({"params": rng, "dropout": rng}, feats, frames, train=False)
        params, stats = variables["params"], variables["batch_stats"]
        if self.stage1 is not None:
            conv_params, conv_stats = self.stage1
            params = {**params, "conv": {**params["conv"], **jax.tree.map(jnp.asarray, conv_params)}}
            stats = {**stats, "conv": {**stats["conv"], **jax.tree.map(jnp.asarray, conv_stats)}}
        return TrainState.create(params, self.tx, model_state={"batch_stats": stats})

    def apply(self, params: Any, batch_stats: Any, feats: jax.Array, frames: jax.Array, train: bool,
              rng: jax.Array | None = None) -> jax.Array | tuple[jax.Array, Any]:
        """Class logits ``[B, 4]`` float32; with ``train``, ``(logits, updates)`` where ``updates`` holds the
        new ``batch_stats``."""
        variables = {"params": params, "batch_stats": batch_stats}
        if not train:
            return self.model.apply(variables, feats, frames, train=False)
        return self.model.apply(variables, feats, frames, train=True, conv_train=not self.freeze_conv,
                                rngs={"dropout": rng}, mutable=["batch_stats"])

    def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                   ) -> tuple[TrainState, dict[str, jax.Array]]:
        aug_rng, drop_rng = jax.random.split(rng)
        a = self.augment_config
        signal, length = batch["signal"], batch["length"]
        if a.get("enabled", True):
            signal, length = augment(aug_rng, signal, length, a.get("resample", True), a.get("min_factor", 2 / 3),
                                     a.get("max_factor", 4 / 3), a.get("bursts", True), a.get("burst_rate", 0.0228),
                                     a.get("burst_samples", 11))
        feats, frames = log_spectrogram(signal, length, self.normalize)
        weight = batch["weight"]

        def loss_fn(params):
            logits, updates = self.apply(params, state.model_state["batch_stats"], feats, frames, True, drop_rng)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
            return jnp.sum(weight * ce) / jnp.maximum(jnp.sum(weight), 1e-9), (logits, updates)

        (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
                   "learning_rate": self.schedule(state.step)}
        return state.apply_gradients(grads, model_state={"batch_stats": updates["batch_stats"]}), metrics

    def predict(self, state: TrainState, batch: dict[str, jax.Array]) -> jax.Array:
        """Class logits ``[B, 4]`` float32 (inference mode: running batch statistics, no dropout)."""
        feats, frames = self.features(batch)
        return self.apply(state.params, state.model_state["batch_stats"], feats, frames, False)

    def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-recording ``loss`` (unweighted cross-entropy) and ``accuracy``, ``[B]``."""
        logits = self.predict(state, batch)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
        return {"loss": ce, "accuracy": (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)}

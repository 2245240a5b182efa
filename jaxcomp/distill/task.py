"""The trainer's tasks for classifiers and language models, with optional teachers.

``ClassificationTask`` trains any :mod:`jaxcomp.models` classifier on batches
``{'image': float32 [B, H, W, C], 'label': int32 [B]}``; ``LanguageModelTask`` trains the
LSTM LM on ``{'tokens', 'targets': int32 [B, T], 'weights': float32 [B, T]}``. Batch-norm
statistics live in ``TrainState.model_state['batch_stats']``.

Teachers (frozen models) sit in ``model_state['teachers']``, so their logits come from a
forward pass compiled into the student's train step, and a resumed run restores them with the
checkpoint. Several teachers are combined as an ensemble (mean of their probabilities). The
loss is ``config.distill.loss``, one of :data:`jaxcomp.distill.losses.LOSSES`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.distill.losses import LOSSES, check_kd_temperature, cross_entropy, distillation_loss, ensemble_log_probs
from jaxcomp.files import read_run_config
from jaxcomp.models import LSTMLanguageModel, classifier, default_dense
from jaxcomp.train import TrainState, l2_penalty, make_optimizer

Batch = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A frozen model: ``model.apply(variables, x, train=False)`` gives its logits.

    ``variables`` is ``{'params': ..., 'batch_stats': ...}`` (arrays, or ``jax.ShapeDtypeStruct``
    leaves when only the structure is needed, e.g. to restore a student's checkpoint).
    """

    model: nn.Module
    variables: Any


LM_ARCHS = ("lstm", "char_cnn")


@dataclasses.dataclass(frozen=True)
class LMLayers:
    """The layers a language model of :func:`build_model` is made of: ``dense`` for its projections
    (highway, LSTM, output; the zoo's ``dense(features, use_bias=, name=)`` contract), ``conv`` for the
    character CNN's convolutions (the zoo's conv contract; ``None``: :class:`flax.linen.Conv`) and a
    batch norm after each highway layer. The defaults are the plain model."""

    dense: Any = default_dense
    conv: Any = None
    highway_batch_norm: bool = False


def build_model(config: ml_collections.ConfigDict, word_chars: np.ndarray | None = None, *,
                shapes_only: bool = False, layers: LMLayers | None = None) -> nn.Module:
    """The network ``config.model`` describes, for ``config.task`` ``classification`` or ``lm``.

    ``classification``: ``model.name`` (see :func:`jaxcomp.models.classifier`), ``num_classes``,
    ``dropout`` (WRN / DenseNet only), ``densenet_stem`` (DenseNet only: the stem's channels,
    16 for the Born-Again paper's DenseNets; 0 = ``2 * growth_rate``). ``lm``: ``model.arch``
    ``lstm`` (the default: :class:`jaxcomp.models.LSTMLanguageModel` from ``vocab_size``,
    ``embed_dim``, ``hidden``, ``layers``, ``dropout``, ``tie_embeddings``) or ``char_cnn``
    (:class:`jaxcomp.models.charcnn.CharCNNLanguageModel` from ``vocab_size``, ``char_vocab_size``,
    ``max_word_len``, ``char_embed``, ``kernel_widths``, ``filters``, ``highway_layers``, ``hidden``,
    ``layers``, ``dropout``). The character model spells the words of ``config.data``'s training text
    (:func:`jaxcomp.data.text.lm_word_characters`) unless ``word_chars`` (``int [vocab_size, L]``) is
    given; ``shapes_only=True`` builds it without a spelling (every word spelled with character 0, no
    text read), for parameter shapes only. ``layers`` (language models only) swaps in other layers
    (e.g. StrassenNets' SPN layers; see :class:`LMLayers`).
    """
    m = config.model
    if config.task == "lm":
        layers = layers or LMLayers()
        arch = m.get("arch", "lstm")
        if arch == "char_cnn":
            return _char_cnn(config, word_chars, shapes_only, layers)
        if arch != "lstm":
            raise ValueError(f"unknown model.arch {arch!r} for a language model; use one of {', '.join(LM_ARCHS)}")
        if layers.conv is not None or layers.highway_batch_norm:
            raise ValueError("model.arch='lstm' has no convolutions or highway layers to replace")
        return LSTMLanguageModel(vocab_size=m.vocab_size, embed_dim=m.embed_dim, hidden=m.hidden,
                                 layers=m.layers, dropout=m.get("dropout", 0.0),
                                 tie_embeddings=m.get("tie_embeddings", False), dense=layers.dense)
    if layers is not None:
        raise ValueError("build_model's layers= applies to language models; classifiers take conv=/dense= "
                         "factories through jaxcomp.models.classifier")
    kwargs = {}
    if m.get("dropout", 0.0):
        if m.name.startswith("resnet"):
            raise ValueError(f"model.dropout is not supported by {m.name}; use a wrn-* or densenet-bc-* model")
        kwargs["dropout"] = m.dropout
    if m.get("shortcut", "") and m.name.startswith("resnet"):
        kwargs["shortcut"] = m.shortcut
    if m.get("densenet_stem", 0) and m.name.startswith("densenet"):
        kwargs["stem"] = m.densenet_stem
    return classifier(m.name, m.num_classes, **kwargs)


def _char_cnn(config: ml_collections.ConfigDict, word_chars: np.ndarray | None, shapes_only: bool,
              layers: LMLayers) -> nn.Module:
    from jaxcomp.data.text import NUM_RESERVED_CHARS, lm_word_characters
    from jaxcomp.models.charcnn import CharCNNLanguageModel, char_table

    m = config.model
    if word_chars is None and not shapes_only:
        word_chars, chars = lm_word_characters(config.data, m.max_word_len)
        if NUM_RESERVED_CHARS + len(chars) > m.char_vocab_size:
            raise ValueError(f"the training text of {config.data.path!r} has {len(chars)} distinct characters "
                             f"(+ {NUM_RESERVED_CHARS} reserved) but model.char_vocab_size={m.char_vocab_size}")
    if word_chars is not None and len(word_chars) != m.vocab_size:
        raise ValueError(f"the character table spells {len(word_chars)} words but model.vocab_size={m.vocab_size}")
    return CharCNNLanguageModel(
        vocab_size=m.vocab_size, word_chars=None if word_chars is None else char_table(word_chars),
        char_vocab_size=m.char_vocab_size, max_word_len=m.max_word_len, char_embed=m.char_embed,
        kernel_widths=tuple(m.kernel_widths), filters=tuple(m.filters), highway_layers=m.highway_layers,
        dense=layers.dense, conv=layers.conv, highway_batch_norm=layers.highway_batch_norm,
        hidden=m.hidden, layers=m.layers, dropout=m.get("dropout", 0.0))


def input_shape(config: ml_collections.ConfigDict, data: Any = None) -> tuple[int, ...]:
    """The shape of one classifier input, ``(H, W, C)``, as the data layer gives it.

    In order: ``data.image_shape`` of a built batches object (e.g.
    :class:`jaxcomp.data.classification.ClassificationBatches`), else the images of its first
    training batch; else ``config.model.input_shape`` when the config states it; else the data layer
    is built from ``config.data`` (:func:`jaxcomp.tasks.build_data`) and asked.
    """
    if data is None:
        stated = config.model.get("input_shape", None)
        if stated:
            return tuple(int(d) for d in stated)
        from jaxcomp import tasks

        data = tasks.build_data(config, "classification")
    shape = getattr(data, "image_shape", None)
    if shape is None:
        shape = data.train_batch(0)["image"].shape[1:]
    return tuple(int(d) for d in shape)


def example_batch(config: ml_collections.ConfigDict, batch_size: int = 2, data: Any = None) -> dict[str, np.ndarray]:
    """A zero batch of the structure ``config``'s task trains on.

    ``lm``: ``tokens`` / ``targets`` ``int32 [B, 4]``, ``weights float32 [B, 4]``. ``classification``:
    ``image float32 [B, H, W, C]`` with ``(H, W, C)`` from the data layer (:func:`input_shape`: the batches
    object ``data`` if given, else ``config.model.input_shape``, else the data ``config.data`` describes,
    which are then loaded), ``label int32 [B]``.
    """
    if config.task == "lm":
        z = np.zeros((batch_size, 4), np.int32)
        return {"tokens": z, "targets": z, "weights": z.astype(np.float32)}
    shape = input_shape(config, data)
    return {"image": np.zeros((batch_size, *shape), np.float32), "label": np.zeros(batch_size, np.int32)}


def _variables(params: Any, batch_stats: Any) -> dict[str, Any]:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def _materialize(tree: Any) -> Any:
    """Zeros for ``ShapeDtypeStruct`` leaves (only ever traced for shapes), arrays unchanged."""
    return jax.tree.map(lambda v: jnp.zeros(v.shape, v.dtype) if isinstance(v, jax.ShapeDtypeStruct) else v, tree)


class ClassificationTask:
    """Pure ``init`` / ``train_step`` / ``eval_step`` for a classifier, with optional teachers.

    Args:
      config: reads ``model``, ``optimizer`` (plus ``optimizer.l2``: an L2 penalty
        ``0.5 * l2 * ||w||^2`` on all parameters, i.e. PyTorch SGD's ``weight_decay``) and
        ``distill`` (``loss``, ``temperature``, ``label_weight``, ``teachers``: workdirs of
        trained teachers, used when ``teachers`` is not given); ``data.augment`` ending in
        ``_device`` (with ``data.pad``): the training images arrive padded and the train step
        crops (and flips) them with :func:`jaxcomp.data.classification.device_augment`, keyed by
        the step's rng, before the student and its teachers see them.
      teachers: the teachers, overriding ``config.distill.teachers``.
    """

    input_key, target_key = "image", "label"

    def __init__(self, config: ml_collections.ConfigDict, teachers: Sequence[Teacher] | None = None):
        self.config = config
        self.model = build_model(config)
        self.tx, self.schedule = make_optimizer(config.optimizer)
        self.l2 = config.optimizer.get("l2", 0.0)
        d = config.distill
        if d.loss not in LOSSES:
            raise ValueError(f"unknown distill.loss {d.loss!r}; use one of {', '.join(LOSSES)}")
        self.loss_name, self.temperature, self.label_weight = d.loss, d.temperature, d.label_weight
        if self.loss_name == "kd":
            check_kd_temperature(self.temperature)
        # DKPP's permutation: a new one every step ("step"), or one per training example, keyed by
        # its index in the training set and the seed ("example"; the batches carry "index")
        self.dkpp_permutation = d.get("dkpp_permutation", "step")
        if self.dkpp_permutation not in ("step", "example"):
            raise ValueError(f"distill.dkpp_permutation must be 'step' or 'example', got {self.dkpp_permutation!r}")
        if teachers is None:
            teachers = [load_teacher(w, student=config) for w in d.get("teachers", ())]
        self.teachers = tuple(teachers)
        if self.loss_name != "ce" and not self.teachers:
            raise ValueError(f"distill.loss={self.loss_name!r} needs a teacher: set distill.teachers to the "
                             "workdir(s) of trained models (or pass teachers=)")
        data = config.get("data", None)
        augment = data.get("augment", "none") if data is not None else "none"
        # *_device augmentations: the batches hold padded images, cropped (and flipped) in the train step
        self.device_augment = (data.get("pad", 0), augment.startswith("crop_flip")) if augment.endswith(
            "_device") else None

    # ---- pieces -------------------------------------------------------------------------

    def mask(self, batch: Batch) -> jax.Array | None:
        return None

    def apply(self, params: Any, batch_stats: Any, x: jax.Array) -> jax.Array:
        """Evaluation-mode logits (running batch statistics)."""
        return self.model.apply(_variables(params, batch_stats), x, train=False)

    def teacher_logits(self, model_state: dict[str, Any], x: jax.Array) -> jax.Array | None:
        """The teachers' logits (their ensemble's log-probabilities if several), without gradient."""
        if not self.teachers:
            return None
        outs = [t.model.apply(v, x, train=False) for t, v in zip(self.teachers, model_state["teachers"])]
        logits = outs[0] if len(outs) == 1 else ensemble_log_probs(jnp.stack(outs))
        return jax.lax.stop_gradient(logits)

    def predict(self, state: TrainState, batch: Batch) -> jax.Array:
        """Evaluation-mode logits of the student for ``batch[input_key]``."""
        return self.apply(state.params, state.model_state["batch_stats"], batch[self.input_key])

    # ---- the task protocol ------------------------------------------------------------------

    def init(self, rng: jax.Array, batch: Batch) -> TrainState:
        x = batch[self.input_key][:1]
        variables = self.model.init({"params": rng, "dropout": rng}, x, train=False)
        model_state = {"batch_stats": variables.get("batch_stats", {}),
                       "teachers": tuple(_materialize(t.variables) for t in self.teachers)}
        return TrainState.create(variables["params"], self.tx, model_state)

    def loss(self, params: Any, state: TrainState, batch: Batch, rng: jax.Array
             ) -> tuple[jax.Array, tuple[dict[str, jax.Array], Any]]:
        dropout_rng, dkpp_rng = jax.random.split(rng)
        x, y, mask = batch[self.input_key], batch[self.target_key], self.mask(batch)
        if self.device_augment is not None:
            from jaxcomp.data.classification import device_augment

            x = device_augment(x, jax.random.fold_in(rng, 7), *self.device_augment)
        logits, updates = self.model.apply(_variables(params, state.model_state["batch_stats"]), x, train=True,
                                           mutable=["batch_stats"], rngs={"dropout": dropout_rng})
        teacher = self.teacher_logits(state.model_state, x)
        dkpp_keys = None
        if self.loss_name == "dkpp" and self.dkpp_permutation == "example":
            if "index" not in batch:
                raise ValueError("distill.dkpp_permutation='example' needs training batches with the examples' "
                                 "'index' (the classification data gives it)")
            base = jax.random.fold_in(jax.random.PRNGKey(self.config.get("seed", 0)), 0xDC99)
            dkpp_keys = jax.vmap(jax.random.fold_in, (None, 0))(base, batch["index"])
        loss = distillation_loss(self.loss_name, logits, teacher, y, dkpp_rng, self.temperature,
                                 self.label_weight, mask, dkpp_keys)
        metrics = {"task_loss": loss, "accuracy": _mean(jnp.argmax(logits, -1) == y, mask)}
        if teacher is not None:
            metrics["agreement"] = _mean(jnp.argmax(logits, -1) == jnp.argmax(teacher, -1), mask)
        loss = loss + l2_penalty(params, self.l2)
        metrics["loss"] = loss
        return loss, (metrics, updates.get("batch_stats", {}))

    def train_step(self, state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        grads, (metrics, batch_stats) = jax.grad(self.loss, has_aux=True)(state.params, state, batch, rng)
        metrics["learning_rate"] = self.schedule(state.step)
        model_state = dict(state.model_state, batch_stats=batch_stats)
        return state.apply_gradients(grads, model_state=model_state), metrics

    def eval_step(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        """Per-example ``accuracy``, ``cross_entropy`` and ``confidence`` (max probability), ``[B]``."""
        logits = self.predict(state, batch)
        y = batch[self.target_key]
        return {"accuracy": (jnp.argmax(logits, -1) == y).astype(jnp.float32),
                "cross_entropy": cross_entropy(logits, y),
                "confidence": jnp.max(jax.nn.softmax(logits.astype(jnp.float32), -1), -1)}


class LanguageModelTask(ClassificationTask):
    """The LSTM LM with the same losses, per scored token (``weights`` masks burn-in and padding).

    ``eval_step`` gives per-window ``nll_sum`` and ``tokens``: the trainer's mean of each over
    windows makes ``exp(nll_sum / tokens)`` the exact per-token perplexity.
    """

    input_key, target_key = "tokens", "targets"

    def mask(self, batch: Batch) -> jax.Array:
        return batch["weights"] > 0

    def eval_step(self, state: TrainState, batch: Batch) -> dict[str, jax.Array]:
        logits = self.predict(state, batch)
        w = batch["weights"]
        nll = cross_entropy(logits, batch["targets"]) * w
        correct = (jnp.argmax(logits, -1) == batch["targets"]) * w
        return {"nll_sum": jnp.sum(nll, -1), "tokens": jnp.sum(w, -1), "correct": jnp.sum(correct, -1)}


def _mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    values = values.astype(jnp.float32)
    if mask is None:
        return jnp.mean(values)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1)


def build_task(config: ml_collections.ConfigDict, teachers: Sequence[Teacher] | None = None) -> ClassificationTask:
    """The task for ``config.task`` (``classification`` or ``lm``)."""
    if config.task == "lm":
        return LanguageModelTask(config, teachers)
    if config.task == "classification":
        return ClassificationTask(config, teachers)
    raise ValueError(f"unknown distillation task {config.task!r}; use 'classification' or 'lm'")


def read_workdir_config(workdir: str) -> ml_collections.ConfigDict:
    """The ``config.json`` a training run saved in ``workdir``."""
    saved = read_run_config(workdir)
    if saved is None:
        raise ValueError(f"teacher workdir {workdir!r} has no config.json (is it a finished training run?)")
    return ml_collections.ConfigDict(saved)


def check_teacher(student: ml_collections.ConfigDict, teacher: ml_collections.ConfigDict, workdir: str) -> None:
    """``ValueError`` unless the run in ``workdir`` (config ``teacher``) can teach ``student``: the
    same task, and as many classes (classification) or the same vocabulary size (LM), since the loss
    compares the two models' outputs class by class."""
    kinds = (student.get("task", "classification"), teacher.get("task", "classification"))
    if kinds[0] != kinds[1]:
        raise ValueError(f"teacher {workdir!r} is a {kinds[1]!r} model; this run trains a {kinds[0]!r} model")
    key = "vocab_size" if kinds[0] == "lm" else "num_classes"
    mine, theirs = student.model.get(key), teacher.model.get(key)
    if mine != theirs:
        raise ValueError(f"teacher {workdir!r} has model.{key}={theirs}, this run model.{key}={mine}: "
                         f"their outputs cannot be compared")


def teacher_from_state(task: ClassificationTask, state: TrainState) -> Teacher:
    """A trained task's model and variables as a :class:`Teacher`."""
    return Teacher(task.model, _variables(state.params, state.model_state["batch_stats"]))


def load_teacher(workdir: str, step: int | None = None, data: Any = None,
                 student: ml_collections.ConfigDict | None = None) -> Teacher:
    """The model trained in ``workdir`` (its saved config and latest checkpoint) as a teacher.

    That run's own teachers are only needed for the structure of its checkpoint: they are
    described by shapes, so a chain of generations is not re-loaded. ``data``: the batches the
    teacher will see (their image shape makes the checkpoint's structure, :func:`example_batch`);
    if None, a classifier's data are built from its saved config once. ``student``: the config of
    the run it will teach, checked first (:func:`check_teacher`).
    """
    from jaxcomp import train as trainer

    config = read_workdir_config(workdir)
    if student is not None:
        check_teacher(student, config, workdir)
    if data is None and config.task != "lm" and not config.model.get("input_shape", None):
        from jaxcomp import tasks

        data = tasks.build_data(config, "classification")  # once, for the teacher and its own teachers
    nested = [abstract_teacher(read_workdir_config(w), data) for w in config.distill.get("teachers", ())]
    task = build_task(config, teachers=nested)
    state = trainer.restore_for_eval(config, workdir, task, example_batch(config, data=data), step=step)
    return teacher_from_state(task, state)


def abstract_teacher(config: ml_collections.ConfigDict, data: Any = None) -> Teacher:
    """A teacher of the architecture ``config`` describes, with ``ShapeDtypeStruct`` variables (its input
    shape from ``data`` or ``config``, see :func:`example_batch`)."""
    model = build_model(config)
    x = example_batch(config, 1, data)["tokens" if config.task == "lm" else "image"]
    variables = jax.eval_shape(lambda: model.init({"params": jax.random.PRNGKey(0)}, jnp.asarray(x), train=False))
    return Teacher(model, variables)

"""StrassenNets on the model zoo: classifiers and LSTM language models with SPN layers.

A config of the zoo's ``classification`` or ``lm`` task with a ``strassen`` section trains
the same architecture with its convolutions / dense layers replaced by
:class:`~jaxcomp.strassen.layers.SPNConv` / :class:`~jaxcomp.strassen.layers.SPNDense`
(through the zoo's injectable factories), the three-phase schedule of
:mod:`jaxcomp.strassen.phases`, and optionally knowledge distillation from a full-precision
teacher (``distill.loss="kd"``, ``distill.teachers=(workdir,)``: the zoo's KD loss and teachers).

``config.strassen``:
  enabled        false: the full-precision architecture (with operation counting), the baseline.
  mode           ``"spn"`` (default): SPN layers; ``"twn"``: the ternary-weight baseline, the replaced
                 layers keep their shape and their kernel is ternarized (TWN: ``wt`` leaves).
  hidden_ratio   ``r = round(hidden_ratio * out_features)`` per layer (the paper's ``r = c_out`` is 1).
  output_r       (``layers="all"``) a fixed ``r`` for the LM's output layer (0: ``hidden_ratio * vocab``).
  p              outputs per hidden position along each axis (SPN conv).
  layers         which layers become SPNs: ``"inner"`` (classifiers: every conv but the stem,
                 the head stays full precision; LSTM: input and recurrent projections, the output
                 layer stays full precision), ``"convs"`` (every conv, the stem / root conv included;
                 the dense head and the LM's output layer stay full precision: the authors' ST-ResNet-20)
                 or ``"all"`` (the head / output layer too: the paper's ImageNet ResNet-18).
  method, threshold, learned_scale   the ternary quantizer (:mod:`jaxcomp.strassen.ternary`).
  ternary_start, ramp_steps, freeze_step   the schedule (steps; negative = never).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax

from jaxcomp.distill.task import ClassificationTask, LanguageModelTask, LMLayers, Teacher, build_model
from jaxcomp.models import classifier
from jaxcomp.models.layers import ConvFactory, DenseFactory
from jaxcomp.strassen.counting import (
    arithmetic_counts,
    conv_counts,
    count_ops,
    dense_counts,
    spn_conv_counts,
    spn_dense_counts,
    twn_conv_counts,
    twn_dense_counts,
)
from jaxcomp.strassen.layers import CountedConv, CountedDense, SPNConv, SPNDense, SPNDenseBlocks, TWNConv, TWNDense
from jaxcomp.strassen.phases import phased_optimizer, project_a_tilde, ternary_mix
from jaxcomp.strassen.ternary import add_learned_scales, ternarize_params

#: Layers kept full precision by ``strassen.layers``: the CIFAR ResNets' ``stem``, the ImageNet ResNets'
#: ``root_conv``, every classifier's ``head`` and the LM's ``output`` layer.
_FULL_PRECISION_NAMES = {"inner": {"stem", "root_conv", "head", "output"}, "convs": {"head", "output"}, "all": set()}
MODES = ("spn", "twn")


def _check(s: ml_collections.ConfigDict) -> None:
    if s.layers not in _FULL_PRECISION_NAMES:
        raise ValueError(f"strassen.layers must be one of {sorted(_FULL_PRECISION_NAMES)}, got {s.layers!r}")
    if s.get("mode", "spn") not in MODES:
        raise ValueError(f"strassen.mode must be one of {MODES}, got {s.mode!r}")
    if s.hidden_ratio <= 0 or s.p < 1:
        raise ValueError(f"strassen.hidden_ratio must be > 0 and strassen.p >= 1, got {s.hidden_ratio}, {s.p}")


def _lstm_projection(name: str | None) -> bool:
    """Whether the dense layer ``name`` is one of the LSTM's projections (``lstm{l}_input``, ``recurrent``)."""
    return name == "recurrent" or (name or "").startswith("lstm") and (name or "").endswith("_input")


def _spn_batch_norm(name: str | None) -> bool:
    """Whether the SPN dense layer ``name`` has the reference's batch norm after ``W_b``: every one but the
    LSTM's projections (the reference's ``SumProdLSTM`` has none)."""
    return not _lstm_projection(name)


def _per_gate(s: ml_collections.ConfigDict, name: str | None) -> bool:
    """Whether the SPN layer ``name`` is an LSTM projection built as one SPN per gate
    (``strassen.lstm_per_gate``, the reference's ``SumProdLSTM``)."""
    return bool(s.get("lstm_per_gate", False)) and _lstm_projection(name)


def _hidden(s: ml_collections.ConfigDict, features: int, name: str | None) -> int:
    """``r`` of the SPN layer ``name`` with ``features`` outputs: ``strassen.output_r`` for the LM's output
    layer when set (> 0), else ``round(hidden_ratio * features)``."""
    if name == "output" and s.get("output_r", 0) > 0:
        return int(s.output_r)
    return max(1, int(round(s.hidden_ratio * features)))


def layer_factories(s: ml_collections.ConfigDict) -> tuple[ConvFactory, DenseFactory]:
    """``(conv, dense)`` factories of the zoo's contract that build SPN or counted full-precision layers."""
    _check(s)
    full = _FULL_PRECISION_NAMES[s.layers]
    twn = s.get("mode", "spn") == "twn"

    def spn(name):
        return s.enabled and name not in full

    def conv(features, kernel_size, strides=(1, 1), padding=((0, 0), (0, 0)), use_bias=False, name=None):
        if spn(name) and twn:
            return TWNConv(features, tuple(kernel_size), tuple(strides), padding, use_bias, name=name)
        if spn(name):
            return SPNConv(features, tuple(kernel_size), hidden=_hidden(s, features, name), p=s.p,
                           strides=tuple(strides), padding=padding, use_bias=use_bias, name=name)
        return CountedConv(features, tuple(kernel_size), tuple(strides), padding, use_bias, name=name)

    def dense(features, use_bias=True, name=None):
        if spn(name) and twn:
            return TWNDense(features, use_bias, name=name)
        if spn(name) and _per_gate(s, name):  # 4 gates, each r = hidden_ratio x H of its own
            return SPNDenseBlocks(features, _hidden(s, features // 4, name), 4, use_bias, name=name)
        if spn(name):
            return SPNDense(features, _hidden(s, features, name), use_bias, batch_norm=_spn_batch_norm(name),
                            name=name)
        return CountedDense(features, use_bias=use_bias, name=name)

    return conv, dense


def char_conv_factory(s: ml_collections.ConfigDict) -> ConvFactory:
    """The conv factory for the character CNN of an SPN language model, as the authors' ``SumProdLSTMCharWord``
    builds it: ``SumProd2DConv(nbr_mul=channels)`` with ``W_c`` set to the identity and frozen (their
    ``train.py``), i.e. an :class:`SPNConv` with ``r = c_out`` whatever ``strassen.hidden_ratio`` and
    ``identity_wc``; a :class:`TWNConv` in TWN mode."""
    twn = s.get("mode", "spn") == "twn"

    def conv(features, kernel_size, strides=(1, 1), padding=((0, 0), (0, 0)), use_bias=False, name=None):
        if twn:
            return TWNConv(features, tuple(kernel_size), tuple(strides), padding, use_bias, name=name)
        return SPNConv(features, tuple(kernel_size), hidden=features, p=1, strides=tuple(strides), padding=padding,
                       use_bias=use_bias, identity_wc=True, name=name)

    return conv


def build_spn_model(config: ml_collections.ConfigDict, shapes_only: bool = False) -> nn.Module:
    """The zoo architecture of ``config.model`` with the layers ``config.strassen`` asks for.

    Language models (``model.arch`` ``lstm`` or ``char_cnn``, :func:`jaxcomp.distill.task.build_model`):
    SPN (or TWN) projections; the character CNN's convolutions too, and, as the authors' SPN LM
    (``SumProdLSTMCharWord``), a batch norm after each highway layer when ``strassen.enabled``.
    ``shapes_only``: the character model without reading the text (for counting).
    """
    conv, dense = layer_factories(config.strassen)
    m = config.model
    if config.task == "lm":
        # the full-precision model (strassen.enabled=False) is the zoo's own, parameter for parameter (its
        # checkpoint teaches the SPN runs through jaxcomp.distill.task.load_teacher); CountedDense is nn.Dense
        spn = m.get("arch", "lstm") == "char_cnn" and bool(config.strassen.enabled)
        layers = LMLayers(dense=dense, conv=char_conv_factory(config.strassen) if spn else None,
                          highway_batch_norm=spn)
        return build_model(config, shapes_only=shapes_only, layers=layers)
    kwargs = {"shortcut": m.shortcut} if m.get("shortcut", "") and m.name.startswith("resnet") else {}
    if m.get("dropout", 0.0):
        kwargs["dropout"] = m.dropout
    return classifier(m.name, m.num_classes, conv=conv, dense=dense, **kwargs)


def example_input(config: ml_collections.ConfigDict, batch_size: int = 1) -> np.ndarray:
    """A zero input batch of the shape ``config``'s model reads: ``float32 [B, *model.input_shape]`` for a
    classifier whose config gives ``model.input_shape`` (no data is read), else the shape of the
    config's training batches (the data are built); ``int32 [B, 4]`` tokens for the LM."""
    if config.task == "lm":
        return np.zeros((batch_size, 4), np.int32)
    shape = config.model.get("input_shape", None)
    if shape:
        return np.zeros((batch_size, *shape), np.float32)
    from jaxcomp import tasks

    data = tasks.build_data(config, "classification")
    return np.zeros((batch_size, *np.shape(data.train_batch(0)["image"])[1:]), np.float32)


class _StrassenMixin:
    """What StrassenNets adds to a zoo task: SPN layers, ternarized parameters, the phased optimizer."""

    def _setup_strassen(self, config: ml_collections.ConfigDict) -> None:
        self.strassen = s = config.strassen
        self.model = build_spn_model(config)
        if s.enabled:  # the reference's schedule, then its constraint 0 <= a_tilde <= 100
            self.tx = optax.chain(phased_optimizer(self.tx, s.freeze_step), project_a_tilde())

    def mix(self, step: jax.Array) -> jax.Array:
        """The ternarization level at ``step`` (0 = full precision, 1 = ternary)."""
        s = self.strassen
        return ternary_mix(step, s.ternary_start if s.enabled else -1, s.ramp_steps)

    def effective_params(self, params: Any, step: jax.Array) -> Any:
        """The weights the network computes with at ``step`` (latent -> ternary, straight through)."""
        if not self.strassen.enabled:
            return params
        return ternarize_params(params, self.mix(step), self.strassen.method, self.strassen.threshold)

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]):
        state = super().init(rng, batch)
        if self.strassen.enabled and self.strassen.learned_scale:
            params = add_learned_scales(state.params, self.strassen.method, self.strassen.threshold)
            state = type(state).create(params, self.tx, state.model_state)
        return state

    def loss(self, params: Any, state: Any, batch: dict[str, jax.Array], rng: jax.Array):
        loss, (metrics, updates) = super().loss(self.effective_params(params, state.step), state, batch, rng)
        metrics["ternary_mix"] = self.mix(state.step)
        return loss, (metrics, updates)

    def predict(self, state: Any, batch: dict[str, jax.Array]) -> jax.Array:
        return self.apply(self.effective_params(state.params, state.step), state.model_state["batch_stats"],
                          batch[self.input_key])

    def op_counts(self, state: Any, example: np.ndarray) -> list[tuple[str, dict]]:
        """Per-layer operation counts for one example (``example``: a batch; only its first row is used)."""
        params = jax.eval_shape(self.effective_params, state.params, state.step)  # counting needs shapes only
        stats = state.model_state["batch_stats"]
        variables = {"params": params, "batch_stats": stats} if stats else {"params": params}
        return count_ops(self.model, variables, jax.numpy.asarray(example[:1]), train=False)


class StrassenClassificationTask(_StrassenMixin, ClassificationTask):
    """The zoo's classification task (losses, teachers, metrics) with SPN convolutions."""

    def __init__(self, config: ml_collections.ConfigDict, teachers: Sequence[Teacher] | None = None):
        super().__init__(config, teachers)
        self._setup_strassen(config)


class StrassenLanguageModelTask(_StrassenMixin, LanguageModelTask):
    """The zoo's LSTM language-model task with SPN projections."""

    def __init__(self, config: ml_collections.ConfigDict, teachers: Sequence[Teacher] | None = None):
        super().__init__(config, teachers)
        self._setup_strassen(config)
        self.config = config

    def op_counts(self, state: Any = None, example: np.ndarray | None = None) -> list[tuple[str, dict]]:
        """Per-token operation counts (from the shapes: the recurrence runs inside ``nn.scan``)."""
        return lm_op_counts(self.config)


def lm_op_counts(config: ml_collections.ConfigDict) -> list[tuple[str, dict]]:
    """Per-token counts of the LM of ``config``: the character CNN and highway layers (``model.arch=
    "char_cnn"``), the LSTM's projections and gate arithmetic, and the output layer.

    The gates' elementwise products (``f c``, ``i g``, ``o tanh(c)``: ``3H`` multiplications,
    ``H`` additions) are full-precision arithmetic in both models; nonlinearities and the max-pooling
    are not counted. The SPN model's batch norms after the highway layers cannot fold into anything,
    so each costs ``D`` multiplications (also reported as ``bn_muls``) and ``D`` additions; the
    full-precision model has none. Each width-``w`` convolution runs over the ``L - w + 1`` windows of
    a word (``L = model.max_word_len``).
    """
    m, s = config.model, config.strassen
    _check(s)
    full = _FULL_PRECISION_NAMES[s.layers]
    twn = s.get("mode", "spn") == "twn"
    gates = 4 * m.hidden

    def replaced(name):
        return s.enabled and name.split("/")[-1] not in full

    def proj(name, d_in, d_out, bias):
        last = name.split("/")[-1]
        if not replaced(name):
            return (name, dense_counts(d_in, d_out, bias))
        if twn:
            return (name, twn_dense_counts(d_in, d_out, bias))
        if _per_gate(s, last):  # four independent SPNs, one per gate
            gate = spn_dense_counts(d_in, d_out // 4, _hidden(s, d_out // 4, last), bias, False)
            return (name, {k: 4 * v if k != "spn" else v for k, v in gate.items()})
        return (name, spn_dense_counts(d_in, d_out, _hidden(s, d_out, last), bias, _spn_batch_norm(last)))

    rows = []
    d_in = m.get("embed_dim", 0)
    if m.get("arch", "lstm") == "char_cnn":
        for w, f in zip(m.kernel_widths, m.filters):
            name, h_out = f"conv{w}", m.max_word_len - w + 1
            if not replaced(name):
                rows.append((name, conv_counts(h_out, 1, m.char_embed, f, w, 1, True)))
            elif twn:
                rows.append((name, twn_conv_counts(h_out, 1, m.char_embed, f, w, 1, True)))
            else:  # char_conv_factory: r = c_out, p = 1, W_c the identity
                rows.append((name, spn_conv_counts(h_out, 1, h_out, 1, m.char_embed, f, f, w, 1, w, 1, True,
                                                   identity_wc=True)))
        d_in = sum(m.filters)
        for i in range(m.highway_layers):
            rows.append(proj(f"highway/highway{i}_gate", d_in, d_in, True))
            rows.append(proj(f"highway/highway{i}_transform", d_in, d_in, True))
            rows.append((f"highway/highway{i}_mix", arithmetic_counts(2 * d_in, 2 * d_in)))
            if s.enabled:  # the SPN model's batch norm after the layer: it folds into nothing (the next W_b is
                # ternary, the carry path reads it directly), so its scale and shift cost D each
                rows.append((f"highway/highway{i}_bn", arithmetic_counts(d_in, d_in, False, bn_muls=d_in)))
    for layer in range(m.layers):
        d = d_in if layer == 0 else m.hidden
        rows.append(proj(f"lstm{layer}_input", d, gates, True))
        rows.append(proj(f"lstm{layer}/recurrent", m.hidden, gates, False))
        h = m.hidden
        rows.append((f"lstm{layer}/gates", arithmetic_counts(3 * h, h)))
    rows.append(proj("output", m.hidden, m.vocab_size, True))
    return rows


def build_task(config: ml_collections.ConfigDict, teachers: Sequence[Teacher] | None = None
               ) -> StrassenClassificationTask | StrassenLanguageModelTask:
    """The StrassenNets task for a ``classification`` or ``lm`` config with a ``strassen`` section."""
    if config.task == "lm":
        return StrassenLanguageModelTask(config, teachers)
    if config.task == "classification":
        return StrassenClassificationTask(config, teachers)
    raise ValueError(f"StrassenNets layers apply to config.task 'classification' or 'lm', got {config.task!r}")

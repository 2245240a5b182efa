"""The default training state and optimizers built from a config."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxcomp.checks import finite_number, is_whole


@flax.struct.dataclass
class TrainState:
    """Parameters, optimizer state and non-trained model state (e.g. batch statistics).

    ``tx`` is static (not a pytree leaf), so checkpoints hold arrays only.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation, model_state: Any = None) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                   model_state={} if model_state is None else model_state, tx=tx)

    def apply_gradients(self, grads: Any, model_state: Any = None) -> TrainState:
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            opt_state=opt_state,
            model_state=self.model_state if model_state is None else model_state,
        )


def l2_penalty(params: Any, coefficient: float, *, min_ndim: int = 0) -> jax.Array:
    """``0.5 * coefficient * sum ||w||^2`` over the leaves of ``params`` with ``w.ndim >= min_ndim``.

    The weight decay of SGD written as a loss term (PyTorch's ``weight_decay=coefficient``);
    ``min_ndim=2`` leaves biases and normalisation scales out. Returns a float32 scalar (0.0 when
    ``coefficient`` is 0 or no leaf qualifies).
    """
    leaves = [p for p in jax.tree.leaves(params) if p.ndim >= min_ndim]
    if not leaves or (isinstance(coefficient, (int, float)) and coefficient == 0):  # a traced one is kept
        return jnp.zeros((), jnp.float32)
    return 0.5 * coefficient * sum(jnp.sum(jnp.square(p)) for p in leaves)


def make_schedule(opt: ml_collections.ConfigDict) -> optax.Schedule:
    """Learning-rate schedule from ``config.optimizer``.

    ``schedule``: ``"constant"``; ``"step"`` (multiply by ``decay_rate`` every
    ``decay_every`` steps, as L3C's x0.75 every 5 epochs); ``"cosine"`` (to 0 over
    ``decay_steps``); ``"piecewise"`` (multiply by ``decay_rate`` at each step of ``boundaries``,
    as the CIFAR ResNet / WRN / DenseNet recipes do, or by ``boundary_scales[i]`` at
    ``boundaries[i]`` when that tuple is given: e.g. a restart at a higher rate); any of them after
    ``warmup_steps`` of linear warm-up.
    """
    # the section's own name is not known here: check_settings names it (optimizer, optimizer_d, ...)
    lr = finite_number(opt.learning_rate, "learning_rate")  # a negative rate ascends the loss
    name = opt.get("schedule", "constant")
    for key, least in (("warmup_steps", 0), ("decay_steps", 1)):
        if (key == "warmup_steps" or name == "cosine") and (not is_whole(opt.get(key, 0)) or opt.get(key, 0) < least):
            raise ValueError(f"{key} must be an integer >= {least}, got {opt.get(key, None)!r}")
    if name == "constant":
        schedule = optax.constant_schedule(lr)
    elif name == "step":
        schedule = optax.exponential_decay(lr, transition_steps=opt.decay_every,
                                           decay_rate=opt.decay_rate, staircase=True)
    elif name == "cosine":
        schedule = optax.cosine_decay_schedule(lr, decay_steps=opt.decay_steps)
    elif name == "piecewise":
        scales = tuple(opt.get("boundary_scales", ()))
        if scales and len(scales) != len(opt.boundaries):
            raise ValueError(f"optimizer.boundary_scales has {len(scales)} entries for {len(opt.boundaries)} "
                             "boundaries")
        if len(set(int(b) for b in opt.boundaries)) != len(opt.boundaries):
            raise ValueError(f"optimizer.boundaries repeats a step: {tuple(opt.boundaries)}")
        scales = scales or (opt.decay_rate,) * len(opt.boundaries)
        schedule = optax.piecewise_constant_schedule(
            lr, {int(b): float(f) for b, f in zip(opt.boundaries, scales, strict=True)})
    else:
        raise ValueError(f"unknown optimizer.schedule {name!r}; use 'constant', 'step', 'cosine' or 'piecewise'")
    warmup = opt.get("warmup_steps", 0)
    if warmup:
        schedule = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), schedule], [warmup])
    return schedule


def make_optimizer(opt: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """An optax optimizer and its learning-rate schedule from ``config.optimizer``.

    ``name``: ``rmsprop`` (PyTorch's defaults: decay 0.99, eps 1e-8 outside the root, as
    the L3C reference code uses), ``adam``, ``adamw``, ``sgd`` (with ``momentum``).
    ``grad_clip`` > 0 clips the global gradient norm first. ``train_only`` (a regular
    expression, default ``""``: everything trains) trains only the parameters whose path
    (``"D1/step_heads_0/out/kernel"``: the keys joined by ``/``) it matches (``re.search``); the
    others get zero updates (``optax.set_to_zero``), their gradients are never read, so under
    ``jit`` XLA drops their computation, and clipping sees the trained ones only. A pattern that
    matches no parameter raises a ``ValueError`` naming some paths, at ``tx.init``.
    ``plateau`` (``metric`` set): every update is also multiplied by a factor the trainer cuts when
    that validation metric stops improving (:func:`plateau_settings`, :func:`plateau_update`).
    """
    schedule = make_schedule(opt)
    name = opt.name
    if name == "rmsprop":
        tx = optax.rmsprop(schedule, decay=opt.get("decay", 0.99), eps=opt.get("eps", 1e-8),
                           eps_in_sqrt=False)
    elif name == "adam":
        tx = optax.adam(schedule, b1=opt.get("b1", 0.9), b2=opt.get("b2", 0.999))
    elif name == "adamw":
        tx = optax.adamw(schedule, weight_decay=opt.get("weight_decay", 1e-4))
    elif name == "sgd":
        tx = optax.sgd(schedule, momentum=opt.get("momentum", 0.9) or None,
                       nesterov=opt.get("nesterov", False))
    else:
        raise ValueError(f"unknown optimizer.name {name!r}; use 'rmsprop', 'adam', 'adamw' or 'sgd'")
    if opt.get("grad_clip", 0):
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip), tx)
    if opt.get("train_only", ""):
        tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()},
                                   train_only_labels(opt.train_only))
    if plateau_settings(opt) is not None:
        tx = optax.chain(tx, scale_on_plateau())
    return tx, schedule


# ------------------------------------------------------------------------------------------------
# The learning rate cut when a validation metric stops improving (host-driven, checkpointed)
# ------------------------------------------------------------------------------------------------


class PlateauState(NamedTuple):
    """:func:`scale_on_plateau`'s state: the factor on every update, ``scale`` (float32 ``[]``), and the
    validation value of the last evaluation, ``last`` (float32 ``[]``, +inf before the first)."""

    scale: jax.Array
    last: jax.Array


PLATEAU_KEYS = ("metric", "factor", "min_delta", "mode", "reset_steps")


def plateau_settings(opt: ml_collections.ConfigDict) -> ml_collections.ConfigDict | None:
    """``optimizer.plateau`` when it names a ``metric``, checked; else ``None`` (no plateau rule).

    Keys: ``metric`` (an evaluation metric, e.g. ``"perplexity"``), ``factor`` in (0, 1],
    ``min_delta`` >= 0, ``mode`` ``"min"`` or ``"max"``, ``reset_steps`` (steps after which the factor
    returns to 1 and the last value is forgotten, e.g. where a new training phase restarts its rate).
    """
    plateau = opt.get("plateau", None)
    if plateau is None or not plateau.get("metric", ""):
        return None
    unknown = sorted(set(plateau.keys()) - set(PLATEAU_KEYS))
    if unknown:
        raise ValueError(f"unknown optimizer.plateau key(s) {unknown}; use {', '.join(PLATEAU_KEYS)}")
    if not 0 < plateau.get("factor", 0.5) <= 1 or plateau.get("min_delta", 0.0) < 0:
        raise ValueError(f"optimizer.plateau needs 0 < factor <= 1 and min_delta >= 0, got "
                         f"{plateau.get('factor', 0.5)!r}, {plateau.get('min_delta', 0.0)!r}")
    if plateau.get("mode", "min") not in ("min", "max"):
        raise ValueError(f"optimizer.plateau.mode must be 'min' or 'max', got {plateau.mode!r}")
    return plateau


def scale_on_plateau() -> optax.GradientTransformation:
    """Multiplies every update by the factor in its :class:`PlateauState` (1 at init). Nothing on the
    device changes the factor: the trainer does, between steps, with :func:`plateau_update` after each
    evaluation (so it is a plain array of the optimizer state: checkpointed, resumed, no recompilation)."""

    def init(params):
        del params
        return PlateauState(jnp.ones((), jnp.float32), jnp.full((), jnp.inf, jnp.float32))

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state

    return optax.GradientTransformation(init, update)


def _is_plateau(node: Any) -> bool:
    return isinstance(node, PlateauState)


def plateau_scale(opt_state: Any) -> float | None:
    """The factor of the (first) :class:`PlateauState` in ``opt_state``, or ``None`` without one."""
    found = [s for s in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(s)]
    return float(found[0].scale) if found else None


def _like(old: jax.Array, value: float) -> jax.Array:
    """``value`` as an array of ``old``'s dtype, placed (sharded) as ``old``."""
    return jax.device_put(np.asarray(value, old.dtype), getattr(old, "sharding", None))


def plateau_update(opt_state: Any, value: float, plateau: ml_collections.ConfigDict) -> Any:
    """The plateau rule after an evaluation that gave ``value`` (host): the factor is multiplied by
    ``plateau.factor`` when ``value`` did not improve on the last evaluation's by more than
    ``min_delta`` (``"min"``: ``value > last - min_delta``), then ``last = value``. This is Kim et
    al.'s and StrassenNets' ``langmod/train.py`` rule (``if val_ppl > prev_ppl - decay_delta: lr *=
    lr_decay``) and the BAN paper's. The first evaluation never cuts (``last`` is +inf)."""
    value = float(np.float32(value))  # as ``last`` will hold it: an exact repeat is a tie, not a loss
    factor, delta, mode = plateau.get("factor", 0.5), plateau.get("min_delta", 0.0), plateau.get("mode", "min")

    def rule(node):
        if not _is_plateau(node):
            return node
        last = float(node.last)  # +inf: no evaluation yet, in either mode
        stalled = np.isfinite(last) and (value > last - delta if mode == "min" else value < last + delta)
        scale = float(node.scale) * factor if stalled else float(node.scale)
        return PlateauState(_like(node.scale, scale), _like(node.last, value))

    return jax.tree.map(rule, opt_state, is_leaf=_is_plateau)


def plateau_reset(opt_state: Any) -> Any:
    """Every :class:`PlateauState` back to its start (factor 1, no last value)."""
    return jax.tree.map(lambda n: PlateauState(_like(n.scale, 1.0), _like(n.last, np.inf)) if _is_plateau(n) else n,
                        opt_state, is_leaf=_is_plateau)


def param_path(path: tuple) -> str:
    """``"D1/step_heads_0/out/kernel"`` for a pytree key path (dict keys, attributes, indices)."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def train_only_labels(pattern: str) -> Callable[[Any], Any]:
    """The ``optax.multi_transform`` label function of ``optimizer.train_only``: ``"train"`` where
    ``re.search(pattern, path)`` matches a parameter's :func:`param_path`, else ``"frozen"``."""
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ValueError(f"optimizer.train_only={pattern!r} is not a regular expression: {e}") from None

    def labels(params: Any) -> Any:
        tree = jax.tree_util.tree_map_with_path(
            lambda path, _: "train" if regex.search(param_path(path)) else "frozen", params)
        if "train" not in jax.tree_util.tree_leaves(tree):
            paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
            raise ValueError(f"optimizer.train_only={pattern!r} matches none of the {len(paths)} parameters "
                             f"(e.g. {', '.join(paths[:4])}{', ...' if len(paths) > 4 else ''})")
        return tree

    return labels


PLAYERS = ("generator", "discriminator")


@flax.struct.dataclass
class TwoPlayerState:
    """The state of a two-player (GAN / critic) task: both players in one checkpointable pytree.

    ``params`` and ``opt_state`` are dicts ``{"generator": ..., "discriminator": ...}``; each player
    has its own optimizer (``tx`` holds both, static) and is updated alone by :meth:`apply`.
    ``step`` counts trainer steps, whichever player(s) a step updated. The trainer treats it like
    :class:`TrainState` (``params``, ``replace``), so checkpoints, resume, ``init_from`` and export
    work unchanged; an exported model holds both players (a codec uses ``params["generator"]``).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any
    tx: dict = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, generator: Any, discriminator: Any, tx_generator: optax.GradientTransformation,
               tx_discriminator: optax.GradientTransformation) -> TwoPlayerState:
        params = {"generator": generator, "discriminator": discriminator}
        tx = {"generator": tx_generator, "discriminator": tx_discriminator}
        return cls(step=jnp.zeros((), jnp.int32), params=params,
                   opt_state={k: tx[k].init(params[k]) for k in PLAYERS}, model_state={}, tx=tx)

    def apply(self, player: str, grads: Any) -> TwoPlayerState:
        """One optimizer update of ``player``'s parameters with ``grads`` (its subtree only); the
        other player's parameters and optimizer state are untouched; ``step`` is not advanced."""
        if player not in PLAYERS:
            raise ValueError(f"unknown player {player!r}; use one of {PLAYERS}")
        updates, opt = self.tx[player].update(grads, self.opt_state[player], self.params[player])
        params = dict(self.params, **{player: optax.apply_updates(self.params[player], updates)})
        return self.replace(params=params, opt_state=dict(self.opt_state, **{player: opt}))

"""StrassenNets' training schedule as config, not as a fork of the trainer.

Phase 1 (steps ``< ternary_start``): everything full precision. Phase 2: ``W_a``/``W_b``/``W_c``
are blended towards ternary by ``mix`` (linear ramp over ``ramp_steps``; 0 = switch at once) and
trained straight through. Phase 3 (steps ``>= freeze_step``): the ternary matrices are frozen
(their optimizer updates are multiplied by 0 through :func:`optax.masked`) while
``a_tilde``, batch norm, biases and the full-precision layers keep training.

The task reads :func:`ternary_mix` of ``state.step`` inside its jitted step, and builds its
optimizer with :func:`phased_optimizer`; both are pure functions of the step counter, so a
resumed run continues the schedule exactly.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp.strassen.ternary import TERNARY_KEYS


def ternary_mix(step: jax.Array | int, ternary_start: int, ramp_steps: int = 0) -> jax.Array:
    """``float32`` in [0, 1]: 0 before ``ternary_start``, then a linear ramp to 1 over ``ramp_steps``.

    ``ternary_start < 0`` means never ternarize (a full-precision run).
    """
    if not isinstance(step, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(step, np.float64))):
        raise ValueError(f"ternary_mix: step must be a finite number, got {step!r}")
    step = jnp.asarray(step, jnp.float32)
    if ternary_start < 0:
        return jnp.zeros((), jnp.float32)
    if ramp_steps <= 0:
        return (step >= ternary_start).astype(jnp.float32)
    return jnp.clip((step - ternary_start + 1) / ramp_steps, 0.0, 1.0)


def _leaf_name(path: tuple) -> str | None:
    """The last key of a pytree path (a dict key or an attribute name)."""
    return getattr(path[-1], "key", getattr(path[-1], "name", None))


def phase_labels(params: Any) -> Any:
    """``"ternary"`` for every ``wa``/``wb``/``wc``/``wt`` leaf (``TERNARY_KEYS``), ``"rest"`` for the others
    (same structure)."""
    def label(path, _):
        return "ternary" if _leaf_name(path) in TERNARY_KEYS else "rest"
    return jax.tree_util.tree_map_with_path(label, params)


def phased_optimizer(tx: optax.GradientTransformation, freeze_step: int) -> optax.GradientTransformation:
    """``tx`` for all parameters, with the ternary matrices' updates zeroed from ``freeze_step`` on.

    ``freeze_step < 0`` never freezes. Learned scales (``*_scale``) and ``a_tilde`` keep training.
    ``tx`` sees the whole gradient tree, so a ``clip_by_global_norm`` in it clips by the norm of
    all gradients, as the reference does (a ``multi_transform`` per group would clip each group
    to the bound on its own); the gate then masks the ternary matrices' updates.
    """
    if freeze_step < 0:
        return tx
    gate = optax.scale_by_schedule(lambda count: (count < freeze_step).astype(jnp.float32))
    is_ternary = lambda params: jax.tree.map(lambda label: label == "ternary", phase_labels(params))  # noqa: E731
    return optax.chain(tx, optax.masked(gate, is_ternary))


#: the reference's constraint on ``a_tilde`` (``mx.nd.clip(sp_in_weights, 0, 100)`` before every use)
A_TILDE_RANGE = (0.0, 100.0)


def project_a_tilde(low: float = A_TILDE_RANGE[0], high: float = A_TILDE_RANGE[1]) -> optax.GradientTransformation:
    """Projects every ``a_tilde`` leaf onto ``[low, high]`` after the update: chained after the optimizer,
    the update of such a leaf becomes ``clip(p + u, low, high) - p`` (other leaves unchanged), so the
    parameters stay in the box from the first step on (they start at 1). Stateless; needs ``params``.

    The reference clips its ``sp_in_weights`` to ``[0, 100]`` before each forward pass ("apply
    non-negativity constraint"), i.e. after every update: projected gradient descent.
    """
    if not low <= high:  # also NaN
        raise ValueError(f"project_a_tilde: the box [low, high] must have low <= high, got [{low!r}, {high!r}]")
    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_a_tilde needs the parameters (optax update(..., params))")

        def project(path, u, p):
            return jnp.clip(p + u, low, high) - p if _leaf_name(path) == "a_tilde" else u
        return jax.tree_util.tree_map_with_path(project, updates, params), state

    return optax.GradientTransformation(init, update)

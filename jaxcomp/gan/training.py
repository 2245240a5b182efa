"""Two-player training as a task of the one trainer: the update schedule inside the jitted step.

A two-player task keeps both players in a :class:`~jaxcomp.train.TwoPlayerState` and implements
three pure functions (``params`` is the state's ``{"generator", "discriminator"}`` dict):

* ``generate(params, batch, rng) -> fake``: the generator's output the discriminator sees (any
  pytree, e.g. ``{"image": ..., "cond": ...}``);
* ``generator_loss(params, batch, rng, adversarial) -> (loss, (metrics, fake))``: differentiated
  with respect to ``params["generator"]`` only; ``adversarial`` (``float32 []``, 0 or 1) switches
  the adversarial terms off during the warm-up;
* ``discriminator_loss(params, batch, fake, rng) -> (loss, metrics)``: differentiated with respect
  to ``params["discriminator"]`` only (``fake`` is treated as a constant).

:func:`two_player_step` then runs one trainer step under a :class:`GANSchedule`:

* ``warmup_steps``: the first steps train the generator without adversarial terms and leave the
  discriminator untouched (a distortion-only start, as HiFiC and cheap CPU runs need);
* ``mode="joint"``: after the warm-up every step updates the generator, then the discriminator on
  the same batch and the same generated images (pix2pixHD / GC: one forward pass of G per step);
* ``mode="alternate"``: steps cycle through ``d_steps`` discriminator-only steps, each on its own
  batch, followed by one generator-only step (WGAN-GP's 5:1 critic schedule);
* ``mode="none"``: the generator alone, never adversarial (the same architecture trained on its
  distortion: the baseline a GAN system is compared with at the same rate); a run continued from
  a GAN run's warm-up checkpoint with ``mode="none"`` is that baseline with the same schedule.

Which branch runs is decided by ``state.step`` inside the compiled step (``lax.cond``), so the
step compiles once and a resumed run follows the same schedule. Metrics of a player that a step
did not update are reported as 0 with ``updated_generator`` / ``updated_discriminator`` flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxcomp.train.state import TwoPlayerState

MODES = ("joint", "alternate", "none")


@dataclasses.dataclass(frozen=True)
class GANSchedule:
    mode: str = "joint"
    d_steps: int = 1
    warmup_steps: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"unknown gan.mode {self.mode!r}; use one of {MODES}")
        if self.d_steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"gan.d_steps must be >= 1 and gan.warmup_steps >= 0, "
                             f"got {self.d_steps} and {self.warmup_steps}")
        if self.mode in ("joint", "none") and self.d_steps != 1:
            raise ValueError(f"gan.mode={self.mode!r} has no discriminator steps of its own: gan.d_steps must be 1 "
                             "(use mode='alternate' for several discriminator steps per generator step)")

    def players(self, step: jax.Array) -> tuple[jax.Array | bool, jax.Array]:
        """``(update generator?, update discriminator?)`` at trainer step ``step`` (bool scalars;
        Python bools where the mode decides alone: the generator's in joint mode, both in "none")."""
        if self.mode == "none":
            return True, False
        adversarial = step >= self.warmup_steps
        if self.mode == "joint":
            return True, adversarial
        phase = (step - self.warmup_steps) % (self.d_steps + 1)
        d_turn = adversarial & (phase < self.d_steps)
        return ~d_turn, d_turn


def schedule_from_config(gan: ml_collections.ConfigDict) -> GANSchedule:
    """A :class:`GANSchedule` from ``config.gan`` (``mode``, ``d_steps``, ``warmup_steps``)."""
    return GANSchedule(mode=gan.get("mode", "joint"), d_steps=int(gan.get("d_steps", 1)),
                       warmup_steps=int(gan.get("warmup_steps", 0)))


def _zeros_like_shapes(shapes: Any) -> Any:
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def branch(pred: jax.Array, true_fn: Callable, false_fn: Callable, *operands: Any) -> Any:
    """``lax.cond(pred, true_fn, false_fn, *operands)``; on the CPU both branches are computed and
    the result selected. XLA's CPU backend runs the convolutions inside a conditional several
    times slower than the same ones outside it (GC cpu_c4's joint step: 0.60 s with the
    discriminator update in a ``cond``, 0.13 s with both computed and selected), so there the
    skipped branch's work is cheaper than the conditional. Accelerators use the ``cond``."""
    if isinstance(pred, bool):  # decided when tracing (joint mode's generator update)
        return (true_fn if pred else false_fn)(*operands)
    if jax.default_backend() != "cpu":
        return jax.lax.cond(pred, true_fn, false_fn, *operands)
    a, b = true_fn(*operands), false_fn(*operands)
    return jax.tree.map(lambda u, v: jnp.where(pred, u, v), a, b)


def two_player_step(
    state: TwoPlayerState, batch: dict[str, jax.Array], rng: jax.Array, schedule: GANSchedule,
    generate: Callable, generator_loss: Callable, discriminator_loss: Callable,
) -> tuple[TwoPlayerState, dict[str, jax.Array]]:
    """One trainer step of a two-player task (see the module docstring). Pure and jittable."""
    g_rng, d_rng = jax.random.split(rng)
    update_g, update_d = schedule.players(state.step)
    adversarial = jnp.float32(0.0) if schedule.mode == "none" else (state.step >= schedule.warmup_steps).astype(
        jnp.float32)

    def g_objective(g_params, params):
        return generator_loss(dict(params, generator=g_params), batch, g_rng, adversarial)

    def g_update(st):
        (_, (metrics, fake)), grads = jax.value_and_grad(g_objective, has_aux=True)(
            st.params["generator"], st.params)
        return st.apply("generator", grads), metrics, fake

    def d_update(st, fake):
        def objective(d_params):
            return discriminator_loss(dict(st.params, discriminator=d_params), batch,
                                      jax.lax.stop_gradient(fake), d_rng)
        (_, metrics), grads = jax.value_and_grad(objective, has_aux=True)(st.params["discriminator"])
        return st.apply("discriminator", grads), metrics

    g_shapes = jax.eval_shape(g_update, state)
    d_shapes = jax.eval_shape(d_update, state, g_shapes[2])[1]

    def no_g(st):
        return st, _zeros_like_shapes(g_shapes[1]), generate(st.params, batch, g_rng)

    state, g_metrics, fake = branch(update_g, g_update, no_g, state)
    state, d_metrics = branch(update_d, d_update, lambda st, f: (st, _zeros_like_shapes(d_shapes)),
                                    state, fake)
    metrics = dict(g_metrics)
    metrics.update({f"d_{k}": v for k, v in d_metrics.items()})
    metrics.update(updated_generator=jnp.asarray(update_g, jnp.float32),
                   updated_discriminator=jnp.asarray(update_d, jnp.float32))
    return state.replace(step=state.step + 1), metrics

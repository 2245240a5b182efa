"""One wall-clock budget for every training of a driver run (host-side, pure Python).

A driver that trains several models (the BAN generations, StrassenNets' table, the DPLC sweeps, the
understanding stages, the ECG cross-validation) takes one ``time_limit`` in seconds for the whole
command: each training is given what is left (:meth:`Deadline.for_training`), the trainer
checkpoints where it stops, and :meth:`Deadline.check_finished` raises :class:`OutOfTime` so that
nothing is scored or reported from a half-trained model. The same command run again skips the
finished models and continues the stopped one from its checkpoint. For leased machines with a
per-command limit, and for sharing a CPU with other work. :func:`jaxcomp.configs.config_script_main`
turns :class:`OutOfTime` into one line on stderr and exit status 0.
"""

from __future__ import annotations

import math
import numbers
import os
import time
from typing import Any


def _process_0s(value: float | None) -> float | None:
    """``value`` as process 0 has it, in a multi-process JAX run (a collective: every process calls
    it); else ``value``. So that the processes stop together, as the trainer's time limit does."""
    import sys

    jax = sys.modules.get("jax")
    if jax is None or jax.process_count() == 1:
        return value
    import numpy as np
    from jax.experimental import multihost_utils

    got = float(multihost_utils.broadcast_one_to_all(np.float64(math.nan if value is None else value)))
    return None if math.isnan(got) else got


def without_budget(config: Any, *keys: str) -> Any:
    """An unlocked copy of ``config`` (an ``ml_collections.ConfigDict``) without the dotted ``keys``
    (a driver's ``*.time_limit``): the command's budget is not a setting of the runs it trains, so
    it stays out of their ``config.json``, digests and row keys, and a slice with another budget
    finds the runs of the one before."""
    import ml_collections

    from jaxcomp.configs import settings_without

    return ml_collections.ConfigDict(settings_without(config, keys))


class OutOfTime(Exception):
    """A run stopped by its time limit; the same command continues it (every finished piece is kept)."""


class Deadline:
    """``seconds`` of wall clock from construction (``0`` or ``None``: no limit); ``name`` is the
    setting's name in messages (e.g. ``"ban.time_limit"``)."""

    def __init__(self, seconds: float | None, name: str = "time_limit") -> None:
        self.name = name
        if isinstance(seconds, bool) or not (seconds is None or isinstance(seconds, numbers.Real)):
            raise ValueError(f"{name} must be a number of seconds (0: no limit), got {seconds!r}")
        if seconds is None or seconds == 0:
            self.ends = None
        elif not 0 < seconds < math.inf:  # also NaN
            raise ValueError(f"{name} must be a finite number of seconds > 0, or 0 for no limit; got {seconds!r}")
        else:
            self.ends = time.monotonic() + float(seconds)

    def left(self) -> float | None:
        """Seconds left (``None``: no limit); raises :class:`OutOfTime` once none are. In a
        multi-process JAX run every process must call it (process 0's clock decides for all)."""
        if self.ends is None:
            return None
        return self._decide(self.ends - time.monotonic())

    def _decide(self, left: float | None) -> float | None:
        left = _process_0s(left)
        if left is not None and left <= 0:
            raise OutOfTime(f"{self.name} reached")
        return left

    def for_training(self, workdir: str, steps: int) -> float | None:
        """The ``time_limit`` to give :func:`jaxcomp.train.train` for a run of ``steps`` steps in
        ``workdir``: ``None`` when there is no limit or the run has a finished checkpoint at
        ``steps`` or later (restoring it trains nothing, so it goes ahead after the limit too), else
        the seconds left; :class:`OutOfTime` when none are."""
        from jaxcomp.files import latest_complete_checkpoint

        if self.ends is None:
            return None
        done = latest_complete_checkpoint(workdir) if os.path.isdir(workdir) else None
        return self._decide(None if done is not None and done >= steps else self.ends - time.monotonic())

    def check_finished(self, state: Any, steps: int, workdir: str) -> None:
        """Raises :class:`OutOfTime` when the trainer stopped ``state`` (anything with ``.step``)
        before ``steps``, i.e. at its time limit."""
        step = int(state.step)
        if step < steps:
            raise OutOfTime(f"{self.name} reached: {workdir} stopped at step {step} of {steps}")

"""Argument checks shared by the packages (host-side, on Python or NumPy values)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_whole(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer, or a concrete integer JAX scalar, and not a bool
    (``True`` is an ``int`` to Python, but a count, a size or a level number given as ``True`` is a
    mistake to refuse). A traced value is not: a count must be known when tracing."""
    if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
        return value.ndim == 0 and bool(jax.numpy.issubdtype(value.dtype, jax.numpy.integer))
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

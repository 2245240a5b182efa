"""Argument checks shared by the packages (host-side, on Python or NumPy values)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
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


def _is_numpy_dtype(dtype: Any) -> bool:
    try:
        np.dtype(dtype)
    except TypeError:
        return False
    return True


def finite_number(value: Any, name: str, minimum: float = 0.0, strict: bool = True) -> float:
    """``value`` as a ``float``: a real number (Python or NumPy, a 0-d array or a concrete JAX scalar; not a
    bool) that is finite and ``> minimum`` (``>= minimum`` unless ``strict``); else a ValueError naming
    ``name`` and what is wrong. Callers skip traced values (no number to check under ``jax.jit``)."""
    import numbers

    import jax

    bound = f"{'>' if strict else '>='} {minimum:g}"
    if isinstance(value, jax.core.Tracer):  # callers check concrete values only
        raise TypeError(f"{name} is traced (inside jax.jit): it has no value to check")
    dtype = getattr(value, "dtype", None)
    if getattr(value, "shape", None) == () and dtype is not None and not isinstance(value, np.generic):
        # a 0-d NumPy array or a concrete JAX scalar (e.g. x.max()): its number, if it is a real one
        if "bfloat16" in str(dtype):
            value = float(np.asarray(value, np.float32))
        elif _is_numpy_dtype(dtype) and np.dtype(dtype).kind in "iuf":
            value = np.asarray(value).item()
    if isinstance(value, (bool, np.bool_, np.timedelta64, np.datetime64)) or not isinstance(
            value, (numbers.Real, np.floating, np.integer)):
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be a finite number {bound}, got {float(value)}")
    if value < minimum or (strict and value == minimum):
        raise ValueError(f"{name} must be {bound}, got {float(value):g}")
    return float(value)


def index_array(values: Any, n: int, name: str, kind: str = "indices", domain: str = "",
                error: type[Exception] = ValueError) -> np.ndarray:
    """``values`` as a 1-D integer NumPy array of entries in ``0 .. n - 1`` (indices, token ids, class
    labels), else ``error`` naming ``name``: a float, a boolean mask or a negative entry would pick other
    items than meant. ``kind`` and ``domain`` word the message (``domain`` defaults to ``0..n-1``)."""
    values = np.asarray(values)
    if values.ndim != 1:
        raise error(f"{name} must be a 1-D array of integer {kind}, got shape {values.shape} of {values.dtype}")
    if not (np.issubdtype(values.dtype, np.integer) or values.size == 0):
        # not the shape: a caller may have flattened its array (a codec's [h, w, C] symbols) to check it
        raise error(f"{name} must be integer {kind}, got {values.dtype}")
    if values.size and not (0 <= values.min() and values.max() < n):
        raise error(f"{name} holds {kind} in [{values.min()}, {values.max()}], outside {domain or f'0..{n - 1}'}")
    return values


def nonempty(values: Any, name: str) -> list:
    """``list(values)``, or a ValueError naming ``name`` if it is empty: a driver given no seeds, folds
    or rates wrote an empty table and exited 0 (or failed deep in its summary)."""
    values = list(values)
    if not values:
        raise ValueError(f"{name} is empty: the run would compute nothing; give at least one")
    return values


def seed_list(values: Any, name: str) -> list[int]:
    """``values`` as a list of ``int`` seeds: not empty, whole numbers >= 0, none repeated (a repeated
    seed is one run counted twice: more seeds and a smaller spread in a mean ± std table), or a
    ValueError naming ``name``."""
    seeds = nonempty(values, name)
    for seed in seeds:
        if not is_whole(seed) or seed < 0:
            raise ValueError(f"{name} must be whole numbers >= 0, got {seed!r}")
    repeated = sorted({int(s) for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"{name} repeats {repeated}: a repeated seed is one run counted twice in the spread")
    return [int(s) for s in seeds]


def distinct(values: Any, name: str) -> list:
    """``list(values)``, not empty and without repeats (methods, objectives, stages, rates), or a
    ValueError naming ``name`` and the repeated entries."""
    values = nonempty(values, name)
    repeated = [v for i, v in enumerate(values) if v in values[:i]]
    if repeated:
        raise ValueError(f"{name} repeats {list(dict.fromkeys(repeated))}")
    return values


def count(value: Any, name: str, minimum: int = 1) -> int:
    """``value`` as an ``int`` that is whole and ``>= minimum`` (a number of seeds, steps, points), or a
    ValueError naming ``name``."""
    if not is_whole(value) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An ``argparse`` ``type=`` for whole numbers ``>= minimum`` (``--steps``, ``--crops``): a bad
    value is the parser's one-line error naming the option, not a traceback or a NaN result."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse

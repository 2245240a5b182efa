"""Argument checks shared by the packages (host-side, on Python or NumPy values)."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_whole(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer and not a bool (``True`` is an ``int`` to Python,
    but a count, a size or a level number given as ``True`` is a mistake to refuse)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))

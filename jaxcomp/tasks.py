"""Resolves ``config.task`` to a system's task and data (the only place that knows them all)."""

from __future__ import annotations

from typing import Any

import ml_collections


def build(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """Returns ``(task, batches)`` for ``config.task``."""
    name = config.task
    if name == "l3c":
        from jaxcomp.codecs.l3c import L3CTask
        from jaxcomp.data import build_image_data
        return L3CTask(config), build_image_data(config.data)
    raise ValueError(f"unknown config.task {name!r}; known tasks: l3c")

"""Resolves ``config.task`` to a system's task and data (the only place that knows them all)."""

from __future__ import annotations

from typing import Any

import ml_collections


def build_task(config: ml_collections.ConfigDict) -> tuple[Any, str]:
    """Returns ``(task, data kind)`` for ``config.task`` without touching any data."""
    name = config.task
    if name == "l3c":
        from jaxcomp.codecs.l3c import L3CTask
        return L3CTask(config), "images"
    if name == "ecg":
        from jaxcomp.ecg.task import ECGTask
        return ECGTask(config), "ecg"
    raise ValueError(f"unknown config.task {name!r}; known tasks: l3c, ecg")


def build_data(config: ml_collections.ConfigDict, kind: str) -> Any:
    """The host-side batches for a task's data kind."""
    if kind == "images":
        from jaxcomp.data import build_image_data
        return build_image_data(config.data)
    if kind == "ecg":
        from jaxcomp.ecg.data import build_ecg_data
        return build_ecg_data(config.data)
    raise ValueError(f"unknown data kind {kind!r}")


def build(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """Returns ``(task, batches)`` for ``config.task``."""
    task, kind = build_task(config)
    return task, build_data(config, kind)

"""Trained models shipped with the package (see MODEL.md beside them).

A shipped model is ``NAME.msgpack`` (Flax-serialized parameters) beside ``NAME.json``
(``{"config": <the training config>, "training": <how it was trained>}``). Exporting and loading
model files lives in :mod:`jaxcomp.modelfile`; its names are re-exported here for older imports.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from jaxcomp import modelfile
from jaxcomp.modelfile import (
    LINEAGE_FILE,
    ModelLoadError,
    export_params,
    lineage,
    load_workdir,
    record_lineage,
    workdir_lineage,
)

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_L3C = os.path.join(PRETRAINED_DIR, "l3c.msgpack")
# L3C models shipped before the current one, newest first (MODEL.md): kept so that the streams
# they wrote still decode; ``jaxcomp decompress`` picks the one whose fingerprint a stream names.
PREVIOUS_L3C = ("l3c_2026-12-05_1815.msgpack", "l3c_2026-12-05.msgpack", "l3c_2026-12-02.msgpack")


def shipped_l3c_models() -> list[str]:
    """Paths of the shipped L3C models: :data:`DEFAULT_L3C` first, then the earlier ones present."""
    earlier = [os.path.join(PRETRAINED_DIR, name) for name in PREVIOUS_L3C]
    return [DEFAULT_L3C] + [path for path in earlier if os.path.exists(path)]


def load_model(checkpoint: str | None = None, task: str = "l3c") -> tuple[ml_collections.ConfigDict, Any, dict]:
    """:func:`jaxcomp.modelfile.load_model`, with ``checkpoint=None`` the L3C model shipped with
    the package."""
    return modelfile.load_model(checkpoint or DEFAULT_L3C, task)


__all__ = [
    "DEFAULT_L3C", "LINEAGE_FILE", "PREVIOUS_L3C", "PRETRAINED_DIR", "ModelLoadError", "export_params", "lineage",
    "load_model", "load_workdir", "record_lineage", "shipped_l3c_models", "workdir_lineage",
]

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


def load_model(checkpoint: str | None = None, task: str = "l3c") -> tuple[ml_collections.ConfigDict, Any, dict]:
    """:func:`jaxcomp.modelfile.load_model`, with ``checkpoint=None`` the L3C model shipped with
    the package."""
    return modelfile.load_model(checkpoint or DEFAULT_L3C, task)


__all__ = [
    "DEFAULT_L3C", "LINEAGE_FILE", "PRETRAINED_DIR", "ModelLoadError", "export_params", "lineage", "load_model",
    "load_workdir", "record_lineage", "workdir_lineage",
]

"""Shared fixtures. Tests run on CPU; configs are tiny so the suite stays in minutes."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def l3c_tiny_config():
    from jaxcomp.configs import load_config
    return load_config(str(REPO / "configs" / "l3c.py") + ":tiny")

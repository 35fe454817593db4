"""Shared fixtures: the real data in ../shared/data and small models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ACTIVEIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder (NIV2 subset, Self-Instruct seed tasks)."""
    if not SHARED_DATA.exists():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set ACTIVEIT_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def niv2_root(shared_data: Path) -> Path:
    return shared_data / "niv2"

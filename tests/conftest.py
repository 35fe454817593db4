"""Shared fixtures: the real data in ../shared/data and small models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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


@pytest.fixture(scope="session")
def smollm2_tokenizer() -> Any:
    """The real SmolLM2-135M-Instruct tokenizer (ChatML template), from the cached folder."""
    from transformers import AutoTokenizer

    from activeit.models import smollm2_folder

    return AutoTokenizer.from_pretrained(smollm2_folder())


@pytest.fixture(scope="session")
def gpt2_tok() -> Any:
    """The real GPT-2 BPE tokenizer (no chat template)."""
    from activeit.models import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub access in offline mode, so that nothing waits on the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")

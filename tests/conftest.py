"""Shared fixtures: the real data in ../shared/data and small models."""

from __future__ import annotations

import json
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

    from activeit.models.builtin import smollm2_folder

    return AutoTokenizer.from_pretrained(smollm2_folder())


@pytest.fixture(scope="session")
def gpt2_tok() -> Any:
    """The real GPT-2 BPE tokenizer (no chat template)."""
    from activeit.models.tiny import gpt2_tokenizer

    return gpt2_tokenizer()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hub access in offline mode, so that nothing waits on the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def network_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """Every DNS lookup and connection attempt of the test, recorded; each fails at once,
    as on a machine without a network. A test asserts how many it allows (none, one)."""
    import socket

    calls: list[tuple[str, Any]] = []

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(("getaddrinfo", host))
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    def connect(self: socket.socket, address: Any) -> Any:
        calls.append(("connect", address))
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect)
    return calls



def _write_niv2(root: Path, tasks: dict[str, Any], train: list[str], test: list[str], split_dir: str = "default") -> Path:
    """A small NIV2 tree: task name -> dict (written as JSON) or str (written as is)."""
    (root / "tasks").mkdir(parents=True, exist_ok=True)
    (root / "splits" / split_dir).mkdir(parents=True, exist_ok=True)
    for name, content in tasks.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (root / "tasks" / f"{name}.json").write_text(text, encoding="utf-8")
    (root / "splits" / split_dir / "train_tasks.txt").write_text("".join(f"{n}\n" for n in train))
    (root / "splits" / split_dir / "test_tasks.txt").write_text("".join(f"{n}\n" for n in test))
    return root


def _niv2_task(definition: str = "Answer 'yes' or 'no'.", outputs: tuple[str, ...] = ("yes", "no", "yes"), **extra: Any) -> dict[str, Any]:
    """A valid NIV2 task dict."""
    return {
        "Source": ["unit"],
        "Categories": ["Answer Verification"],
        "Definition": [definition],
        "Input_language": ["English"],
        "Output_language": ["English"],
        "Instruction_language": ["English"],
        "Domains": ["Misc."],
        "Positive Examples": [{"input": "Is ice cold?", "output": "yes", "explanation": "It is."}],
        "Negative Examples": [{"input": "Is fire cold?", "output": "yes", "explanation": "It is not."}],
        "Instances": [{"id": f"i{k}", "input": f"question {k}", "output": [o]} for k, o in enumerate(outputs)],
        **extra,
    }


@pytest.fixture
def write_niv2() -> Any:
    """``write_niv2(root, {name: dict | str}, train, test, split_dir="default")``: a small
    NIV2 tree in the official layout (a str is written as is, e.g. invalid JSON)."""
    return _write_niv2


@pytest.fixture
def niv2_task() -> Any:
    """``niv2_task(definition=..., outputs=..., **fields)``: a valid NIV2 task dict."""
    return _niv2_task


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module: tiny models gain nothing from more, and the CPU is shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

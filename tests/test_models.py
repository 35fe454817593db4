"""Model loading: the default model offline, the tiny test models, one-line failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from activeit.errors import ModelLoadError
from activeit.scoring.engine.generation import greedy_generate
from activeit.models.builtin import DEFAULT_MODEL
from activeit.models.hub import hub_unreachable_reason
from activeit.models.loading import load_model
from activeit.data.prompts import PromptFormatter
from activeit.data.tasks import Example


@pytest.mark.usefixtures("offline")
def test_default_model_loads_offline_and_generates_text(network_calls: list) -> None:
    """From the folder install.sh converted once (a first call here would convert it)."""
    loaded = load_model(DEFAULT_MODEL)
    assert loaded.kind == "causal" and loaded.path is not None and loaded.path.is_dir()
    assert (loaded.path / "model.safetensors").exists() and loaded.model.num_parameters() > 100_000_000
    assert network_calls == []
    formatter = PromptFormatter.for_model(loaded)
    assert formatter.chat  # SmolLM2-Instruct gets its chat template
    prompt = formatter.encode(
        "Return the capital city of the country", (Example("France", "Paris"), Example("Italy", "Rome")), "Germany"
    )
    (ids,) = greedy_generate(loaded, [prompt.ids], max_new_tokens=6)
    text = loaded.tokenizer.decode(ids, skip_special_tokens=True)
    assert ids and text.strip(), f"no text generated: {ids}"


@pytest.mark.usefixtures("offline")
@pytest.mark.parametrize("name, kind", [("tiny-llama", "causal"), ("tiny-gpt2", "causal"), ("tiny-t5", "seq2seq")])
def test_tiny_models_load_with_their_kind(name: str, kind: str) -> None:
    loaded = load_model(name)
    assert loaded.kind == kind and loaded.is_seq2seq == (kind == "seq2seq")
    assert loaded.tokenizer.pad_token_id is not None
    assert sum(p.numel() for p in loaded.model.parameters()) < 20_000_000
    prompt = PromptFormatter.for_model(loaded, max_source_length=64).encode("Say hi", (), "now")
    (ids,) = greedy_generate(loaded, [prompt.ids], max_new_tokens=3)
    # the same tokens as a plain `generate` (cut before the first EOS), at most 3 of them
    plain = loaded.model.generate(torch.tensor([prompt.ids]), max_new_tokens=3, do_sample=False,
                                  pad_token_id=loaded.tokenizer.pad_token_id)[0].tolist()
    plain = plain[1:] if loaded.is_seq2seq else plain[len(prompt.ids):]
    eos = loaded.tokenizer.eos_token_id
    assert ids == (plain[: plain.index(eos)] if eos in plain else plain)
    assert 0 < len(ids) <= 3 or plain[0] == eos


def _one_line_error(name: str) -> str:
    with pytest.raises(ModelLoadError) as caught:
        load_model(name)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_local_folder_is_one_line(tmp_path: Path) -> None:
    message = _one_line_error(str(tmp_path / "no" / "such" / "model"))
    assert "does not exist" in message


@pytest.mark.usefixtures("offline")
def test_folder_without_a_model_is_one_line(tmp_path: Path) -> None:
    assert "cannot load model" in _one_line_error(str(tmp_path))


@pytest.mark.usefixtures("offline")
def test_unknown_hub_id_offline_is_one_line(monkeypatch: pytest.MonkeyPatch, network_calls: list) -> None:
    """Offline mode: the cache is asked, the network never."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    message = _one_line_error("nobody-here/no-such-model")
    assert "nobody-here/no-such-model" in message and "local folder" in message
    assert network_calls == []


def test_no_network_fails_fast_without_retries(monkeypatch: pytest.MonkeyPatch, network_calls: list) -> None:
    """Without offline mode, a host name that does not resolve is reported at once: one
    DNS lookup, no connection attempt, no retry."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    assert "no network" in (hub_unreachable_reason() or "")
    assert [kind for kind, _ in network_calls] == ["getaddrinfo"]
    network_calls.clear()
    message = _one_line_error("nobody-here/no-such-model")
    assert "no network" in message and "HF_HUB_OFFLINE=1" in message
    assert network_calls == [("getaddrinfo", "huggingface.co")]

"""Checks before compute: that a model name can be loaded, and that LoRA knows what to adapt in it.

They read folders and file headers, never weights, and report one :class:`ModelLoadError`
(or :class:`ConfigError`) line naming the problem and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from activeit.errors import ModelLoadError
from activeit.models.lora import ADAPTER_WEIGHTS, adapter_base, lora_target_modules, missing_base_error
from activeit.models.names import local_folder, resolve_model_path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")


def check_model(name: str, chat: bool | None = None) -> None:
    """Check, before anything runs, that ``name`` can be loaded: a local folder has a
    config, complete safetensors weights and a tokenizer (with a chat template when
    ``chat``); a hub id needs a network. Reads headers, not weights; one
    :class:`ModelLoadError` line naming the problem and the fix."""
    local = local_folder(name)
    if local is None:  # a hub id, and the hub is reachable
        return
    if (base := adapter_base(local)) is not None:  # a LoRA adapter: check its weights and its base
        if not (local / ADAPTER_WEIGHTS).is_file():
            raise ModelLoadError(f"adapter '{local}' has no {ADAPTER_WEIGHTS}")
        try:
            check_model(base, chat)
        except ModelLoadError as exc:
            raise missing_base_error(local, base, exc) from None
        return
    if not (local / "config.json").is_file():
        raise ModelLoadError(f"model folder '{local}' has no config.json: is it a Hugging Face model folder?")
    weights = sorted(local.glob("*.safetensors"))
    if not weights:
        raise ModelLoadError(f"model folder '{local}' has no *.safetensors weights (only safetensors are loaded)")
    from safetensors import safe_open

    for file in weights:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as exc:  # safetensors raises its own error types
            raise ModelLoadError(f"model weights '{file}' are unreadable ({str(exc).splitlines()[0]}): "
                                 "truncated or corrupt; save or copy the model again") from None
    if not any((local / f).is_file() for f in TOKENIZER_FILES):
        raise ModelLoadError(f"model folder '{local}' has no tokenizer files (save the tokenizer with the model)")
    if chat:
        from transformers import AutoTokenizer

        if not getattr(AutoTokenizer.from_pretrained(str(local)), "chat_template", None):
            raise ModelLoadError(f"model '{name}' has no chat template, so chat: true / --chat cannot wrap its "
                                 "prompts; use --no-chat (chat: false) or a chat model")


def check_lora(name: str, method: str, given: Sequence[str] | None = None) -> None:
    """Refuse ``method: lora`` up front when ``name``'s family has no default target modules
    and none are given (a model that cannot be read locally is left to the loader)."""
    if method != "lora" or given:
        return
    source = Path(resolve_model_path(name))
    if (base := adapter_base(source)) is not None:
        source = Path(resolve_model_path(base))
    if (source / "config.json").is_file():
        model_type = json.loads((source / "config.json").read_text(encoding="utf-8")).get("model_type", "")
        lora_target_modules(model_type)

"""Checks before compute: that a model name can be loaded (an adapter: on a base it fits),
and that LoRA knows what to adapt in it.

They read folders, configs and file headers, never weights, and report one
:class:`ModelLoadError` (or :class:`ConfigError`) line naming the problem and the fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from activeit.errors import ModelLoadError
from activeit.models.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    adapter_base,
    lora_target_modules,
    missing_base_error,
)
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
        if (base_folder := local_folder(base)) is not None:
            check_adapter_fits(local, base, base_folder)
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


#: peft's names of the adapter weights of a module ``<path>``: ``base_model.model.<path>.lora_A.weight``
_PEFT_PREFIX, _LORA_A, _LORA_B = "base_model.model.", ".lora_A.weight", ".lora_B.weight"


def _features(module: object) -> tuple[int, int] | None:
    """(in, out) features of a linear layer (``nn.Linear``, or GPT-2's transposed ``Conv1D``)."""
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    if type(module).__name__ == "Conv1D":
        rows, columns = module.weight.shape  # type: ignore[attr-defined]
        return int(rows), int(columns)
    return None


def _skeleton(base_folder: Path) -> dict[str, object] | None:
    """The modules of the base model, built from its config on the meta device (no weights,
    no memory); None when it cannot be built that way (left to the loader)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.from_pretrained(str(base_folder))
        auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
        with torch.device("meta"):
            return dict(auto.from_config(config).named_modules())
    except Exception:  # noqa: BLE001  (a model transformers cannot build: the loader reports it)
        return None


def check_adapter_fits(folder: Path, base: str, base_folder: Path) -> None:
    """Refuse an adapter whose recorded base model (in ``base_folder``) does not fit it: a
    layer it adapts is missing there, or has other sizes (peft would fail after loading)."""
    from safetensors import safe_open

    modules = _skeleton(base_folder)
    if modules is None:
        return
    with safe_open(str(folder / ADAPTER_WEIGHTS), framework="pt") as weights:
        shapes = {key: weights.get_slice(key).get_shape() for key in weights.keys()}
    adapted = sorted(key[len(_PEFT_PREFIX):-len(_LORA_A)] for key in shapes
                     if key.startswith(_PEFT_PREFIX) and key.endswith(_LORA_A))
    problems = [f"it has no layer {path}" for path in adapted if path not in modules]
    for path in (p for p in adapted if p in modules):
        features = _features(modules[path])
        lora_b = shapes.get(_PEFT_PREFIX + path + _LORA_B)
        if features is not None and lora_b is not None:
            wanted = (shapes[_PEFT_PREFIX + path + _LORA_A][1], lora_b[0])
            if features != wanted:
                problems.append(f"layer {path} maps {features[0]} -> {features[1]} features, the adapter's "
                                f"{wanted[0]} -> {wanted[1]}")
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelLoadError(
            f"adapter '{folder}' does not fit its base model '{base}': {problems[0]}{more}; make "
            f"base_model_name_or_path in {ADAPTER_CONFIG} name the model the adapter was trained on"
        )


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

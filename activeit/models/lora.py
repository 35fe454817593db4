"""LoRA: the layers it adapts per model family, adapter folders, and wrapping a model in a fresh adapter.

A LoRA adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, as written by
``training.method: lora``) records the base model it belongs to; loading it loads that base,
then the adapter on top (:func:`attach_adapter`). For inference the adapter is **merged**
into the base weights by default (``"merge"``): the merged model runs exactly as fast as the
base, while unmerged LoRA layers add two small matmuls per adapted layer; ``"keep"`` keeps
them unmerged (same scores to fp32 rounding; also what ``"merge"`` does for an adapted
output layer tied to the input embeddings), ``"train"`` returns a trainable ``PeftModel``
(``continue`` mode).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from activeit.errors import ConfigError, ModelLoadError

if TYPE_CHECKING:  # annotations only: loading a model needs no settings
    from activeit.config.settings import TrainingSettings

AdapterMode = Literal["merge", "keep", "train"]
#: What marks a folder as a LoRA adapter (peft's file names).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: LoRA's default target modules per architecture family (``config.model_type``): every
#: linear projection of attention and MLP (QLoRA's finding: adapting all of them matters
#: more than the rank). ``training.lora_target_modules`` overrides it; a family missing
#: here needs it.
LORA_TARGET_MODULES: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        ("llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3",
         "gemma3_text", "olmo", "olmo2", "granite", "smollm3", "deepseek_v3", "exaone4", "cohere", "helium"),
        _LLAMA_LIKE,
    ),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "gpt_neox": ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    "t5": ("q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo"),
    "mt5": ("q", "k", "v", "o", "wi_0", "wi_1", "wo"),
    "umt5": ("q", "k", "v", "o", "wi_0", "wi_1", "wo"),
    "bart": ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
}


def lora_target_modules(model_type: str, given: Sequence[str] | None = None) -> tuple[str, ...]:
    """The modules LoRA adapts in a ``model_type`` model: ``given``, else the family's default."""
    if given:
        return tuple(given)
    if model_type not in LORA_TARGET_MODULES:
        raise ConfigError(
            f"training.lora_target_modules: no default for model family '{model_type}'; name the linear "
            "layers to adapt (e.g. lora_target_modules: [q_proj, v_proj], or --lora-target-modules q_proj v_proj)"
        )
    return LORA_TARGET_MODULES[model_type]


def adapter_base(folder: str | Path) -> str | None:
    """The base model a LoRA adapter folder records; None when ``folder`` is no adapter."""
    config = Path(folder) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    base = json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"adapter '{folder}': {ADAPTER_CONFIG} names no base_model_name_or_path; "
                             "write the base model's name or folder there")
    return str(base)


def missing_base_error(folder: Path, base: str, problem: ModelLoadError) -> ModelLoadError:
    """The one-line error for an adapter whose base model cannot be loaded."""
    return ModelLoadError(
        f"adapter '{folder}': its base model '{base}' cannot be loaded ({problem}); make "
        f"base_model_name_or_path in {ADAPTER_CONFIG} name a built-in model, a folder or a reachable hub id"
    )


def attach_adapter(base_model: Any, folder: Path, mode: AdapterMode) -> Any:
    """``base_model`` (a torch module) with the adapter in ``folder`` on top: merged, kept
    unmerged, or trainable (``mode``, see the module docstring)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base_model, str(folder), is_trainable=mode == "train")
    output = model.get_base_model().get_output_embeddings()
    # Merging into an adapted output layer whose weight is tied to the input embeddings
    # would change the embeddings too: such an adapter stays unmerged.
    tied = getattr(base_model.config, "tie_word_embeddings", False) and hasattr(output, "base_layer")
    if mode == "merge" and not tied:
        model = model.merge_and_unload()
    elif mode != "train":
        model = model.get_base_model()
    model.train(mode == "train")
    return model


def add_lora(model: Any, config: TrainingSettings, base: str, seq2seq: bool) -> Any:
    """``model`` (a torch module) wrapped by peft with a fresh LoRA adapter (only the adapter
    trains); the adapter records ``base`` (a name, folder or hub id) as the model it belongs to."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(lora_target_modules(model.config.model_type, config.lora_target_modules)),
        task_type="SEQ_2_SEQ_LM" if seq2seq else "CAUSAL_LM",
    )
    try:
        wrapped = get_peft_model(model, lora)
    except ValueError as exc:  # target modules not in the model
        raise ConfigError(f"training.lora_target_modules: {str(exc).splitlines()[0]}") from None
    wrapped.peft_config["default"].base_model_name_or_path = base
    return wrapped

"""Saving a fine-tuned model: its weights in the dtype they were trained in, its tokenizer
and its metrics, written at once (a temporary sibling renamed at the end), so a failed run
leaves no half-written model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from activeit.models.loading import no_hf_progress_bars
from activeit.outputs import output_dir

METRICS_FILE = "training_metrics.json"
#: The dtype weights are saved in under each mixed precision: the one they were trained in.
SAVE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cast_state(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``state`` in ``dtype``; tensors that share storage (tied embeddings) still share it,
    so they are written once."""
    cast: dict[tuple[int, torch.dtype, torch.Size], torch.Tensor] = {}
    for tensor in state.values():
        key = (tensor.data_ptr(), tensor.dtype, tensor.shape)
        if key not in cast:
            cast[key] = tensor.to(dtype)
    return {name: cast[tensor.data_ptr(), tensor.dtype, tensor.shape] for name, tensor in state.items()}


def save_trained(
    model: Any, tokenizer: Any, out_dir: Path, metrics: dict[str, Any], overwrite: bool,
    dtype: torch.dtype | None = None, gathered: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the weights of ``model`` (in ``dtype`` when given), its ``tokenizer`` (full
    models; an adapter loads its base's) and the metrics into ``out_dir`` at once (a temporary sibling, renamed at the end): a failure leaves whatever was there
    before untouched.

    The weights are ``model``'s own, cast in place (no second copy in memory), or under
    FSDP / DeepSpeed the ``gathered`` state dict, whole, that every process helped build.
    """
    state = None
    if gathered is not None:
        state = cast_state(gathered, dtype) if dtype is not None else gathered
    elif dtype is not None:
        model.to(dtype)
    with output_dir(out_dir, overwrite) as tmp, no_hf_progress_bars():  # no "Writing model shards" bar
        # safetensors only: transformers 5 and peft both write nothing else
        if hasattr(model, "peft_config"):  # a LoRA adapter: its weights and config (no model card)
            model.save_pretrained(tmp, state_dict=state, save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)
        else:
            model.save_pretrained(tmp, state_dict=state)
            tokenizer.save_pretrained(tmp)
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")

"""The fine-tuning loss with the output layer run only where the loss reads it.

``model(**batch).loss`` projects every position of every example onto the vocabulary
(SmolLM2: 49,152 logits for each of ~200 prompt tokens) although the loss reads only the
answer tokens. :class:`AnswerLoss` computes the same loss, the token mean of the cross
entropy over the labelled tokens (``transformers``' convention, in fp32), from the logits of
those positions alone:

* causal models predict token ``t + 1`` at position ``t``, so the positions kept are those
  whose next label is not ``IGNORE_INDEX``; seq2seq models predict ``labels[t]`` at decoder
  position ``t`` (the decoder inputs are the labels shifted right, as the model builds them);
* a model whose ``forward`` takes a boolean ``logits_to_keep`` mask (``transformers``' own
  ``slice_logits_to_keep``: Llama, GPT-2 and most causal families) gets it; any other model
  gets a forward pre-hook on its output layer (``get_output_embeddings()``) that hands it the
  kept rows only, so what runs before the head (T5's rescaling) and after it (soft-capping)
  still runs; a model without an output layer module falls back to ``model(**batch).loss``;
* the call still goes through the outermost wrapper (``accelerate``'s DDP, PEFT), so gradient
  synchronisation and adapters work unchanged;
* a batch without any labelled token gives a zero loss on the graph (``transformers`` gives
  NaN), so that every process of a sharded run still joins the backward pass.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from activeit.training.data import IGNORE_INDEX

#: Where the kept logits come from: the model's own mask argument, a hook on its output
#: layer, or the full logits (``model(**batch).loss``).
LOSS_PATHS = ("logits_to_keep", "head_hook", "full")


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model under DDP's ``.module`` and PEFT's wrappers (the one holding the forward)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def takes_logits_mask(model: torch.nn.Module) -> bool:
    """Whether ``model.forward`` accepts a boolean ``(batch, length)`` ``logits_to_keep``.

    ``transformers``' ``slice_logits_to_keep`` accepts one; the few families that still slice
    with ``slice(-logits_to_keep, None)`` take an int or a 1-D tensor only.
    """
    if "logits_to_keep" not in inspect.signature(type(model).forward).parameters:
        return False
    return hasattr(sys.modules.get(type(model).__module__), "slice_logits_to_keep")


def kept_positions(labels: torch.Tensor, seq2seq: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions whose logits the loss reads (a boolean ``labels``-shaped mask) and their
    targets, in row-major order."""
    if seq2seq:
        keep = labels != IGNORE_INDEX
        return keep, labels[keep]
    following = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)
    keep = following != IGNORE_INDEX
    return keep, following[keep]


@contextmanager
def head_sees_only(head: torch.nn.Module, keep: torch.Tensor) -> Iterator[None]:
    """While open, ``head`` is applied to the rows of its input that ``keep`` marks."""

    def gather(_module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        hidden = args[0]
        if hidden.shape[:2] != keep.shape:
            raise RuntimeError(f"output layer input {tuple(hidden.shape)} does not match the batch {tuple(keep.shape)}")
        return (hidden[keep], *args[1:])

    handle = head.register_forward_pre_hook(gather)
    try:
        yield
    finally:
        handle.remove()


class AnswerLoss:
    """``loss(model, batch)``: the batch's training loss from the answer positions' logits.

    ``batch`` holds ``input_ids``, ``attention_mask`` and ``labels`` (what
    :class:`~activeit.training.data.Collator` builds); ``path`` forces one of
    :data:`LOSS_PATHS` (tests compare them), else the fastest the model supports.
    """

    def __init__(self, model: torch.nn.Module, seq2seq: bool, path: str | None = None) -> None:
        inner = unwrapped(model)
        self.seq2seq = seq2seq
        self.head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
        if path is None:
            path = ("logits_to_keep" if not seq2seq and takes_logits_mask(inner)
                    else "head_hook" if isinstance(self.head, torch.nn.Module) else "full")
        if path not in LOSS_PATHS:
            raise ValueError(f"unknown loss path {path!r}; choose one of {', '.join(LOSS_PATHS)}")
        self.path = path
        self.shift_right = getattr(inner, "prepare_decoder_input_ids_from_labels", None)
        if seq2seq and path != "full" and self.shift_right is None:
            self.path = "full"  # no way to build the decoder inputs without handing over the labels

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.path == "full":
            return model(**batch).loss
        labels = batch["labels"]
        keep, targets = kept_positions(labels, self.seq2seq)
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if self.seq2seq:
            inputs["decoder_input_ids"] = self.shift_right(labels=labels)
        if self.path == "logits_to_keep":
            logits = model(**inputs, logits_to_keep=keep).logits
        else:
            with head_sees_only(self.head, keep):
                logits = model(**inputs).logits
        if targets.numel() == 0:
            return logits.sum() * 0.0
        return torch.nn.functional.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX)

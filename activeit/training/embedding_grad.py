"""The tied input embedding's gradient as a row-sparse update (CPU, one process).

A model whose input embedding *is* its output layer (SmolLM2, Llama-style small models,
GPT-2, T5) gets that matrix's gradient from two places: the output layer's (dense: every
vocabulary row moves through the softmax) and the embedding lookup's (only the rows of the
batch's tokens). ``torch`` computes the lookup's part densely too: a zeroed
``vocab x hidden`` buffer (SmolLM2: 49,152 x 576, 113 MB) filled at the batch's rows, then
added to the output layer's part in a third buffer; on 2 CPU cores that is ~0.3 s of a ~4 s
default training step (torch's profiler, ``docs/PERFORMANCE.md``). With the lookup's
gradient sparse (``nn.Embedding.sparse``), autograd adds its few rows into the output
layer's dense gradient in place: the same sum, the same dense ``.grad`` the optimizer
(fused AdamW) expects.

Used only where the sum is dense for certain: the embedding's weight is the very parameter
the output layer uses and it is trained (full fine-tuning; LoRA freezes it), it is a plain
``nn.Embedding`` without ``max_norm``, and the run is one CPU process (a DDP reducer plans
its buckets for dense gradients; on a GPU the dense lookup gradient is cheap).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def tied_trainable_embedding(model: torch.nn.Module) -> torch.nn.Embedding | None:
    """The input embedding of ``model`` when it is tied to the output layer and trained, else None."""
    get_input, get_output = (getattr(model, "get_input_embeddings", None),
                             getattr(model, "get_output_embeddings", None))
    if not (callable(get_input) and callable(get_output)):
        return None
    embedding, head = get_input(), get_output()
    if not isinstance(embedding, torch.nn.Embedding) or embedding.max_norm is not None or head is None:
        return None
    weight = embedding.weight
    return embedding if weight is getattr(head, "weight", None) and weight.requires_grad else None


@contextmanager
def sparse_tied_embedding_grad(model: torch.nn.Module, enabled: bool = True) -> Iterator[bool]:
    """While open, a tied, trained input embedding of ``model`` back-propagates row-sparse
    (see the module); yields whether it does. The module's setting is restored on exit."""
    embedding = tied_trainable_embedding(model) if enabled else None
    if embedding is None:
        yield False
        return
    before = embedding.sparse
    embedding.sparse = True
    try:
        yield True
    finally:
        embedding.sparse = before

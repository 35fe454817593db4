"""The tied input embedding's gradient as a row-sparse update, bit for bit the dense one
(CPU, one process).

A model whose input embedding *is* its output layer (SmolLM2, Llama-style small models,
GPT-2, T5) gets that matrix's gradient from two places: the output layer's (dense: every
vocabulary row moves through the softmax) and the embedding lookup's (only the rows of the
batch's tokens). ``torch`` computes the lookup's part densely: a zeroed ``vocab x hidden``
buffer (SmolLM2: 49,152 x 576, 113 MB) into which each position's gradient is added, in
position order, at its token's row; autograd then adds that buffer to the output layer's
part. On 2 CPU cores the zero fill and the sum are ~0.3 s of a ~4 s default training step
(torch's profiler, ``docs/PERFORMANCE.md``).

Here the lookup's backward runs torch's own kernel (``embedding_dense_backward``) over the
batch's distinct tokens only (their ranks as indices): each row's sum is made of the same
additions in the same order, so it is the dense buffer's row bit for bit. Those rows go back
as a coalesced sparse gradient, and autograd adds each into the output layer's dense
gradient once: ``head[r] + lookup[r]``, the very sum the dense path computes. So the weights
after a step are identical, not merely close (``tests/test_embedding_grad.py``); the smoke
model's predictions, which flip on a last-bit change, stay as they are.

``nn.Embedding(sparse=True)`` is not that: it adds each position's gradient into the dense
sum one by one (``(head + g1) + g2`` instead of ``head + (g1 + g2)``), a rounding change that
flipped the smoke model's round 2 when it was tried (``docs/PERFORMANCE.md``).

Used only where the sum is dense for certain: the embedding's weight is the very parameter
the output layer uses and it is trained (full fine-tuning; LoRA freezes it), it is a plain
``nn.Embedding`` (no ``max_norm``, no ``scale_grad_by_freq``), and the run is one CPU process
(a DDP reducer plans its buckets for dense gradients; on a GPU the dense buffer is cheap).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F


class _DistinctRowsLookup(torch.autograd.Function):
    """``F.embedding`` whose weight gradient is a coalesced sparse tensor over the distinct
    tokens of ``ids``, each row summed exactly as torch's dense kernel sums it."""

    @staticmethod
    def forward(ctx: Any, ids: torch.Tensor, weight: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.weight_shape = weight.shape
        ctx.padding_idx = padding_idx
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        (ids,) = ctx.saved_tensors
        rows, ranks = torch.unique(ids, sorted=True, return_inverse=True)
        padding_rank = -1
        if ctx.padding_idx is not None:
            hit = (rows == ctx.padding_idx).nonzero()
            padding_rank = int(hit[0, 0]) if hit.numel() else -1
        sums = torch.ops.aten.embedding_dense_backward(grad, ranks, rows.numel(), padding_rank, False)
        sparse = torch.sparse_coo_tensor(rows.unsqueeze(0), sums, ctx.weight_shape,
                                         is_coalesced=True, check_invariants=False)
        return None, sparse, None


def tied_trainable_embedding(model: torch.nn.Module) -> torch.nn.Embedding | None:
    """The input embedding of ``model`` when it is tied to the output layer and trained, else None."""
    get_input, get_output = (getattr(model, "get_input_embeddings", None),
                             getattr(model, "get_output_embeddings", None))
    if not (callable(get_input) and callable(get_output)):
        return None
    embedding, head = get_input(), get_output()
    if (type(embedding) is not torch.nn.Embedding or head is None
            or embedding.max_norm is not None or embedding.scale_grad_by_freq or embedding.sparse):
        return None
    weight = embedding.weight
    return embedding if weight is getattr(head, "weight", None) and weight.requires_grad else None


@contextmanager
def sparse_tied_embedding_grad(model: torch.nn.Module, enabled: bool = True) -> Iterator[bool]:
    """While open, a tied, trained input embedding of ``model`` back-propagates its distinct
    rows only (see the module); yields whether it does. The module is restored on exit."""
    embedding = tied_trainable_embedding(model) if enabled else None
    if embedding is None:
        yield False
        return

    def lookup(ids: torch.Tensor) -> torch.Tensor:
        return _DistinctRowsLookup.apply(ids, embedding.weight, embedding.padding_idx)

    embedding.forward = lookup  # the instance attribute shadows nn.Embedding.forward
    try:
        yield True
    finally:
        del embedding.forward

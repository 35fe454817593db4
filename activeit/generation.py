"""Batched greedy generation and length-sorted batching, shared by scoring and evaluation."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from activeit.models import LoadedModel


def token_budget_batches(
    lengths: Sequence[int], token_budget: int, max_batch_size: int = 256
) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first).

    Each batch holds at most ``max_batch_size`` items and at most ``token_budget`` tokens
    once padded to its longest item (a single over-long item still gets its own batch).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and ((len(current) + 1) * longest > token_budget or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def pad(
    sequences: Sequence[Sequence[int]], pad_id: int, left: bool, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to a rectangle; returns ``(input_ids, attention_mask)``."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if not seq:
            continue
        span = slice(width - len(seq), width) if left else slice(0, len(seq))
        ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def eos_ids(loaded: LoadedModel) -> set[int]:
    """Every token id that ends a generation for this model."""
    ids = {loaded.tokenizer.eos_token_id}
    configured = getattr(loaded.model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return {i for i in ids if i is not None}


def cut_at_eos(ids: Sequence[int], stop: set[int]) -> list[int]:
    """The ids before the first end-of-sequence token."""
    out: list[int] = []
    for token in ids:
        if token in stop:
            break
        out.append(token)
    return out


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def greedy_generate(
    loaded: LoadedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 128,
    token_budget: int = 16384,
    wrap: Callable[[list[list[int]]], Iterable[list[int]]] | None = None,
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (token ids), cut before the first EOS.

    Prompts are batched by length under ``token_budget`` (prompt plus new tokens per
    row), left-padded for causal models, and decoded with the KV cache. The result is in
    the order of ``prompts``. ``wrap`` may wrap the list of batches (e.g. in a progress bar).
    """
    model, tokenizer = loaded.model, loaded.tokenizer
    device = model_device(model)
    stop = eos_ids(loaded)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop)
    plan = token_budget_batches([len(p) + max_new_tokens for p in prompts], token_budget)
    results: list[list[int]] = [[] for _ in prompts]
    for batch in wrap(plan) if wrap else plan:
        ids, mask = pad([prompts[i] for i in batch], pad_id, left=not loaded.is_seq2seq, device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=pad_id,
            eos_token_id=sorted(stop),
        )
        new = out if loaded.is_seq2seq else out[:, ids.shape[1] :]
        for row, index in enumerate(batch):
            tokens = new[row].tolist()
            if loaded.is_seq2seq and tokens and tokens[0] == model.config.decoder_start_token_id:
                tokens = tokens[1:]
            results[index] = cut_at_eos(tokens, stop)
    return results

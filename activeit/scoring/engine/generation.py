"""Greedy decoding with transformers' ``generate``: the path of seq2seq and sliding-window models.

Causal full-attention models decode through the shared-prefix decoder
(:mod:`activeit.scoring.engine.decoding`), which runs a prompt prefix shared by several rows once;
``generate`` is also the reference that decoder is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from activeit.models.batching import (
    cut_at_eos,
    eos_ids,
    longest_first,
    pad,
    pad_id,
    plan_batches,
)
from activeit.models.devices import model_device
from activeit.models.loading import LoadedModel
from activeit.config.settings import TOKEN_BUDGET

#: Rows per ``generate`` call at most, whatever the token budget.
MAX_GENERATE_ROWS = 256


@torch.inference_mode()
def greedy_generate(
    loaded: LoadedModel,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 128,
    token_budget: int = TOKEN_BUDGET,
    wrap: Callable[[list[list[int]]], Iterable[list[int]]] | None = None,
) -> list[list[int]]:
    """Greedy continuations of ``prompts`` (token ids), cut before the first EOS.

    Prompts are batched by length under ``token_budget`` (prompt plus new tokens per
    row), left-padded for causal models, and decoded with the KV cache. The result is in
    the order of ``prompts``. ``wrap`` may wrap the list of batches (e.g. in a progress bar).
    """
    model = loaded.model
    device, stop, padding = model_device(model), eos_ids(loaded), pad_id(loaded)
    lengths = [len(p) + max_new_tokens for p in prompts]
    plan = plan_batches(longest_first(lengths), lengths, token_budget, max_rows=MAX_GENERATE_ROWS)
    results: list[list[int]] = [[] for _ in prompts]
    for batch in wrap(plan) if wrap else plan:
        ids, mask = pad([prompts[i] for i in batch], padding, left=not loaded.is_seq2seq, device=device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            pad_token_id=padding,
            eos_token_id=sorted(stop),
        )
        new = out if loaded.is_seq2seq else out[:, ids.shape[1] :]
        for row, index in enumerate(batch):
            tokens = new[row].tolist()
            if loaded.is_seq2seq and tokens and tokens[0] == model.config.decoder_start_token_id:
                tokens = tokens[1:]
            results[index] = cut_at_eos(tokens, stop)
    return results


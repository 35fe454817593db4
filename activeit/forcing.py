"""Teacher forcing: the mean per-token NLL of given targets under given prompts, batched.

One forward pass per batch and no ``generate``. Causal models share each prompt prefix
across the rows of a batch (:mod:`activeit.prefix_cache`) and compute vocabulary logits
only at the target positions; seq2seq models take the whole prompt as encoder input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from activeit.errors import ActiveITError
from activeit.generation import model_device, pad
from activeit.models import LoadedModel
from activeit.prefix_cache import (
    accepts_logits_to_keep,
    encode_prefixes,
    non_empty_suffix,
    pad_id_of,
    plan_batches,
    plan_prefixed_batches,
)


@dataclass(frozen=True)
class ForcedPair:
    """One teacher-forced pair: prompt ids (shared prefix + own suffix) and target ids."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    target: tuple[int, ...]


@dataclass
class ForcingStats:
    """Token counts of the teacher-forcing phase (for benchmarks and padding checks)."""

    prefix_tokens: int = 0
    suffix_tokens: int = 0
    padded_tokens: int = 0
    forward_passes: int = 0
    logit_positions: int = 0


def token_nll(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """NLL of each target under its row of ``logits`` (positions, vocab), in fp32.

    The log-normaliser is computed ``chunk`` positions at a time, so no second
    vocabulary-sized tensor as large as ``logits`` is allocated.
    """
    out = torch.empty(len(targets), dtype=torch.float32, device=logits.device)
    for start in range(0, len(targets), chunk):
        part = logits[start : start + chunk].float()
        picked = part.gather(-1, targets[start : start + chunk, None]).squeeze(-1)
        out[start : start + chunk] = torch.logsumexp(part, dim=-1) - picked
    return out


def mean_per_row(values: torch.Tensor, rows: torch.Tensor, count: int) -> list[float]:
    """The mean of ``values`` per row index in ``rows`` (float64 accumulation)."""
    total = torch.zeros(count, dtype=torch.float64, device=values.device)
    total.index_add_(0, rows, values.double())
    return (total / torch.bincount(rows, minlength=count).double()).tolist()


@torch.inference_mode()
def teacher_forced_nll(
    loaded: LoadedModel,
    pairs: Sequence[ForcedPair],
    token_budget: int = 16384,
    logit_budget: int = 2048,
    stats: ForcingStats | None = None,
) -> list[float]:
    """Mean per-token NLL of each pair's target under its prompt (all target tokens count).

    Causal models: pairs are grouped by prefix, sorted by length and batched; in each batch
    the distinct prefixes run once, their KV cache is expanded over the rows that share
    them, and the right-padded ``suffix + target[:-1]`` rows run on top with their true
    positions. A pair with an empty prefix is a plain full-prompt pass. Seq2seq models: the
    whole prompt is the encoder input and the target the decoder's.
    """
    if any(not p.target for p in pairs):
        raise ActiveITError("teacher forcing needs non-empty targets (the EOS token at least)")
    stats = stats if stats is not None else ForcingStats()
    if loaded.is_seq2seq:
        return _seq2seq_nll(loaded, pairs, token_budget, logit_budget, stats)
    return _causal_nll(loaded, pairs, token_budget, logit_budget, stats)


def _causal_nll(
    loaded: LoadedModel, pairs: Sequence[ForcedPair], token_budget: int, logit_budget: int, stats: ForcingStats
) -> list[float]:
    model, device, pad_id = loaded.model, model_device(loaded.model), pad_id_of(loaded)
    keep_logits = accepts_logits_to_keep(model)
    if any(not p.prefix and not p.suffix for p in pairs):
        raise ActiveITError("teacher forcing needs a non-empty prompt")
    pairs = [ForcedPair(*non_empty_suffix(p.prefix, p.suffix), p.target) for p in pairs]
    plan = plan_prefixed_batches(
        [p.prefix for p in pairs],
        [len(p.suffix) + len(p.target) - 1 for p in pairs],
        [len(p.target) for p in pairs],
        token_budget,
        logit_budget,
    )
    result = [0.0] * len(pairs)
    for batch in plan:
        prefix = encode_prefixes(loaded, [pairs[r].prefix for r in batch], device)
        if prefix.cache is not None:
            stats.prefix_tokens += prefix.real_tokens
            stats.padded_tokens += prefix.padded_tokens
            stats.forward_passes += 1
        rows = [(*pairs[r].suffix, *pairs[r].target[:-1]) for r in batch]
        ids, mask = pad(rows, pad_id, left=False, device=device)
        keep = torch.zeros_like(mask, dtype=torch.bool)
        for row, r in enumerate(batch):
            start = len(pairs[r].suffix) - 1
            keep[row, start : start + len(pairs[r].target)] = True
        kwargs: dict[str, Any] = {"logits_to_keep": keep} if keep_logits else {}
        logits = model(
            input_ids=ids,
            attention_mask=torch.cat([prefix.mask, mask], dim=1),
            position_ids=prefix.positions(mask),
            past_key_values=prefix.cache,
            use_cache=prefix.cache is not None,
            **kwargs,
        ).logits
        if not keep_logits:
            logits = logits[keep]
        targets = torch.tensor([t for r in batch for t in pairs[r].target], device=device)
        values = mean_per_row(token_nll(logits, targets), keep.nonzero()[:, 0], len(batch))
        for row, value in enumerate(values):
            result[batch[row]] = value
        stats.suffix_tokens += int(mask.sum())
        stats.padded_tokens += ids.numel()
        stats.forward_passes += 1
        stats.logit_positions += len(targets)
        del prefix, logits
    return result


def _seq2seq_nll(
    loaded: LoadedModel, pairs: Sequence[ForcedPair], token_budget: int, logit_budget: int, stats: ForcingStats
) -> list[float]:
    model, device, pad_id = loaded.model, model_device(loaded.model), pad_id_of(loaded)
    start_id = model.config.decoder_start_token_id
    prompts = [(*p.prefix, *p.suffix) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda r: (-len(prompts[r]), -len(pairs[r].target)))
    plan = plan_batches(
        [len(p) for p in prompts], [len(p.target) for p in pairs], [len(p.target) for p in pairs],
        order, token_budget, logit_budget,
    )
    result = [0.0] * len(pairs)
    for batch in plan:
        ids, mask = pad([prompts[r] for r in batch], pad_id, left=False, device=device)
        dec_ids, dec_mask = pad(
            [(start_id, *pairs[r].target[:-1]) for r in batch], pad_id, left=False, device=device
        )
        logits = model(
            input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask,
            use_cache=False,
        ).logits
        keep = dec_mask.bool()
        targets = torch.tensor([t for r in batch for t in pairs[r].target], device=device)
        values = mean_per_row(token_nll(logits[keep], targets), keep.nonzero()[:, 0], len(batch))
        for row, value in enumerate(values):
            result[batch[row]] = value
        stats.suffix_tokens += int(mask.sum()) + int(dec_mask.sum())
        stats.padded_tokens += ids.numel() + dec_ids.numel()
        stats.forward_passes += 1
        stats.logit_positions += len(targets)
    return result

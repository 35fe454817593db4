"""Teacher forcing: the mean per-token NLL of given targets under given prompts, batched.

One forward pass per batch and no ``generate``. Causal models share each prompt prefix
across the rows of a batch (:mod:`activeit.scoring.engine.prefix_cache`) and compute vocabulary logits
only at the target positions; seq2seq models take the whole prompt as encoder input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from activeit.models.batching import PassStats, longest_first, pad, pad_id, plan_batches
from activeit.models.devices import model_device
from activeit.errors import ActiveITError
from activeit.models.loading import LoadedModel
from activeit.scoring.engine.prefix_cache import (
    PrefixPool,
    PrefixState,
    encode_prefixes,
    forward_rows,
    non_empty_suffix,
)
from activeit.config.settings import LOGIT_BUDGET, TOKEN_BUDGET

#: Builds the KV caches of a batch's distinct prefixes (:class:`PrefixPool`, or one that reuses kept caches).
PoolFactory = Callable[[LoadedModel, Sequence[tuple[int, ...]], torch.device], PrefixPool]
#: Groups distinct prefixes (longest first) into pools, given each prefix's rows and the token budget.
PoolPlan = Callable[[Sequence[tuple[int, ...]], Mapping[tuple[int, ...], int], int], list[list[int]]]


def plan_pools(prefixes: Sequence[tuple[int, ...]], rows: Mapping[tuple[int, ...], int], token_budget: int
               ) -> list[list[int]]:
    """Pools of at most ``token_budget`` padded prefix tokens: each pool's prefixes run in one forward pass."""
    return plan_batches(range(len(prefixes)), [len(p) for p in prefixes], token_budget)


@dataclass(frozen=True)
class ForcedPair:
    """One teacher-forced pair: prompt ids (shared prefix + own suffix) and target ids."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    target: tuple[int, ...]


class ForcingStats(PassStats):
    """Token counts of the teacher-forcing phase."""


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
    token_budget: int = TOKEN_BUDGET,
    logit_budget: int = LOGIT_BUDGET,
    stats: ForcingStats | None = None,
    pools: PoolFactory = PrefixPool,
    plan: PoolPlan = plan_pools,
) -> list[float]:
    """Mean per-token NLL of each pair's target under its prompt (all target tokens count).

    Causal models: the distinct prefixes run once each, in pools of at most ``token_budget``
    tokens (:class:`activeit.scoring.engine.prefix_cache.PrefixPool`); the pool's rows are batched by the
    length of ``suffix + target[:-1]``, each batch gathering its rows' prefix caches, and run
    right-padded on top with their true positions. A pair with an empty prefix is a plain
    full-prompt pass. Seq2seq models: the whole prompt is the encoder input and the target
    the decoder's. ``pools`` builds each pool of prefixes and ``plan`` groups the prefixes into
    pools (adaptive scoring passes ones that keep a continuing task's prefix caches between stages
    and pool the kept ones by their rows: they run nothing).
    """
    if any(not p.target for p in pairs):
        raise ActiveITError("teacher forcing needs non-empty targets (the EOS token at least)")
    stats = stats if stats is not None else ForcingStats()
    if loaded.is_seq2seq:
        return _seq2seq_nll(loaded, pairs, token_budget, logit_budget, stats)
    return _causal_nll(loaded, pairs, token_budget, logit_budget, stats, pools, plan)


def _causal_nll(
    loaded: LoadedModel, pairs: Sequence[ForcedPair], token_budget: int, logit_budget: int, stats: ForcingStats,
    pools: PoolFactory = PrefixPool, plan: PoolPlan = plan_pools,
) -> list[float]:
    """Pools of distinct prefixes are computed once; their rows run in length-sorted batches."""
    if any(not p.prefix and not p.suffix for p in pairs):
        raise ActiveITError("teacher forcing needs a non-empty prompt")
    pairs = [ForcedPair(*non_empty_suffix(p.prefix, p.suffix), p.target) for p in pairs]
    device = model_device(loaded.model)
    result = [0.0] * len(pairs)
    by_prefix: dict[tuple[int, ...], list[int]] = {}
    for r, pair in enumerate(pairs):
        by_prefix.setdefault(pair.prefix, []).append(r)
    plain = by_prefix.pop((), [])
    # Pools of distinct prefixes, longest first (by default each at most token_budget padded tokens).
    distinct = sorted(by_prefix, key=lambda p: (-len(p), p))
    for group in plan(distinct, {prefix: len(by_prefix[prefix]) for prefix in distinct}, token_budget):
        prefixes = [distinct[number] for number in group]
        pool = pools(loaded, prefixes, device)
        stats.prefix_tokens += pool.real_tokens
        stats.padded_tokens += pool.padded_tokens
        stats.forward_passes += bool(pool.real_tokens)  # a pool of kept caches runs nothing
        slot = {prefix: number for number, prefix in enumerate(prefixes)}
        rows = [r for prefix in prefixes for r in by_prefix[prefix]]
        for batch in _row_batches(pairs, rows, token_budget, logit_budget):
            prefix = pool.state([slot[pairs[r].prefix] for r in batch])
            _force_batch(loaded, pairs, batch, prefix, result, stats)
        del pool
    for batch in _row_batches(pairs, plain, token_budget, logit_budget):
        _force_batch(loaded, pairs, batch, encode_prefixes(loaded, [()] * len(batch), device), result, stats)
    return result


def _row_batches(
    pairs: Sequence[ForcedPair], rows: Sequence[int], token_budget: int, logit_budget: int
) -> list[list[int]]:
    """``rows`` in batches of similar ``suffix + target`` length, longest first."""
    lengths = {r: len(pairs[r].suffix) + len(pairs[r].target) - 1 for r in rows}
    return plan_batches(
        longest_first(lengths, rows), lengths, token_budget,
        widths={r: len(pairs[r].prefix) for r in rows},
        logits={r: len(pairs[r].target) for r in rows}, logit_budget=logit_budget,
    )


def _force_batch(
    loaded: LoadedModel, pairs: Sequence[ForcedPair], batch: list[int], prefix: PrefixState,
    result: list[float], stats: ForcingStats,
) -> None:
    """One forward pass of the batch's ``suffix + target[:-1]`` rows on top of their prefix cache."""
    device = model_device(loaded.model)
    rows = [(*pairs[r].suffix, *pairs[r].target[:-1]) for r in batch]
    ids, mask = pad(rows, pad_id(loaded), left=False, device=device)
    # The target positions, built in two transfers (no kernel per row, no host sync).
    starts = torch.tensor([len(pairs[r].suffix) - 1 for r in batch], device=device)
    lengths = torch.tensor([len(pairs[r].target) for r in batch], device=device)
    column = torch.arange(ids.shape[1], device=device)
    keep = (column >= starts[:, None]) & (column < (starts + lengths)[:, None])
    logits, _, _ = forward_rows(loaded, prefix, ids, mask, keep, use_cache=prefix.cache is not None)
    targets = torch.tensor([t for r in batch for t in pairs[r].target], device=device)
    owners = torch.repeat_interleave(torch.arange(len(batch), device=device), lengths, output_size=len(targets))
    for row, value in enumerate(mean_per_row(token_nll(logits, targets), owners, len(batch))):
        result[batch[row]] = value
    stats.suffix_tokens += int(mask.sum())
    stats.padded_tokens += ids.numel()
    stats.forward_passes += 1
    stats.logit_positions += len(targets)


def _seq2seq_nll(
    loaded: LoadedModel, pairs: Sequence[ForcedPair], token_budget: int, logit_budget: int, stats: ForcingStats
) -> list[float]:
    model, device, padding = loaded.model, model_device(loaded.model), pad_id(loaded)
    start_id = model.config.decoder_start_token_id
    prompts = [(*p.prefix, *p.suffix) for p in pairs]
    order = sorted(range(len(pairs)), key=lambda r: (-len(prompts[r]), -len(pairs[r].target)))
    target_lengths = [len(p.target) for p in pairs]
    plan = plan_batches(
        order, target_lengths, token_budget,
        widths=[len(p) for p in prompts], logits=target_lengths, logit_budget=logit_budget,
    )
    result = [0.0] * len(pairs)
    for batch in plan:
        ids, mask = pad([prompts[r] for r in batch], padding, left=False, device=device)
        dec_ids, dec_mask = pad(
            [(start_id, *pairs[r].target[:-1]) for r in batch], padding, left=False, device=device
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

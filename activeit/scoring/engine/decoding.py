"""Greedy decoding over shared prompt prefixes, scoring the continuation as it is decoded.

For causal models. Each prompt is ``prefix + suffix``; a batch runs every distinct prefix
once and expands its KV cache over the rows that share it (:mod:`activeit.scoring.engine.prefix_cache`),
runs the right-padded suffixes in one pass, then decodes greedily with the KV cache.
A row leaves the batch as soon as it ends, so finished rows cost nothing.

While decoding, the log-probability of each chosen token is kept, and at the end that of a
given ``final_token`` (the EOS the score counts, docs/METHOD.md, "Prompt uncertainty") at the position after the
continuation. This is the teacher-forced NLL of ``continuation + [final_token]`` under the
prompt, without a second pass: greedy decoding computes those logits anyway
(:func:`greedy_decode_scored`, for scoring). :func:`greedy_decode` decodes without the
scores (evaluation); :func:`greedy_decode_forcing` also teacher-forces given targets (an
evaluation's reference answers) on the prompt's KV cache before decoding from it, so the
prompt runs once for both: the first target token is scored from the logits decoding starts
from, the rest in one pass of ``target[:-1]`` on a copy of the rows' caches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from activeit.models.batching import (
    Ids,
    PassStats,
    eos_ids,
    pad,
    pad_id,
    plan_batches,
    prefix_grouped_orders,
)
from activeit.models.devices import model_device
from activeit.scoring.engine.forcing import mean_per_row, token_nll
from activeit.scoring.engine.generation import greedy_generate
from activeit.models.loading import LoadedModel
from activeit.scoring.engine.prefix_cache import (
    PrefixState,
    cache_argument,
    encode_prefixes,
    forward_rows,
    non_empty_suffix,
    supports_prefix_reuse,
)
from activeit.config.settings import TOKEN_BUDGET


class _PreallocatedLayer(DynamicLayer):
    """A KV-cache layer preallocated with room for the tokens still to come: each step writes in place.

    transformers' dynamic layer concatenates the whole cache at every step; here a step
    copies only its own keys and values, and dropping finished rows copies the rest once.
    Keys are kept in the values' dtype: under bf16 autocast an fp32 model's keys come out
    fp32 (rotary embeddings) and its values bf16, and attention reads both in bf16, so fp32
    keys would cost half again the cache's memory and a cast at every step.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, room: int) -> None:
        super().__init__()
        rows, heads, length, dim = keys.shape
        self.key_buffer = values.new_empty((rows, heads, length + room, dim))
        self.value_buffer = values.new_empty((rows, heads, length + room, dim))
        self.key_buffer[:, :, :length] = keys
        self.value_buffer[:, :, :length] = values
        self.length, self.dtype, self.device, self.is_initialized = length, values.dtype, keys.device, True
        self._expose()

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        new = key_states.shape[-2]
        self.key_buffer[:, :, self.length : self.length + new] = key_states
        self.value_buffer[:, :, self.length : self.length + new] = value_states
        self.length += new
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
        self._expose()


def _with_room(cache: object, room: int) -> object:
    """``cache`` with its full-attention layers swapped for :class:`_PreallocatedLayer` (others kept)."""
    layers = cache.layers  # type: ignore[attr-defined]
    for number, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.keys is not None:
            layers[number] = _PreallocatedLayer(layer.keys, layer.values, room)
    return cache


@dataclass(frozen=True)
class ScoredContinuation:
    """A greedy continuation (cut before its stop token) and the mean NLL of it plus the final token."""

    tokens: tuple[int, ...]
    nll: float


@dataclass
class DecodingStats(PassStats):
    """Token counts of the decoding phase."""

    decoded_tokens: int = 0  # tokens fed back one at a time (the continuations)


def greedy_decode(
    loaded: LoadedModel,
    prompts: Sequence[tuple[Ids, Ids]],
    max_new_tokens: int = 128,
    token_budget: int = TOKEN_BUDGET,
    wrap: Callable[[list[list[int]]], Iterable[list[int]]] | None = None,
) -> list[list[int]]:
    """Greedy continuations of ``(prefix, suffix)`` prompts, in order, cut before their stop token.

    Through the shared-prefix decoder (each distinct prefix of a batch runs once) where
    prefix reuse is exact (:func:`activeit.scoring.engine.prefix_cache.supports_prefix_reuse`), else
    ``generate`` on ``prefix + suffix`` (:func:`activeit.scoring.engine.generation.greedy_generate`): the
    same tokens either way. ``wrap`` may wrap the list of batches (e.g. in a progress bar).
    """
    if not supports_prefix_reuse(loaded):
        return greedy_generate(loaded, [prefix + suffix for prefix, suffix in prompts], max_new_tokens, token_budget, wrap)
    decoded = _decode_batches(loaded, prompts, None, max_new_tokens, token_budget, DecodingStats(), wrap)
    return [list(continuation.tokens) for continuation in decoded]


def greedy_decode_forcing(
    loaded: LoadedModel,
    prompts: Sequence[tuple[Ids, Ids]],
    targets: Sequence[Sequence[Ids]],
    max_new_tokens: int = 128,
    token_budget: int = TOKEN_BUDGET,
    wrap: Callable[[list[list[int]]], Iterable[list[int]]] | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """:func:`greedy_decode`'s continuations, and for each prompt the mean per-token NLL of each
    of its ``targets`` (non-empty id tuples) under it, teacher-forced on the decoder's own prompt
    cache. Needs prefix reuse (:func:`supports_prefix_reuse`)."""
    if not supports_prefix_reuse(loaded):
        raise ValueError("greedy_decode_forcing needs a causal full-attention model (supports_prefix_reuse)")
    if any(not target for row in targets for target in row):
        raise ValueError("every forced target needs at least one token")
    forced: list[list[float]] = [[] for _ in prompts]
    decoded = _decode_batches(loaded, prompts, None, max_new_tokens, token_budget, DecodingStats(), wrap,
                              targets, forced)
    return [list(continuation.tokens) for continuation in decoded], forced


def greedy_decode_scored(
    loaded: LoadedModel,
    prompts: Sequence[tuple[Ids, Ids]],
    final_token: int,
    max_new_tokens: int = 128,
    token_budget: int = TOKEN_BUDGET,
    stats: DecodingStats | None = None,
) -> list[ScoredContinuation]:
    """Greedy continuations of ``(prefix, suffix)`` prompts, in order, each with its NLL.

    A continuation stops at any of the model's stop tokens or after ``max_new_tokens``;
    its NLL is the mean over its tokens and ``final_token`` of ``-log p`` under the prompt
    (for a stopped row, ``final_token`` is scored where the stop token was chosen).
    A batch holds at most ``token_budget`` tokens of prefix width plus suffix and new tokens
    per row.
    """
    stats = stats if stats is not None else DecodingStats()
    return _decode_batches(loaded, prompts, final_token, max_new_tokens, token_budget, stats)


@torch.inference_mode()
def _decode_batches(
    loaded: LoadedModel,
    prompts: Sequence[tuple[Ids, Ids]],
    final_token: int | None,
    max_new_tokens: int,
    token_budget: int,
    stats: DecodingStats,
    wrap: Callable[[list[list[int]]], Iterable[list[int]]] | None = None,
    targets: Sequence[Sequence[Ids]] | None = None,
    forced: list[list[float]] | None = None,
) -> list[ScoredContinuation]:
    """Plan the batches (rows sharing a prefix together) and decode each; scored unless ``final_token``
    is None; with ``targets``, each prompt's targets are forced first and their NLLs put in ``forced``."""
    model, device, padding = loaded.model, model_device(loaded.model), pad_id(loaded)
    stop = torch.tensor(sorted(eos_ids(loaded)), device=device)
    prompts = [non_empty_suffix(prefix, suffix) for prefix, suffix in prompts]
    prefixes = [prefix for prefix, _ in prompts]
    lengths = [len(suffix) + max_new_tokens + 1 for _, suffix in prompts]
    widths = [len(prefix) for prefix in prefixes]
    plan = [
        batch
        for order in prefix_grouped_orders(prefixes, lengths)
        for batch in plan_batches(order, lengths, token_budget, widths=widths)
    ]
    results: list[ScoredContinuation | None] = [None] * len(prompts)
    for batch in wrap(plan) if wrap else plan:
        prefix = encode_prefixes(loaded, [prompts[r][0] for r in batch], device)
        ids, mask = pad([prompts[r][1] for r in batch], padding, left=False, device=device)
        keep = torch.zeros_like(mask, dtype=torch.bool)
        keep[torch.arange(len(batch), device=device), mask.sum(1) - 1] = True
        logits, cache, attention = forward_rows(loaded, prefix, ids, mask, keep, use_cache=True)
        stats.prefix_tokens += prefix.real_tokens
        stats.suffix_tokens += int(mask.sum())
        stats.padded_tokens += prefix.padded_tokens + ids.numel()
        stats.forward_passes += 1 + (prefix.cache is not None)
        if targets is not None and forced is not None:
            rows_nll = _force_on_prompts(loaded, logits, cache, attention, prefix.offset + mask.sum(1),
                                         [targets[r] for r in batch], stats)
            for row, values in zip(batch, rows_nll):
                forced[row] = values
        decoded = _decode(
            model, logits, _with_room(cache, max_new_tokens), attention, prefix.offset + mask.sum(1),
            stop, final_token, max_new_tokens, stats,
        )
        for row, continuation in zip(batch, decoded):
            results[row] = continuation
        del prefix, cache, logits
    return results  # type: ignore[return-value]


def _force_on_prompts(
    loaded: LoadedModel,
    logits: torch.Tensor,
    cache: object,
    attention: torch.Tensor,
    position: torch.Tensor,
    targets: Sequence[Sequence[Ids]],
    stats: DecodingStats,
) -> list[list[float]]:
    """Mean NLL of each row's ``targets`` after its prompt: the first token from ``logits`` (the
    rows' last prompt position), the others from one pass of the targets' ``[:-1]`` on top of a
    copy of the rows' caches (at most as many rows at a time as the batch has, so the copies
    never outgrow the batch's own cache). ``cache`` is left as it was."""
    device = logits.device
    owner = [row for row, row_targets in enumerate(targets) for _ in row_targets]
    flat = [target for row_targets in targets for target in row_targets]
    result: list[list[float]] = [[] for _ in targets]
    if not flat:
        return result
    # every target token's NLL and its target's number: the first tokens, then each chunk's rest
    values = [token_nll(logits[torch.tensor(owner, device=device)],
                        torch.tensor([target[0] for target in flat], device=device))]
    numbers = [torch.arange(len(flat), device=device)]
    longer = [number for number, target in enumerate(flat) if len(target) > 1]
    layers = [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[attr-defined]
    for start in range(0, len(longer), len(targets)):
        chunk = longer[start : start + len(targets)]
        index = torch.tensor([owner[number] for number in chunk], device=device)
        prompt = PrefixState(DynamicCache(ddp_cache_data=[(k[index], v[index]) for k, v in layers]),
                             attention[index], position[index])
        ids, mask = pad([flat[number][:-1] for number in chunk], pad_id(loaded), left=False, device=device)
        chunk_logits, _, _ = forward_rows(loaded, prompt, ids, mask, mask.bool(), use_cache=True)
        rest = torch.tensor([token for number in chunk for token in flat[number][1:]], device=device)
        values.append(token_nll(chunk_logits, rest))
        numbers.append(torch.repeat_interleave(torch.tensor(chunk, device=device), mask.sum(1), output_size=len(rest)))
        stats.suffix_tokens += int(mask.sum())
        stats.padded_tokens += ids.numel()
        stats.forward_passes += 1
    stats.logit_positions += sum(len(target) for target in flat)
    for row, value in zip(owner, mean_per_row(torch.cat(values), torch.cat(numbers), len(flat))):
        result[row].append(value)
    return result


def _decode(
    model: torch.nn.Module,
    logits: torch.Tensor,
    cache: object,
    mask: torch.Tensor,
    position: torch.Tensor,
    stop: torch.Tensor,
    final_token: int | None,
    max_new_tokens: int,
    stats: DecodingStats,
) -> list[ScoredContinuation]:
    """The greedy loop of one batch, from the logits after each row's prompt.

    ``mask`` covers the cache slots, ``position`` is each row's next position. Finished
    rows are dropped from the cache, the mask and the batch. Without ``final_token`` no
    log-probability is computed (the NLLs are NaN).
    """
    rows = logits.shape[0]
    device = logits.device
    # The chosen tokens stay on the device until the end (-1: none); the one host sync per
    # step is the count of rows that stopped (rows leave the batch only at steps where some did).
    generated = torch.full((rows, max_new_tokens), -1, dtype=torch.long, device=device)
    nll_sum = torch.zeros(rows, dtype=torch.float64, device=device)
    if final_token is None:
        nll_sum.fill_(math.nan)
    active = torch.arange(rows, device=device)
    for step in range(max_new_tokens + 1):
        chosen = logits.argmax(-1)
        done = torch.isin(chosen, stop) if step < max_new_tokens else torch.ones_like(chosen, dtype=torch.bool)
        if final_token is not None:
            scored = torch.where(done, torch.full_like(chosen, final_token), chosen)
            nll_sum[active] += token_nll(logits, scored).double()
            stats.logit_positions += len(chosen)
        stopped = int(done.sum())
        if stopped == len(chosen):
            break
        if stopped:
            going = (~done).nonzero()[:, 0]
            cache.batch_select_indices(going)  # type: ignore[attr-defined]
            mask, position, chosen, active = mask[going], position[going], chosen[going], active[going]
        generated[active, step] = chosen
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
        logits = model(
            input_ids=chosen[:, None],
            attention_mask=mask,
            position_ids=position[:, None],
            use_cache=True,
            **cache_argument(model, cache),
        ).logits[:, -1]
        position = position + 1
        stats.decoded_tokens += len(active)
        stats.padded_tokens += len(active)
        stats.forward_passes += 1
    return [
        ScoredContinuation(tuple(row[:length]), float(total) / (length + 1))
        for row, length, total in zip(generated.tolist(), (generated >= 0).sum(1).tolist(), nll_sum.tolist())
    ]

"""Rows that share prompt prefixes: batch planning and a prefix KV cache computed once per batch.

A causal model reads many rows ``prefix + suffix + ...`` in which the prefix (chat head,
definition, demonstrations) is shared by all instances of a task under one prompt. A batch
runs each *distinct* prefix once (right-padded), expands its KV cache over the rows that
share it, and the rows' own tokens then run on top with their true positions; padding
slots are masked out. Used by teacher forcing (:mod:`activeit.forcing`) and by greedy
decoding (:mod:`activeit.prefix_decoding`).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from activeit.generation import pad
from activeit.models import LoadedModel

Ids = tuple[int, ...]
Sizes = Sequence[int] | Mapping[int, int]


def supports_prefix_reuse(loaded: LoadedModel) -> bool:
    """Whether prefix KV reuse is exact for this model: causal, and only full-attention layers.

    Sliding-window layers measure distances in cache slots, which the padded prefix cache
    shifts; such models take the plain path.
    """
    config = loaded.model.config
    layer_types = getattr(config, "layer_types", None) or ()
    return (
        not loaded.is_seq2seq
        and not getattr(config, "sliding_window", None)
        and all(kind == "full_attention" for kind in layer_types)
    )


def accepts_logits_to_keep(model: Any) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def pad_id_of(loaded: LoadedModel) -> int:
    tokenizer = loaded.tokenizer
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def non_empty_suffix(prefix: Ids, suffix: Ids) -> tuple[Ids, Ids]:
    """Move the prefix's last token into an empty suffix: the first logits come from the suffix."""
    return (prefix, suffix) if suffix else (prefix[:-1], prefix[-1:])


def plan_batches(
    widths: Sizes, lengths: Sizes, logits: Sizes, order: Iterable[int], token_budget: int, logit_budget: int,
) -> list[list[int]]:
    """Cut ``order`` into consecutive batches.

    ``widths``, ``lengths`` and ``logits`` are indexed by the items of ``order``. A batch
    costs ``rows * (max width + max length)`` padded tokens (at most
    ``token_budget``) and ``sum(logits)`` logit positions (at most ``logit_budget``); a
    single item over either budget still gets its own batch.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    width = length = positions = 0
    for index in order:
        new_width, new_length = max(width, widths[index]), max(length, lengths[index])
        if current and (
            (len(current) + 1) * (new_width + new_length) > token_budget
            or positions + logits[index] > logit_budget
        ):
            batches.append(current)
            current, new_width, new_length, positions = [], widths[index], lengths[index], 0
        current.append(index)
        width, length, positions = new_width, new_length, positions + logits[index]
    if current:
        batches.append(current)
    return batches


def plan_prefixed_batches(
    prefixes: Sequence[Ids], lengths: Sequence[int], logits: Sequence[int], token_budget: int, logit_budget: int
) -> list[list[int]]:
    """Batches of row indices: rows sharing a prefix stay together, longest rows first.

    The k + 1 prompts of one task hold the same instance rows, so their groups meet in a
    batch with little padding. Rows without a prefix never share a batch with rows that
    have one (no empty cache rows).
    """
    longest: dict[Ids, int] = {}
    for prefix, length in zip(prefixes, lengths):
        longest[prefix] = max(longest.get(prefix, 0), length)
    order = sorted(
        range(len(prefixes)),
        key=lambda r: (-longest[prefixes[r]], -len(prefixes[r]), prefixes[r], -lengths[r]),
    )
    widths = [len(p) for p in prefixes]
    return [
        batch
        for part in ([r for r in order if prefixes[r]], [r for r in order if not prefixes[r]])
        for batch in plan_batches(widths, lengths, logits, part, token_budget, logit_budget)
    ]


@dataclass
class PrefixState:
    """The expanded prefix cache of a batch: ``cache`` (None without prefixes), the prefix
    slots' attention ``mask`` (rows, width) and each row's first suffix position ``offset``."""

    cache: Any
    mask: torch.Tensor
    offset: torch.Tensor
    real_tokens: int = 0
    padded_tokens: int = 0

    def positions(self, suffix_mask: torch.Tensor) -> torch.Tensor:
        """Position ids of right-padded suffix rows (pads repeat the last position)."""
        return self.offset[:, None] + (suffix_mask.cumsum(1) - 1).clamp(min=0)


def pool_groups(prefixes: Sequence[Ids], token_budget: int) -> list[list[Ids]]:
    """Distinct ``prefixes``, longest first, cut into pools of at most ``token_budget`` padded tokens."""
    distinct = sorted(set(prefixes), key=lambda p: (-len(p), p))
    widths = [len(p) for p in distinct]
    plan = plan_batches(widths, [0] * len(distinct), [0] * len(distinct), range(len(distinct)), token_budget, 1)
    return [[distinct[i] for i in group] for group in plan]


def encode_prefixes(loaded: LoadedModel, prefixes: Sequence[Ids], device: torch.device) -> PrefixState:
    """Run each distinct prefix of ``prefixes`` (one per row) once; expand the cache over the rows."""
    rows = len(prefixes)
    if not prefixes[0]:
        empty = torch.zeros((rows, 0), dtype=torch.long, device=device)
        return PrefixState(None, empty, torch.zeros(rows, dtype=torch.long, device=device))
    distinct: dict[Ids, int] = {}
    group = [distinct.setdefault(prefix, len(distinct)) for prefix in prefixes]
    ids, mask = pad(list(distinct), pad_id_of(loaded), left=False, device=device)
    head = {"logits_to_keep": 1} if accepts_logits_to_keep(loaded.model) else {}  # the prefix needs no logits
    cache = loaded.model(input_ids=ids, attention_mask=mask, use_cache=True, **head).past_key_values
    index = torch.tensor(group, device=device)
    cache.batch_select_indices(index)
    return PrefixState(cache, mask[index], mask.sum(1)[index], int(mask.sum()), ids.numel())


class PrefixPool:
    """The KV caches of many distinct prefixes, each computed once, gathered per batch of rows.

    Rows then batch by their own length whatever their prefix, so the batch pads little; a
    batch's cache is the rows' prefix caches stacked and right-padded to its widest prefix.
    """

    def __init__(self, loaded: LoadedModel, prefixes: Sequence[Ids], device: torch.device, token_budget: int) -> None:
        self.loaded, self.device = loaded, device
        self.lengths = torch.tensor([len(p) for p in prefixes], device=device)
        width = max(len(p) for p in prefixes)
        self.real_tokens, self.padded_tokens, self.forward_passes = sum(len(p) for p in prefixes), 0, 0
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        order = sorted(range(len(prefixes)), key=lambda r: -len(prefixes[r]))
        widths = [len(p) for p in prefixes]
        for batch in plan_batches(widths, [0] * len(prefixes), [0] * len(prefixes), order, token_budget, 1):
            ids, mask = pad([prefixes[r] for r in batch], pad_id_of(loaded), left=False, device=device)
            head = {"logits_to_keep": 1} if accepts_logits_to_keep(loaded.model) else {}
            cache = loaded.model(input_ids=ids, attention_mask=mask, use_cache=True, **head).past_key_values
            index = torch.tensor(batch, device=device)
            for number, layer in enumerate(cache.layers):
                if number == len(self.keys):
                    shape = (len(prefixes), *layer.keys.shape[1:2], width, layer.keys.shape[-1])
                    self.keys.append(layer.keys.new_zeros(shape))
                    self.values.append(layer.values.new_zeros(shape))
                self.keys[number][index, :, : ids.shape[1]] = layer.keys
                self.values[number][index, :, : ids.shape[1]] = layer.values
            self.padded_tokens += ids.numel()
            self.forward_passes += 1
            del cache

    def state(self, rows: Sequence[int]) -> PrefixState:
        """The expanded prefix cache for rows that use the pool's prefixes ``rows``."""
        from transformers import DynamicCache

        index = torch.tensor(list(rows), device=self.device)
        lengths = self.lengths[index]
        width = int(lengths.max())
        # A generator: each layer's gathered copy is freed once the cache has taken it.
        cache = DynamicCache(
            ddp_cache_data=((k[index, :, :width], v[index, :, :width]) for k, v in zip(self.keys, self.values))
        )
        mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).long()
        return PrefixState(cache, mask, lengths)

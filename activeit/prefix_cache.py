"""Rows that share prompt prefixes: batch planning and prefix KV caches computed once.

A causal model reads many rows ``prefix + suffix + ...`` in which the prefix (chat head,
definition, demonstrations) is shared by all instances of a task under one prompt. A batch
runs each *distinct* prefix once (right-padded), expands its KV cache over the rows that
share it, and the rows' own tokens then run on top with their true positions; padding
slots are masked out. Used by teacher forcing (:mod:`activeit.forcing`) and by greedy
decoding (:mod:`activeit.prefix_decoding`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

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
    return _forward_takes_logits_to_keep(type(model))


@functools.cache
def _forward_takes_logits_to_keep(model_type: type) -> bool:
    return "logits_to_keep" in inspect.signature(model_type.forward).parameters


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
    """Batches of row indices: rows sharing a prefix stay together, longest rows first,
    so each batch runs few distinct prefixes. Rows without a prefix never share a batch with
    rows that have one (no empty cache rows).
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
    pool = PrefixPool(loaded, list(distinct), device)
    state = pool.state(group)
    state.real_tokens, state.padded_tokens = pool.real_tokens, pool.padded_tokens
    return state


class PrefixPool:
    """The KV caches of distinct prefixes, computed in one pass, gathered per batch of rows.

    Rows then batch by their own length whatever their prefix, so the batch pads little; a
    batch's cache is the rows' prefix caches stacked and right-padded to its widest prefix.
    The caller bounds the pool (:func:`pool_groups`).
    """

    def __init__(self, loaded: LoadedModel, prefixes: Sequence[Ids], device: torch.device) -> None:
        self.device = device
        ids, mask = pad(prefixes, pad_id_of(loaded), left=False, device=device)
        head = {"logits_to_keep": 1} if accepts_logits_to_keep(loaded.model) else {}  # the prefix needs no logits
        cache = loaded.model(input_ids=ids, attention_mask=mask, use_cache=True, **head).past_key_values
        self.layers = [(layer.keys, layer.values) for layer in cache.layers]
        self.lengths = mask.sum(1)
        self.real_tokens, self.padded_tokens = int(mask.sum()), ids.numel()

    def state(self, rows: Sequence[int]) -> PrefixState:
        """The expanded prefix cache for rows that use the pool's prefixes number ``rows``."""
        index = torch.tensor(list(rows), device=self.device)
        lengths = self.lengths[index]
        width = int(lengths.max())
        # A generator: each layer's gathered copy is freed once the cache has taken it.
        cache = DynamicCache(ddp_cache_data=((k[index, :, :width], v[index, :, :width]) for k, v in self.layers))
        mask = (torch.arange(width, device=self.device)[None, :] < lengths[:, None]).long()
        return PrefixState(cache, mask, lengths)


def forward_rows(
    loaded: LoadedModel, prefix: PrefixState, ids: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor,
    use_cache: bool,
) -> tuple[torch.Tensor, Any, torch.Tensor]:
    """Right-padded rows ``ids``/``mask`` on top of their prefix cache, with their true positions.

    Returns the logits at the ``keep`` positions (flattened, row by row), the cache after
    the rows (with ``use_cache``), and the attention mask over prefix and rows.
    """
    attention = torch.cat([prefix.mask, mask], dim=1)
    kwargs = {"logits_to_keep": keep} if accepts_logits_to_keep(loaded.model) else {}
    out = loaded.model(
        input_ids=ids,
        attention_mask=attention,
        position_ids=prefix.positions(mask),
        past_key_values=prefix.cache,
        use_cache=use_cache,
        **kwargs,
    )
    return (out.logits if kwargs else out.logits[keep]), out.past_key_values, attention

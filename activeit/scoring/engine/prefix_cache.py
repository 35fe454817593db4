"""Rows that share prompt prefixes: prefix KV caches computed once and reused by the rows.

A causal model reads many rows ``prefix + suffix + ...`` in which the prefix (chat head,
definition, demonstrations) is shared by all instances of a task under one prompt. A batch
runs each *distinct* prefix once (right-padded), expands its KV cache over the rows that
share it, and the rows' own tokens then run on top with their true positions; padding
slots are masked out. Used by teacher forcing (:mod:`activeit.scoring.engine.forcing`) and by greedy
decoding (:mod:`activeit.scoring.engine.decoding`).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from activeit.models.batching import Ids, pad, pad_id
from activeit.models.loading import LoadedModel


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


def cache_argument(model: Any, cache: Any) -> dict[str, Any]:
    """The KV cache as the model's forward takes it: ``cache`` (recent transformers 5,
    where ``past_key_values`` is deprecated with a warning per call) or ``past_key_values``."""
    return {_forward_cache_name(type(model)): cache}


@functools.cache
def _forward_cache_name(model_type: type) -> str:
    return "cache" if "cache" in inspect.signature(model_type.forward).parameters else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The KV cache a forward pass returned, under either of its names."""
    return out["cache"] if "cache" in out else out.past_key_values


def non_empty_suffix(prefix: Ids, suffix: Ids) -> tuple[Ids, Ids]:
    """Move the prefix's last token into an empty suffix: the first logits come from the suffix."""
    return (prefix, suffix) if suffix else (prefix[:-1], prefix[-1:])


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
    The caller bounds the pool (its padded tokens, :func:`activeit.models.batching.plan_batches`).
    """

    def __init__(self, loaded: LoadedModel, prefixes: Sequence[Ids], device: torch.device) -> None:
        self.device = device
        ids, mask = pad(prefixes, pad_id(loaded), left=False, device=device)
        head = {"logits_to_keep": 1} if accepts_logits_to_keep(loaded.model) else {}  # the prefix needs no logits
        cache = returned_cache(loaded.model(input_ids=ids, attention_mask=mask, use_cache=True, **head))
        # keys in the values' dtype (one dtype under bf16 autocast, see decoding._PreallocatedLayer)
        self.layers = [(layer.keys.to(layer.values.dtype), layer.values) for layer in cache.layers]
        self.lengths = mask.sum(1)
        self.real_tokens, self.padded_tokens = int(mask.sum()), ids.numel()

    def state(self, rows: Sequence[int]) -> PrefixState:
        """The expanded prefix cache for rows that use the pool's prefixes number ``rows``."""
        index = torch.tensor(list(rows), device=self.device)
        lengths = self.lengths[index]
        width = int(lengths.max())
        return prefix_state(((k[index, :, :width], v[index, :, :width]) for k, v in self.layers), lengths)


def prefix_state(layers: Iterable[tuple[torch.Tensor, torch.Tensor]], lengths: torch.Tensor) -> PrefixState:
    """The prefix state of rows whose per-layer (keys, values) are ``layers``, right-padded to the
    longest of ``lengths`` (a generator: each layer's gathered copy is freed once the cache has taken it)."""
    width = int(lengths.max())
    mask = (torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]).long()
    return PrefixState(DynamicCache(ddp_cache_data=layers), mask, lengths)


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
        use_cache=use_cache,
        **cache_argument(loaded.model, prefix.cache),
        **kwargs,
    )
    return (out.logits if kwargs else out.logits[keep]), returned_cache(out), attention

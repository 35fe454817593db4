"""Batching shared by scoring, evaluation and training: one planner, padding, pad/EOS ids.

Every batched pass of the project is planned by :func:`plan_batches`: items (rows) taken
in a given order and cut into consecutive batches under a padded-token budget, an optional
budget of logit positions and an optional row count. The orders come from thin helpers:
:func:`longest_first` (scoring, evaluation), :func:`prefix_grouped_orders` (rows sharing a
prompt prefix) and :func:`length_grouped_batches` (training's seeded, shuffled batches).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from activeit.models.loading import LoadedModel

Ids = tuple[int, ...]
#: Per-item sizes, indexed by the items of an order (a list over all items, or a dict).
Sizes = Sequence[int] | Mapping[int, int]
#: Training's length grouping sorts examples within mega-batches of this many batches.
MEGA_BATCH_FACTOR = 50


@dataclass
class PassStats:
    """Token counts of batched forward passes (for benchmarks and padding checks)."""

    prefix_tokens: int = 0  # shared prompt prefixes, each run once per pool or batch
    suffix_tokens: int = 0  # the rows' own tokens in their first pass
    padded_tokens: int = 0  # every slot of the padded batches
    forward_passes: int = 0
    logit_positions: int = 0  # positions whose vocabulary logits were computed


def plan_batches(
    order: Iterable[int],
    lengths: Sizes,
    token_budget: float = math.inf,
    *,
    widths: Sizes | None = None,
    logits: Sizes | None = None,
    logit_budget: float = math.inf,
    max_rows: int | None = None,
) -> list[list[int]]:
    """Cut ``order`` into consecutive batches.

    A batch costs ``rows * (max width + max length)`` padded tokens (at most
    ``token_budget``; ``widths`` is a second padded dimension, such as the prefix cache a
    row sits on, 0 when not given), ``sum(logits)`` logit positions (at most
    ``logit_budget``) and at most ``max_rows`` rows. A single item over a budget still gets
    its own batch.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    width = length = positions = 0
    for item in order:
        item_width = widths[item] if widths is not None else 0
        item_logits = logits[item] if logits is not None else 0
        new_width, new_length = max(width, item_width), max(length, lengths[item])
        if current and (
            (len(current) + 1) * (new_width + new_length) > token_budget
            or positions + item_logits > logit_budget
            or (max_rows is not None and len(current) >= max_rows)
        ):
            batches.append(current)
            current, new_width, new_length, positions = [], item_width, lengths[item], 0
        current.append(item)
        width, length, positions = new_width, new_length, positions + item_logits
    if current:
        batches.append(current)
    return batches


def longest_first(lengths: Sizes, items: Iterable[int] | None = None) -> list[int]:
    """``items`` (default: every index of ``lengths``) by decreasing length; ties keep their order."""
    return sorted(range(len(lengths)) if items is None else items, key=lambda item: -lengths[item])


def prefix_grouped_orders(prefixes: Sequence[Ids], lengths: Sequence[int]) -> list[list[int]]:
    """Orders of row indices to plan apart, so that each batch runs few distinct prefixes.

    Rows sharing a prefix stay together, the groups with the longest rows first. Rows
    without a prefix form a second order: they never share a batch with rows that have
    one (no empty cache rows).
    """
    longest: dict[Ids, int] = {}
    for prefix, length in zip(prefixes, lengths):
        longest[prefix] = max(longest.get(prefix, 0), length)
    order = sorted(
        range(len(prefixes)),
        key=lambda r: (-longest[prefixes[r]], -len(prefixes[r]), prefixes[r], -lengths[r]),
    )
    parts = [[r for r in order if prefixes[r]], [r for r in order if not prefixes[r]]]
    return [part for part in parts if part]


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random, mega_batch_factor: int = MEGA_BATCH_FACTOR,
) -> list[list[int]]:
    """Indices in batches of ``batch_size`` similar lengths, in a seeded random order (training).

    Shuffle, cut into mega-batches of ``mega_batch_factor * batch_size``, sort each by
    length (longest first), cut into batches, shuffle the batches. Only the very last
    batch can be short, so the number of batches is ``ceil(len(lengths) / batch_size)``.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = mega_batch_factor * batch_size
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        batches += plan_batches(longest_first(lengths, order[start : start + mega]), lengths, max_rows=batch_size)
    rng.shuffle(batches)
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


def pad_id(loaded: LoadedModel) -> int:
    """The id that pads this model's batches: the tokenizer's pad token, else its EOS."""
    tokenizer = loaded.tokenizer
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


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

"""Prefix KV caches kept between teacher-forcing calls: a task's perturbed prompts run their prefix once.

Adaptive scoring (:mod:`activeit.scoring.adaptive`) forces a continuing task's pairs over several
stages; without kept caches each stage would run the task's prompt prefixes again (a pair order
touches nearly every prompt in every stage). :class:`KeptPrefixes` keeps the caches of the
prefixes its caller marks ``wanted`` (within a byte budget), hands them to
:func:`~activeit.scoring.engine.forcing.teacher_forced_nll` as pools that run nothing
(:class:`KeptPool`), and releases an owner's caches when its task is done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from activeit.models.batching import Ids
from activeit.models.devices import model_device
from activeit.models.loading import LoadedModel
from activeit.scoring.engine.forcing import (
    ForcedPair,
    ForcingStats,
    plan_pools,
    teacher_forced_nll,
)
from activeit.scoring.engine.prefix_cache import PrefixPool, PrefixState, prefix_state


def _bytes(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Bytes held by one prefix's per-layer key and value caches."""
    return sum(t.numel() * t.element_size() for pair in layers for t in pair)


class KeptPrefixes:
    """Prefix KV caches of continuing tasks, kept from one stage to the next within ``budget`` bytes.

    A prefix forced in a stage is kept when its task goes on (``wanted``: prefix -> owner, the
    task's index) and the budget has room, first come first kept (no eviction: what is kept is
    used); :meth:`release` frees an owner's caches when its task is done. Kept caches are the
    same numbers the prefix gave when it ran (fp32 rounding aside: it ran beside other prefixes).

    A stage forces few rows per prompt (a share of the n instances), so pools sized by prefix
    tokens, as exact scoring's, would hold few rows and batch them with more padding in more
    passes. Kept prefixes run nothing, so :meth:`plan` pools them by rows instead: up to what an
    exact pool of as wide prefixes holds (``token_budget`` prefix tokens, ``rows_per_prefix``
    rows each), gathered per batch straight from the kept caches (:class:`KeptPool`).
    """

    def __init__(self, budget: int, rows_per_prefix: int) -> None:
        self.budget, self.used, self.peak, self.reused_tokens = budget, 0, 0, 0
        self.rows_per_prefix = rows_per_prefix
        self.kept: dict[Ids, tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]] = {}  # prefix -> (owner, layers)
        self.owned: dict[int, list[Ids]] = {}
        self.wanted: dict[Ids, int] = {}  # prefixes forced now whose task goes on -> its owner

    def force(self, loaded: LoadedModel, pairs: Sequence[ForcedPair], token_budget: int, logit_budget: int,
              stats: ForcingStats) -> list[float]:
        """:func:`teacher_forced_nll` of ``pairs`` with the kept caches: the wanted prefixes not kept
        yet run first (and are kept), then each pool of prefixes runs, or gathers kept caches."""
        self.run_wanted(loaded, [pair.prefix for pair in pairs], token_budget, stats)
        return teacher_forced_nll(loaded, pairs, token_budget, logit_budget, stats, pools=self.pool, plan=self.plan)

    def plan(self, prefixes: Sequence[Ids], rows: Mapping[Ids, int], token_budget: int) -> list[list[int]]:
        """Pools of ``prefixes`` (longest first): the ones to run as exact scoring pools them, the
        kept ones by rows (``rows x widest <= token_budget x rows_per_prefix``)."""
        missing = [number for number, prefix in enumerate(prefixes) if prefix not in self.kept]
        pools = [[missing[m] for m in pool] for pool in plan_pools([prefixes[m] for m in missing], rows, token_budget)]
        current: list[int] = []
        count = 0
        for number, prefix in enumerate(prefixes):
            if prefix not in self.kept:
                continue
            if current and (count + rows[prefix]) * len(prefixes[current[0]]) > token_budget * self.rows_per_prefix:
                pools.append(current)
                current, count = [], 0
            current.append(number)
            count += rows[prefix]
        return pools + [current] * bool(current)

    def pool(self, loaded: LoadedModel, prefixes: Sequence[Ids], device: torch.device) -> PrefixPool:
        """The kept caches of ``prefixes`` (all kept), or a pool that runs them (none kept) and keeps the wanted."""
        if all(prefix in self.kept for prefix in prefixes):
            self.reused_tokens += sum(map(len, prefixes))
            return KeptPool(self, prefixes, device)
        pool = PrefixPool(loaded, prefixes, device)
        for number, prefix in enumerate(prefixes):
            if prefix in self.wanted:
                self.keep(prefix, [(k[number, :, : len(prefix)].clone(), v[number, :, : len(prefix)].clone())
                                   for k, v in pool.layers])
        return pool

    @torch.inference_mode()
    def run_wanted(self, loaded: LoadedModel, prefixes: Sequence[Ids], token_budget: int, stats: ForcingStats) -> None:
        """Run the wanted ``prefixes`` not kept yet, pooled as exact scoring pools them, and keep them
        (while the budget has room), so that their rows too are pooled by rows (:meth:`plan`)."""
        fresh = sorted({p for p in prefixes if p in self.wanted and p not in self.kept}, key=lambda p: (-len(p), p))
        device = model_device(loaded.model)
        for group in plan_pools(fresh, {}, token_budget):
            pool = self.pool(loaded, [fresh[number] for number in group], device)
            stats.prefix_tokens += pool.real_tokens
            stats.padded_tokens += pool.padded_tokens
            stats.forward_passes += 1

    def keep(self, prefix: Ids, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        size = _bytes(layers)
        owner = self.wanted.get(prefix)
        if owner is None or prefix in self.kept or self.used + size > self.budget:
            return
        self.kept[prefix] = (owner, layers)
        self.owned.setdefault(owner, []).append(prefix)
        self.used += size
        self.peak = max(self.peak, self.used)

    def release(self, owner: int) -> None:
        """Free the caches kept for ``owner`` (its task is done)."""
        for prefix in self.owned.pop(owner, ()):
            self.used -= _bytes(self.kept.pop(prefix)[1])


class KeptPool(PrefixPool):
    """Kept prefix caches as a pool: nothing runs; each batch gathers its rows' caches, right-padded."""

    def __init__(self, kept: KeptPrefixes, prefixes: Sequence[Ids], device: torch.device) -> None:
        self.caches = [kept.kept[prefix][1] for prefix in prefixes]
        self.lengths = torch.tensor([len(p) for p in prefixes], device=device)
        self.device, self.real_tokens, self.padded_tokens = device, 0, 0

    def state(self, rows: Sequence[int]) -> PrefixState:
        def padded(layer: int, side: int) -> torch.Tensor:  # (rows, heads, width, dim) from (heads, length, dim) each
            return pad_sequence([self.caches[r][layer][side].transpose(0, 1) for r in rows],
                                batch_first=True).transpose(1, 2)

        layers = ((padded(layer, 0), padded(layer, 1)) for layer in range(len(self.caches[0])))
        return prefix_state(layers, self.lengths[torch.tensor(list(rows), device=self.device)])

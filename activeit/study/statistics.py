"""Statistics of a study: strategies x seeds of active-tuning runs (no torch, no MLflow).

A study answers the project's question, *does choosing tasks by prompt uncertainty beat
choosing them at random?*, the way the paper does (means over pool seeds) and with what the
paper leaves out: the spread over seeds, the difference to ``random`` paired by seed with a
95% confidence interval and the seeds won, the **budget to match** (the fewest training
tasks at which a strategy's mean reaches random's mean at random's largest budget), how
much the strategies' training sets overlap (Jaccard), and the task-map make-up of the picks.

Its input is plain records (:class:`RunRecord`, one per (strategy, seed) run), read from
wherever the runs were tracked; everything here is a pure function of them. The markdown
report is :mod:`activeit.study.report`'s, the figures :mod:`activeit.study.plots`'.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from activeit.errors import ActiveITError
from activeit.evaluation import HEADLINE_METRICS
from activeit.selection.taskmap import CATEGORIES

#: The strategy every other one is compared with.
REFERENCE = "random"


@dataclass(frozen=True)
class RoundRecord:
    """One round of one run: its training set, its test metrics and the categories of its picks."""

    round: int
    training_tasks: tuple[str, ...]
    metrics: Mapping[str, float]
    #: Task-map category of each task picked this round, as categorised when it was picked
    #: (empty for strategies that pick without scores).
    picked_categories: Mapping[str, str] = field(default_factory=dict)

    @property
    def num_training_tasks(self) -> int:
        return len(self.training_tasks)


@dataclass(frozen=True)
class RunRecord:
    """One (strategy, seed) run: its rounds and the untuned base model's test metrics."""

    strategy: str
    seed: int
    rounds: tuple[RoundRecord, ...]
    base: Mapping[str, float] = field(default_factory=dict)
    run_id: str = ""


@dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation over seeds (``std`` is NaN for one seed)."""

    mean: float
    std: float
    count: int


@dataclass(frozen=True)
class PairedDifference:
    """``strategy - reference`` paired by seed: mean, 95% t interval, seeds won."""

    mean: float
    low: float
    high: float
    wins: int
    count: int


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation of ``values``."""
    if not values:
        raise ActiveITError("nothing to summarize")
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return Summary(statistics.fmean(values), std, len(values))


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float]) -> PairedDifference:
    """The mean of ``values[s] - reference[s]`` over the seeds both have, its 95% confidence
    interval (paired Student t, ``n - 1`` degrees of freedom; NaN for one seed) and the seeds won."""
    from scipy import stats

    seeds = sorted(set(values) & set(reference))
    if not seeds:
        raise ActiveITError("no seed in common to pair")
    mine, theirs = [values[s] for s in seeds], [reference[s] for s in seeds]
    deltas = [a - b for a, b in zip(mine, theirs)]
    low = high = math.nan
    if len(deltas) > 1:
        with warnings.catch_warnings():  # equal differences: scipy warns, the interval is the mean
            warnings.simplefilter("ignore", RuntimeWarning)
            interval = stats.ttest_rel(mine, theirs).confidence_interval(0.95)
        low, high = float(interval.low), float(interval.high)
    return PairedDifference(statistics.fmean(deltas), low, high, sum(d > 0 for d in deltas), len(deltas))


def jaccard(first: Iterable[str], second: Iterable[str]) -> float:
    """|A ∩ B| / |A ∪ B| (1.0 for two empty sets)."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 1.0


@dataclass(frozen=True)
class Study:
    """The runs of a study and everything computed from them."""

    runs: tuple[RunRecord, ...]
    metric: str = "rougeL"

    def __post_init__(self) -> None:
        keys = [(r.strategy, r.seed) for r in self.runs]
        if not keys:
            raise ActiveITError("a study needs at least one run")
        if len(set(keys)) != len(keys):
            raise ActiveITError("a study holds one run per (strategy, seed)")
        object.__setattr__(self, "runs", tuple(sorted(self.runs, key=lambda r: (self.strategies.index(r.strategy), r.seed))))

    @property
    def strategies(self) -> list[str]:
        """Strategies in first-seen order, ``random`` first when it is there."""
        names = list(dict.fromkeys(r.strategy for r in self.runs))
        return sorted(names, key=lambda s: s != REFERENCE)

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    def run(self, strategy: str, seed: int) -> RunRecord | None:
        return next((r for r in self.runs if r.strategy == strategy and r.seed == seed), None)

    # ------------------------------------------------------------------ tables

    def rows(self) -> list[dict[str, Any]]:
        """One row per (strategy, seed, round): the ``study.csv`` table."""
        return [
            {"strategy": run.strategy, "seed": run.seed, "round": rnd.round,
             "training_tasks": rnd.num_training_tasks, **{m: rnd.metrics.get(m) for m in HEADLINE_METRICS}}
            for run in self.runs
            for rnd in run.rounds
        ]

    def values(self, strategy: str, round_index: int, metric: str | None = None) -> dict[int, float]:
        """Seed -> the metric of ``strategy`` at ``round_index`` (seeds that have it)."""
        metric = metric or self.metric
        out = {}
        for run in self.runs:
            if run.strategy != strategy:
                continue
            for rnd in run.rounds:
                if rnd.round == round_index and rnd.metrics.get(metric) is not None:
                    out[run.seed] = float(rnd.metrics[metric])
        return out

    def rounds_of(self, strategy: str) -> list[tuple[int, int]]:
        """``(round, training tasks)`` of a strategy's rounds (their first run's counts)."""
        seen: dict[int, int] = {}
        for run in self.runs:
            if run.strategy == strategy:
                for rnd in run.rounds:
                    seen.setdefault(rnd.round, rnd.num_training_tasks)
        return sorted(seen.items())

    def summary(self, strategy: str, round_index: int, metric: str | None = None) -> Summary | None:
        values = self.values(strategy, round_index, metric)
        return summarize(list(values.values())) if values else None

    def difference(self, strategy: str, round_index: int) -> PairedDifference | None:
        """``strategy - random`` at a round, paired by seed (None without both)."""
        mine, reference = self.values(strategy, round_index), self.values(REFERENCE, round_index)
        if strategy == REFERENCE or not set(mine) & set(reference):
            return None
        return paired_difference(mine, reference)

    def base(self) -> Summary | None:
        """The untuned base model's metric over the seeds (one value per seed)."""
        per_seed = {run.seed: float(run.base[self.metric]) for run in self.runs if self.metric in run.base}
        return summarize(list(per_seed.values())) if per_seed else None

    def budget_to_match(self, strategy: str) -> int | None:
        """The fewest training tasks at which ``strategy``'s mean reaches random's mean at
        random's largest budget; None when it never does (or without random)."""
        reference_rounds = self.rounds_of(REFERENCE)
        if not reference_rounds:
            return None
        last_round, _ = max(reference_rounds, key=lambda item: item[1])
        target = self.summary(REFERENCE, last_round)
        if target is None:
            return None
        for round_index, tasks in sorted(self.rounds_of(strategy), key=lambda item: item[1]):
            mean = self.summary(strategy, round_index)
            if mean is not None and mean.mean >= target.mean:
                return tasks
        return None

    def overlap(self) -> list[dict[str, Any]]:
        """Jaccard overlap of each pair of strategies' training sets per round, averaged
        over the seeds both ran: the ``selection_overlap.csv`` table."""
        rows = []
        for first, second in combinations(self.strategies, 2):
            rounds = sorted({r for r, _ in self.rounds_of(first)} & {r for r, _ in self.rounds_of(second)})
            for round_index in rounds:
                values = []
                for seed in self.seeds:
                    a, b = self.run(first, seed), self.run(second, seed)
                    sets = [next((x.training_tasks for x in run.rounds if x.round == round_index), None)
                            for run in (a, b) if run is not None]
                    if len(sets) == 2 and None not in sets:
                        values.append(jaccard(*sets))
                if values:
                    rows.append({"first": first, "second": second, "round": round_index,
                                 "jaccard": statistics.fmean(values), "seeds": len(values)})
        return rows

    def category_shares(self) -> dict[str, dict[str, float]]:
        """Per strategy, the share of its picks (rounds >= 1, all seeds) in each task-map
        category; strategies that picked without scores are left out."""
        shares: dict[str, dict[str, float]] = {}
        for strategy in self.strategies:
            picked = [c for run in self.runs if run.strategy == strategy
                      for rnd in run.rounds for c in rnd.picked_categories.values()]
            if picked:
                shares[strategy] = {c: picked.count(c) / len(picked) for c in CATEGORIES}
        return shares

"""Statistics of a study: strategies x seeds of active-tuning runs (no torch, no MLflow).

A study answers the project's question, *does choosing tasks by prompt uncertainty beat
choosing them at random?*, the way the paper does (means over pool seeds) and with what the
paper leaves out: the spread over seeds, the difference to ``random`` paired by seed with a
95% confidence interval and the seeds won, a paired bootstrap interval over seeds and test
tasks, the probability of improvement, what the study could detect (the minimum detectable
effect at 80% power and the seeds a 1- or 2-point effect would need), the **budget to
match** (the fewest training tasks at which a strategy's mean reaches random's mean at
random's largest budget), how much the strategies' training sets overlap (Jaccard), and the
task-map make-up of the picks.

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
from functools import cached_property
from itertools import combinations
from typing import Any

from activeit.errors import ActiveITError
from activeit.evaluation import HEADLINE_METRICS, ROUGE_L
from activeit.selection.taskmap import CATEGORIES

#: The strategy every other one is compared with.
REFERENCE = "random"
#: Confidence of the intervals; level (two-sided) and power of the detectable effect.
CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
#: The effects (ROUGE-L points) whose seeds needed a study reports.
DETECT_EFFECTS = (1.0, 2.0)
#: The paired bootstrap: resamples and the seed of its generator (deterministic reports).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
#: The two in words (the study's MLflow run carries them as tags).
BOOTSTRAP_SCHEME = ("paired by seed; the seeds resampled with replacement and, within each drawn seed, its test "
                    f"tasks (METHOD.md); percentile, {BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}")
POWER_SCHEME = (f"paired t over seeds, two-sided alpha {ALPHA:g}, power {POWER:g}: MDE(n) = (t_(1-alpha/2, n-1) + "
                "t_(power, n-1)) * s_d / sqrt(n) with the observed sd s_d of the per-seed differences (METHOD.md)")
#: The most seeds :func:`seeds_needed` searches (beyond: "more than").
MAX_SEEDS = 100_000
#: Why a statistic is not computable.
ONE_SEED = "only one paired seed (2 or more needed)"
NO_SPREAD = "the paired differences do not vary over seeds (sd = 0)"


@dataclass(frozen=True)
class RoundRecord:
    """One round of one run: its training set, its test metrics and the categories of its picks."""

    round: int
    training_tasks: tuple[str, ...]
    metrics: Mapping[str, float]
    #: Task-map category of each task picked this round, as categorised when it was picked
    #: (empty for strategies that pick without scores).
    picked_categories: Mapping[str, str] = field(default_factory=dict)
    #: ROUGE-L (x100) of each test task (empty for runs logged without it).
    task_metrics: Mapping[str, float] = field(default_factory=dict)

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


@dataclass(frozen=True)
class PairedScores:
    """``strategy - reference`` paired by seed: per seed, one difference per test task both
    runs scored (where they logged per-task scores), else one, the headline metric's."""

    seeds: tuple[int, ...]
    differences: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class PairedBootstrap:
    """The paired bootstrap of ``strategy - reference`` (:func:`paired_bootstrap`): the mean
    difference with its percentile interval and the probability of improvement (None, with a
    ``reason``, when not computable)."""

    estimate: float
    low: float | None
    high: float | None
    #: P(d > 0) under the bootstrap: the share of resamples whose mean difference is positive.
    improvement: float | None
    seeds: int
    #: The most test tasks a seed resamples (0: one headline difference per seed, the seeds alone).
    tasks: int
    reason: str = ""


def paired_bootstrap(
    scores: PairedScores,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> PairedBootstrap:
    """METHOD.md's paired bootstrap: each resample draws the seeds with replacement and, within
    each drawn seed, that seed's test tasks with replacement; its statistic is the mean over the
    drawn seeds of each one's mean difference over its drawn tasks. The interval is the
    percentile one; the probability of improvement is P(d > 0) under the bootstrap, the share
    of resamples with a positive mean (a zero counts half).

    Pairing lives in the differences: a drawn seed brings both strategies' runs of that seed
    (the same round-0 set, the same seed), a drawn task both strategies' scores on it. A seed's
    test tasks may differ from another's (a pool without a test split of its own); without
    per-task scores each seed has its one headline difference and only the seeds are
    resampled. Two levels of resampling are not what ``scipy.stats.bootstrap`` does (it draws
    whole observations), so this draws indices with numpy, vectorized over resamples.
    Seeded: the same records always give the same numbers. Needs two or more seeds.
    """
    import numpy as np

    rows = [np.asarray(row, dtype=float) for row in scores.differences]
    estimate = statistics.fmean(float(row.mean()) for row in rows)
    widest = max(len(row) for row in rows)
    tasks = widest if widest > 1 else 0
    if len(rows) < 2:
        return PairedBootstrap(estimate, None, None, None, len(rows), tasks, ONE_SEED)
    counts = np.array([len(row) for row in rows])
    grid = np.zeros((len(rows), widest))
    for number, row in enumerate(rows):
        grid[number, : len(row)] = row
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for first in range(0, resamples, 1000):  # batches of 1000 resamples keep memory small
        size = min(1000, resamples - first)
        drawn = rng.integers(0, len(rows), size=(size, len(rows)))  # seeds, with replacement
        picks = np.floor(rng.random((size, len(rows), widest)) * counts[drawn][..., None]).astype(int)
        valid = np.arange(widest) < counts[drawn][..., None]  # a seed draws as many tasks as it has
        values = np.where(valid, grid[drawn[..., None], picks], 0.0)
        means[first : first + size] = (values.sum(axis=-1) / counts[drawn]).mean(axis=-1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    improvement = float(np.mean(means > 0) + 0.5 * np.mean(means == 0))
    return PairedBootstrap(estimate, float(low), float(high), improvement, len(rows), tasks)


@dataclass(frozen=True)
class PowerAnalysis:
    """What a paired t-test over the seeds could detect, under the observed spread
    (:func:`power_analysis`); None values, with a ``reason``, when not computable."""

    seeds: int
    #: Sample standard deviation of the per-seed differences.
    sd: float | None
    #: The minimum detectable effect at :data:`POWER` (two-sided :data:`ALPHA`) with ``seeds``.
    mde: float | None
    #: Effect -> the fewest seeds that detect it at :data:`POWER` (None: more than :data:`MAX_SEEDS`).
    seeds_needed: Mapping[float, int | None]
    reason: str = ""


def minimum_detectable_effect(sd: float, seeds: int, power: float = POWER, alpha: float = ALPHA) -> float:
    """METHOD.md's MDE(n) = (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n): the smallest
    true paired difference a two-sided paired t-test over ``seeds`` seeds detects with
    probability ``power`` when the differences spread with standard deviation ``sd``."""
    from scipy import stats

    df = seeds - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(seeds))


def seeds_needed(
    effect: float, sd: float, power: float = POWER, alpha: float = ALPHA, limit: int = MAX_SEEDS
) -> int | None:
    """The fewest seeds n (at least 2) with MDE(n) <= ``effect`` under ``sd`` (METHOD.md); None
    beyond ``limit``. (MDE falls as seeds are added: doubling, then bisection.)"""
    def detects(n: int) -> bool:
        return minimum_detectable_effect(sd, n, power, alpha) <= effect

    if not detects(limit):
        return None
    low, high = 1, 2  # detects(high); one seed has no test
    while not detects(high):
        low, high = high, min(2 * high, limit)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if detects(middle) else (middle, high)
    return high


def power_analysis(differences: Sequence[float], effects: Sequence[float] = DETECT_EFFECTS) -> PowerAnalysis:
    """The minimum detectable effect for this many seeds and the seeds needed for each of
    ``effects``, taking the sample sd of the per-seed ``differences`` as the true one.
    Not computable with one seed or with no spread (a t-test has nothing to go on)."""
    n = len(differences)
    if n < 2:
        return PowerAnalysis(n, None, None, {e: None for e in effects}, ONE_SEED)
    sd = statistics.stdev(differences)
    if math.isclose(sd, 0.0, abs_tol=1e-9):
        return PowerAnalysis(n, sd, None, {e: None for e in effects}, NO_SPREAD)
    return PowerAnalysis(n, sd, minimum_detectable_effect(sd, n), {e: seeds_needed(e, sd) for e in effects})


@dataclass(frozen=True)
class Comparison:
    """``strategy - random`` at one round: the t interval and the power analysis of the
    per-seed headline differences, and the paired bootstrap (per seed and test task where
    the runs logged per-task scores)."""

    strategy: str
    round: int
    training_tasks: int
    difference: PairedDifference
    bootstrap: PairedBootstrap
    power: PowerAnalysis


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

    def _round(self, strategy: str, seed: int, round_index: int) -> RoundRecord | None:
        run = self.run(strategy, seed)
        return None if run is None else next((r for r in run.rounds if r.round == round_index), None)

    def paired_scores(self, strategy: str, round_index: int) -> PairedScores | None:
        """``strategy - random`` at a round for the seeds both have: per seed, one difference
        per test task both runs scored, when every such pair logged per-task ROUGE-L, else the
        headline metric's. None without a pair."""
        mine, reference = self.values(strategy, round_index), self.values(REFERENCE, round_index)
        seeds = sorted(set(mine) & set(reference))
        if strategy == REFERENCE or not seeds:
            return None
        headline = PairedScores(tuple(seeds), tuple((mine[s] - reference[s],) for s in seeds))
        if self.metric != ROUGE_L:
            return headline
        pairs = [(self._round(strategy, s, round_index), self._round(REFERENCE, s, round_index)) for s in seeds]
        per_task = [(a.task_metrics, b.task_metrics) for a, b in pairs if a is not None and b is not None]
        task_sets = [sorted(set(a) & set(b)) for a, b in per_task]
        if len(task_sets) < len(seeds) or not all(task_sets):
            return headline
        rows = tuple(tuple(float(a[t]) - float(b[t]) for t in tasks) for (a, b), tasks in zip(per_task, task_sets))
        return PairedScores(tuple(seeds), rows)

    @cached_property
    def comparisons(self) -> tuple[Comparison, ...]:
        """Every strategy but random against random at each round they share (computed once)."""
        found = []
        for strategy in self.strategies:
            for round_index, tasks in self.rounds_of(strategy):
                difference, scores = self.difference(strategy, round_index), self.paired_scores(strategy, round_index)
                if difference is None or scores is None:
                    continue
                mine, reference = self.values(strategy, round_index), self.values(REFERENCE, round_index)
                per_seed = [mine[s] - reference[s] for s in scores.seeds]
                found.append(Comparison(strategy, round_index, tasks, difference, paired_bootstrap(scores),
                                        power_analysis(per_seed)))
        return tuple(found)

    def comparison(self, strategy: str, round_index: int) -> Comparison | None:
        return next((c for c in self.comparisons if (c.strategy, c.round) == (strategy, round_index)), None)

    def final_comparison(self, strategy: str) -> Comparison | None:
        """The comparison at the largest budget ``strategy`` shares with random."""
        mine = [c for c in self.comparisons if c.strategy == strategy]
        return max(mine, key=lambda c: (c.training_tasks, c.round)) if mine else None

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

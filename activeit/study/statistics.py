"""Statistics of a study: strategies x seeds of active-tuning runs (no torch, no MLflow).

A study answers the project's question, *does choosing tasks by prompt uncertainty beat
choosing them at random?*, the way the paper does (means over pool seeds) and with what the
paper leaves out, each statistic chosen to hold its stated level at the 3-10 seeds people run
(docs/STATISTICS.md states the model and what it assumes; ``benchmarks/calibration.py``
measures it on a finished study):

* the difference to ``random`` paired by seed, with its **Student-t 95% interval** over the
  seeds (exact when the per-seed differences are normal; measured to cover at 3, 5 and 10
  seeds on real studies) and the seeds won;
* the **probability of improvement**, P(a new seed's paired difference > 0), the Student-t
  posterior predictive (flat prior on the mean and log-sd) - the quantity of Bouthillier et
  al. 2021 and rliable (Agarwal et al. 2021), which does not run to 1 with the seeds;
* what the study could detect (the minimum detectable effect at 80% power and the seeds an
  effect would need), and **where the spread comes from**: the share of the variance of the
  per-seed difference that the test sample explains (two-way analysis of the seed x test task
  table) and the share between seeds (selection and training), with what more seeds or a
  larger test sample would buy;
* the **selection cost** of each strategy (the scoring step's seconds and forward tokens per
  round), the **budget to match** (the fewest training tasks at which a strategy's mean reaches
  random's mean at random's largest budget), how much the strategies' training sets overlap
  (Jaccard), and the task-map make-up of the picks.

Its input is plain records (:class:`RunRecord`, one per (strategy, seed) run), read from
wherever the runs were tracked; everything here is a pure function of them. The markdown
report is :mod:`activeit.study.report`'s, the figures :mod:`activeit.study.plots`'.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import combinations
from typing import Any

from activeit.errors import ActiveITError
from activeit.evaluation import HEADLINE_METRICS, LOGLIK, ROUGE_L, STUDY_METRICS
from activeit.selection.taskmap import CATEGORIES

#: The strategy every other one is compared with.
REFERENCE = "random"
#: Confidence of the intervals; level (two-sided) and power of the detectable effect.
CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8
#: Per study metric, the effects whose seeds needed a study reports (ROUGE-L points; nats per token).
DETECT_EFFECTS: dict[str, tuple[float, ...]] = {ROUGE_L: (1.0, 2.0), LOGLIK: (0.01, 0.05)}
#: What the test-sample projection multiplies (the test instances, tasks and instances together).
TEST_SAMPLE_FACTOR = 4
#: How the paired statistics are computed, in words (the study's MLflow run carries them as tags).
INTERVAL_SCHEME = (f"paired by seed; Student-t {CONFIDENCE:.0%} interval of the mean per-seed difference, n - 1 "
                   "degrees of freedom (docs/STATISTICS.md)")
IMPROVEMENT_SCHEME = ("P(a new seed's paired difference > 0): the Student-t posterior predictive, "
                      "T_(n-1)(mean / (sd * sqrt(1 + 1/n))), flat prior on the mean and log sd (docs/STATISTICS.md)")
POWER_SCHEME = (f"paired t over seeds, two-sided alpha {ALPHA:g}, power {POWER:g}: MDE(n) = (t_(1-alpha/2, n-1) + "
                "t_(power, n-1)) * s_d / sqrt(n) with the observed sd s_d of the per-seed differences")
SPLIT_SCHEME = ("two-way analysis of the seed x test task table of paired differences: the test sample's part of "
                "the variance of a seed's mean difference is the residual mean square over the tasks, the rest is "
                "between seeds (docs/STATISTICS.md)")
#: The most seeds :func:`seeds_needed` searches (beyond: "more than").
MAX_SEEDS = 100_000
#: Why a statistic is not computable.
ONE_SEED = "only one paired seed (2 or more needed)"
NO_SPREAD = "the paired differences do not vary over seeds (sd = 0)"
FEW_TASKS = "fewer than 2 test tasks scored in every seed's pair (per-task scores needed)"
#: A round's selection cost, as the runs log it (tracking's metric names, kept in step with them).
SCORING_TIME, SCORING_TOKENS = "scoring_time_s", "scoring_tokens"


@dataclass(frozen=True)
class RoundRecord:
    """One round of one run: its training set, its test metrics and the categories of its picks."""

    round: int
    training_tasks: tuple[str, ...]
    metrics: Mapping[str, float]
    #: Task-map category of each task picked this round, as categorised when it was picked
    #: (empty for strategies that pick without scores).
    picked_categories: Mapping[str, str] = field(default_factory=dict)
    #: Metric -> test task -> its value (ROUGE-L x100, log-likelihood); empty for runs logged without.
    task_metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    #: What the round's selection cost: ``scoring_time_s`` and ``scoring_tokens`` where it scored.
    cost: Mapping[str, float] = field(default_factory=dict)

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
    """``strategy - reference`` paired by seed: the mean, its Student-t interval, the seeds won,
    the sd of the per-seed differences and the probability of improvement (None, with a
    ``reason``, where not computable: one seed, or no spread)."""

    mean: float
    low: float | None
    high: float | None
    wins: int
    count: int
    sd: float | None = None
    #: P(a new seed's paired difference > 0), the Student-t posterior predictive.
    improvement: float | None = None
    reason: str = ""

    @property
    def resolved(self) -> bool:
        """Whether the interval leaves 0 out (the sign of the difference is settled at its level)."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation of ``values``."""
    if not values:
        raise ActiveITError("nothing to summarize")
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return Summary(statistics.fmean(values), std, len(values))


def infer_difference(deltas: Sequence[float], confidence: float = CONFIDENCE) -> PairedDifference:
    """The study's inference on per-seed paired differences ``deltas`` (docs/STATISTICS.md):
    the mean; its Student-t interval, mean ± t_(1-(1-confidence)/2, n-1) * sd / sqrt(n); and
    the probability of improvement, P(d_new > 0) = T_(n-1)(mean / (sd * sqrt(1 + 1/n))), the
    posterior predictive of a new seed's difference under a normal model with a flat prior on
    the mean and log sd. Interval and probability need two seeds and some spread: with sd = 0
    a zero-width interval would claim certainty that three equal numbers do not give."""
    from scipy import stats

    if not deltas:
        raise ActiveITError("no seed in common to pair")
    n, mean, wins = len(deltas), statistics.fmean(deltas), sum(d > 0 for d in deltas)
    if n < 2:
        return PairedDifference(mean, None, None, wins, n, reason=ONE_SEED)
    sd = statistics.stdev(deltas)
    if math.isclose(sd, 0.0, abs_tol=1e-9):
        return PairedDifference(mean, None, None, wins, n, sd, reason=NO_SPREAD)
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, n - 1)) * sd / math.sqrt(n)
    improvement = float(stats.t.cdf(mean / (sd * math.sqrt(1 + 1 / n)), n - 1))
    return PairedDifference(mean, mean - half, mean + half, wins, n, sd, improvement)


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float]) -> PairedDifference:
    """:func:`infer_difference` of ``values[s] - reference[s]`` over the seeds both have."""
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        raise ActiveITError("no seed in common to pair")
    return infer_difference([values[s] - reference[s] for s in seeds])


@dataclass(frozen=True)
class PairedScores:
    """``strategy - reference`` paired by seed: per seed, one difference per test task both
    runs scored (where they logged per-task scores; ``tasks`` names them), else one, the
    headline metric's (``tasks`` empty)."""

    seeds: tuple[int, ...]
    differences: tuple[tuple[float, ...], ...]
    tasks: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class VarianceSplit:
    """Where the spread of the per-seed paired difference comes from (:func:`variance_split`):
    its variance over seeds and the test sample's estimated part of it (metric units squared)."""

    seeds: int
    tasks: int
    #: Sample variance over seeds of a seed's mean difference over its test tasks.
    total: float
    #: The test sample's part as estimated (it may exceed ``total`` by chance).
    test_estimate: float
    #: "crossed" (every seed on the same test tasks) or "nested" (test tasks drawn per seed).
    design: str = "crossed"

    @property
    def test_share(self) -> float:
        """The share of ``total`` the test sample explains, in [0, 1]."""
        return min(self.test_estimate / self.total, 1.0) if self.total > 0 else 0.0

    @property
    def test(self) -> float:
        return self.total * self.test_share

    @property
    def between(self) -> float:
        """The part between seeds (which tasks were picked, and training on them)."""
        return self.total - self.test

    def sd(self, test_factor: float = 1.0) -> float:
        """The sd of a seed's difference with ``test_factor`` times the test sample (the observed sd at 1)."""
        return math.sqrt(self.between + self.test / test_factor)

    def mde(self, seeds: int, test_factor: float = 1.0) -> float:
        """The minimum detectable effect with ``seeds`` seeds and ``test_factor`` times the test sample."""
        return minimum_detectable_effect(self.sd(test_factor), seeds)


def variance_split(scores: PairedScores) -> VarianceSplit | None:
    """How much of the variance over seeds of a seed's mean paired difference the test sample
    explains, and how much is between seeds (docs/STATISTICS.md). With d_st = mu + a_s + b_t +
    e_st, a seed's mean over its T tasks varies by var(a) + var(e) / T (+ var(b) / T where the
    seeds have test tasks of their own); the test sample's part is estimated from the spread of
    the differences over the tasks within the seeds, the rest of the observed variance of the
    seed means is var(a), between seeds (the test share is capped at 1).

    * Every seed on the same test tasks (a fixed test split): the two-way analysis of the
      seed x task table; the test sample's part is its residual mean square over T (the task
      effects b_t are the same in every seed and drop out of the comparison).
    * Test tasks drawn per seed: the tasks are nested in the seeds; the test sample's part is
      the mean over seeds of the within-seed variance of the differences over its T_s tasks,
      divided by T_s (the task effects are part of the test sample's noise then).

    None without 2 seeds with 2 or more tasks each."""
    import numpy as np

    rows = [np.asarray(row, dtype=float) for row in scores.differences]
    if len(rows) < 2 or any(len(row) < 2 for row in rows) or not scores.tasks:
        return None
    seed_means = np.array([row.mean() for row in rows])
    total = float(seed_means.var(ddof=1))
    if len(set(scores.tasks)) > 1:  # nested: each seed's own test tasks
        test = float(np.mean([row.var(ddof=1) / len(row) for row in rows]))
        return VarianceSplit(len(rows), round(float(np.mean([len(row) for row in rows]))), total, test, "nested")
    table = np.stack(rows)  # crossed: seeds x tasks, one order
    seeds, tasks = table.shape
    residual = table - seed_means[:, None] - table.mean(axis=0)[None, :] + table.mean()
    test = float((residual**2).sum()) / ((seeds - 1) * (tasks - 1)) / tasks
    return VarianceSplit(seeds, tasks, total, test, "crossed")


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
    """MDE(n) = (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n): the smallest
    true paired difference a two-sided paired t-test over ``seeds`` seeds detects with
    probability ``power`` when the differences spread with standard deviation ``sd``."""
    from scipy import stats

    df = seeds - 1
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(power, df)) * sd / math.sqrt(seeds))


def seeds_needed(
    effect: float, sd: float, power: float = POWER, alpha: float = ALPHA, limit: int = MAX_SEEDS
) -> int | None:
    """The fewest seeds n (at least 2) with MDE(n) <= ``effect`` under ``sd``; None beyond
    ``limit``. (MDE falls as seeds are added: doubling, then bisection.)"""
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


def power_analysis(differences: Sequence[float], effects: Sequence[float] = DETECT_EFFECTS[ROUGE_L]) -> PowerAnalysis:
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
class SelectionCost:
    """What a strategy's selection cost a round (means over its scored rounds and seeds): the
    scoring step's seconds and the token slots its forward passes ran (None where not logged)."""

    seconds: float | None
    tokens: float | None
    rounds: int


@dataclass(frozen=True)
class Comparison:
    """``strategy - random`` at one round: the paired inference and the power analysis of the
    per-seed differences, and the variance split of the per-task ones (None without them)."""

    strategy: str
    round: int
    training_tasks: int
    difference: PairedDifference
    power: PowerAnalysis
    split: VarianceSplit | None = None


def jaccard(first: Iterable[str], second: Iterable[str]) -> float:
    """|A ∩ B| / |A ∪ B| (1.0 for two empty sets)."""
    a, b = set(first), set(second)
    return len(a & b) / len(a | b) if a | b else 1.0


@dataclass(frozen=True)
class Study:
    """The runs of a study and everything computed from them."""

    runs: tuple[RunRecord, ...]
    #: The metric the strategies are compared on (:data:`~activeit.evaluation.STUDY_METRICS`).
    metric: str = ROUGE_L

    def __post_init__(self) -> None:
        if self.metric not in STUDY_METRICS:
            raise ActiveITError(f"a study compares on one of {', '.join(STUDY_METRICS)}, not '{self.metric}'")
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
        per test task both runs scored in the study's metric, when every such pair logged
        per-task scores, else one per seed, the headline metric's. None without a pair."""
        mine, reference = self.values(strategy, round_index), self.values(REFERENCE, round_index)
        seeds = sorted(set(mine) & set(reference))
        if strategy == REFERENCE or not seeds:
            return None
        headline = PairedScores(tuple(seeds), tuple((mine[s] - reference[s],) for s in seeds))
        pairs = [(self._round(strategy, s, round_index), self._round(REFERENCE, s, round_index)) for s in seeds]
        per_task = [(a.task_metrics.get(self.metric, {}), b.task_metrics.get(self.metric, {}))
                    for a, b in pairs if a is not None and b is not None]
        task_sets = [tuple(sorted(set(a) & set(b))) for a, b in per_task]
        if len(task_sets) < len(seeds) or not all(task_sets):
            return headline
        rows = tuple(tuple(float(a[t]) - float(b[t]) for t in tasks) for (a, b), tasks in zip(per_task, task_sets))
        return PairedScores(tuple(seeds), rows, tuple(task_sets))

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
                found.append(Comparison(strategy, round_index, tasks, difference,
                                        power_analysis(per_seed, DETECT_EFFECTS[self.metric]), variance_split(scores)))
        return tuple(found)

    def selection_cost(self, strategy: str) -> SelectionCost | None:
        """The mean scoring seconds and forward tokens of a round of ``strategy`` over its rounds
        that scored the pool (rounds >= 1, every seed); None when it never scored (its picks were free)."""
        costs = [rnd.cost for run in self.runs if run.strategy == strategy for rnd in run.rounds
                 if rnd.round >= 1 and rnd.cost.get(SCORING_TIME)]
        if not costs:
            return None
        def mean_of(key: str) -> float | None:
            values = [c[key] for c in costs if c.get(key) is not None]
            return statistics.fmean(values) if values else None
        return SelectionCost(mean_of(SCORING_TIME), mean_of(SCORING_TOKENS), len(costs))

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

"""Adaptive prompt uncertainty: score in stages, stop a task once it is surely in or out of the top b.

A round needs only *which* b tasks have the highest PU (METHOD.md, "Adaptive PU"). A task's PU
is the mean of its ``N = n * k`` terms ``|p_ij - p_i0|``, each in ``[0, 1]``. Each task's pairs
``(i, j)`` are put in a seeded random order (a simple random sample without replacement of the
``N`` terms, however many are taken); stage 1 scores the first ``first_stage`` pairs of every
task, each later stage brings the tasks still undecided to ``stage_growth`` times as many, up
to all ``N``. After each stage every task's PU gets an interval ``[LB_t, UB_t]``, and task t is

* surely **in** when fewer than b other tasks have ``UB_u > LB_t``,
* surely **out** when at least b others have ``LB_u > UB_t``;

a decided task stops; the others go on. With stratified selection (``classification_ratio``)
the rule runs within the classification and the generation tasks, each with its share of b.

**The bound.** The interval is the hedged betting confidence *sequence* for sampling without
replacement of Waudby-Smith & Ramdas ("Confidence sequences for sampling without replacement",
NeurIPS 2020; "Estimating means of bounded random variables by betting", JRSS-B 2024), as the
``confseq`` package computes it (``betting.betting_cs`` with ``N``: the capital processes
``prod(1 ± lambda_i (x_i - mu_i(m)))`` against the mean ``mu_i(m)`` of the terms not yet drawn,
bets ``lambda_predmix_eb`` truncated at ``1/2 / mu_i`` and ``1/2 / (1 - mu_i)``, ``theta = 1/2``,
the maximum of the two). Why this one: it is valid at every stage at once (anytime-valid, so
looking after each stage and stopping costs nothing), it uses the finite population (it closes
on the exact PU when all N terms are in), and it adapts to the small variance of the terms
(PU is typically 0.01-0.2) where Hoeffding-Serfling or empirical-Bernstein-Serfling bounds with
range 1 stay far too wide at N = 100. ``confseq`` itself does not install (a source-only C++
build that needs Boost headers and CMake), so :func:`pu_interval` computes the same sequence
here, with numpy, its boundary found on a refined grid and rounded outwards. Each of the T
tasks' intervals has level ``delta / T`` (Bonferroni), so all hold together with probability
``1 - delta``, and then the selected top b equals exact scoring's.

Work is reused across stages: stage 1 decodes each sampled instance once (its greedy
prediction and ``p_i0``; PP needs them all, and decoding is about a tenth of the work), and
each pair is teacher-forced once; only the prompt prefixes run again in each stage that
continues a task. The engine is the exact scorer's (:class:`activeit.scoring.scorer._Scorer`).
A task scored to the end has its exact PU (the same formula,
:func:`activeit.scoring.scores.summarize_task`); a stopped one the mean of its scored terms,
kept inside its interval, with ``k`` and ``pairs`` behind it, and its exact PP and perplexity.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from activeit.data.perturbations import PerturbedPrompts, perturb_tasks
from activeit.data.tasks import Instance, Task
from activeit.errors import ActiveITError
from activeit.models.batching import Ids
from activeit.models.loading import LoadedModel
from activeit.config.settings import ScoringSettings
from activeit.scoring.engine.forcing import ForcedPair
from activeit.scoring.scorer import _Scorer, check_tasks, table_meta
from activeit.scoring.scores import InstanceScore, ScoreTable, TaskScore, summarize_task

#: Truncation of the bets (confseq's ``trunc_scale``) and the weight of the upward bet (``theta``).
TRUNCATION = 0.5
THETA = 0.5
#: Points of each grid the interval's ends are searched on, and how many times a grid is refined.
GRID = 128
REFINEMENTS = 3


# ---- the bound (no torch) --------------------------------------------------------------------


def _bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """confseq's ``lambda_predmix_eb``: predictable plug-in bets ``sqrt(2 log(1/alpha) / (t log(1+t) var_{t-1}))``
    from a regularised running variance (prior mean 1/2, variance 1/4, one pseudo-observation)."""
    t = np.arange(1, len(x) + 1)
    mean = np.minimum((0.5 + np.cumsum(x)) / (t + 1), 1.0)
    variance = (0.25 + np.cumsum((x - mean) ** 2)) / (t + 1)
    previous = np.concatenate(([0.25], variance[:-1]))
    return np.sqrt(2 * math.log(1 / alpha) / (t * np.log1p(t) * previous))


def _log_capital(x: np.ndarray, population: int, m: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The largest log capital so far of the upward and downward bets against each mean ``m``."""
    drawn = np.concatenate(([0.0], np.cumsum(x)[:-1]))
    remaining = population - np.arange(len(x))
    mu = np.clip((population * m[:, None] - drawn) / remaining, 0.0, 1.0)  # mean of the terms not yet drawn
    bets = _bets(x, alpha * THETA)  # the same for both sides: theta = 1/2
    with np.errstate(divide="ignore"):
        up = np.minimum(bets, TRUNCATION / mu)
        down = np.minimum(bets, TRUNCATION / (1.0 - mu))
    gain = x - mu
    return (np.cumsum(np.log1p(up * gain), axis=1).max(axis=1),
            np.cumsum(np.log1p(-down * gain), axis=1).max(axis=1))


def pu_interval(terms: Sequence[float], population: int, alpha: float) -> tuple[float, float]:
    """An interval holding the mean of all ``population`` terms (each in [0, 1]) at level ``alpha``,
    from the first ``len(terms)`` of them in random order (see the module docstring); valid at
    every length at once, so it may be recomputed as terms come in. All terms in: the mean itself."""
    x = np.clip(np.asarray(terms, dtype=float), 0.0, 1.0)
    if not 0 < alpha < 1:
        raise ActiveITError(f"pu_interval: alpha must be in (0, 1), got {alpha}")
    if len(x) > population:
        raise ActiveITError(f"pu_interval: {len(x)} terms drawn from a population of {population}")
    total = float(x.sum())
    if len(x) == population:
        return total / population, total / population
    low, high = total / population, (total + population - len(x)) / population  # what the unseen terms allow
    if len(x) == 0:
        return low, high
    threshold = math.log(1 / (alpha * THETA))  # reject m once theta * capital >= 1 / alpha

    def end(side: int, outside: float, inside: float) -> float:
        """One end of the interval: ``outside`` is rejected, ``inside`` kept, and the capital of
        ``side`` (0: upward bets, 1: downward) falls monotonically from one to the other.
        Refined on grids; the last rejected point is returned (rounded outwards)."""
        for _ in range(REFINEMENTS):
            grid = np.linspace(outside, inside, GRID)
            kept = int(np.argmin(_log_capital(x, population, grid, alpha)[side] >= threshold))
            outside, inside = grid[max(kept - 1, 0)], grid[max(kept, 1)]
        return float(outside)

    (up_low, up_high), (down_low, down_high) = _log_capital(x, population, np.array([low, high]), alpha)
    lower = low if up_low < threshold else high if up_high >= threshold else end(0, low, high)
    upper = high if down_high < threshold else low if down_low >= threshold else end(1, high, low)
    return min(lower, upper), max(lower, upper)


def decide(intervals: Sequence[tuple[float, float]], budget: int) -> list[str]:
    """``"in"`` / ``"out"`` / ``""`` per task by METHOD.md's rule (see the module docstring)."""
    if not intervals:
        return []
    lows, highs = (np.array(side, dtype=float) for side in zip(*intervals))
    sorted_lows, sorted_highs = np.sort(lows), np.sort(highs)
    count = len(lows)
    # others with UB_u > LB_t (t itself counts when UB_t > LB_t), and others with LB_u > UB_t
    above_low = count - np.searchsorted(sorted_highs, lows, side="right") - (highs > lows)
    above_high = count - np.searchsorted(sorted_lows, highs, side="right")
    return ["in" if a < budget else "out" if b >= budget else "" for a, b in zip(above_low, above_high)]


# ---- the staged scorer -------------------------------------------------------------------------


@dataclass
class _Race:
    """One task being scored in stages: its pairs in their random order and what is known so far."""

    task: Task
    instances: tuple[Instance, ...]
    prompts: PerturbedPrompts
    order: list[tuple[int, int]]  # (instance i, perturbed prompt j >= 1)
    scored: int = 0
    targets: dict[int, Ids] = field(default_factory=dict)  # i -> greedy prediction + EOS
    nll0: dict[int, float] = field(default_factory=dict)  # i -> L_i0
    nll: dict[tuple[int, int], float] = field(default_factory=dict)  # (i, j) -> L_ij
    interval: tuple[float, float] = (0.0, 1.0)
    decided: str = ""

    @property
    def done(self) -> bool:
        return bool(self.decided) or self.scored == len(self.order)

    def terms(self) -> list[float]:
        """``|p_ij - p_i0|`` of the pairs scored, in their order."""
        return [abs(math.exp(-self.nll[pair]) - math.exp(-self.nll0[pair[0]])) for pair in self.order[: self.scored]]


def _pair_order(task: Task, n: int, k: int, seed: int) -> list[tuple[int, int]]:
    """The task's ``n * k`` pairs in a random order seeded by (task, seed)."""
    pairs = [(i, j) for i in range(n) for j in range(1, k + 1)]
    random.Random(f"adaptive:{task.name}:{seed}").shuffle(pairs)
    return pairs


def stage_sizes(first: int, growth: float, total: int) -> list[int]:
    """Pairs per task after each stage: ``first``, then ``growth`` times the last, up to ``total``;
    a stage that would leave fewer pairs than it adds takes them all (one stage less to run)."""
    sizes = [min(first, total)]
    while sizes[-1] < total:
        step = max(sizes[-1] + 1, math.ceil(sizes[-1] * growth))
        sizes.append(total if total - step < step - sizes[-1] else step)
    return sizes


def _advance(scorer: _Scorer, races: Sequence[_Race], size: int) -> None:
    """Score each race's pairs up to ``size``; the first stage decodes every instance once (its
    prediction and L_i0: PP needs them all, and it is a tenth of the work), later ones force pairs only."""
    encode = scorer.formatter.encode

    def row(race: _Race, i: int, j: int) -> tuple[Ids, Ids]:
        variant = race.prompts.variants[j]
        return scorer.split(encode(variant.definition, variant.examples, race.instances[i].input))

    # in the exact scorer's order (task, prompt, instance): a full first stage runs the same batches
    new = [(race, sorted(race.order[race.scored : size], key=lambda pair: (pair[1], pair[0]))) for race in races]
    originals = [(race, i) for race in races if not race.targets for i in range(len(race.instances))]
    predictions, decoded = scorer.predict([row(race, i, 0) for race, i in originals]) if originals else ([], [])
    for (race, i), target in zip(originals, predictions):
        race.targets[i] = target
    forced = [(race, (i, j)) for race, pairs in new for i, j in pairs]
    if decoded is not None:
        for (race, i), value in zip(originals, decoded):
            race.nll0[i] = value
    else:  # reduced precision: j = 0 is teacher-forced like the others
        forced = [(race, (i, 0)) for race, i in originals] + forced
    values = scorer.force([ForcedPair(*row(race, i, j), race.targets[i]) for race, (i, j) in forced]) if forced else []
    for (race, (i, j)), value in zip(forced, values):
        if j == 0:
            race.nll0[i] = value
        else:
            race.nll[i, j] = value
    for race in races:
        race.scored = min(size, len(race.order))


def _task_score(scorer: _Scorer, race: _Race) -> tuple[TaskScore, list[InstanceScore]]:
    """The race's row and the detail of its decoded instances (unscored p_ij NaN)."""
    k = race.prompts.k
    detail = [
        scorer.instance_score(race.task, race.instances[i], race.targets[i], race.nll0[i],
                              [math.exp(-race.nll[i, j]) if (i, j) in race.nll else math.nan for j in range(1, k + 1)])
        for i in sorted(race.targets)
    ]
    row = summarize_task(race.task, detail)
    low, high = race.interval
    if race.scored < len(race.order):  # stopped early: the mean of its terms, inside its interval
        row = replace(row, pu=min(max(row.pu, low), high), pu_low=low, pu_high=high, decided=race.decided)
    return row, detail


def _group_budgets(tasks: Sequence[Task], budget: int | Mapping[bool, int]) -> dict[Any, int]:
    """Budget per group of tasks: one group of all, or per ``is_classification`` (stratified selection)."""
    if isinstance(budget, Mapping):
        return {group: int(budget.get(group, 0)) for group in (True, False)}
    return {None: int(budget)}


def score_adaptive(
    loaded: LoadedModel,
    tasks: Sequence[Task],
    config: ScoringSettings,
    budget: int | Mapping[bool, int],
    prompts: Mapping[str, PerturbedPrompts] | None = None,
    progress: bool = True,
) -> ScoreTable:
    """Score ``tasks`` in stages until every one is surely in or out of the top ``budget`` by PU,
    or scored in full (see the module docstring); rows in the order of ``tasks``.

    ``budget`` is the round's b, or ``{True: b_classification, False: b_generation}`` for a
    stratified selection (:func:`activeit.selection.strategies.stratified_budgets`). The table's
    ``meta["adaptive"]`` holds the settings, the stages, the tasks stopped and the work saved.
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    check_tasks(tasks, prompts)
    budgets = _group_budgets(tasks, budget)
    if any(b < 0 for b in budgets.values()):
        raise ActiveITError(f"adaptive scoring: the budget must be non-negative, got {budget}")
    if prompts is None:
        prompts = perturb_tasks(tasks, config.perturbation, config.k, config.seed, drop_prob=config.drop_prob)
    scorer = _Scorer(loaded, config)
    races = []
    for task in tasks:
        instances = task.sample_instances(config.n, config.seed)
        races.append(_Race(task, instances, prompts[task.name],
                           _pair_order(task, len(instances), prompts[task.name].k, config.seed)))
    alpha = config.delta / max(len(tasks), 1)
    groups = {key: [r for r in races if key is None or r.task.is_classification == key] for key in budgets}
    started = time.perf_counter()
    sizes = stage_sizes(config.first_stage, config.stage_growth, max((len(r.order) for r in races), default=0))
    stages = 0
    with tqdm(total=len(races), unit="task", desc="adaptive scoring", disable=not progress) as bar:
        for size in sizes:
            going = [r for r in races if not r.done]
            if not going:
                break
            stages += 1
            for first in range(0, len(going), config.tasks_per_chunk):
                _advance(scorer, going[first : first + config.tasks_per_chunk], size)
            for race in going:
                race.interval = pu_interval(race.terms(), len(race.order), alpha)
            for key, members in groups.items():
                for race, verdict in zip(members, decide([r.interval for r in members], budgets[key])):
                    if not race.done:  # a task scored in full keeps "" whatever its side
                        race.decided = verdict
            finished = sum(r.done for r in going)
            bar.update(finished)
            bar.set_postfix(stage=stages, pairs=size, decided=sum(bool(r.decided) for r in races),
                            left=len(going) - finished)
    scored = [_task_score(scorer, race) for race in races]
    rows, detail = [row for row, _ in scored], [s for _, instances in scored for s in instances]
    decoded = sum(len(r.targets) for r in races)
    pairs = sum(r.scored for r in races)
    full = sum(len(r.instances) * (r.prompts.k + 1) for r in races)
    meta = table_meta(loaded, config, prompts, scorer.stats() | {"wall_s": time.perf_counter() - started})
    meta["adaptive"] = {
        "budget": budget if not isinstance(budget, Mapping) else {str(k): v for k, v in budget.items()},
        "delta": config.delta,
        "first_stage": config.first_stage,
        "stage_growth": config.stage_growth,
        "stages": stages,
        "stopped_in": sum(r.decided == "in" for r in races),
        "stopped_out": sum(r.decided == "out" for r in races),
        "pairs": pairs,
        "decoded": decoded,
        # work in rows: a decoded original prompt or a teacher-forced pair (exact scoring: n (k + 1) per task)
        "work_saved": 1.0 - (decoded + pairs) / full if full else 0.0,
    }
    return ScoreTable(tuple(rows), tuple(detail), meta)

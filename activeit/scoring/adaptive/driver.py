"""The staged scorer: score every task's pairs in stages, stop a task once the bound decides it.

Each task's pairs ``(i, j)`` are put in a seeded random order (:func:`pair_order`); stage 1
scores the first ``first_stage`` pairs of every task, each later stage brings the tasks still
undecided to ``stage_growth`` times as many, up to all ``N = n * k`` (:func:`stage_sizes`);
after each stage every task's PU gets its interval and the in/out rule
(:mod:`activeit.scoring.adaptive.bounds`) stops the decided ones.

Work is reused across stages: stage 1 decodes each sampled instance once (its greedy
prediction and ``p_i0``; PP needs them all, and decoding is about a tenth of the work), each
pair is teacher-forced once, and the prefix KV caches of a continuing task's perturbed prompts
are kept from one stage to the next (within ``keep_prefixes_mb``, by default half the
device's free memory; past it a prefix runs again;
:class:`activeit.scoring.engine.kept_prefixes.KeptPrefixes`), so each prompt prefix runs once,
as in exact scoring. The engine is the exact scorer's (:class:`activeit.scoring.scorer.Scorer`,
its :meth:`~activeit.scoring.scorer.Scorer.force` given the kept caches). A stage scores few
rows a task, so it takes more tasks at a time (as many rows as ``tasks_per_chunk`` tasks scored
exactly), runs their wanted prefixes first and pools kept prefixes by rows: its batches pad
about as little as exact scoring's. A task scored to the end has its exact PU (the same
formula, :func:`activeit.scoring.scores.summarize_task`); a stopped one the mean of its scored
terms, kept inside its interval, with ``k`` and ``pairs`` behind it, and its exact PP and
perplexity.

Large pools: a stage scores its tasks a chunk at a time (at most the rows of
``tasks_per_chunk`` tasks scored exactly) and their instances, prompts and pair orders are
rebuilt for each chunk, so between stages a task costs a few numbers (its predictions and
likelihoods); the progress bar counts the tasks done and shows the stage, the tasks decided
and the tasks left. With a ``checkpoint`` file every chunk is journaled
(:class:`activeit.scoring.adaptive.journal.Checkpoint`) and a run given an interrupted run's
file resumes it to the same table.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from activeit.config.settings import ScoringSettings
from activeit.data.perturbations import PerturbedPrompts, perturb_tasks
from activeit.data.tasks import Instance, Task
from activeit.errors import ActiveITError
from activeit.models.batching import Ids
from activeit.models.devices import free_memory, model_device
from activeit.models.loading import LoadedModel
from activeit.scoring.adaptive.bounds import decide, pu_interval
from activeit.scoring.adaptive.journal import Checkpoint, budget_record
from activeit.scoring.engine.forcing import ForcedPair
from activeit.scoring.engine.kept_prefixes import KeptPrefixes
from activeit.scoring.scorer import Scorer, check_tasks, table_meta
from activeit.scoring.scores import InstanceScore, ScoreTable, TaskScore, summarize_task

#: Share of the scoring device's free memory that kept prefix KV caches may take when
#: ``keep_prefixes_mb`` is unset (past it, a prefix runs again).
KEEP_PREFIXES_SHARE = 0.5


def kept_prefix_bytes(config: ScoringSettings, device: torch.device) -> int:
    """Bytes of prefix KV caches kept between stages: ``config.keep_prefixes_mb``, or when unset
    :data:`KEEP_PREFIXES_SHARE` of the memory free on ``device`` now (the caches live there)."""
    if config.keep_prefixes_mb is not None:
        return int(config.keep_prefixes_mb * 2**20)
    return int(KEEP_PREFIXES_SHARE * free_memory(device))


def pair_order(task: str, n: int, k: int, seed: int) -> list[tuple[int, int]]:
    """Task ``task``'s ``n * k`` pairs ``(i, j)`` in the random order seeded by (task name, seed)."""
    pairs = [(i, j) for i in range(n) for j in range(1, k + 1)]
    random.Random(f"adaptive:{task}:{seed}").shuffle(pairs)
    return pairs


def stage_sizes(first: int, growth: float, total: int) -> list[int]:
    """Pairs per task after each stage: ``first``, then ``growth`` times the last, up to ``total``;
    a stage that would leave fewer pairs than it adds takes them all (one stage less to run)."""
    sizes = [min(first, total)]
    while sizes[-1] < total:
        step = max(sizes[-1] + 1, math.ceil(sizes[-1] * growth))
        sizes.append(total if total - step < step - sizes[-1] else step)
    return sizes


@dataclass(eq=False)
class _Race:
    """What is known of one task being scored in stages. Compact (numbers only): its instances,
    prompts and pair order are rebuilt for each chunk it is scored in, so memory stays flat."""

    index: int  # the task's position in the pool
    n: int
    k: int
    scored: int = 0
    targets: list[Ids] = field(default_factory=list)  # i -> greedy prediction + EOS (empty: not decoded yet)
    nll0: list[float] = field(default_factory=list)  # i -> L_i0
    nll: np.ndarray = field(default_factory=lambda: np.empty(0))  # L of the pairs in their order (NaN: unscored)
    interval: tuple[float, float] = (0.0, 1.0)
    decided: str = ""

    def __post_init__(self) -> None:
        self.nll = np.full(self.n * self.k, np.nan)

    @property
    def pairs(self) -> int:
        return self.n * self.k

    @property
    def done(self) -> bool:
        return bool(self.decided) or self.scored == self.pairs

    def terms(self, order: Sequence[tuple[int, int]]) -> np.ndarray:
        """``|p_ij - p_i0|`` of the pairs scored, in their order."""
        p0 = np.exp(-np.asarray(self.nll0))[[i for i, _ in order[: self.scored]]]
        return np.abs(np.exp(-self.nll[: self.scored]) - p0)


@dataclass
class _Work:
    """A race in the chunk being scored, with what the chunk rebuilds for it."""

    race: _Race
    task: Task
    instances: tuple[Instance, ...]
    prompts: PerturbedPrompts | None  # None where only the table is built
    order: list[tuple[int, int]]


def _works(
    races: Sequence[_Race], tasks: Sequence[Task], config: ScoringSettings,
    prompts: Mapping[str, PerturbedPrompts] | None, perturb: bool = True,
) -> list[_Work]:
    """The chunk's races with their instances, pair order and (unless not ``perturb``) prompts,
    perturbed here when not given."""
    chunk = [tasks[race.index] for race in races]
    made = prompts if prompts is not None or not perturb else perturb_tasks(
        chunk, config.perturbation, config.k, config.seed, drop_prob=config.drop_prob)
    return [_Work(race, task, task.sample_instances(config.n, config.seed), made[task.name] if made else None,
                  pair_order(task.name, race.n, race.k, config.seed)) for race, task in zip(races, chunk)]


def _advance(scorer: Scorer, works: Sequence[_Work], size: int, kept: KeptPrefixes) -> list[Any]:
    """Score each race's pairs up to ``size``: per race ``[index, predictions, L_i0, new L_ij]``
    (predictions and L_i0 only where the race had none). The first stage decodes every instance
    once (its prediction and L_i0: PP needs them all, and it is a tenth of the work), later ones
    force pairs only."""
    encode = scorer.formatter.encode

    def row(work: _Work, i: int, j: int) -> tuple[Ids, Ids]:
        variant = work.prompts.variants[j]  # type: ignore[union-attr]
        return scorer.split(encode(variant.definition, variant.examples, work.instances[i].input))

    # in the exact scorer's order (task, prompt, instance): a full first stage runs the same batches
    new = [(work, sorted(work.order[work.race.scored : size], key=lambda pair: (pair[1], pair[0]))) for work in works]
    originals = [(work, i) for work in works if not work.race.targets for i in range(work.race.n)]
    predictions, decoded = scorer.predict([row(work, i, 0) for work, i in originals]) if originals else ([], [])
    targets: dict[tuple[int, int], Ids] = {(w.race.index, i): t for (w, i), t in zip(originals, predictions)}
    nll0: dict[tuple[int, int], float] = {}
    forced = [(work, (i, j)) for work, pairs in new for i, j in pairs]
    if decoded is not None:
        nll0 = {(w.race.index, i): value for (w, i), value in zip(originals, decoded)}
    else:  # reduced precision: j = 0 is teacher-forced like the others
        forced = [(work, (i, 0)) for work, i in originals] + forced

    def target(work: _Work, i: int) -> Ids:
        return targets.get((work.race.index, i)) or work.race.targets[i]

    kept.wanted = {}
    rows = [(work, pair, row(work, *pair)) for work, pair in forced]
    for work, (_, j), (prefix, _) in rows:
        if j and size < work.race.pairs:  # its task goes on after this stage
            kept.wanted[prefix] = work.race.index
    values = scorer.force([ForcedPair(*ids, target(work, i)) for work, (i, _), ids in rows], kept) if rows else []
    kept.wanted = {}
    new_nll: dict[int, dict[tuple[int, int], float]] = {}
    for (work, (i, j)), value in zip(forced, values):
        if j == 0:
            nll0[work.race.index, i] = value
        else:
            new_nll.setdefault(work.race.index, {})[i, j] = value
    entries = []
    for work, pairs in new:
        index, first = work.race.index, not work.race.targets
        mine = new_nll.get(index, {})
        entries.append([
            index,
            [list(targets[index, i]) for i in range(work.race.n)] if first else None,
            [nll0[index, i] for i in range(work.race.n)] if first else None,
            [mine[pair] for pair in work.order[work.race.scored : size]],
        ])
    return entries


def _apply(races: Sequence[_Race], entries: list[Any], size: int) -> None:
    """Record a chunk's new predictions and likelihoods (scored now, or read from a checkpoint)."""
    for index, predictions, nll0, values in entries:
        race = races[index]
        if predictions is not None:
            race.targets, race.nll0 = [tuple(t) for t in predictions], [float(v) for v in nll0]
        end = min(size, race.pairs)
        if len(values) != end - race.scored or not race.targets:
            raise ActiveITError(f"adaptive scoring: the record of task {index} does not fit its stage (a checkpoint "
                                "of another run?)")
        race.nll[race.scored : end] = values
        race.scored = end


def _task_score(scorer: Scorer, work: _Work) -> tuple[TaskScore, list[InstanceScore]]:
    """The race's row and the detail of its decoded instances (unscored p_ij NaN)."""
    race = work.race
    p = np.full((race.n, race.k), math.nan)
    for (i, j), value in zip(work.order[: race.scored], race.nll[: race.scored]):
        p[i, j - 1] = math.exp(-value)
    detail = [scorer.instance_score(work.task, work.instances[i], race.targets[i], race.nll0[i], p[i].tolist())
              for i in range(race.n)]
    row = summarize_task(work.task, detail)
    low, high = race.interval
    if race.scored < race.pairs:  # stopped early: the mean of its terms, inside its interval
        row = replace(row, pu=min(max(row.pu, low), high), pu_low=low, pu_high=high, decided=race.decided)
    return row, detail


def _tasks_per_chunk(config: ScoringSettings, rows: int) -> int:
    """Tasks scored together in a stage that scores ``rows`` rows a task: as many as give the rows of
    ``tasks_per_chunk`` tasks scored exactly (``n (k + 1)`` each), so that a stage's few rows per
    task still fill well-sorted batches (and memory stays what exact scoring's chunks take)."""
    return max(config.tasks_per_chunk, config.tasks_per_chunk * config.n * (config.k + 1) // max(rows, 1))


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
    *,
    checkpoint: str | Path | None = None,
) -> ScoreTable:
    """Score ``tasks`` in stages until every one is surely in or out of the top ``budget`` by PU,
    or scored in full (see the module docstring); rows in the order of ``tasks``.

    ``budget`` is the round's b, or ``{True: b_classification, False: b_generation}`` for a
    stratified selection (:func:`activeit.selection.strategies.stratified_budgets`). Each stage
    scores at most the rows of ``config.tasks_per_chunk`` tasks scored exactly at a time, their
    prompts built per chunk (when not given),
    so memory does not grow with the pool beyond a few numbers per task, the final table and at
    most :func:`kept_prefix_bytes` of prefix caches kept between stages. With
    ``checkpoint`` (a file) every chunk's work is journaled there, and a run given the file of
    an interrupted one with the same model, tasks, settings and budget resumes it, giving the
    same table. The table's ``meta["adaptive"]`` holds the settings, the stages, the tasks
    stopped and the work saved.
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    check_tasks(tasks, prompts)
    budgets = _group_budgets(tasks, budget)
    if any(b < 0 for b in budgets.values()):
        raise ActiveITError(f"adaptive scoring: the budget must be non-negative, got {budget}")
    scorer = Scorer(loaded, config)
    races = [_Race(index, len(task.sample_instances(config.n, config.seed)),
                   prompts[task.name].k if prompts is not None else config.k) for index, task in enumerate(tasks)]
    journal = Checkpoint.of_run(checkpoint, loaded, tasks, config, budget, prompts) if checkpoint is not None else None
    kept = KeptPrefixes(kept_prefix_bytes(config, model_device(loaded.model)), config.n)
    alpha = config.delta / max(len(tasks), 1)
    groups = {key: [r for r in races if key is None or tasks[r.index].is_classification == key] for key in budgets}
    started = time.perf_counter()
    sizes = stage_sizes(config.first_stage, config.stage_growth, max((r.pairs for r in races), default=0))
    stages = 0
    try:
        with tqdm(total=len(races), unit="task", desc="adaptive scoring", disable=not progress) as bar:
            for size in sizes:
                going = [r for r in races if not r.done]
                if not going:
                    break
                stages += 1
                # rows a task this stage: its new pairs, and in stage 1 the decoding of its instances
                rows = size - (sizes[stages - 2] if stages > 1 else 0) + (config.n if stages == 1 else 0)
                per_chunk = _tasks_per_chunk(config, rows)
                for first in range(0, len(going), per_chunk):
                    part = going[first : first + per_chunk]
                    entries = journal.next(stages, first) if journal is not None else None
                    if entries is None:
                        entries = _advance(scorer, _works(part, tasks, config, prompts), size, kept)
                        if journal is not None:
                            journal.write(stages, first, entries)
                    _apply(races, entries, size)
                    bar.update(sum(r.scored == r.pairs for r in part))
                    bar.set_postfix_str(f"stage {stages}/{len(sizes)} ({size} pairs): {first + len(part)}/"
                                        f"{len(going)} scored, decided {sum(bool(r.decided) for r in races)}, "
                                        f"left {sum(not r.done for r in races)}", refresh=False)
                for race in going:
                    order = pair_order(tasks[race.index].name, race.n, race.k, config.seed)
                    race.interval = pu_interval(race.terms(order), race.pairs, alpha)
                for key, members in groups.items():
                    for race, verdict in zip(members, decide([r.interval for r in members], budgets[key])):
                        if not race.done:  # a task scored in full keeps "" whatever its side
                            race.decided = verdict
                            bar.update(bool(verdict))
                for race in going:
                    if race.done:
                        kept.release(race.index)
                bar.set_postfix_str(f"stage {stages}/{len(sizes)} done: decided "
                                    f"{sum(bool(r.decided) for r in races)}, left {sum(not r.done for r in races)}")
    finally:
        if journal is not None:
            journal.close()
    rows: list[TaskScore] = []
    detail: list[InstanceScore] = []
    for first in range(0, len(races), config.tasks_per_chunk):
        for work in _works(races[first : first + config.tasks_per_chunk], tasks, config, prompts, perturb=False):
            row, instances = _task_score(scorer, work)
            rows.append(row)
            detail.extend(instances)
    decoded = sum(len(r.targets) for r in races)
    pairs = sum(r.scored for r in races)
    full = sum(r.n * (r.k + 1) for r in races)
    meta = table_meta(loaded, config, prompts or {}, scorer.stats() | {"wall_s": time.perf_counter() - started})
    meta["adaptive"] = {
        "budget": budget_record(budget),
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
        # prefix tokens of kept caches (not run again) and the most bytes kept at once
        "prefix_tokens_reused": kept.reused_tokens,
        "kept_bytes_budget": kept.budget,
        "kept_bytes_peak": kept.peak,
        "resumed_chunks": journal.replayed if journal is not None else 0,
    }
    return ScoreTable(tuple(rows), tuple(detail), meta)

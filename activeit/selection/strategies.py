"""Task selection strategies: which tasks of the remaining pool to train on next.

Every strategy orders the candidates, then takes the first ``budget`` (optionally with a
fixed share of classification tasks). Orders are total and deterministic: ties are
broken by task name, and ``random`` is seeded by ``(seed, round_index)`` over the names
sorted, so the same inputs give the same selection whatever the candidates' order.
:data:`STRATEGY_REGISTRY` holds one entry per strategy: adding a strategy is adding an entry.
``easy`` and ``difficult`` order by the sum of two ranks among the candidates (average
ranks for ties): low PU plus high (easy) or low (difficult) prediction probability (PP).
``ifd`` orders by the tasks' mean IFD (:mod:`activeit.scoring.ifd`). ``diverse`` and
``uncertainty-diverse`` pick one task at a time by a rule on task embeddings
(:mod:`activeit.selection.diversity`): k-center greedy, and PU order with the representation
filter; the tasks already trained on count as selected.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from activeit.config.settings import DiversitySettings
from activeit.data.tasks import Task
from activeit.errors import ActiveITError
from activeit.scoring.ifd import IFDTable, TaskIFD
from activeit.scoring.scores import ScoreTable, TaskScore
from activeit.selection.diversity import TaskEmbeddings, farthest_candidate, first_dissimilar
from activeit.selection.taskmap import categorize

#: The score table a scored strategy orders by: prompt uncertainty's or IFD's.
Table = ScoreTable | IFDTable


class SelectionError(ActiveITError, ValueError):
    """Tasks cannot be selected as asked (unknown strategy, missing scores, bad budget)."""


@dataclass(frozen=True)
class PickState:
    """What a one-at-a-time rule sees: the tasks it may take next (in the strategy's order),
    the tasks selected so far (trained on, then picked this round) and the embeddings."""

    allowed: Sequence[Task]
    selected: Sequence[str]
    embeddings: TaskEmbeddings
    threshold: float


@dataclass(frozen=True)
class Strategy:
    """One selection strategy: what it picks, in words, and how it orders the candidates.

    A scored strategy orders by ``score_key`` (the candidates' rows of its ``table``, PU's or
    IFD's -> one key each, ties broken by name); the others by ``order`` (candidates, seed,
    round -> pick order). A strategy with a ``next_pick`` rule then takes one task at a time
    from that order by the rule (on task embeddings), within the quotas.
    """

    #: What it picks, in words (run and model descriptions).
    description: str
    score_key: Callable[[Sequence[Any]], list[float]] | None = None
    #: With ``score_key``: whether the largest key is picked first.
    largest_first: bool = True
    order: Callable[[Sequence[Task], int, int], list[Task]] | None = None
    #: Takes every candidate whatever the budget and ratio (the fully trained reference).
    takes_all: bool = False
    #: Picks the highest-PU tasks, on PU alone: adaptive scoring (which settles only which tasks
    #: are in the top b by PU) serves it. The other scored strategies rank the whole table.
    adaptive: bool = False
    #: With ``score_key``: the table it reads, prompt uncertainty's (``"pu"``) or IFD's.
    table: str = "pu"
    #: The next task given the picks so far (and its score), or None when no allowed task passes.
    next_pick: Callable[[PickState], tuple[Task, float | None] | None] | None = None
    #: Source, for the README's table.
    source: str = ""

    def __post_init__(self) -> None:
        if (self.score_key is None) == (self.order is None):
            raise ValueError("a strategy orders either by score_key or by order")

    @property
    def needs_scores(self) -> bool:
        """Whether it needs prompt-uncertainty scores."""
        return self.score_key is not None and self.table == "pu"

    @property
    def needs_ifd(self) -> bool:
        return self.score_key is not None and self.table == "ifd"

    @property
    def needs_embeddings(self) -> bool:
        return self.next_pick is not None


def _prompt_uncertainty(rows: Sequence[TaskScore]) -> list[float]:
    return [r.pu for r in rows]


def _perplexity(rows: Sequence[TaskScore]) -> list[float]:
    return [r.perplexity for r in rows]


def _combined_ranks(rows: Sequence[TaskScore], high_pp: bool) -> list[float]:
    """Rank of low PU plus rank of high (``high_pp``) or low PP (1-based, ties sharing their
    mean rank): smaller is a better pick."""
    from scipy.stats import rankdata

    pu = rankdata([r.pu for r in rows])
    pp = rankdata([-r.pp if high_pp else r.pp for r in rows])
    return (pu + pp).tolist()


def _easy(rows: Sequence[TaskScore]) -> list[float]:
    return _combined_ranks(rows, high_pp=True)


def _difficult(rows: Sequence[TaskScore]) -> list[float]:
    return _combined_ranks(rows, high_pp=False)


def _ifd(rows: Sequence[TaskIFD]) -> list[float]:
    return [r.ifd for r in rows]


def _by_name(candidates: Sequence[Task], seed: int, round_index: int) -> list[Task]:
    return sorted(candidates, key=lambda t: t.name)


def _k_center(state: PickState) -> tuple[Task, float | None]:
    """k-center greedy: the allowed task farthest (cosine) from every selected one."""
    by_name = {t.name: t for t in state.allowed}
    name, distance = farthest_candidate(state.embeddings, list(by_name), state.selected)
    return by_name[name], None if math.isinf(distance) else distance


def _filtered(state: PickState) -> tuple[Task, float | None] | None:
    """The representation filter: the first allowed task not within cosine ``threshold`` of a selected one."""
    by_name = {t.name: t for t in state.allowed}
    name = first_dissimilar(state.embeddings, list(by_name), state.selected, state.threshold)
    return None if name is None else (by_name[name], None)


def _seeded_shuffle(candidates: Sequence[Task], seed: int, round_index: int) -> list[Task]:
    ordered = sorted(candidates, key=lambda t: t.name)
    random.Random(f"random:{seed}:{round_index}").shuffle(ordered)
    return ordered


def _second_stream(candidates: Sequence[Task], seed: int, round_index: int) -> list[Task]:
    ordered = sorted(candidates, key=lambda t: t.name)
    random.Random(f"random-b:{seed}:{round_index}").shuffle(ordered)
    return ordered


def _as_given(candidates: Sequence[Task], seed: int, round_index: int) -> list[Task]:
    return list(candidates)


#: Strategy name -> its entry, in the order the command line lists them.
STRATEGY_REGISTRY: dict[str, Strategy] = {
    "uncertainty": Strategy("the tasks of highest prompt uncertainty", score_key=_prompt_uncertainty, adaptive=True),
    "random": Strategy("random tasks", order=_seeded_shuffle),
    "random-b": Strategy("random tasks from a second, independent stream (the A/A control: against random, "
                         "any difference is noise)", order=_second_stream,
                         source="an A/A test: what 'no difference' looks like on this pool"),
    "high-perplexity": Strategy("the tasks of highest perplexity", score_key=_perplexity),
    "low-perplexity": Strategy("the tasks of lowest perplexity", score_key=_perplexity, largest_first=False),
    "all": Strategy("every remaining task at once (the fully trained reference)", order=_as_given, takes_all=True),
    "ambiguous": Strategy("the ambiguous tasks of the task map (highest prompt uncertainty)",
                          score_key=_prompt_uncertainty, adaptive=True),
    "easy": Strategy("the easy tasks of the task map (low prompt uncertainty, high prediction probability)",
                     score_key=_easy, largest_first=False),
    "difficult": Strategy("the difficult tasks of the task map (low prompt uncertainty, low prediction probability)",
                          score_key=_difficult, largest_first=False),
    "ifd": Strategy("the tasks of highest instruction-following difficulty (mean IFD of their instances)",
                    score_key=_ifd, table="ifd", source="Cherry LLM, Li et al., NAACL 2024"),
    "diverse": Strategy("the tasks farthest from those already selected (k-center greedy on task embeddings)",
                        order=_by_name, next_pick=_k_center, source="k-center coverage as in MoDS, Du et al. 2023"),
    "uncertainty-diverse": Strategy(
        "the tasks of highest prompt uncertainty, skipping near-duplicates of those already selected",
        score_key=_prompt_uncertainty, adaptive=False, next_pick=_filtered,
        source="PU with DEITA's representation filter, Liu et al., ICLR 2024"),
}
STRATEGIES = tuple(STRATEGY_REGISTRY)
NEEDS_SCORES = frozenset(name for name, strategy in STRATEGY_REGISTRY.items() if strategy.needs_scores)
NEEDS_IFD = frozenset(name for name, strategy in STRATEGY_REGISTRY.items() if strategy.needs_ifd)
NEEDS_EMBEDDINGS = frozenset(name for name, strategy in STRATEGY_REGISTRY.items() if strategy.needs_embeddings)


def check_adaptive(strategy: str) -> None:
    """Refuse adaptive scoring for a strategy that ranks the whole score table (perplexity, the
    easy / difficult task-map picks): adaptive scoring settles only the top b by PU."""
    entry = strategy_named(strategy)
    if entry.needs_scores and not entry.adaptive:
        served = ", ".join(name for name, s in STRATEGY_REGISTRY.items() if s.adaptive)
        raise SelectionError(f"strategy '{strategy}' ranks every task's scores, but adaptive scoring settles only "
                             f"the top b by prompt uncertainty ({served}); turn scoring.adaptive off for it")


def strategy_named(name: str) -> Strategy:
    """The registry's entry for ``name`` (a SelectionError naming the choices if none)."""
    if name not in STRATEGY_REGISTRY:
        raise SelectionError(f"unknown strategy '{name}'; choose one of {', '.join(STRATEGIES)}")
    return STRATEGY_REGISTRY[name]


@dataclass(frozen=True)
class Selection:
    """The tasks a strategy picked in one round, in pick order, with the score behind each
    and, when it selected on scores, each pick's task-map category among the scored tasks."""

    strategy: str
    round: int
    seed: int
    tasks: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "round": self.round, "seed": self.seed,
            "tasks": list(self.tasks), "scores": dict(self.scores), "categories": dict(self.categories),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        return cls(
            strategy=data["strategy"], round=int(data["round"]), seed=int(data["seed"]),
            tasks=tuple(data["tasks"]), scores={k: float(v) for k, v in data.get("scores", {}).items()},
            categories=dict(data.get("categories", {})),
        )


def rank_tasks(
    strategy: str, candidates: Sequence[Task], scores: Table | None = None,
    seed: int = 0, round_index: int = 0,
) -> tuple[list[Task], dict[str, float]]:
    """All candidates in the strategy's order, and the score each was ordered by (``scores``:
    the strategy's table, prompt uncertainty's or IFD's)."""
    entry = strategy_named(strategy)
    names = [t.name for t in candidates]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise SelectionError(f"candidate tasks appear twice: {', '.join(duplicates)}")
    if entry.order is not None:
        return entry.order(candidates, seed, round_index), {}
    kind, scorer = (IFDTable, "IFD scorer") if entry.table == "ifd" else (ScoreTable, "scorer")
    if not isinstance(scores, kind):
        raise SelectionError(f"strategy '{strategy}' needs {'an IFD' if kind is IFDTable else 'a score'} table "
                             f"(run the {scorer} first)")
    missing = [n for n in names if n not in scores]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise SelectionError(f"strategy '{strategy}': no scores for candidate task(s) {shown}")
    keys = entry.score_key([scores[n] for n in names])
    order = sorted(range(len(names)), key=lambda i: (-keys[i] if entry.largest_first else keys[i], names[i]))
    return [candidates[i] for i in order], {names[i]: float(keys[i]) for i in order}


def stratified_budgets(candidates: Sequence[Task], budget: int, ratio: float) -> dict[bool, int]:
    """How many classification (``True``) and generation (``False``) tasks a stratified batch
    takes: ``round(budget * ratio)`` classification and the rest generation; when one group
    runs out the other fills the batch. Known before any scoring (adaptive scoring's budgets)."""
    classification = sum(t.is_classification for t in candidates)
    take_cls = min(round(budget * ratio), classification)
    take_gen = min(budget - take_cls, len(candidates) - classification)
    return {True: min(budget - take_gen, classification), False: take_gen}


def _stratified(ordered: Sequence[Task], budget: int, ratio: float) -> list[Task]:
    """:func:`stratified_budgets` tasks of each group, each group in pick order; returned in pick order."""
    takes = stratified_budgets(ordered, budget, ratio)
    picked = {t.name for group, take in takes.items() for t in [t for t in ordered if t.is_classification == group][:take]}
    return [t for t in ordered if t.name in picked]


def _one_at_a_time(
    entry: Strategy, ordered: Sequence[Task], takes: Mapping[bool, int] | None, budget: int,
    embeddings: TaskEmbeddings | None, selected: Sequence[str], threshold: float,
) -> tuple[list[Task], dict[str, float]]:
    """Picks by ``entry.next_pick``, one at a time, each group within its quota (``takes``; None:
    no quota); when the rule passes no allowed task (every one too similar), the first allowed
    task in order is taken, so the batch is always full."""
    if embeddings is None:
        raise SelectionError(f"strategy needs task embeddings ({entry.description}): run the task embedder first")
    left = dict(takes) if takes is not None else None
    total = sum(left.values()) if left is not None else min(budget, len(ordered))
    picked: list[Task] = []
    scores: dict[str, float] = {}
    remaining = list(ordered)
    while len(picked) < total:
        allowed = [t for t in remaining if left is None or left[t.is_classification] > 0]
        state = PickState(allowed, [*selected, *(t.name for t in picked)], embeddings, threshold)
        task, score = entry.next_pick(state) or (allowed[0], None)
        picked.append(task)
        remaining.remove(task)
        if score is not None:
            scores[task.name] = score
        if left is not None:
            left[task.is_classification] -= 1
    return picked, scores


def select_tasks(
    strategy: str,
    candidates: Sequence[Task],
    budget: int,
    *,
    scores: Table | None = None,
    seed: int = 0,
    classification_ratio: float | None = None,
    round_index: int = 0,
    embeddings: TaskEmbeddings | None = None,
    selected: Sequence[str] = (),
    threshold: float = DiversitySettings().threshold,
) -> Selection:
    """Pick ``budget`` tasks from ``candidates`` (all of them when the budget exceeds the pool).

    ``classification_ratio`` fixes the share of classification tasks in the batch (the
    reference's stratification, 0.356 on NIV2); ``all`` ignores budget and ratio. The
    embedding strategies read ``embeddings``, count ``selected`` (the tasks trained on so far)
    as already chosen and filter at cosine ``threshold``.
    """
    if budget < 0:
        raise SelectionError(f"budget must be non-negative, got {budget}")
    if classification_ratio is not None and not 0.0 <= classification_ratio <= 1.0:
        raise SelectionError(f"classification_ratio must be in [0, 1], got {classification_ratio}")
    entry = strategy_named(strategy)
    ordered, keys = rank_tasks(strategy, candidates, scores, seed, round_index)
    if entry.takes_all:
        picked = ordered
    elif entry.next_pick is not None:
        takes = None if classification_ratio is None else stratified_budgets(ordered, budget, classification_ratio)
        picked, rule_scores = _one_at_a_time(entry, ordered, takes, budget, embeddings, selected, threshold)
        keys = {**rule_scores, **keys}
    elif classification_ratio is None:
        picked = ordered[:budget]
    else:
        picked = _stratified(ordered, budget, classification_ratio)
    names = tuple(t.name for t in picked)
    categories = categorize(scores) if isinstance(scores, ScoreTable) else {}
    return Selection(
        strategy, round_index, seed, names,
        scores={n: keys[n] for n in names if n in keys},
        categories={n: categories[n] for n in names if n in categories},
    )

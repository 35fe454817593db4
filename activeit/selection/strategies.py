"""Task selection strategies: which tasks of the remaining pool to train on next.

Every strategy orders the candidates, then takes the first ``budget`` (optionally with a
fixed share of classification tasks). Orders are total and deterministic: ties are
broken by task name, and ``random`` is seeded by ``(seed, round_index)`` over the names
sorted, so the same inputs give the same selection whatever the candidates' order.
:data:`STRATEGY_REGISTRY` holds one entry per strategy: adding a strategy is adding an entry.
``easy`` and ``difficult`` order by the sum of two ranks among the candidates (average
ranks for ties): low PU plus high (easy) or low (difficult) prediction probability (PP).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from activeit.data.tasks import Task
from activeit.errors import ActiveITError
from activeit.scoring.scores import ScoreTable, TaskScore
from activeit.selection.taskmap import categorize


class SelectionError(ActiveITError, ValueError):
    """Tasks cannot be selected as asked (unknown strategy, missing scores, bad budget)."""


@dataclass(frozen=True)
class Strategy:
    """One selection strategy: what it picks, in words, and how it orders the candidates.

    A scored strategy orders by ``score_key`` (the candidates' score rows -> one key each,
    ties broken by name); the others by ``order`` (candidates, seed, round -> pick order).
    """

    #: What it picks, in words (run and model descriptions).
    description: str
    score_key: Callable[[Sequence[TaskScore]], list[float]] | None = None
    #: With ``score_key``: whether the largest key is picked first.
    largest_first: bool = True
    order: Callable[[Sequence[Task], int, int], list[Task]] | None = None
    #: Takes every candidate whatever the budget and ratio (the fully trained reference).
    takes_all: bool = False
    #: Picks the highest-PU tasks, on PU alone: adaptive scoring (which settles only which tasks
    #: are in the top b by PU) serves it. The other scored strategies rank the whole table.
    adaptive: bool = False

    def __post_init__(self) -> None:
        if (self.score_key is None) == (self.order is None):
            raise ValueError("a strategy orders either by score_key or by order")

    @property
    def needs_scores(self) -> bool:
        return self.score_key is not None


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


def _seeded_shuffle(candidates: Sequence[Task], seed: int, round_index: int) -> list[Task]:
    ordered = sorted(candidates, key=lambda t: t.name)
    random.Random(f"random:{seed}:{round_index}").shuffle(ordered)
    return ordered


def _as_given(candidates: Sequence[Task], seed: int, round_index: int) -> list[Task]:
    return list(candidates)


#: Strategy name -> its entry, in the order the command line lists them.
STRATEGY_REGISTRY: dict[str, Strategy] = {
    "uncertainty": Strategy("the tasks of highest prompt uncertainty", score_key=_prompt_uncertainty, adaptive=True),
    "random": Strategy("random tasks", order=_seeded_shuffle),
    "high-perplexity": Strategy("the tasks of highest perplexity", score_key=_perplexity),
    "low-perplexity": Strategy("the tasks of lowest perplexity", score_key=_perplexity, largest_first=False),
    "all": Strategy("every remaining task at once (the fully trained reference)", order=_as_given, takes_all=True),
    "ambiguous": Strategy("the ambiguous tasks of the task map (highest prompt uncertainty)",
                          score_key=_prompt_uncertainty, adaptive=True),
    "easy": Strategy("the easy tasks of the task map (low prompt uncertainty, high prediction probability)",
                     score_key=_easy, largest_first=False),
    "difficult": Strategy("the difficult tasks of the task map (low prompt uncertainty, low prediction probability)",
                          score_key=_difficult, largest_first=False),
}
STRATEGIES = tuple(STRATEGY_REGISTRY)
NEEDS_SCORES = frozenset(name for name, strategy in STRATEGY_REGISTRY.items() if strategy.needs_scores)


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
    strategy: str, candidates: Sequence[Task], scores: ScoreTable | None = None,
    seed: int = 0, round_index: int = 0,
) -> tuple[list[Task], dict[str, float]]:
    """All candidates in the strategy's pick order, and the score each was ordered by."""
    entry = strategy_named(strategy)
    names = [t.name for t in candidates]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise SelectionError(f"candidate tasks appear twice: {', '.join(duplicates)}")
    if entry.order is not None:
        return entry.order(candidates, seed, round_index), {}
    if scores is None:
        raise SelectionError(f"strategy '{strategy}' needs a score table (run the scorer first)")
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


def select_tasks(
    strategy: str,
    candidates: Sequence[Task],
    budget: int,
    *,
    scores: ScoreTable | None = None,
    seed: int = 0,
    classification_ratio: float | None = None,
    round_index: int = 0,
) -> Selection:
    """Pick ``budget`` tasks from ``candidates`` (all of them when the budget exceeds the pool).

    ``classification_ratio`` fixes the share of classification tasks in the batch (the
    reference's stratification, 0.356 on NIV2); ``all`` ignores budget and ratio.
    """
    if budget < 0:
        raise SelectionError(f"budget must be non-negative, got {budget}")
    if classification_ratio is not None and not 0.0 <= classification_ratio <= 1.0:
        raise SelectionError(f"classification_ratio must be in [0, 1], got {classification_ratio}")
    ordered, keys = rank_tasks(strategy, candidates, scores, seed, round_index)
    if strategy_named(strategy).takes_all:
        picked = ordered
    elif classification_ratio is None:
        picked = ordered[:budget]
    else:
        picked = _stratified(ordered, budget, classification_ratio)
    names = tuple(t.name for t in picked)
    categories = categorize(scores) if scores is not None else {}
    return Selection(
        strategy, round_index, seed, names,
        scores={n: keys[n] for n in names if n in keys},
        categories={n: categories[n] for n in names if n in categories},
    )

"""Task selection strategies: which tasks of the remaining pool to train on next.

Every strategy orders the candidates, then takes the first ``budget`` (optionally with a
fixed share of classification tasks). Orders are total and deterministic: ties are
broken by task name, and ``random`` is seeded by ``(seed, round_index)`` over the names
sorted, so the same inputs give the same selection whatever the candidates' order.

* ``uncertainty`` / ``ambiguous``: highest prompt uncertainty (PU) first;
* ``high-perplexity`` / ``low-perplexity``: highest / lowest mean perplexity;
* ``easy``: low PU and high prediction probability (PP), ``difficult``: low PU and low PP,
  both by the sum of the two ranks among the candidates (average ranks for ties);
* ``random``; ``all``: every candidate, whatever the budget (the fully trained reference).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from activeit.errors import ActiveITError
from activeit.scoring.scores import ScoreTable, TaskScore
from activeit.data.tasks import Task

STRATEGIES = (
    "uncertainty", "random", "high-perplexity", "low-perplexity", "all", "ambiguous", "easy", "difficult",
)
NEEDS_SCORES = frozenset(STRATEGIES) - {"random", "all"}
#: What each strategy picks, in words (run and model descriptions).
DESCRIPTIONS = {
    "uncertainty": "the tasks of highest prompt uncertainty",
    "random": "random tasks",
    "high-perplexity": "the tasks of highest perplexity",
    "low-perplexity": "the tasks of lowest perplexity",
    "all": "every remaining task at once (the fully trained reference)",
    "ambiguous": "the ambiguous tasks of the task map (highest prompt uncertainty)",
    "easy": "the easy tasks of the task map (low prompt uncertainty, high prediction probability)",
    "difficult": "the difficult tasks of the task map (low prompt uncertainty, low prediction probability)",
}


class SelectionError(ActiveITError, ValueError):
    """Tasks cannot be selected as asked (unknown strategy, missing scores, bad budget)."""


@dataclass(frozen=True)
class Selection:
    """The tasks a strategy picked in one round, in pick order, with the score behind each."""

    strategy: str
    round: int
    seed: int
    tasks: tuple[str, ...]
    scores: dict[str, float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy, "round": self.round, "seed": self.seed,
            "tasks": list(self.tasks), "scores": dict(self.scores),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Selection:
        return cls(
            strategy=data["strategy"], round=int(data["round"]), seed=int(data["seed"]),
            tasks=tuple(data["tasks"]), scores={k: float(v) for k, v in data.get("scores", {}).items()},
        )


def average_ranks(values: Sequence[float], descending: bool = False) -> list[float]:
    """1-based ranks of ``values`` (smallest first, or largest first), ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: -values[i] if descending else values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _combined_ranks(rows: Sequence[TaskScore], high_pp: bool) -> list[float]:
    """Rank of low PU plus rank of high (``high_pp``) or low PP: smaller is a better pick."""
    pu = average_ranks([r.pu for r in rows])
    pp = average_ranks([r.pp for r in rows], descending=high_pp)
    return [a + b for a, b in zip(pu, pp)]


# strategy -> (rows -> keys, higher key first?)
_SCORED: dict[str, tuple[Callable[[Sequence[TaskScore]], list[float]], bool]] = {
    "uncertainty": (lambda rows: [r.pu for r in rows], True),
    "ambiguous": (lambda rows: [r.pu for r in rows], True),
    "high-perplexity": (lambda rows: [r.perplexity for r in rows], True),
    "low-perplexity": (lambda rows: [r.perplexity for r in rows], False),
    "easy": (lambda rows: _combined_ranks(rows, high_pp=True), False),
    "difficult": (lambda rows: _combined_ranks(rows, high_pp=False), False),
}


def rank_tasks(
    strategy: str, candidates: Sequence[Task], scores: ScoreTable | None = None,
    seed: int = 0, round_index: int = 0,
) -> tuple[list[Task], dict[str, float]]:
    """All candidates in the strategy's pick order, and the score each was ordered by."""
    if strategy not in STRATEGIES:
        raise SelectionError(f"unknown strategy '{strategy}'; choose one of {', '.join(STRATEGIES)}")
    names = [t.name for t in candidates]
    if len(set(names)) != len(names):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        raise SelectionError(f"candidate tasks appear twice: {', '.join(duplicates)}")
    if strategy == "all":
        return list(candidates), {}
    if strategy == "random":
        ordered = sorted(candidates, key=lambda t: t.name)
        random.Random(f"random:{seed}:{round_index}").shuffle(ordered)
        return ordered, {}
    if scores is None:
        raise SelectionError(f"strategy '{strategy}' needs a score table (run the scorer first)")
    missing = [n for n in names if n not in scores]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise SelectionError(f"strategy '{strategy}': no scores for candidate task(s) {shown}")
    rows = [scores[n] for n in names]
    keys_of, descending = _SCORED[strategy]
    keys = keys_of(rows)
    order = sorted(range(len(rows)), key=lambda i: (-keys[i] if descending else keys[i], names[i]))
    return [candidates[i] for i in order], {names[i]: float(keys[i]) for i in order}


def _stratified(ordered: Sequence[Task], budget: int, ratio: float) -> list[Task]:
    """``round(budget * ratio)`` classification tasks and the rest generation, each group in
    pick order; when one group runs out the other fills the batch. Returned in pick order."""
    wanted = round(budget * ratio)
    classification = [t for t in ordered if t.is_classification]
    generation = [t for t in ordered if not t.is_classification]
    take_cls = min(wanted, len(classification))
    take_gen = min(budget - take_cls, len(generation))
    take_cls = min(budget - take_gen, len(classification))
    picked = {t.name for t in classification[:take_cls]} | {t.name for t in generation[:take_gen]}
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
    if strategy == "all":
        picked = ordered
    elif classification_ratio is None:
        picked = ordered[:budget]
    else:
        picked = _stratified(ordered, budget, classification_ratio)
    names = tuple(t.name for t in picked)
    return Selection(strategy, round_index, seed, names, {n: keys[n] for n in names if n in keys})

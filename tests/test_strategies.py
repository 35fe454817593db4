"""Selection strategies: orders, ranks, ties, budgets, stratification, seeding, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from activeit.errors import ActiveITError
from activeit.scoring.scores import ScoreTable, TaskScore
from activeit.selection.strategies import (
    NEEDS_SCORES,
    STRATEGIES,
    Selection,
    STRATEGY_REGISTRY,
    SelectionError,
    select_tasks,
    strategy_named,
)
from activeit.scoring.ifd import IFDTable, TaskIFD
from activeit.selection.diversity import TaskEmbeddings
from activeit.selection.taskmap import categorize
from activeit.data.tasks import Instance, Task

#            name  PU    PP   perplexity  classification
SCORES = [
    ("a", 0.30, 0.9, 1.5, True),
    ("b", 0.10, 0.8, 4.0, False),
    ("c", 0.20, 0.1, 9.0, True),
    ("d", 0.05, 0.2, 6.0, False),
    ("e", 0.20, 0.5, 2.0, False),
]


def make_task(name: str, is_classification: bool = False) -> Task:
    return Task(name, "Define.", (), (Instance("1", "x", ("y",)),), is_classification=is_classification)


@pytest.fixture()
def tasks() -> list[Task]:
    return [make_task(name, cls) for name, _, _, _, cls in SCORES]


@pytest.fixture()
def table() -> ScoreTable:
    return ScoreTable(tuple(TaskScore(n, pu, pp, ppl, 10, 10, cls, "X") for n, pu, pp, ppl, cls in SCORES))


#: What the IFD and embedding strategies read beside the PU table: IFDs, and unit vectors at angles.
IFD = IFDTable(tuple(TaskIFD(n, 0.5 + pu, 2, cls, "X") for n, pu, _, _, cls in SCORES))
EMBEDDINGS = TaskEmbeddings(tuple(n for n, *_ in SCORES),
                            np.array([[math.cos(a), math.sin(a)] for a in (0.0, 0.7, 1.9, 2.6, 3.1)]))


def inputs(strategy: str, table: ScoreTable) -> dict[str, object]:
    """The tables a strategy reads: its score table (PU's or IFD's) and the task embeddings."""
    entry = strategy_named(strategy)
    return {"scores": IFD if entry.needs_ifd else table, "embeddings": EMBEDDINGS}


def test_registry_is_the_one_table(tasks, table) -> None:
    assert STRATEGIES == tuple(STRATEGY_REGISTRY) and STRATEGIES[:2] == ("uncertainty", "random")
    assert NEEDS_SCORES == {name for name, entry in STRATEGY_REGISTRY.items() if entry.needs_scores}
    assert all(entry.description for entry in STRATEGY_REGISTRY.values())
    assert [name for name, entry in STRATEGY_REGISTRY.items() if entry.takes_all] == ["all"]


def test_easy_and_difficult_sum_average_ranks(tasks, table) -> None:
    # ranks: PU asc d1 b2 c3.5 e3.5 a5; PP desc a1 b2 e3 d4 c5; PP asc c1 d2 e3 b4 a5
    assert select_tasks("easy", tasks, 5, scores=table).scores == {"b": 4.0, "d": 5.0, "a": 6.0, "e": 6.5, "c": 8.5}
    assert select_tasks("difficult", tasks, 5, scores=table).scores == {"d": 3.0, "c": 4.5, "b": 6.0, "e": 6.5, "a": 10.0}


def test_picks_carry_their_task_map_category(tasks, table) -> None:
    categories = categorize(table)  # among every scored task, not only the candidates
    for strategy in STRATEGIES:
        if strategy_named(strategy).needs_ifd or strategy_named(strategy).needs_embeddings:
            continue  # an IFD table, or embeddings: tests/test_diversity.py
        selection = select_tasks(strategy, tasks[1:], 2, scores=table)
        assert selection.categories == {t: categories[t] for t in selection.tasks}, strategy
    assert select_tasks("random", tasks, 2).categories == {}  # picked without scores


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("uncertainty", ("a", "c", "e", "b", "d")),  # c and e tie on PU: by name
        ("ambiguous", ("a", "c", "e", "b", "d")),
        ("high-perplexity", ("c", "d", "b", "e", "a")),
        ("low-perplexity", ("a", "e", "b", "d", "c")),
        # ranks: PU asc d1 b2 c3.5 e3.5 a5; PP desc a1 b2 e3 d4 c5; PP asc c1 d2 e3 b4 a5
        ("easy", ("b", "d", "a", "e", "c")),  # sums b4 d5 a6 e6.5 c8.5
        ("difficult", ("d", "c", "b", "e", "a")),  # sums d3 c4.5 b6 e6.5 a10
    ],
)
def test_scored_orders(strategy: str, expected: tuple[str, ...], tasks, table) -> None:
    selection = select_tasks(strategy, tasks, 5, scores=table)
    assert selection.tasks == expected
    assert set(selection.scores) == set(expected)
    assert select_tasks(strategy, tasks, 2, scores=table).tasks == expected[:2]


def test_order_of_candidates_does_not_matter(tasks, table) -> None:
    for strategy in STRATEGIES:
        if strategy == "all":
            continue
        forward = select_tasks(strategy, tasks, 3, seed=4, **inputs(strategy, table))
        backward = select_tasks(strategy, list(reversed(tasks)), 3, seed=4, **inputs(strategy, table))
        assert forward.tasks == backward.tasks, strategy


def test_random_is_seeded(tasks) -> None:
    first = select_tasks("random", tasks, 3, seed=1)
    assert first == select_tasks("random", tasks, 3, seed=1)
    picks = {select_tasks("random", tasks, 3, seed=s).tasks for s in range(10)}
    assert len(picks) > 3
    assert select_tasks("random", tasks, 3, seed=1, round_index=2).round == 2
    assert first.scores == {}


def test_random_b_is_a_second_independent_stream(tasks) -> None:
    """The A/A control: seeded like random, but its own stream, so that over seeds and rounds
    its picks differ from random's about as often as two random draws do."""
    assert select_tasks("random-b", tasks, 2, seed=3) == select_tasks("random-b", tasks, 2, seed=3)
    draws = [(select_tasks("random", tasks, 2, seed=s, round_index=r).tasks,
              select_tasks("random-b", tasks, 2, seed=s, round_index=r).tasks) for s in range(20) for r in range(3)]
    differ = sum(a != b for a, b in draws)
    assert 0.6 * len(draws) < differ < len(draws)  # two independent draws of 2 of 5 tasks rarely agree
    assert select_tasks("random-b", tasks, 2, seed=3).scores == {}


def test_budget_larger_than_pool_zero_and_empty(tasks, table) -> None:
    assert len(select_tasks("uncertainty", tasks, 50, scores=table)) == 5
    assert select_tasks("uncertainty", tasks, 0, scores=table).tasks == ()
    for strategy in STRATEGIES:
        assert select_tasks(strategy, [], 3, **inputs(strategy, table)).tasks == ()
    with pytest.raises(SelectionError, match="non-negative"):
        select_tasks("random", tasks, -1)


def test_all_ignores_the_budget(tasks) -> None:
    assert select_tasks("all", tasks, 1).tasks == tuple(t.name for t in tasks)


def test_classification_ratio(tasks, table) -> None:
    # 2 classification (a, c), 3 generation (b, d, e)
    picked = select_tasks("uncertainty", tasks, 4, scores=table, classification_ratio=0.25)
    assert picked.tasks == ("a", "e", "b", "d")  # round(4 * .25) = 1 classification; pick order kept
    # wanting 4 classification of 2 available: the generation tasks fill in
    picked = select_tasks("uncertainty", tasks, 4, scores=table, classification_ratio=1.0)
    assert picked.tasks == ("a", "c", "e", "b")
    # no generation wanted but none left of classification after 2: fill with generation
    assert len(select_tasks("random", tasks, 5, classification_ratio=0.0)) == 5
    only_generation = select_tasks("low-perplexity", tasks, 2, scores=table, classification_ratio=0.0)
    assert only_generation.tasks == ("e", "b")
    with pytest.raises(SelectionError, match="classification_ratio"):
        select_tasks("random", tasks, 2, classification_ratio=1.5)


def test_missing_scores_are_clear_errors(tasks, table) -> None:
    assert NEEDS_SCORES == set(STRATEGIES) - {"random", "random-b", "all", "ifd", "diverse"}
    for strategy in NEEDS_SCORES:
        with pytest.raises(SelectionError, match="needs a score table"):
            select_tasks(strategy, tasks, 2)
    with pytest.raises(SelectionError, match="needs an IFD table"):
        select_tasks("ifd", tasks, 2, scores=table)
    with pytest.raises(SelectionError, match="task embeddings"):
        select_tasks("diverse", tasks, 2)
    partial = ScoreTable(table.rows[:2])
    with pytest.raises(ValueError, match="no scores for candidate task"):
        select_tasks("uncertainty", tasks, 2, scores=partial)
    with pytest.raises(ActiveITError, match="unknown strategy"):
        select_tasks("greedy", tasks, 2)
    with pytest.raises(SelectionError, match="appear twice"):
        select_tasks("random", tasks + tasks[:1], 2)


def test_selection_round_trip(tasks, table) -> None:
    selection = select_tasks("easy", tasks, 3, scores=table, seed=2, round_index=1)
    assert Selection.from_dict(selection.to_dict()) == selection
    assert selection.categories and selection.to_dict()["categories"] == selection.categories
    assert (selection.strategy, selection.round, selection.seed) == ("easy", 1, 2)

"""Task map: rank-based categories and the PNG."""

from __future__ import annotations

import random
from pathlib import Path

from activeit.scoring.scores import ScoreTable, TaskScore
from activeit.selection.taskmap import CATEGORIES, _labelled, categorize, plot_task_map

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def table_of(points: list[tuple[str, float, float]]) -> ScoreTable:
    return ScoreTable(tuple(TaskScore(n, pu, pp, 1 / max(pp, 1e-9), 10, 10, False, "X") for n, pu, pp in points))


def test_categories_are_rank_based() -> None:
    table = table_of([
        ("a", 0.9, 0.5), ("b", 0.8, 0.1), ("c", 0.1, 0.9),
        ("d", 0.2, 0.2), ("e", 0.05, 0.6), ("f", 0.01, 0.3),
    ])
    # top third by PU: a, b; the rest split at their PP median: c, e easy; f, d difficult
    assert categorize(table) == {"a": "ambiguous", "b": "ambiguous", "c": "easy",
                                 "d": "difficult", "e": "easy", "f": "difficult"}
    # scaling the scores does not change the categories (no fixed thresholds)
    scaled = table_of([(r.task, r.pu * 1e-4, r.pp * 1e-3) for r in table.rows])
    assert categorize(scaled) == categorize(table)


def test_categories_small_and_tied() -> None:
    assert categorize(table_of([])) == {}
    assert categorize(table_of([("x", 0.1, 0.5)])) == {"x": "easy"}
    tied = table_of([(n, 0.1, 0.5) for n in "dcba"])
    assert categorize(tied) == {"a": "ambiguous", "b": "easy", "c": "easy", "d": "difficult"}


def test_plot_writes_a_png(tmp_path: Path) -> None:
    rng = random.Random(0)
    table = table_of([(f"task{i:03d}_some_long_dataset_name_generation", rng.random() ** 3 / 20, rng.random())
                      for i in range(60)])
    selected = [r.task for r in sorted(table.rows, key=lambda r: -r.pu)[:6]]
    path = plot_task_map(table, tmp_path / "sub" / "map.png", selected=selected, title="test map")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    labelled = _labelled(table, set(selected))
    assert set(selected) <= set(labelled) and len(labelled) <= 16
    assert set(categorize(table).values()) == set(CATEGORIES)


def test_plot_edge_cases(tmp_path: Path) -> None:
    assert plot_task_map(table_of([]), tmp_path / "empty.png").read_bytes().startswith(PNG_MAGIC)
    zeros = table_of([("a", 0.0, 0.0), ("b", 0.0, 0.0)])
    assert plot_task_map(zeros, tmp_path / "zeros.png", selected=["a", "zzz"]).exists()

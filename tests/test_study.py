"""The statistics of a study on hand-made records: every number checked by hand."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest

from activeit.errors import ActiveITError
from activeit.study.plots import plot_learning_curve, plot_overlap, shared_curves
from activeit.study.report import study_markdown
from activeit.study.statistics import (
    NO_SPREAD,
    ONE_SEED,
    RoundRecord,
    RunRecord,
    Study,
    jaccard,
    paired_difference,
    summarize,
)

#: ROUGE-L per (strategy, seed) at rounds 0, 1, 2 with 2, 4, 6 training tasks.
SCORES = {
    ("random", 0): (10.0, 12.0, 14.0),
    ("random", 1): (11.0, 13.0, 13.0),
    ("random", 2): (12.0, 11.0, 15.0),
    ("uncertainty", 0): (10.0, 15.0, 16.0),
    ("uncertainty", 1): (11.0, 12.0, 17.0),
    ("uncertainty", 2): (12.0, 14.0, 15.0),
}
PICKS = {
    "random": [("a", "b"), ("c", "d"), ("e", "f")],
    "uncertainty": [("a", "b"), ("c", "x"), ("y", "z")],
}


def record(strategy: str, seed: int) -> RunRecord:
    rounds, tasks = [], ()
    for r, value in enumerate(SCORES[strategy, seed]):
        tasks = (*tasks, *PICKS[strategy][r])
        categories = {t: ("ambiguous" if t != "z" else "easy") for t in PICKS[strategy][r]} if strategy != "random" and r else {}
        rounds.append(RoundRecord(r, tasks, {"rougeL": value, "exact_match": value / 2}, categories))
    return RunRecord(strategy, seed, tuple(rounds), base={"rougeL": 5.0 + seed, "exact_match": 1.0})


@pytest.fixture
def study() -> Study:
    return Study(tuple(record(s, seed) for s, seed in SCORES))


def test_mean_and_sample_std(study: Study) -> None:
    summary = study.summary("random", 1)
    assert summary.mean == pytest.approx(12.0) and summary.std == pytest.approx(1.0) and summary.count == 3
    assert math.isnan(summarize([3.0]).std)
    with pytest.raises(ActiveITError):
        summarize([])


def test_paired_difference_interval_and_wins(study: Study) -> None:
    delta = study.difference("uncertainty", 1)  # per seed: +3, -1, +3
    assert delta.mean == pytest.approx(5 / 3)
    half = 4.302652729911275 * math.sqrt(16 / 3) / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert (delta.low, delta.high) == (pytest.approx(5 / 3 - half), pytest.approx(5 / 3 + half))
    assert (delta.wins, delta.count) == (2, 3)
    assert study.difference("random", 1) is None
    assert study.difference("uncertainty", 0).wins == 0  # ties are not wins
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same = paired_difference({0: 3.0, 1: 4.0}, {0: 1.5, 1: 2.5})  # equal differences: no spread
    # no spread: no interval (a zero-width one would claim certainty), said why
    assert (same.mean, same.low, same.high, same.reason) == (pytest.approx(1.5), None, None, NO_SPREAD)
    one = paired_difference({0: 2.0}, {0: 1.0, 1: 5.0})
    assert one.mean == 1.0 and one.count == 1 and one.low is None and one.reason == ONE_SEED


def test_budget_to_match(study: Study) -> None:
    # random's mean at its largest budget (6 tasks) is 14.0; uncertainty's means are 11, 13.67, 16
    assert study.budget_to_match("uncertainty") == 6
    assert study.budget_to_match("random") == 6
    better = Study(tuple(
        RunRecord(r.strategy, r.seed, tuple(
            RoundRecord(x.round, x.training_tasks, {"rougeL": x.metrics["rougeL"] + (2.0 if r.strategy != "random" else 0)})
            for x in r.rounds)) for r in study.runs))
    assert better.budget_to_match("uncertainty") == 4  # 15.67 >= 14 already at 4 tasks
    worse = Study(tuple(r for r in study.runs if r.strategy == "uncertainty"))
    assert worse.budget_to_match("uncertainty") is None  # no random to match


def test_jaccard_overlap_per_round(study: Study) -> None:
    assert jaccard("ab", "bc") == pytest.approx(1 / 3) and jaccard((), ()) == 1.0
    rows = {row["round"]: row for row in study.overlap()}
    assert rows[0]["jaccard"] == 1.0  # the shared round-0 set
    assert rows[1]["jaccard"] == pytest.approx(3 / 5)  # {a,b,c,d} vs {a,b,c,x}
    assert rows[2]["jaccard"] == pytest.approx(3 / 9)
    assert rows[2]["seeds"] == 3 and (rows[2]["first"], rows[2]["second"]) == ("random", "uncertainty")


def test_category_shares_of_the_picks(study: Study) -> None:
    shares = study.category_shares()
    assert set(shares) == {"uncertainty"}  # random picked without scores
    assert shares["uncertainty"] == {"ambiguous": 0.75, "easy": 0.25, "difficult": 0.0}  # c, x, y ambiguous; z easy


def test_base_model_and_tables(study: Study) -> None:
    assert study.base().mean == pytest.approx(6.0)  # 5, 6, 7 over the seeds
    assert study.strategies == ["random", "uncertainty"] and study.seeds == [0, 1, 2]
    rows = study.rows()
    assert len(rows) == 6 * 3 and rows[0] == {
        "strategy": "random", "seed": 0, "round": 0, "training_tasks": 2, "rougeL": 10.0,
        "rougeL_classification": None, "rougeL_generation": None, "exact_match": 5.0, "loglik": None,
    }
    text = study_markdown(study, "a study")
    assert "| base model (untuned) | – | 0 | 6.00 ± 1.00 |" in text
    assert "| uncertainty | 1 | 4 | 13.67 ± 1.53 |" in text
    assert "+1.67 [" in text and "| 2/3 |" in text
    assert "- uncertainty: 6 tasks (random: 6)" in text
    assert "| random / uncertainty | 1.00 | 0.60 | 0.33 |" in text
    assert "| uncertainty | 75% | 25% | 0% |" in text


def test_a_study_holds_one_run_per_pair() -> None:
    with pytest.raises(ActiveITError, match="one run per"):
        Study((record("random", 0), record("random", 0)))
    with pytest.raises(ActiveITError, match="at least one run"):
        Study(())


def test_plots_are_pngs(study: Study, tmp_path: Path) -> None:
    for plot in (plot_learning_curve, plot_overlap):
        path = plot(study, tmp_path / f"{plot.__name__}.png", "a study")
        assert path.read_bytes()[:4] == b"\x89PNG" and path.stat().st_size > 10_000


def test_strategies_with_the_same_curve_share_one_line(study: Study) -> None:
    """A strategy that picked as another on every seed (say uncertainty-diverse whose filter
    never fired) is drawn as one line naming both, not hidden under the other."""
    twins = tuple(RunRecord("uncertainty-diverse", run.seed, run.rounds, run.base) for run in study.runs
                  if run.strategy == "uncertainty")
    groups = shared_curves(Study((*study.runs, *twins)))
    assert sorted(sorted(names) for _, names in groups) == [["random"], ["uncertainty", "uncertainty-diverse"]]
    points = dict((tuple(names), curve) for curve, names in groups)[("uncertainty", "uncertainty-diverse")]
    assert [(tasks, round(mean, 6)) for tasks, mean, _ in points] == [(2, 11.0), (4, round(41 / 3, 6)), (6, 16.0)]
    assert len(shared_curves(study)) == 2

"""The paired bootstrap, the probability of improvement, the minimum detectable effect and
the seeds needed, on hand-made records whose answers are known (issue 19, item 3)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats

from activeit.study.report import study_markdown, verdict_lines
from activeit.study.statistics import (
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    NO_SPREAD,
    ONE_SEED,
    PairedScores,
    RoundRecord,
    RunRecord,
    Study,
    minimum_detectable_effect,
    paired_bootstrap,
    power_analysis,
    seeds_needed,
)


def _power_by_hand(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Two-sided paired t power straight from the noncentral t (both tails by cdf / sf)."""
    df, nc = n - 1, effect * math.sqrt(n) / sd
    c = stats.t.ppf(1 - alpha / 2, df)
    return stats.nct.sf(c, df, nc) + stats.nct.cdf(-c, df, nc)


def _seed_scores(values: dict[int, float]) -> PairedScores:
    seeds = tuple(sorted(values))
    return PairedScores(seeds, tuple((values[s],) for s in seeds))


def _run(strategy: str, seed: int, rouge: float, tasks: dict[str, float] | None = None) -> RunRecord:
    """A run with round 0 (shared: ROUGE-L 10) and round 1 (``rouge``, per-task ``tasks``)."""
    rounds = (RoundRecord(0, ("a", "b"), {"rougeL": 10.0}, task_metrics={"t1": 10.0, "t2": 10.0} if tasks else {}),
              RoundRecord(1, ("a", "b", f"{strategy}{seed}"), {"rougeL": rouge}, task_metrics=tasks or {}))
    return RunRecord(strategy, seed, rounds)


def _study(random: dict[int, float], other: dict[int, float]) -> Study:
    return Study(tuple([_run("random", s, v) for s, v in random.items()]
                       + [_run("uncertainty", s, v) for s, v in other.items()]))


# ---------------------------------------------------------------- power, MDE, seeds needed


def _mde_by_hand(sd: float, n: int) -> float:
    """METHOD.md: MDE(n) = (t_{0.975, n-1} + t_{0.8, n-1}) * s_d / sqrt(n)."""
    return (stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd / math.sqrt(n)


@pytest.mark.parametrize(("sd", "n"), [(1.0, 2), (2.0, 3), (5.2, 3), (3.0, 5), (1.0, 30)])
def test_minimum_detectable_effect_is_method_md_s_formula(sd: float, n: int) -> None:
    assert minimum_detectable_effect(sd, n) == pytest.approx(_mde_by_hand(sd, n), rel=1e-12)


def test_the_formula_gives_about_80_percent_power() -> None:
    # the noncentral t's exact power at MDE(n): close to 0.8 from 5 seeds on (the formula's approximation)
    for n in (5, 10, 30):
        mde, c = minimum_detectable_effect(1.0, n), stats.t.ppf(0.975, n - 1)
        power = stats.nct.sf(c, n - 1, mde * math.sqrt(n))
        assert power == pytest.approx(0.8, abs=0.03)


def test_seeds_needed_matches_the_textbook_sample_sizes() -> None:
    # G*Power, paired t, two-sided alpha 0.05, power 0.8: dz = 1 needs 10 pairs, dz = 0.5 needs 34
    assert seeds_needed(1.0, 1.0) == 10 and seeds_needed(1.0, 2.0) == 34


@pytest.mark.parametrize(("effect", "sd"), [(1.0, 5.2), (2.0, 5.2), (0.5, 0.3), (3.0, 1.0)])
def test_seeds_needed_is_the_smallest_n_whose_mde_is_the_effect(effect: float, sd: float) -> None:
    n = seeds_needed(effect, sd)
    assert n >= 2 and _mde_by_hand(sd, n) <= effect
    if n > 2:
        assert _mde_by_hand(sd, n - 1) > effect


def test_seeds_needed_beyond_the_search_is_none() -> None:
    assert seeds_needed(1e-4, 100.0, limit=1000) is None


def test_power_analysis_of_a_known_sd() -> None:
    analysis = power_analysis([0.0, 2.0, 4.0])  # sd exactly 2 over 3 seeds
    assert analysis.sd == pytest.approx(2.0) and analysis.mde == pytest.approx(_mde_by_hand(2.0, 3))
    assert analysis.seeds_needed == {1.0: 34, 2.0: 10} and analysis.reason == ""


def test_power_is_not_computable_with_one_seed_or_no_spread() -> None:
    one = power_analysis([1.5])
    assert (one.sd, one.mde, one.reason) == (None, None, ONE_SEED) and set(one.seeds_needed.values()) == {None}
    flat = power_analysis([1.0, 1.0, 1.0])
    assert (flat.sd, flat.mde, flat.reason) == (0.0, None, NO_SPREAD) and set(flat.seeds_needed.values()) == {None}


# ---------------------------------------------------------------- probability of improvement, bootstrap


def _bootstrap_by_hand(rows: list[list[float]], resamples: int = 4000, seed: int = 7) -> np.ndarray:
    """The two-level bootstrap written as loops: seeds with replacement, then each drawn seed's tasks."""
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(rows), len(rows))
        means.append(np.mean([np.mean(rng.choice(rows[s], len(rows[s]))) for s in drawn]))
    return np.array(means)


def test_seed_bootstrap_without_task_scores_resamples_the_seeds() -> None:
    d = {0: 2.0, 1: 4.0, 2: 0.0, 3: -1.0, 4: 3.5}
    boot = paired_bootstrap(_seed_scores(d))
    by_hand = _bootstrap_by_hand([[v] for v in d.values()], resamples=BOOTSTRAP_RESAMPLES)
    assert boot.low == pytest.approx(np.quantile(by_hand, 0.025), abs=0.15)
    assert boot.high == pytest.approx(np.quantile(by_hand, 0.975), abs=0.15)
    assert boot.improvement == pytest.approx(np.mean(by_hand > 0) + 0.5 * np.mean(by_hand == 0), abs=0.02)
    assert boot.estimate == pytest.approx(1.7) and (boot.seeds, boot.tasks) == (5, 0)
    assert paired_bootstrap(_seed_scores(d)) == boot  # seeded: the same records, the same interval
    assert paired_bootstrap(_seed_scores(d), seed=1) != boot


def test_bootstrap_resamples_tasks_within_the_drawn_seeds() -> None:
    # seeds with test tasks of their own, of different counts: the two-level loop, by hand
    rows = [[3.0, -1.0, 2.0], [1.0, 1.0], [0.0, -2.0, 4.0, 1.0], [2.0, 2.5, -0.5]]
    boot = paired_bootstrap(PairedScores((0, 1, 2, 3), tuple(tuple(r) for r in rows)))
    by_hand = _bootstrap_by_hand(rows, resamples=BOOTSTRAP_RESAMPLES)
    assert boot.estimate == pytest.approx(np.mean([np.mean(r) for r in rows])) and boot.tasks == 4
    assert boot.low == pytest.approx(np.quantile(by_hand, 0.025), abs=0.1)
    assert boot.high == pytest.approx(np.quantile(by_hand, 0.975), abs=0.1)
    assert boot.improvement == pytest.approx(np.mean(by_hand > 0), abs=0.02)
    # resampling the tasks within seeds widens the interval over the seed means' alone
    means_only = paired_bootstrap(PairedScores((0, 1, 2, 3), tuple((float(np.mean(r)),) for r in rows)))
    assert boot.high - boot.low > means_only.high - means_only.low


def test_bootstrap_of_constant_differences_is_the_constant() -> None:
    boot = paired_bootstrap(_seed_scores({0: 1.5, 1: 1.5, 2: 1.5}))
    assert (boot.estimate, boot.low, boot.high, boot.improvement, boot.reason) == (1.5, 1.5, 1.5, 1.0, "")
    assert paired_bootstrap(_seed_scores({0: 0.0, 1: 0.0})).improvement == 0.5  # no difference: a tie


def test_bootstrap_is_not_computable_with_one_seed() -> None:
    boot = paired_bootstrap(PairedScores((0,), ((1.0, 3.0),)))
    assert (boot.estimate, boot.improvement, boot.low, boot.high, boot.reason) == (2.0, None, None, None, ONE_SEED)


# ---------------------------------------------------------------- pairing by seed


#: Seeds far apart (a seed's round-0 set and data order move both strategies alike), the
#: strategy about one point above random in every seed.
RANDOM = {0: 10.0, 1: 40.0, 2: 70.0, 3: 25.0, 4: 55.0}
GAIN = {0: 0.9, 1: 1.1, 2: 1.0, 3: 0.95, 4: 1.05}


def test_pairing_by_seed_sees_a_small_steady_gain_through_a_large_seed_spread() -> None:
    other = {s: RANDOM[s] + GAIN[s] for s in RANDOM} | {7: 500.0}  # seed 7 has no random run: left out
    study = _study(RANDOM, other)
    found = study.comparison("uncertainty", 1)
    assert found.difference.count == 5 and found.bootstrap.seeds == 5
    assert found.difference.mean == pytest.approx(1.0)
    assert 0 < found.difference.low < 1 < found.difference.high < 2  # paired t interval
    assert 0.85 < found.bootstrap.low < 1 < found.bootstrap.high < 1.15  # paired bootstrap
    assert found.bootstrap.improvement == 1.0
    assert found.power.sd == pytest.approx(stats.tstd(list(GAIN.values()))) and found.power.mde < 0.2
    assert found.power.seeds_needed[1.0] == 2
    # the same numbers unpaired (strategy seeds and random seeds resampled apart) span zero:
    # these records tell a study that pairs from one that does not
    unpaired = stats.bootstrap((np.array([other[s] for s in RANDOM]), np.array(list(RANDOM.values()))),
                               lambda x, y, axis: x.mean(axis) - y.mean(axis), method="percentile",
                               random_state=np.random.default_rng(0)).confidence_interval
    assert unpaired.low < 0 < unpaired.high
    assert stats.ttest_ind([other[s] for s in RANDOM], list(RANDOM.values())).confidence_interval().low < 0


def test_pairing_by_seed_and_task_at_the_task_level() -> None:
    # per-task scores vary by 60 points over tasks and seeds; the strategy is 1 point up on each
    rng = np.random.default_rng(3)
    runs = []
    for seed in range(4):
        base = {f"t{i}": float(v) for i, v in enumerate(rng.uniform(10, 70, 6))}
        mine = {t: v + 1.0 + 0.1 * ((seed + i) % 3 - 1) for i, (t, v) in enumerate(base.items())}
        runs += [_run("random", seed, float(np.mean(list(base.values()))), base),
                 _run("uncertainty", seed, float(np.mean(list(mine.values()))), mine)]
    study = Study(tuple(runs))
    scores = study.paired_scores("uncertainty", 1)
    assert scores.seeds == (0, 1, 2, 3) and all(len(row) == 6 for row in scores.differences)
    found = study.comparison("uncertainty", 1)
    assert found.bootstrap.tasks == 6 and found.bootstrap.estimate == pytest.approx(found.difference.mean)
    assert 0.85 < found.bootstrap.low < found.bootstrap.high < 1.15 and found.bootstrap.improvement == 1.0
    # unpaired over the same cells (all strategy scores against all random scores) spans zero
    mine = np.array([r.rounds[1].task_metrics[t] for r in runs if r.strategy == "uncertainty" for t in sorted(r.rounds[1].task_metrics)])
    theirs = np.array([r.rounds[1].task_metrics[t] for r in runs if r.strategy == "random" for t in sorted(r.rounds[1].task_metrics)])
    assert stats.ttest_ind(mine, theirs).confidence_interval().low < 0


def test_per_task_pairing_needs_every_pair_to_have_task_scores() -> None:
    tasks = {"t1": 20.0, "t2": 30.0, "t3": 40.0}
    runs = [_run("random", 0, 30.0, tasks), _run("uncertainty", 0, 32.0, {t: v + 2 for t, v in tasks.items()}),
            _run("random", 1, 31.0, dict(tasks)), _run("uncertainty", 1, 30.0, {t: v - 1 for t, v in tasks.items()})]
    scores = Study(tuple(runs)).paired_scores("uncertainty", 1)
    assert scores == PairedScores((0, 1), ((2.0, 2.0, 2.0), (-1.0, -1.0, -1.0)))
    old = Study(tuple([*runs[:3], _run("uncertainty", 1, 33.0)]))  # one run logged without per-task scores
    assert old.paired_scores("uncertainty", 1) == PairedScores((0, 1), ((2.0,), (2.0,)))  # the headline's
    assert Study(tuple(runs)).paired_scores("random", 1) is None


def test_test_tasks_held_out_per_seed_are_resampled_within_their_seed() -> None:
    # each seed has test tasks of its own (a pool without a test split): each drawn seed
    # resamples its own tasks' differences
    runs = [_run("random", 0, 20.0, {"a": 10.0, "b": 30.0}), _run("uncertainty", 0, 21.0, {"a": 13.0, "b": 29.0}),
            _run("random", 1, 40.0, {"c": 40.0, "d": 40.0}), _run("uncertainty", 1, 41.0, {"c": 41.0, "d": 41.0}),
            _run("random", 2, 30.0, {"a": 30.0, "e": 30.0}), _run("uncertainty", 2, 30.0, {"a": 30.0, "e": 30.0})]
    study = Study(tuple(runs))
    scores = study.paired_scores("uncertainty", 1)
    assert scores == PairedScores((0, 1, 2), ((3.0, -1.0), (1.0, 1.0), (0.0, 0.0)))
    boot = study.comparison("uncertainty", 1).bootstrap
    assert boot.tasks == 2 and boot.estimate == pytest.approx(2 / 3)  # seed means 1, 1, 0
    by_hand = _bootstrap_by_hand([[3.0, -1.0], [1.0, 1.0], [0.0, 0.0]], resamples=BOOTSTRAP_RESAMPLES)
    assert boot.low == pytest.approx(np.quantile(by_hand, 0.025), abs=0.1)
    assert boot.high == pytest.approx(np.quantile(by_hand, 0.975), abs=0.1)
    assert boot.improvement == pytest.approx(np.mean(by_hand > 0) + 0.5 * np.mean(by_hand == 0), abs=0.02)


# ---------------------------------------------------------------- study.md and the last lines


def test_study_md_says_what_the_study_can_detect() -> None:
    study = _study({0: 20.0, 1: 30.0, 2: 40.0}, {0: 20.0, 1: 32.0, 2: 44.0})  # differences 0, 2, 4: sd 2
    text = study_markdown(study, "a study")
    mde = minimum_detectable_effect(2.0, 3)
    assert "## Paired statistics and power (vs random)" in text
    assert f"This study can detect differences of {mde:.2f} ROUGE-L points or more at 80% power" in text
    assert "34 seeds would be needed for 1 point, 10 seeds for 2 points" in text
    row = next(line for line in text.splitlines() if line.startswith("| uncertainty | 1 | 3 | 3 | seeds only |"))
    assert f"| 2.00 | {mde:.2f} | 34 | 10 |" in row
    # round 0 is shared: no spread, said in words
    row0 = next(line for line in text.splitlines() if line.startswith("| uncertainty | 0 | 2 | 3 | seeds only |"))
    assert row0.endswith(f"| n/c | n/c | n/c | n/c: {NO_SPREAD} |")
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert verdict_lines(study) == [next(line[2:] for line in text.splitlines() if line.startswith("- uncertainty vs"))]


def test_one_seed_says_not_computable_without_nan() -> None:
    study = _study({0: 20.0}, {0: 23.0})
    text = study_markdown(study, "one seed")
    (line,) = verdict_lines(study)
    assert "Δ = +3.00 ROUGE-L." in line and "P(uncertainty > random)" not in line
    assert f"Its paired bootstrap interval is not computable: {ONE_SEED}." in line
    assert f"What this study can detect is not computable: {ONE_SEED}." in line
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_the_last_console_lines_are_the_verdicts(capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.console import print_study_verdict

    study = _study({0: 20.0, 1: 30.0, 2: 40.0}, {0: 20.0, 1: 32.0, 2: 44.0})
    print_study_verdict(study)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Paired statistics") and out[1] == f"- {verdict_lines(study)[0]}"
    print_study_verdict(Study((_run("random", 0, 20.0),)))  # nothing to compare: silent
    assert capsys.readouterr().out == ""


def test_the_parent_run_metrics_leave_out_what_is_not_computable() -> None:
    from pipelines.study import comparison_metrics, study_series

    study = _study({0: 20.0, 1: 30.0, 2: 40.0}, {0: 20.0, 1: 32.0, 2: 44.0})
    found = comparison_metrics(study.comparison("uncertainty", 1))
    prefix = "vs_random/uncertainty/"
    assert found[prefix + "delta"] == pytest.approx(2.0) and found[prefix + "sd"] == pytest.approx(2.0)
    assert found[prefix + "mde"] == pytest.approx(minimum_detectable_effect(2.0, 3))
    assert (found[prefix + "seeds_for_1pt"], found[prefix + "seeds_for_2pt"]) == (34.0, 10.0)
    assert {prefix + k for k in ("bootstrap_low", "bootstrap_high", "p_improvement", "t_low", "t_high")} <= set(found)
    shared = comparison_metrics(study.comparison("uncertainty", 0))  # round 0: no spread
    assert prefix + "mde" not in shared and prefix + "seeds_for_1pt" not in shared and shared[prefix + "delta"] == 0.0
    series = study_series(study)
    assert series["rougeL_random"] == {2: 10.0, 3: 30.0} and series[prefix + "delta"] == {2: 0.0, 3: 2.0}
    assert all(math.isfinite(v) for points in series.values() for v in points.values())

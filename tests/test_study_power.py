"""The paired interval, the probability of improvement, the minimum detectable effect, the
seeds needed, the variance split and the calibration, on hand-made records whose answers are
known (issues 19 and 31)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from scipy import stats

from activeit.errors import ActiveITError
from activeit.study.report import study_markdown, verdict_lines
from activeit.study.calibration import (
    COVERAGE_GOAL,
    FALSE_CLAIM_GOAL,
    calibrate,
    centred_rows,
    synthetic_seeds,
)
from activeit.study.statistics import (
    NO_SPREAD,
    ONE_SEED,
    PairedDifference,
    PairedScores,
    RoundRecord,
    RunRecord,
    Study,
    infer_difference,
    minimum_detectable_effect,
    power_analysis,
    seeds_needed,
    variance_split,
)


def _power_by_hand(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Two-sided paired t power straight from the noncentral t (both tails by cdf / sf)."""
    df, nc = n - 1, effect * math.sqrt(n) / sd
    c = stats.t.ppf(1 - alpha / 2, df)
    return stats.nct.sf(c, df, nc) + stats.nct.cdf(-c, df, nc)


def _run(strategy: str, seed: int, rouge: float, tasks: dict[str, float] | None = None) -> RunRecord:
    """A run with round 0 (shared: ROUGE-L 10) and round 1 (``rouge``, per-task ``tasks``)."""
    rounds = (RoundRecord(0, ("a", "b"), {"rougeL": 10.0},
                          task_metrics={"rougeL": {"t1": 10.0, "t2": 10.0}} if tasks else {}),
              RoundRecord(1, ("a", "b", f"{strategy}{seed}"), {"rougeL": rouge},
                          task_metrics={"rougeL": tasks} if tasks else {}))
    return RunRecord(strategy, seed, rounds)


def _study(random: dict[int, float], other: dict[int, float]) -> Study:
    return Study(tuple([_run("random", s, v) for s, v in random.items()]
                       + [_run("uncertainty", s, v) for s, v in other.items()]))


# ---------------------------------------------------------------- power, MDE, seeds needed


def _mde_by_hand(sd: float, n: int) -> float:
    """docs/METHOD.md, "Study statistics": MDE(n) = (t_{0.975, n-1} + t_{0.8, n-1}) * s_d / sqrt(n)."""
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


# ---------------------------------------------------------------- interval and probability of improvement


def test_the_interval_is_the_student_t_one_and_p_is_the_predictive() -> None:
    deltas = [1.0, 4.0, -2.0, 3.0]
    d = infer_difference(deltas)
    n, mean, sd = 4, float(np.mean(deltas)), float(np.std(deltas, ddof=1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert (d.mean, d.low, d.high, d.wins, d.count) == pytest.approx((mean, mean - half, mean + half, 3, 4))
    assert (d.low, d.high) == pytest.approx(tuple(stats.ttest_1samp(deltas, 0).confidence_interval(0.95)))
    # the posterior predictive of a new seed's difference, by Monte Carlo from the normal model's
    # posterior (sigma^2 ~ scaled inverse chi^2, mu | sigma ~ normal, d_new | mu, sigma ~ normal)
    rng = np.random.default_rng(0)
    sigma2 = (n - 1) * sd**2 / rng.chisquare(n - 1, 400_000)
    mu = rng.normal(mean, np.sqrt(sigma2 / n))
    new = rng.normal(mu, np.sqrt(sigma2))
    assert d.improvement == pytest.approx(float(np.mean(new > 0)), abs=0.005)
    assert not d.resolved and d.reason == ""


def test_p_improvement_does_not_run_to_one_when_strategies_trade_wins() -> None:
    # a mean of +1 with sd 2 over 1000 seeds: the mean is surely positive, a new seed is not
    rng = np.random.default_rng(1)
    deltas = list(1.0 + 2.0 * rng.standard_normal(1000))
    d = infer_difference(deltas)
    assert d.resolved and d.low > 0
    assert d.improvement == pytest.approx(stats.norm.cdf(np.mean(deltas) / np.std(deltas, ddof=1)), abs=0.01)
    assert 0.6 < d.improvement < 0.8


def test_the_smoke_studys_three_seeds_give_no_confident_verdict() -> None:
    # the 3-seed smoke study's per-seed differences (round 2): the bootstrap said P = 0.98
    d = infer_difference([50.0, 11.11, 0.0])
    assert d.low < 0 < d.high and not d.resolved
    assert d.improvement < 0.95


def test_not_computable_with_one_seed_or_no_spread() -> None:
    one = infer_difference([2.0])
    assert (one.low, one.high, one.improvement, one.reason) == (None, None, None, ONE_SEED)
    flat = infer_difference([1.5, 1.5, 1.5])
    assert (flat.mean, flat.low, flat.improvement, flat.sd, flat.reason) == (1.5, None, None, 0.0, NO_SPREAD)


# ---------------------------------------------------------------- where the spread comes from


def test_variance_split_of_a_crossed_table_by_hand() -> None:
    # 3 seeds x the same 4 test tasks
    table = [[1.0, 3.0, 2.0, 6.0], [4.0, 2.0, 5.0, 5.0], [0.0, 1.0, -1.0, 4.0]]
    split = variance_split(PairedScores((0, 1, 2), tuple(map(tuple, table)), (("a", "b", "c", "d"),) * 3))
    # by hand: seed means 3, 4, 1 (grand 8/3); task means 5/3, 2, 2, 5
    seed_means, task_means, grand = [3.0, 4.0, 1.0], [5 / 3, 2.0, 2.0, 5.0], 8 / 3
    total = sum((m - grand) ** 2 for m in seed_means) / 2  # 14/3
    residual = sum((table[s][t] - seed_means[s] - task_means[t] + grand) ** 2 for s in range(3) for t in range(4))
    test = residual / ((3 - 1) * (4 - 1)) / 4
    assert (split.seeds, split.tasks, split.design) == (3, 4, "crossed")
    assert split.total == pytest.approx(total) and split.test == pytest.approx(test)
    assert split.between == pytest.approx(total - test) and split.test_share == pytest.approx(test / total)
    assert split.sd() == pytest.approx(math.sqrt(total))  # the observed sd at today's test sample
    assert split.sd(4) == pytest.approx(math.sqrt(total - test + test / 4))
    assert split.mde(6) == pytest.approx(minimum_detectable_effect(math.sqrt(total), 6))
    assert split.mde(3, math.inf) == pytest.approx(minimum_detectable_effect(math.sqrt(total - test), 3))


def test_variance_split_of_nested_tasks_by_hand() -> None:
    # each seed has test tasks of its own: the within-seed variance over its tasks, over T_s
    rows = [(1.0, 3.0), (4.0, 2.0, 6.0), (0.0, 2.0)]
    split = variance_split(PairedScores((0, 1, 2), rows, (("a", "b"), ("c", "d", "e"), ("a", "f"))))
    test = (np.var(rows[0], ddof=1) / 2 + np.var(rows[1], ddof=1) / 3 + np.var(rows[2], ddof=1) / 2) / 3
    assert split.design == "nested" and split.test_estimate == pytest.approx(test)
    assert split.total == pytest.approx(np.var([2.0, 4.0, 1.0], ddof=1))


def test_a_test_sample_that_explains_everything_is_capped() -> None:
    # the same mean in every seed, noisy tasks: all of the (tiny) spread is the test sample's
    split = variance_split(PairedScores((0, 1), ((0.0, 10.0), (10.0, 0.1)), (("a", "b"),) * 2))
    assert split.test_share == 1.0 and split.between == 0.0 and split.sd() == pytest.approx(math.sqrt(split.total))


def test_no_split_without_per_task_scores() -> None:
    assert variance_split(PairedScores((0, 1, 2), ((1.0,), (2.0,), (3.0,)))) is None
    assert variance_split(PairedScores((0,), ((1.0, 2.0),), (("a", "b"),))) is None


# ---------------------------------------------------------------- calibration


def _normal_scores(seeds: int, tasks: int, effect: float, rng: np.random.Generator) -> PairedScores:
    """A study whose per-seed differences are seed effect + task noise around ``effect``."""
    rows = [tuple(effect + rng.normal(0, 3) + rng.normal(0, 4, tasks)) for _ in range(seeds)]
    return PairedScores(tuple(range(seeds)), tuple(rows), (tuple(f"t{i}" for i in range(tasks)),) * seeds)


def test_calibration_counts_coverage_false_claims_and_power_itself() -> None:
    """The benchmark's numbers against the same resampling counted here, one study at a time."""
    scores = _normal_scores(6, 5, 7.0, np.random.default_rng(2))
    found = calibrate(scores, seed_counts=(3, 5), studies=400, shift=4.0, seed=3)
    rows = centred_rows(scores)
    assert np.mean([row.mean() for row in rows]) == pytest.approx(0.0)  # the null's truth is 0
    rng = np.random.default_rng(3)
    for result in found:
        null = synthetic_seeds(rows, result.seeds, 400, rng)
        shifted = synthetic_seeds(rows, result.seeds, 400, rng) + 4.0
        inferred = [infer_difference(list(v)) for v in null]
        assert result.coverage == pytest.approx(np.mean([d.low <= 0 <= d.high for d in inferred]))
        assert result.false_claims == pytest.approx(np.mean([not 0.05 <= d.improvement <= 0.95 for d in inferred]))
        assert result.power == pytest.approx(np.mean([infer_difference(list(v)).low > 0 for v in shifted]))
    assert found[0].power < found[1].power  # more seeds, more power at the same shift


def test_the_studys_statistics_are_calibrated_and_the_former_bootstrap_is_not() -> None:
    scores = _normal_scores(8, 10, 0.0, np.random.default_rng(4))
    mine = calibrate(scores, seed_counts=(3, 5), studies=2000, seed=5)
    assert all(c.coverage >= COVERAGE_GOAL and c.false_claims <= FALSE_CLAIM_GOAL for c in mine)

    def percentile_bootstrap(values: list[float]) -> PairedDifference:  # resamples only the seeds it saw
        data = np.asarray(values)
        means = data[np.random.default_rng(0).integers(0, len(data), (500, len(data)))].mean(axis=1)
        return PairedDifference(float(data.mean()), *map(float, np.quantile(means, [0.025, 0.975])), 0, len(data),
                                improvement=float(np.mean(means > 0)))

    former = calibrate(scores, seed_counts=(3,), studies=2000, seed=5, infer=percentile_bootstrap)[0]
    assert former.coverage < 0.85 and former.false_claims > 0.2


# ---------------------------------------------------------------- pairing by seed


#: Seeds far apart (a seed's round-0 set and data order move both strategies alike), the
#: strategy about one point above random in every seed.
RANDOM = {0: 10.0, 1: 40.0, 2: 70.0, 3: 25.0, 4: 55.0}
GAIN = {0: 0.9, 1: 1.1, 2: 1.0, 3: 0.95, 4: 1.05}


def test_pairing_by_seed_sees_a_small_steady_gain_through_a_large_seed_spread() -> None:
    other = {s: RANDOM[s] + GAIN[s] for s in RANDOM} | {7: 500.0}  # seed 7 has no random run: left out
    study = _study(RANDOM, other)
    found = study.comparison("uncertainty", 1)
    assert found.difference.count == 5
    assert found.difference.mean == pytest.approx(1.0)
    assert 0 < found.difference.low < 1 < found.difference.high < 2 and found.difference.resolved  # paired t
    assert found.difference.improvement > 0.99
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
        mine = {t: v + 1.0 + float(rng.normal(0, 0.1)) for t, v in base.items()}
        runs += [_run("random", seed, float(np.mean(list(base.values()))), base),
                 _run("uncertainty", seed, float(np.mean(list(mine.values()))), mine)]
    study = Study(tuple(runs))
    scores = study.paired_scores("uncertainty", 1)
    assert scores.seeds == (0, 1, 2, 3) and all(len(row) == 6 for row in scores.differences)
    found = study.comparison("uncertainty", 1)
    assert found.split.tasks == 6 and found.split.design == "crossed"
    assert 0.85 < found.difference.low < found.difference.high < 1.15 and found.difference.improvement > 0.99
    # unpaired over the same cells (all strategy scores against all random scores) spans zero
    cells = {strategy: np.array([v for r in runs if r.strategy == strategy
                                 for _, v in sorted(r.rounds[1].task_metrics["rougeL"].items())])
             for strategy in ("uncertainty", "random")}
    mine, theirs = cells["uncertainty"], cells["random"]
    assert stats.ttest_ind(mine, theirs).confidence_interval().low < 0


def test_per_task_pairing_needs_every_pair_to_have_task_scores() -> None:
    tasks = {"t1": 20.0, "t2": 30.0, "t3": 40.0}
    runs = [_run("random", 0, 30.0, tasks), _run("uncertainty", 0, 32.0, {t: v + 2 for t, v in tasks.items()}),
            _run("random", 1, 31.0, dict(tasks)), _run("uncertainty", 1, 30.0, {t: v - 1 for t, v in tasks.items()})]
    scores = Study(tuple(runs)).paired_scores("uncertainty", 1)
    assert scores == PairedScores((0, 1), ((2.0, 2.0, 2.0), (-1.0, -1.0, -1.0)), (("t1", "t2", "t3"),) * 2)
    old = Study(tuple([*runs[:3], _run("uncertainty", 1, 33.0)]))  # one run logged without per-task scores
    assert old.paired_scores("uncertainty", 1) == PairedScores((0, 1), ((2.0,), (2.0,)))  # the headline's
    assert Study(tuple(runs)).paired_scores("random", 1) is None


def test_test_tasks_held_out_per_seed_are_paired_within_their_seed() -> None:
    # each seed has test tasks of its own (a pool without a test split): the split is nested
    runs = [_run("random", 0, 20.0, {"a": 10.0, "b": 30.0}), _run("uncertainty", 0, 21.0, {"a": 13.0, "b": 29.0}),
            _run("random", 1, 40.0, {"c": 40.0, "d": 40.0}), _run("uncertainty", 1, 41.0, {"c": 41.0, "d": 41.0}),
            _run("random", 2, 30.0, {"a": 30.0, "e": 30.0}), _run("uncertainty", 2, 30.0, {"a": 30.0, "e": 30.0})]
    study = Study(tuple(runs))
    scores = study.paired_scores("uncertainty", 1)
    assert scores == PairedScores((0, 1, 2), ((3.0, -1.0), (1.0, 1.0), (0.0, 0.0)),
                                  (("a", "b"), ("c", "d"), ("a", "e")))
    split = study.comparison("uncertainty", 1).split
    assert split.design == "nested" and split.test_estimate == pytest.approx(np.var([3.0, -1.0], ddof=1) / 2 / 3)


def test_a_study_on_the_log_likelihood_pairs_its_per_task_values() -> None:
    def run(strategy: str, seed: int, loglik: float, tasks: dict[str, float]) -> RunRecord:
        rounds = (RoundRecord(0, ("a",), {"rougeL": 1.0, "loglik": -2.0}),
                  RoundRecord(1, ("a", "b"), {"rougeL": 5.0, "loglik": loglik},
                              task_metrics={"rougeL": {t: 5.0 for t in tasks}, "loglik": tasks}))
        return RunRecord(strategy, seed, rounds)

    runs = [run("random", 0, -1.5, {"x": -1.0, "y": -2.0}), run("uncertainty", 0, -1.4, {"x": -0.9, "y": -1.9}),
            run("random", 1, -1.6, {"x": -1.1, "y": -2.1}), run("uncertainty", 1, -1.3, {"x": -0.8, "y": -1.8})]
    study = Study(tuple(runs), metric="loglik")
    found = study.comparison("uncertainty", 1)
    assert found.difference.mean == pytest.approx(0.2) and found.power.seeds_needed.keys() == {0.01, 0.05}
    assert np.ravel(study.paired_scores("uncertainty", 1).differences) == pytest.approx([0.1, 0.1, 0.3, 0.3])
    assert Study(tuple(runs)).comparison("uncertainty", 1).difference.mean == 0.0  # ROUGE-L: no difference
    with pytest.raises(ActiveITError, match="one of rougeL, loglik"):
        Study(tuple(runs), metric="bleu")


# ---------------------------------------------------------------- study.md and the last lines


def test_study_md_says_what_the_study_can_detect() -> None:
    study = _study({0: 20.0, 1: 30.0, 2: 40.0}, {0: 20.0, 1: 32.0, 2: 44.0})  # differences 0, 2, 4: sd 2
    text = study_markdown(study, "a study")
    mde = minimum_detectable_effect(2.0, 3)
    assert "## Verdict (vs random)" in text and "## Paired statistics and power (ROUGE-L, vs random)" in text
    assert f"This study can detect differences of {mde:.2f} points or more at 80% power" in text
    assert "34 seeds would be needed for 1, 10 seeds for 2 points" in text
    assert "not resolved: the interval holds 0" in text
    row = next(line for line in text.splitlines() if line.startswith("| uncertainty | 1 | 3 | 3 |"))
    assert f"| 2.00 | {mde:.2f} | 34 | 10 |" in row
    # round 0 is shared: no spread, said in words
    row0 = next(line for line in text.splitlines() if line.startswith("| uncertainty | 0 | 2 | 3 |"))
    assert row0.endswith(f"| n/c | n/c | n/c | n/c: {NO_SPREAD} |")
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert verdict_lines(study) == [next(line[2:] for line in text.splitlines() if line.startswith("- uncertainty vs"))]


def test_one_seed_says_not_computable_without_nan() -> None:
    study = _study({0: 20.0}, {0: 23.0})
    text = study_markdown(study, "one seed")
    (line,) = verdict_lines(study)
    assert f"Δ = +3.00 ROUGE-L; its interval is not computable: {ONE_SEED}." in line and "P(" not in line
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
    from tracking.study import comparison_metrics, study_series

    study = _study({0: 20.0, 1: 30.0, 2: 40.0}, {0: 20.0, 1: 32.0, 2: 44.0})
    found = comparison_metrics(study.comparison("uncertainty", 1))
    prefix = "vs_random/uncertainty/"
    assert found[prefix + "delta"] == pytest.approx(2.0) and found[prefix + "sd"] == pytest.approx(2.0)
    assert found[prefix + "mde"] == pytest.approx(minimum_detectable_effect(2.0, 3))
    assert (found[prefix + "seeds_for_1"], found[prefix + "seeds_for_2"]) == (34.0, 10.0)
    assert {prefix + k for k in ("p_improvement", "t_low", "t_high", "resolved")} <= set(found)
    assert found[prefix + "resolved"] == 0.0
    shared = comparison_metrics(study.comparison("uncertainty", 0))  # round 0: no spread
    assert prefix + "mde" not in shared and prefix + "seeds_for_1" not in shared and shared[prefix + "delta"] == 0.0
    assert prefix + "t_low" not in shared and prefix + "p_improvement" not in shared
    series = study_series(study)
    assert series["rougeL_random"] == {2: 10.0, 3: 30.0} and series[prefix + "delta"] == {2: 0.0, 3: 2.0}
    assert all(math.isfinite(v) for points in series.values() for v in points.values())

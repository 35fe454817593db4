"""``study.md``: a study's statistics as a markdown report (the numbers are
:mod:`activeit.study.statistics`'; this module only lays them out)."""

from __future__ import annotations

import math
from itertools import combinations

from activeit.evaluation import HEADLINE_METRICS
from activeit.selection.taskmap import CATEGORIES
from activeit.study.statistics import (
    ALPHA,
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    DETECT_EFFECTS,
    MAX_SEEDS,
    POWER,
    REFERENCE,
    Comparison,
    PairedDifference,
    Study,
    Summary,
    summarize,
)

#: A cell whose statistic is not computable (the row's note says why).
NOT_COMPUTABLE = "n/c"


def study_markdown(study: Study, title: str) -> str:
    """Means ± std, paired differences to random, budget to match, base model, overlap and
    category shares."""
    lines = [f"# {title}", "",
             f"{len(study.seeds)} seed(s): {', '.join(map(str, study.seeds))}; strategies: "
             f"{', '.join(study.strategies)}. ROUGE-L (x100) on the test tasks, mean ± std over seeds.", ""]
    lines += ["| strategy | round | training tasks | ROUGE-L | classification | generation | exact match "
              "| Δ vs random [95% CI] | seeds won |", "|---|---|---|---|---|---|---|---|---|"]
    if study.base() is not None:
        per_metric = [_base_cell(study, m) for m in HEADLINE_METRICS]
        lines.append(f"| base model (untuned) | – | 0 | {' | '.join(per_metric)} | | |")
    for strategy in study.strategies:
        for round_index, tasks in study.rounds_of(strategy):
            cells = [_format(study.summary(strategy, round_index, m)) for m in HEADLINE_METRICS]
            delta = study.difference(strategy, round_index)
            diff = "" if delta is None else _format_difference(delta)
            won = "" if delta is None else f"{delta.wins}/{delta.count}"
            lines.append(f"| {strategy} | {round_index} | {tasks} | {' | '.join(cells)} | {diff} | {won} |")
    lines += power_section(study)
    lines += ["", "## Budget to match", "",
              "The fewest training tasks at which a strategy's mean ROUGE-L reaches random's mean at "
              "random's largest budget.", ""]
    reference = study.rounds_of(REFERENCE)
    if reference:
        largest = max(tasks for _, tasks in reference)
        for strategy in study.strategies:
            found = study.budget_to_match(strategy)
            lines.append(f"- {strategy}: " + (f"{found} tasks (random: {largest})" if found is not None
                                               else f"not reached within its budget (random: {largest})"))
    else:
        lines.append("- (no random runs in this study)")
    lines += _overlap_section(study)
    lines += _category_section(study)
    return "\n".join(lines) + "\n"


def verdict_lines(study: Study) -> list[str]:
    """One sentence per strategy at the largest budget it shares with random: the paired
    difference, its bootstrap interval, the probability of improvement, and what the study
    could detect and how many seeds a 1- or 2-point effect would need."""
    lines = []
    for strategy in study.strategies:
        found = study.final_comparison(strategy)
        if found is not None:
            lines.append(verdict(found))
    return lines


def verdict(c: Comparison) -> str:
    """A comparison in words: Δ, its bootstrap interval, P(improvement), MDE, seeds needed."""
    boot, power = c.bootstrap, c.power
    seeds = f"{c.difference.count} seed{'' if c.difference.count == 1 else 's'}"
    interval = ("" if boot.low is None
                else f", paired bootstrap {CONFIDENCE:.0%} CI {_interval(boot.low, boot.high)} ({_resampled(c)})")
    head = (f"{c.strategy} vs {REFERENCE} at {c.training_tasks} training tasks (round {c.round}, {seeds}): "
            f"Δ = {c.difference.mean:+.2f} ROUGE-L{interval}"
            + ("." if boot.improvement is None else f", P({c.strategy} > {REFERENCE}) = {boot.improvement:.2f}."))
    if boot.low is None:
        head += f" Its paired bootstrap interval is not computable: {boot.reason}."
    if power.mde is None:
        return f"{head} What this study can detect is not computable: {power.reason}."
    needed = [f"{_seeds(power.seeds_needed[e])} seeds" + (" would be needed" if i == 0 else "")
              + f" for {e:g} point{'' if e == 1 else 's'}" for i, e in enumerate(DETECT_EFFECTS)]
    return (f"{head} This study can detect differences of {power.mde:.2f} ROUGE-L points or more at "
            f"{POWER:.0%} power (paired t-test, two-sided α = {ALPHA:g}, sd of the paired differences "
            f"{power.sd:.2f}); {', '.join(needed)}.")


def power_section(study: Study) -> list[str]:
    """``study.md``'s paired statistics: the verdicts, then per strategy and round the
    bootstrap interval, the probability of improvement, the MDE and the seeds needed."""
    if not study.comparisons:
        return []
    effects = " | ".join(f"seeds for {e:g} pt" for e in DETECT_EFFECTS)
    lines = ["", f"## Paired statistics and power (vs {REFERENCE})", "",
             *(f"- {line}" for line in verdict_lines(study)), "",
             f"| strategy | round | training tasks | seeds | resampled | Δ | bootstrap {CONFIDENCE:.0%} CI "
             f"| P(improvement) | sd of Δ | MDE ({POWER:.0%} power) | {effects} | note |",
             "|---|" + "---|" * (10 + len(DETECT_EFFECTS))]
    for c in study.comparisons:
        boot, power = c.bootstrap, c.power
        improvement = NOT_COMPUTABLE if boot.improvement is None else f"{boot.improvement:.2f}"
        cells = [c.strategy, str(c.round), str(c.training_tasks), str(c.difference.count),
                 _resampled(c), f"{c.difference.mean:+.2f}",
                 NOT_COMPUTABLE if boot.low is None else _interval(boot.low, boot.high), improvement,
                 NOT_COMPUTABLE if power.sd is None else f"{power.sd:.2f}",
                 NOT_COMPUTABLE if power.mde is None else f"{power.mde:.2f}",
                 *(NOT_COMPUTABLE if power.mde is None else _seeds(power.seeds_needed[e]) for e in DETECT_EFFECTS),
                 "" if not (boot.reason or power.reason) else f"{NOT_COMPUTABLE}: {power.reason or boot.reason}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Δ: strategy − {REFERENCE}, paired by seed (mean over seeds of each seed's difference; its "
              "Student-t interval is in the table above). Bootstrap: each resample draws the seeds with "
              "replacement and, within each drawn seed, its test tasks with replacement ('seeds, then test tasks "
              "within them'; 'seeds only': the runs logged no per-task scores), and averages the paired differences "
              f"(both strategies' runs of one seed, scored on one task); a percentile interval from "
              f"{BOOTSTRAP_RESAMPLES:,} resamples (seeded, so a rebuilt report is identical). P(improvement): "
              "P(Δ > 0) under that bootstrap, the share of resamples whose mean difference is positive. "
              f"MDE: the smallest true difference that a two-sided paired t-test at α = {ALPHA:g} over this many "
              f"seeds detects with {POWER:.0%} probability if the paired differences spread as observed: "
              "MDE(n) = (t_{1-α/2, n-1} + t_{0.8, n-1}) × sd / √n. Seeds for k pt: the fewest n with MDE(n) ≤ k "
              "under the same sd. With few seeds the bootstrap interval is too narrow (it "
              "resamples only the seeds it saw); the t interval is then the safer one."]
    return lines


def _interval(low: float, high: float, fmt: str = "+.2f") -> str:
    return f"[{low:{fmt}}, {high:{fmt}}]"


def _resampled(c: Comparison) -> str:
    return f"seeds, then ≤ {c.bootstrap.tasks} test tasks within them" if c.bootstrap.tasks else "seeds only"


def _seeds(needed: int | None) -> str:
    return f"more than {MAX_SEEDS:,}" if needed is None else str(needed)


def _overlap_section(study: Study) -> list[str]:
    overlap = study.overlap()
    if not overlap:
        return []
    rounds = sorted({o["round"] for o in overlap})
    lines = ["", "## Selection overlap (Jaccard of training sets, mean over seeds)", "",
             "| strategies | " + " | ".join(f"round {r}" for r in rounds) + " |", "|---|" + "---|" * len(rounds)]
    for first, second in combinations(study.strategies, 2):
        cells = {o["round"]: f"{o['jaccard']:.2f}" for o in overlap if (o["first"], o["second"]) == (first, second)}
        lines.append(f"| {first} / {second} | " + " | ".join(cells.get(r, "") for r in rounds) + " |")
    return lines


def _category_section(study: Study) -> list[str]:
    shares = study.category_shares()
    if not shares:
        return []
    lines = ["", "## Task-map make-up of the picks (rounds >= 1, as categorised when picked)", "",
             "| strategy | " + " | ".join(CATEGORIES) + " |", "|---|" + "---|" * len(CATEGORIES)]
    for strategy, share in shares.items():
        lines.append(f"| {strategy} | " + " | ".join(f"{100 * share[c]:.0f}%" for c in CATEGORIES) + " |")
    unscored = [s for s in study.strategies if s not in shares]
    if unscored:
        lines.append(f"\n{', '.join(unscored)} picked without scoring the pool, so its picks have no category.")
    return lines


def _base_cell(study: Study, metric: str) -> str:
    """The base model's ``metric`` over the seeds (one value per seed)."""
    per_seed = [float(run.base[metric]) for run in {r.seed: r for r in study.runs}.values() if metric in run.base]
    return _format(summarize(per_seed)) if per_seed else ""


def _format(summary: Summary | None) -> str:
    if summary is None:
        return ""
    return f"{summary.mean:.2f}" if math.isnan(summary.std) else f"{summary.mean:.2f} ± {summary.std:.2f}"


def _format_difference(delta: PairedDifference) -> str:
    if math.isnan(delta.low):
        return f"{delta.mean:+.2f}"
    return f"{delta.mean:+.2f} [{delta.low:+.2f}, {delta.high:+.2f}]"

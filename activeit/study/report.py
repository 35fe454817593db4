"""``study.md``: a study's statistics as a markdown report (the numbers are
:mod:`activeit.study.statistics`'; this module only lays them out)."""

from __future__ import annotations

import math
from itertools import combinations

from activeit.evaluation import HEADLINE_METRICS
from activeit.selection.taskmap import CATEGORIES
from activeit.study.statistics import REFERENCE, PairedDifference, Study, Summary, summarize


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

"""``study.md``: a study's statistics as a markdown report (the numbers are
:mod:`activeit.study.statistics`'; this module only lays them out)."""

from __future__ import annotations

import math
from itertools import combinations

from activeit.evaluation import EXACT_MATCH, HEADLINE_METRICS, LOGLIK, ROUGE_L
from activeit.selection.taskmap import CATEGORIES
from activeit.study.statistics import (
    ALPHA,
    CONFIDENCE,
    DETECT_EFFECTS,
    MAX_SEEDS,
    POWER,
    REFERENCE,
    TEST_SAMPLE_FACTOR,
    Comparison,
    PairedDifference,
    SelectionCost,
    Study,
    Summary,
    summarize,
)

#: A cell whose statistic is not computable (the row's note says why).
NOT_COMPUTABLE = "n/c"
#: Column names of the headline metrics.
COLUMNS = {ROUGE_L: "ROUGE-L", f"{ROUGE_L}_classification": "classification",
           f"{ROUGE_L}_generation": "generation", EXACT_MATCH: "exact match", LOGLIK: "log-likelihood"}
#: A study metric's name in sentences, its unit, and how its values are printed.
METRIC_WORDS = {ROUGE_L: ("ROUGE-L", "points", ".2f"), LOGLIK: ("log-likelihood", "nats/token", ".4f")}


def _value(study: Study, value: float, sign: bool = True) -> str:
    fmt = METRIC_WORDS[study.metric][2]
    return f"{value:{'+' if sign else ''}{fmt}}"


def study_markdown(study: Study, title: str) -> str:
    """Means ± std, paired differences to random, the verdicts, power, where the spread comes
    from, selection cost, budget to match, base model, overlap and category shares."""
    name, unit, _ = METRIC_WORDS[study.metric]
    lines = [f"# {title}", "",
             f"{len(study.seeds)} seed(s): {', '.join(map(str, study.seeds))}; strategies: "
             f"{', '.join(study.strategies)}. On the test tasks, mean ± std over seeds: ROUGE-L and exact match "
             "(x100), log-likelihood (mean per-token log-probability of the reference answers, nats). "
             f"The study compares on {name}.", ""]
    lines += ["| strategy | round | training tasks | " + " | ".join(COLUMNS[m] for m in HEADLINE_METRICS)
              + f" | Δ {name} vs random [{CONFIDENCE:.0%} t interval] | seeds won |",
              "|---|---|---|" + "---|" * (len(HEADLINE_METRICS) + 2)]
    if study.base() is not None:
        per_metric = [_base_cell(study, m) for m in HEADLINE_METRICS]
        lines.append(f"| base model (untuned) | – | 0 | {' | '.join(per_metric)} | | |")
    for strategy in study.strategies:
        for round_index, tasks in study.rounds_of(strategy):
            cells = [_format(study.summary(strategy, round_index, m), m) for m in HEADLINE_METRICS]
            delta = study.difference(strategy, round_index)
            diff = "" if delta is None else _format_difference(study, delta)
            won = "" if delta is None else f"{delta.wins}/{delta.count}"
            lines.append(f"| {strategy} | {round_index} | {tasks} | {' | '.join(cells)} | {diff} | {won} |")
    lines += power_section(study)
    lines += spread_section(study)
    lines += cost_section(study)
    lines += ["", "## Budget to match", "",
              f"The fewest training tasks at which a strategy's mean {name} reaches random's mean at "
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
    """One paragraph per strategy at the largest budget it shares with random (:func:`verdict`)."""
    lines = []
    for strategy in study.strategies:
        found = study.final_comparison(strategy)
        if found is not None:
            lines.append(verdict(found, study))
    return lines


def verdict(c: Comparison, study: Study) -> str:
    """A comparison in words: Δ and its t interval, whether that settles the sign, the
    probability of improvement, what the study can detect, where its spread comes from and what
    would shrink it, and what the strategy's selection cost."""
    d, power, split = c.difference, c.power, c.split
    name, unit, _ = METRIC_WORDS[study.metric]
    seeds = f"{d.count} seed{'' if d.count == 1 else 's'}"
    head = (f"{c.strategy} vs {REFERENCE} at {c.training_tasks} training tasks (round {c.round}, {seeds}): "
            f"Δ = {_value(study, d.mean)} {name}")
    if d.low is None:
        head += f"; its interval is not computable: {d.reason}."
    else:
        settled = (f"resolved: {c.strategy} is {'better' if d.low > 0 else 'worse'} than {REFERENCE} at this level"
                   if d.resolved else "not resolved: the interval holds 0")
        head += (f", {CONFIDENCE:.0%} t interval {_interval(study, d.low, d.high)}: {settled}; "
                 f"P(a new seed favours {c.strategy}) = {d.improvement:.2f}.")
    if power.mde is None:
        head += f" What this study can detect is not computable: {power.reason}."
    else:
        effects = DETECT_EFFECTS[study.metric]
        needed = [f"{_seeds(power.seeds_needed[e])} seeds" + (" would be needed" if i == 0 else "")
                  + f" for {e:g}" for i, e in enumerate(effects)]
        head += (f" This study can detect differences of {_value(study, power.mde, False)} {unit} or more at "
                 f"{POWER:.0%} power (paired t-test, two-sided α = {ALPHA:g}, sd of the paired differences "
                 f"{_value(study, power.sd, False)}); {', '.join(needed)} {unit}.")
    if split is not None and split.total > 0:
        head += (f" The test sample explains {split.test_share:.0%} of the variance of Δ, seeds (selection and "
                 f"training) {1 - split.test_share:.0%}: {2 * d.count} seeds → MDE "
                 f"{_value(study, split.mde(2 * d.count), False)}, {TEST_SAMPLE_FACTOR}× the test sample → "
                 f"{_value(study, split.mde(d.count, TEST_SAMPLE_FACTOR), False)}.")
    cost = study.selection_cost(c.strategy)
    if cost is not None:
        head += f" Its selection: {_cost_words(cost)} of scoring a round."
    return head


def power_section(study: Study) -> list[str]:
    """``study.md``'s verdicts, then per strategy and round the paired inference, the MDE and
    the seeds needed."""
    if not study.comparisons:
        return []
    name, unit, _ = METRIC_WORDS[study.metric]
    effects = " | ".join(f"seeds for {e:g}" for e in DETECT_EFFECTS[study.metric])
    lines = ["", f"## Verdict (vs {REFERENCE})", "", *(f"- {line}" for line in verdict_lines(study)),
             "", f"## Paired statistics and power ({name}, vs {REFERENCE})", "",
             f"| strategy | round | training tasks | seeds | Δ | {CONFIDENCE:.0%} t interval | P(improvement) "
             f"| sd of Δ | MDE ({POWER:.0%} power) | {effects} | note |",
             "|---|" + "---|" * (9 + len(DETECT_EFFECTS[study.metric]))]
    for c in study.comparisons:
        d, power = c.difference, c.power
        cells = [c.strategy, str(c.round), str(c.training_tasks), str(d.count), _value(study, d.mean),
                 NOT_COMPUTABLE if d.low is None else _interval(study, d.low, d.high),
                 NOT_COMPUTABLE if d.improvement is None else f"{d.improvement:.2f}",
                 NOT_COMPUTABLE if power.sd is None else _value(study, power.sd, False),
                 NOT_COMPUTABLE if power.mde is None else _value(study, power.mde, False),
                 *(NOT_COMPUTABLE if power.mde is None else _seeds(power.seeds_needed[e])
                   for e in DETECT_EFFECTS[study.metric]),
                 "" if not (d.reason or power.reason) else f"{NOT_COMPUTABLE}: {power.reason or d.reason}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Δ: strategy − {REFERENCE} in {unit}, paired by seed (both runs of a seed share its round-0 set "
              f"and data order). Interval: Student-t over the per-seed differences, mean ± t_(0.975, n-1) × sd / √n; "
              "'resolved' when it leaves 0 out. P(improvement): the probability that a new seed's paired "
              "difference is positive, the Student-t posterior predictive T_(n-1)(mean / (sd × √(1 + 1/n))); it "
              "stays below 1 however many seeds run when the strategies trade wins (it is not the probability "
              "that the mean difference is positive). MDE: the smallest true difference that a two-sided paired "
              f"t-test at α = {ALPHA:g} over this many seeds detects with {POWER:.0%} probability if the paired "
              "differences spread as observed: MDE(n) = (t_{1-α/2, n-1} + t_{0.8, n-1}) × sd / √n. Seeds for k: "
              "the fewest n with MDE(n) ≤ k. `benchmarks/calibration.py` measures the interval's coverage and "
              "how often P(improvement) passes 0.95 or 0.05 when nothing differs, on this study's own "
              "differences (docs/STATISTICS.md)."]
    return lines


def spread_section(study: Study) -> list[str]:
    """Per comparison with per-task scores: the variance of Δ split into the test sample's part
    and the part between seeds, and the MDE more seeds or a larger test sample would give."""
    rows = [c for c in study.comparisons if c.split is not None and c.split.total > 0]
    if not rows:
        return []
    name, unit, _ = METRIC_WORDS[study.metric]
    f = TEST_SAMPLE_FACTOR
    lines = ["", "## Where the spread comes from", "",
             f"| strategy | round | seeds × test tasks | sd of Δ | test sample | between seeds | MDE now "
             f"| 2× seeds | {f}× test sample | test sample → ∞ |", "|---|" + "---|" * 9]
    for c in rows:
        split, n = c.split, c.difference.count
        cells = [c.strategy, str(c.round), f"{split.seeds} × {split.tasks}", _value(study, math.sqrt(split.total), False),
                 f"{split.test_share:.0%} ({_value(study, math.sqrt(split.test), False)})",
                 f"{1 - split.test_share:.0%} ({_value(study, math.sqrt(split.between), False)})",
                 _value(study, split.mde(n), False), _value(study, split.mde(2 * n), False),
                 _value(study, split.mde(n, f), False), _value(study, split.mde(n, math.inf), False)]
        lines.append("| " + " | ".join(cells) + " |")
    design = ("every seed is tested on the same tasks, so a two-way analysis of the seed × test task table "
              "gives the test sample's part as the residual mean square over the tasks"
              if rows[0].split.design == "crossed" else
              "each seed has test tasks of its own, so the test sample's part is the within-seed variance of the "
              "per-task differences over the seed's tasks")
    lines += ["", f"The variance of a seed's Δ (in squared {unit}) is split in two: {design} (which instances and tasks "
              "the models happened to be tested on); the rest is between seeds (which tasks were selected, and "
              "training on them). Shares are of the variance; "
              "in brackets, each part as an sd. More seeds shrink both parts; a larger test sample (more "
              "instances per task and more test tasks, by the factor shown) only the first, so the last column "
              "is the floor that test instances alone can reach at these seeds."]
    return lines


def cost_section(study: Study) -> list[str]:
    """Each strategy's selection cost a round beside its Δ at its largest budget."""
    if not study.comparisons:
        return []
    name, _, _ = METRIC_WORDS[study.metric]
    lines = ["", "## Selection cost", "", f"| strategy | scoring a round | Δ {name} at its largest budget |",
             "|---|---|---|"]
    for strategy in study.strategies:
        cost, final = study.selection_cost(strategy), study.final_comparison(strategy)
        delta = "" if final is None else (f"{_value(study, final.difference.mean)} "
                                          + ("" if final.difference.low is None
                                             else _interval(study, final.difference.low, final.difference.high)))
        lines.append(f"| {strategy} | {'none (no scoring)' if cost is None else _cost_words(cost)} | {delta} |")
    lines += ["", "Scoring a round: the scoring step's wall time and the token slots its forward passes ran "
              "(decoding and teacher forcing, padding included), means over the rounds that scored the pool "
              "and the seeds."]
    return lines


def _cost_words(cost: SelectionCost) -> str:
    parts = []
    if cost.seconds is not None:
        parts.append(f"{cost.seconds:.{0 if cost.seconds >= 10 else 1}f} s")
    if cost.tokens is not None:
        parts.append(f"{cost.tokens / 1e6:.2f}M tokens" if cost.tokens >= 1e5 else f"{cost.tokens:,.0f} tokens")
    return " and ".join(parts)


def _interval(study: Study, low: float, high: float) -> str:
    return f"[{_value(study, low)}, {_value(study, high)}]"


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
    return _format(summarize(per_seed), metric) if per_seed else ""


def _format(summary: Summary | None, metric: str = ROUGE_L) -> str:
    if summary is None:
        return ""
    fmt = ".3f" if metric == LOGLIK else ".2f"
    return f"{summary.mean:{fmt}}" if math.isnan(summary.std) else f"{summary.mean:{fmt}} ± {summary.std:{fmt}}"


def _format_difference(study: Study, delta: PairedDifference) -> str:
    if delta.low is None:
        return _value(study, delta.mean)
    return f"{_value(study, delta.mean)} {_interval(study, delta.low, delta.high)}"

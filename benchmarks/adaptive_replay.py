"""Replay adaptive scoring on exact score tables: which top b, for how many pairs, at which delta.

No model runs. Each table given was scored exactly (``python -m activeit score``, or
``benchmarks/adaptive.py --save-exact DIR``), so its per-instance detail holds every term
``|p_ij - p_i0|`` of every task. For each pair order (``--orders`` R: the orders adaptive scoring
uses with seeds 0 .. R-1, so the table of seed s replayed at order s repeats that run's race),
budget b and level delta, the replay runs adaptive scoring's race on those terms with the library's own pieces
(:func:`activeit.scoring.adaptive.pair_order`, :func:`~activeit.scoring.adaptive.stage_sizes`,
:func:`~activeit.scoring.adaptive.pu_interval` at level delta / T,
:func:`~activeit.scoring.adaptive.decide`): stage by stage, a task's next
terms come in, its interval is recomputed, and a task surely in or out stops. It prints whether
the adaptive top b is the exact one, their Jaccard overlap, the tasks stopped and the share of
the n x k pairs scored and of the work rows (a decoded instance or a forced pair: the
``scoring_work_saved`` metric's unit). The race is the real one; what it does not give is wall
time or forward tokens (prefixes that run again, batching): ``benchmarks/adaptive.py`` measures
those with the model.

``--population NxK`` asks what adaptive scoring would do if each task had n = N instances and
k = K perturbed prompts: every task's terms are resampled with replacement (seeded) to N x K,
whose mean is then the exact PU the top b is judged against. A what-if on measured terms, not a
measurement of a larger n x k.

    python benchmarks/adaptive_replay.py /tmp/exact/seed1.csv --budgets 5,10 --delta 0.01,0.1,0.5,0.9
    python benchmarks/adaptive_replay.py /tmp/exact/*.csv --population 50x20 --orders 4
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.config.settings import ScoringSettings  # noqa: E402
from activeit.errors import ActiveITError  # noqa: E402
from activeit.scoring.adaptive import decide, pair_order, pu_interval, stage_sizes  # noqa: E402
from activeit.scoring.scores import ScoreTable  # noqa: E402
from benchmarks.adaptive import _deltas, _ints, bad_input_exits_2  # noqa: E402

DEFAULTS = ScoringSettings()


def task_terms(table: ScoreTable) -> dict[str, np.ndarray]:
    """Every task's terms ``|p_ij - p_i0|`` as an n x k array (row i, column j - 1), from the
    table's per-instance detail."""
    terms = {}
    for row in table:
        detail = table.instances_of(row.task)
        values = np.array([[abs(p - s.p0) for p in s.p] for s in detail], dtype=float)
        if not values.size or np.isnan(values).any():
            raise ActiveITError(f"task {row.task}: the table's detail does not hold all its pairs (an adaptive "
                                "table, or one saved without its .instances file?); replay needs an exact table")
        if not math.isclose(values.mean(), row.pu, rel_tol=0, abs_tol=1e-6):
            raise ActiveITError(f"task {row.task}: the detail's terms average {values.mean():.6f}, the table says "
                                f"PU {row.pu:.6f}")
        terms[row.task] = values
    return terms


def race(terms: list[np.ndarray], budget: int, delta: float, first_stage: int,
         stage_growth: float) -> tuple[list[int], list[str], list[float]]:
    """Adaptive scoring's race on terms given in their scoring order: per task the terms scored,
    the verdict (``"in"`` / ``"out"`` / ``""``) and the PU estimate (the mean of its scored
    terms, kept inside its interval), as :func:`activeit.scoring.adaptive.score_adaptive` does."""
    alpha = delta / len(terms)
    scored, decided = [0] * len(terms), [""] * len(terms)
    intervals = [(0.0, 1.0)] * len(terms)
    for size in stage_sizes(first_stage, stage_growth, max(len(t) for t in terms)):
        going = [t for t in range(len(terms)) if not decided[t] and scored[t] < len(terms[t])]
        if not going:
            break
        for t in going:
            scored[t] = min(size, len(terms[t]))
            intervals[t] = pu_interval(terms[t][: scored[t]], len(terms[t]), alpha)
        for t, verdict in enumerate(decide(intervals, budget)):
            if not decided[t] and scored[t] < len(terms[t]):
                decided[t] = verdict
    estimates = [min(max(float(x[:m].mean()), low), high) for x, m, (low, high) in zip(terms, scored, intervals)]
    return scored, decided, estimates


def top(names: list[str], values: list[float], budget: int) -> set[str]:
    """The b highest values (ties by name), as the ``uncertainty`` strategy ranks PU."""
    return {name for _, name in sorted(zip((-v for v in values), names))[:budget]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tables", nargs="+", type=Path, help="exact score tables (.csv / .parquet with their detail)")
    parser.add_argument("--budgets", default="5,10", help="comma-separated budgets b")
    parser.add_argument("--delta", default="0.01,0.1,0.5,0.9", help="comma-separated levels delta")
    parser.add_argument("--orders", type=int, default=4,
                        help="pair orders replayed per table: adaptive scoring's of seeds 0 .. R-1")
    parser.add_argument("--first-stage", type=int, default=DEFAULTS.first_stage)
    parser.add_argument("--stage-growth", type=float, default=DEFAULTS.stage_growth)
    parser.add_argument("--population", default=None, metavar="NxK",
                        help="resample each task's terms to n x k pairs, e.g. 50x20 (a what-if; default: as measured)")
    args = parser.parse_args(argv)
    args.budget_list = _ints(args.budgets, "--budgets", 1)
    args.delta_list = _deltas(args.delta)
    if args.orders < 1 or args.first_stage < 1 or args.stage_growth <= 1:
        raise SystemExit("--orders and --first-stage must be at least 1, --stage-growth above 1")
    args.shape = None
    if args.population is not None:
        try:
            args.shape = tuple(int(side) for side in args.population.lower().split("x"))
        except ValueError:
            args.shape = ()
        if len(args.shape) != 2 or min(args.shape) < 1:
            raise SystemExit(f"--population takes NxK with whole numbers of at least 1, e.g. 50x20, got "
                             f"'{args.population}'")
    for path in args.tables:
        if not path.is_file():
            raise SystemExit(f"no score table {path}")
    return args


def run(args: argparse.Namespace) -> None:
    cases: list[dict[str, float]] = []
    print(f"{'table':<24} {'order':>5} {'b':>3} {'delta':>6} {'same':>5} {'jaccard':>7} {'stopped':>7} "
          f"{'pairs':>6} {'work':>6}")
    for path in args.tables:
        try:
            table = ScoreTable.load(path)
            measured = task_terms(table)
        except ActiveITError as error:
            raise SystemExit(f"{path}: {error}") from None
        names = list(measured)
        if max(args.budget_list) >= len(names):
            raise SystemExit(f"{path}: every budget must be below its {len(names)} tasks, got {args.budgets}")
        # every instance is decoded, stopped task or not
        decoded = len(table.instances) if args.shape is None else args.shape[0] * len(names)
        size = None if args.shape is None else args.shape[0] * args.shape[1]
        for order in range(args.orders):
            if size is None:  # adaptive scoring's own pair order of seed `order`
                shuffled = [np.array([values[i, j - 1] for i, j in pair_order(name, *values.shape, order)])
                            for name, values in measured.items()]
            else:
                rng = np.random.default_rng([order, size])
                shuffled = [rng.choice(values.ravel(), size) for values in measured.values()]
            truth = [float(x.mean()) for x in shuffled]
            for budget in args.budget_list:
                for delta in args.delta_list:
                    scored, decided, estimates = race(shuffled, budget, delta, args.first_stage, args.stage_growth)
                    mine, theirs = top(names, estimates, budget), top(names, truth, budget)
                    pairs = sum(scored) / sum(len(x) for x in shuffled)
                    # work rows: decoded instances (all of them) + forced pairs, over exact scoring's
                    rows = (decoded + sum(scored)) / (decoded + sum(len(x) for x in shuffled))
                    case = {"delta": delta, "same": float(mine == theirs),
                            "jaccard": len(mine & theirs) / len(mine | theirs), "pairs": pairs, "work": rows}
                    cases.append(case)
                    stopped = f"{decided.count('in')}+{decided.count('out')}"
                    print(f"{path.name[:24]:<24} {order:>5} {budget:>3} {delta:>6g} {str(mine == theirs):>5} "
                          f"{case['jaccard']:>7.3f} {stopped:>7} {pairs:>6.3f} {rows:>6.3f}", flush=True)
    print(f"{len(args.tables)} tables x {args.orders} orders x {len(args.budget_list)} budgets per delta; "
          f"pairs a task: {'as measured' if args.shape is None else args.population}")
    for delta in args.delta_list:
        mine = [c for c in cases if c["delta"] == delta]
        print(f"replay delta={delta:g}: identical={np.mean([c['same'] for c in mine]):.2f} "
              f"jaccard={np.mean([c['jaccard'] for c in mine]):.3f} pairs={np.mean([c['pairs'] for c in mine]):.3f} "
              f"work={np.mean([c['work'] for c in mine]):.3f}")


def main(argv: list[str] | None = None) -> None:
    """Bad input: one ``error:`` line and exit status 2."""
    bad_input_exits_2(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    main()

"""Is a finished study's verdict calibrated? Coverage, false claims and power at 3, 5, 10 seeds.

Reads the study's runs from MLflow under the current ZenML store (as ``run.py --report``
does), takes each strategy's per-seed, per-test-task paired differences to random at its
largest budget, centres them on zero (no effect) and on a known shift, resamples null and
shifted studies of 3, 5 and 10 seeds (seeds drawn, then test tasks within them; the seed
level smoothed, :mod:`activeit.study.calibration`), and runs the study's own statistics on
each. It prints, per strategy and seed count, the coverage of the 95% t interval, the share of
null studies whose P(improvement) passes 0.95 or falls below 0.05, and the power at the shift;
beside them the same for plain (unsmoothed) resampling and for the percentile bootstrap over
seeds that studies reported before (seeds only, 1,000 resamples). The last line holds the
worst case over the strategies:
``calibration: coverage3=… coverage5=… coverage10=… false3=… false5=… false10=…``.

    python benchmarks/calibration.py activeit-default
    python benchmarks/calibration.py activeit-smoke --config configs/smoke.yaml --studies 4000
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.errors import ActiveITError  # noqa: E402
from activeit.evaluation import STUDY_METRICS  # noqa: E402
from activeit.study.calibration import (  # noqa: E402
    COVERAGE_GOAL,
    FALSE_CLAIM_GOAL,
    SEED_COUNTS,
    STUDIES,
    Calibration,
    calibrate,
)
from activeit.study.statistics import REFERENCE, PairedDifference, Study  # noqa: E402
from benchmarks.adaptive import bad_input_exits_2  # noqa: E402
from experiment.config import DEFAULT_CONFIG  # noqa: E402

#: The former percentile bootstrap over seeds, as contrast: resamples per study.
FORMER_RESAMPLES = 1000


def former_bootstrap(values: Sequence[float]) -> PairedDifference:
    """What studies reported before: the percentile bootstrap of the mean over the seeds
    (seeds only) and P(improvement) = the share of resampled means above 0 (a tie counts half)."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    means = data[rng.integers(0, len(data), size=(FORMER_RESAMPLES, len(data)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    improvement = float(np.mean(means > 0) + 0.5 * np.mean(means == 0))
    return PairedDifference(float(data.mean()), float(low), float(high), int((data > 0).sum()), len(data),
                            improvement=improvement)


def study_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """A study benchmark's parser: the experiment of a finished study and the config whose stack holds it."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiment", help="the MLflow experiment of a finished study (as run.py --report takes)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="the config whose stack and tracker hold the study (default: configs/default.yaml)")
    return parser


def read_study(experiment: str, config_path: Path, metric: str | None = None) -> tuple[Study, list[Any]]:
    """The finished study of ``experiment`` under the config's ZenML store (as ``run.py --report``
    reads it) and its MLflow runs; a missing experiment is a ``SystemExit`` with its message."""
    from experiment.config import load_config
    from pipelines.runner import prepare
    from tracking.study import build_study, gather_runs

    if not config_path.is_file():
        raise SystemExit(f"--config {config_path}: no such file")
    config = load_config(config_path)
    info = prepare(config)
    try:
        runs = gather_runs(info.tracking_uri, experiment)
    except ActiveITError as error:
        raise SystemExit(str(error)) from None
    return build_study(info.tracking_uri, runs, metric or config.study.metric), runs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = study_parser("python benchmarks/calibration.py", __doc__)
    parser.add_argument("--metric", choices=STUDY_METRICS, default=None,
                        help="the study metric (default: the config's study.metric)")
    parser.add_argument("--studies", type=int, default=STUDIES,
                        help=f"resampled studies per seed count and truth (default {STUDIES}; at least 2000 for the goal)")
    parser.add_argument("--shift", type=float, default=None,
                        help="the known effect of the shifted studies (default: the sd of each strategy's per-seed "
                        "differences)")
    parser.add_argument("--seed", type=int, default=0, help="the resampling's seed (default 0)")
    args = parser.parse_args(argv)
    if args.studies < 100:
        raise SystemExit(f"--studies {args.studies}: give at least 100 (2000 for the goal)")
    if args.shift is not None and not args.shift > 0:
        raise SystemExit(f"--shift {args.shift:g}: the known effect must be positive")
    return args


def _row(label: str, found: Sequence[Calibration]) -> str:
    cells = "  ".join(f"n={c.seeds}: cover {c.coverage:.3f} false {c.false_claims:.3f} power {c.power:.3f}"
                      for c in found)
    return f"  {label:<26} {cells}"


def run(args: argparse.Namespace) -> None:
    study, _ = read_study(args.experiment, args.config, args.metric)
    metric = study.metric
    compared = [c for s in study.strategies if (c := study.final_comparison(s)) is not None]
    if not compared:
        raise SystemExit(f"experiment '{args.experiment}' has no strategy paired with {REFERENCE} to calibrate")
    print(f"{args.experiment}: {len(study.seeds)} seeds, metric {metric}; {args.studies} resampled studies per seed "
          f"count and truth (seed {args.seed}). Goal: coverage >= {COVERAGE_GOAL} and false <= {FALSE_CLAIM_GOAL}.")
    worst: dict[int, list[float]] = {n: [1.0, 0.0] for n in SEED_COUNTS}
    for c in compared:
        scores = study.paired_scores(c.strategy, c.round)
        try:
            smoothed = calibrate(scores, studies=args.studies, shift=args.shift, seed=args.seed)
        except ActiveITError as error:
            print(f"- {c.strategy} (round {c.round}): not calibrated: {error}")
            continue
        widths = sorted({len(row) for row in scores.differences})
        print(f"- {c.strategy} vs {REFERENCE} at {c.training_tasks} training tasks (round {c.round}): "
              f"{len(scores.seeds)} seeds x {'/'.join(map(str, widths))} test tasks, shift {smoothed[0].shift:.4g}")
        print(_row("t interval (the study's)", smoothed))
        print(_row("  plain resampling", calibrate(scores, studies=args.studies, shift=args.shift, seed=args.seed,
                                                   smooth=False)))
        print(_row("former bootstrap (seeds)", calibrate(scores, studies=args.studies, shift=args.shift,
                                                         seed=args.seed, infer=former_bootstrap)))
        print(f"  goal met at every seed count: {all(found.meets_goal for found in smoothed)}")
        for found in smoothed:
            worst[found.seeds][0] = min(worst[found.seeds][0], found.coverage)
            worst[found.seeds][1] = max(worst[found.seeds][1], found.false_claims)
    print("calibration: " + " ".join(f"coverage{n}={worst[n][0]:.3f}" for n in SEED_COUNTS) + " "
          + " ".join(f"false{n}={worst[n][1]:.3f}" for n in SEED_COUNTS))


def main(argv: list[str] | None = None) -> None:
    """Bad input: one ``error:`` line and exit status 2."""
    bad_input_exits_2(lambda: run(parse_args(argv)))


if __name__ == "__main__":
    main()

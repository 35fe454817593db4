#!/usr/bin/env python
"""Run active instruction tuning as a ZenML pipeline, tracked in MLflow.

    python run.py --strategy uncertainty                     # configs/default.yaml
    python run.py --strategy random --config configs/niv2.yaml --rounds 2
    python run.py --compare uncertainty,random --config configs/smoke.yaml

Round 0 fine-tunes on a seeded random task set (shared by every strategy); each later
round scores the remaining pool with the previous round's model, selects tasks by the
strategy, re-trains and evaluates ROUGE-L on held-out test tasks. Every round's metrics,
selected tasks, score table, task map and model go to MLflow. Re-running the same command
after an interruption resumes from the last finished step.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activeit.config import DEFAULT_CONFIG, REPO_ROOT, ExperimentConfig, load_config
from activeit.errors import ActiveITError, ConfigError
from activeit.settings import SOURCES
from activeit.strategies import STRATEGIES

OUTPUTS = REPO_ROOT / "outputs"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python run.py",
        description=__doc__,
        epilog="Relative paths inside config files resolve against the repository root. "
        "The MLflow UI command is printed at the end of each run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--strategy", metavar="NAME",
                      help=f"selection strategy: {', '.join(STRATEGIES)} (default: the config's)")
    what.add_argument("--compare", metavar="S1,S2,...",
                      help="run these strategies with one seed and write a comparison table and "
                      "learning curve (also logged to MLflow)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="YAML",
                        help=f"experiment config (default: {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    over = parser.add_argument_group("overrides of the config")
    over.add_argument("--rounds", type=int, help="selection rounds after round 0")
    over.add_argument("--tasks-per-round", type=int, help="tasks selected per round")
    over.add_argument("--initial-tasks", type=int, help="random tasks of round 0")
    over.add_argument("--seed", type=int, help="seed of the initial set, sampling and training")
    over.add_argument("--model", help="base model: smollm2-135m-instruct, tiny-llama, a folder or a hub id")
    over.add_argument("--pool-source", choices=SOURCES, help="task pool source")
    over.add_argument("--pool-path", help="pool folder/file (relative to the current directory) or hub id")
    over.add_argument("--experiment", help="MLflow experiment name")
    parser.add_argument("--schedule", metavar="CRON",
                        help='run on a schedule instead of now, e.g. "0 3 * * 1" (needs an orchestrator '
                        "that supports schedules)")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute every step (by default finished steps are reused: resume)")
    return parser


def _strategies(args: argparse.Namespace) -> list[str | None]:
    """The strategies to run: --compare's list, --strategy, or the config's (None)."""
    names = [s.strip() for s in args.compare.split(",") if s.strip()] if args.compare else [args.strategy]
    unknown = [s for s in names if s is not None and s not in STRATEGIES]
    if unknown:
        raise ConfigError(f"unknown strategy '{unknown[0]}'; choose from {', '.join(STRATEGIES)}")
    if args.compare and (len(names) < 2 or len(set(names)) != len(names)):
        raise ConfigError("--compare needs at least two different strategies, e.g. uncertainty,random")
    return names


def load_experiment(args: argparse.Namespace, strategy: str | None) -> ExperimentConfig:
    """The config file with the command-line overrides applied, validated."""
    pool_path = args.pool_path
    if pool_path and args.pool_source != "hub" and Path(pool_path).expanduser().exists():
        pool_path = str(Path(pool_path).expanduser().resolve())
    overrides: dict[str, Any] = {
        "strategy": strategy, "rounds": args.rounds, "tasks_per_round": args.tasks_per_round,
        "initial_tasks": args.initial_tasks, "seed": args.seed, "model": args.model,
        "pool.source": args.pool_source, "pool.path": pool_path, "tracking.experiment": args.experiment,
        "schedule": args.schedule,
    }
    if args.no_cache:
        overrides["zenml.enable_cache"] = False
    return load_config(args.config, overrides)


def check_pool(config: ExperimentConfig) -> int:
    """Load the pool once before starting anything: a bad path fails in one line. Returns
    the number of selectable (train) tasks."""
    from activeit.sources import load_pool_from

    return len(load_pool_from(config.pool, need_test_tasks=True).train)


def run_pipeline(config: ExperimentConfig, tracker: str) -> Any:
    """Run (or schedule) the pipeline; a failed step becomes one line naming it."""
    from pipelines.active_tuning import configured

    try:
        return configured(config)(config=config, experiment_tracker=tracker)
    except RuntimeError as exc:
        if "has failed" not in str(exc):
            raise
        raise ActiveITError(
            f"{str(exc).strip().splitlines()[0]} (log above); run the same command again to resume "
            "from the last finished step"
        ) from None


def print_rounds(rows: Sequence[dict[str, Any]]) -> None:
    """One line per round: training tasks, scores, loss and wall times."""
    columns = (("rougeL", "ROUGE-L", ".2f"), ("exact_match", "EM", ".2f"), ("train_loss", "loss", ".4f"),
               ("training_time_s", "train s", ".1f"), ("scoring_time_s", "score s", ".1f"))
    print(f"{'round':>5} {'tasks':>6} " + " ".join(f"{title:>8}" for _, title, _ in columns))
    for row in rows:
        cells = [format(row[key], fmt) if key in row else "-" for key, _, fmt in columns]
        print(f"{row['round']:>5} {int(row.get('num_training_tasks', 0)):>6} " + " ".join(f"{c:>8}" for c in cells))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        configs = [load_experiment(args, s) for s in _strategies(args)]
        if args.compare and configs[0].schedule:
            raise ConfigError("--compare runs now; it cannot be combined with a schedule")
        pool_size = check_pool(configs[0])
        for config in configs:
            config.check_budget(pool_size, f"the {config.pool.source} pool")

        from pipelines.compare import (
            comparison_rows,
            find_run_id,
            log_comparison,
            write_comparison,
        )
        from pipelines.stack import (
            check_schedule_support,
            prepare_stack,
            use_repo_source_root,
        )

        use_repo_source_root()
        info = prepare_stack(configs[0])
        if info.created:
            print(f"Registered and activated the local ZenML stack '{info.stack}' with the MLflow "
                  f"experiment tracker '{info.tracker}' ({info.tracking_uri}).")
        if configs[0].schedule:
            check_schedule_support(info)

        runs: dict[str, str] = {}
        for config in configs:
            print(f"== strategy {config.strategy}: rounds 0..{config.selection_rounds}, model {config.model}, "
                  f"pool {config.pool.source}, seed {config.seed}, stack '{info.stack}'")
            run = run_pipeline(config, info.tracker)
            if config.schedule:
                print(f"Scheduled '{config.strategy}' with cron '{config.schedule}' on stack '{info.stack}'.")
                continue
            runs[config.strategy] = find_run_id(info.tracking_uri, config.tracking.experiment, run.name)
            print(f"== {config.strategy}: ZenML run '{run.name}', MLflow run {runs[config.strategy]}")
            print_rounds(comparison_rows(info.tracking_uri, {config.strategy: runs[config.strategy]}))

        if args.compare:
            config = configs[0]
            rows = comparison_rows(info.tracking_uri, runs)
            title = f"{config.tracking.experiment}: {' vs '.join(runs)} (seed {config.seed})"
            out_dir = OUTPUTS / f"compare-{config.tracking.experiment}-seed{config.seed}"
            files = write_comparison(rows, out_dir, title)
            run_id = log_comparison(info.tracking_uri, config.tracking.experiment, runs, files, rows, config.seed)
            print((out_dir / "comparison.md").read_text(encoding="utf-8"))
            print(f"Comparison written to {out_dir} and logged to MLflow run {run_id}.")
    except ActiveITError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last finished step", file=sys.stderr)
        return 130
    print(f"Done in {time.perf_counter() - started:.0f} s. Open the MLflow UI with:\n"
          f"  mlflow ui --backend-store-uri {info.tracking_uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

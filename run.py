#!/usr/bin/env python
"""Run active instruction tuning as a ZenML pipeline, tracked in MLflow.

    python run.py --strategy uncertainty                     # configs/default.yaml
    python run.py --strategy random --config configs/niv2.yaml --rounds 2
    python run.py --compare uncertainty,random --seeds 0,1,2    # a study over 3 seeds
    python run.py --report activeit                           # rebuild a study from MLflow

Round 0 fine-tunes on a seeded random task set (shared by every strategy); each later
round scores the remaining pool with the previous round's model, selects tasks by the
strategy, re-trains and evaluates ROUGE-L on held-out test tasks. Every round's metrics,
selected tasks, score table, task map and model go to MLflow. Re-running the same command
after an interruption resumes from the last finished step.

A study (``--compare``, ``--seeds`` or a config's ``study:`` section) runs every (strategy,
seed) pair, round 0 shared per seed, reuses pairs that already finished, and writes
``outputs/study-<experiment>/``: means ± std over seeds, the paired difference to random
with a 95% interval, the budget to match, selection overlap and the learning curve.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activeit.config.experiment import DEFAULT_CONFIG, REPO_ROOT, ExperimentConfig, is_server_uri, load_config
from activeit.errors import ActiveITError, ConfigError
from activeit.config.settings import SOURCES
from activeit.selection.strategies import STRATEGIES

OUTPUTS = REPO_ROOT / "outputs"
#: The config keys the command line overrides, and their flags (errors name the flag).
OVERRIDE_FLAGS = {
    "strategy": "--strategy", "rounds": "--rounds", "tasks_per_round": "--tasks-per-round",
    "initial_tasks": "--initial-tasks", "seed": "--seed", "model": "--model", "pool.source": "--pool-source",
    "pool.path": "--pool-path", "tracking.experiment": "--experiment", "schedule": "--schedule",
    "study.strategies": "--compare", "study.seeds": "--seeds",
}


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
                      help="a study of these strategies (with --seeds, over several seeds): statistics, "
                      "learning curve and overlap in outputs/study-<experiment>/, also logged to MLflow")
    what.add_argument("--report", metavar="EXPERIMENT",
                      help="rebuild the study of an MLflow experiment from its runs alone (no training)")
    parser.add_argument("--seeds", metavar="N1,N2,...",
                        help="study seeds: every strategy runs once per seed (default: the config's seed)")
    parser.add_argument("--strategies", metavar="S1,S2,...", help="with --report: only these strategies")
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


def parse_list(value: str, flag: str, kind: type = str) -> list[Any]:
    """A comma-separated flag value: not empty, no repeats, each of ``kind``."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"{flag} is empty; give a comma-separated list, e.g. {flag} 0,1,2")
    try:
        parsed = [kind(item) for item in items]
    except ValueError:
        raise ConfigError(f"{flag}: '{value}' is not a comma-separated list of {kind.__name__}s") from None
    repeated = sorted({str(item) for item in parsed if parsed.count(item) > 1})
    if repeated:
        raise ConfigError(f"{flag} repeats {', '.join(repeated)}")
    if kind is str:
        for name in parsed:
            if name not in STRATEGIES:
                raise ConfigError(f"{flag}: unknown strategy '{name}'; choose from {', '.join(STRATEGIES)}")
    return parsed


def load_experiment(
    args: argparse.Namespace, strategy: str | None = None, seed: int | None = None,
    study: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """The config file with the command-line overrides applied, validated."""
    pool_path = args.pool_path
    if pool_path and args.pool_source != "hub":  # relative to where the command was typed
        pool_path = str(Path(pool_path).expanduser().resolve())
    overrides: dict[str, Any] = {
        "strategy": strategy, "rounds": args.rounds, "tasks_per_round": args.tasks_per_round,
        "initial_tasks": args.initial_tasks, "seed": seed if seed is not None else args.seed, "model": args.model,
        "pool.source": args.pool_source, "pool.path": pool_path, "tracking.experiment": args.experiment,
        "schedule": args.schedule,
    }
    for key, value in (study or {}).items():
        overrides[f"study.{key}"] = value
    if args.no_cache:
        overrides["zenml.enable_cache"] = False
    return load_config(args.config, overrides, OVERRIDE_FLAGS)


def plan_runs(args: argparse.Namespace) -> tuple[list[ExperimentConfig], bool]:
    """The configs to run, one per (strategy, seed), and whether they form a study."""
    if args.strategies is not None and not args.report:
        raise ConfigError("--strategies filters --report; to run strategies use --compare S1,S2")
    if args.seeds is not None and args.seed is not None:
        raise ConfigError("give either --seed (one run) or --seeds (a study), not both")
    base = load_experiment(args)
    seeds = parse_list(args.seeds, "--seeds", int) if args.seeds is not None else base.study.seeds or [base.seed]
    if args.compare is not None:
        named = [name.strip() for name in args.compare.split(",") if name.strip()]
        if len(set(named)) < 2 or len(set(named)) != len(named):
            raise ConfigError("--compare needs at least two different strategies, e.g. uncertainty,random")
        strategies = parse_list(args.compare, "--compare")
    elif args.strategy is not None:
        strategies = parse_list(args.strategy, "--strategy")
    else:
        strategies = base.study.strategies or [base.strategy]
    is_study = args.compare is not None or args.seeds is not None or (args.strategy is None and bool(base.study.strategies))
    study = {"strategies": strategies, "seeds": seeds} if is_study else None
    configs = [load_experiment(args, strategy, seed, study) for seed in seeds for strategy in strategies]
    if is_study and configs[0].schedule:
        raise ConfigError("a study (--compare / --seeds) runs now; it cannot be combined with a schedule")
    return configs, is_study


def check_pool(config: ExperimentConfig) -> int:
    """Load the pool once before starting anything: a bad path fails in one line. Returns
    the number of selectable (train) tasks."""
    from activeit.data.sources import load_pool_from

    return len(load_pool_from(config.pool, need_test_tasks=True).train)


def check_resources(config: ExperimentConfig) -> None:
    """Refuse up front what would fail inside a step: a model that cannot be loaded, LoRA
    without target modules for the model's family, more GPU processes than GPUs."""
    from activeit.launch import check_processes
    from activeit.models.loading import check_lora, check_model

    check_model(config.model, config.chat)
    check_lora(config.model, config.training.method, config.training.lora_target_modules)
    check_processes(config.training.num_processes, "training.num_processes")
    check_processes(config.scoring.num_processes, "scoring.num_processes")


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


def print_rounds(tracking_uri: str, run_id: str) -> None:
    """One line per round (training tasks, scores, loss, wall times), after the untuned
    base model's line (0 tasks)."""
    from mlflow import MlflowClient

    from tracking.mlflow import BASE_PREFIX, metric_rows

    columns = (("rougeL", "ROUGE-L", ".2f"), ("exact_match", "EM", ".2f"), ("train_loss", "loss", ".4f"),
               ("training_time_s", "train s", ".1f"), ("scoring_time_s", "score s", ".1f"))
    metrics = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.metrics
    base = {key: metrics[BASE_PREFIX + key] for key, _, _ in columns if BASE_PREFIX + key in metrics}
    header = f"{'round':>5} {'tasks':>6} " + " ".join(f"{title:>8}" for _, title, _ in columns)
    print("-" * len(header))
    print(header)
    for label, row in [("base", base), *((str(r["round"]), r) for r in metric_rows(tracking_uri, run_id))]:
        cells = [format(row[key], fmt) if key in row else "-" for key, _, fmt in columns]
        print(f"{label:>5} {int(row.get('num_training_tasks', 0)):>6} " + " ".join(f"{c:>8}" for c in cells))
    print("-" * len(header))


def _tool(name: str) -> str:
    """A command of this environment (``.venv/bin/mlflow``) as the user types it."""
    beside = Path(sys.executable).with_name(name)
    if not beside.exists():
        return name
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def print_ui_commands(tracking_uri: str, experiment: str) -> None:
    """How to look at the results: the MLflow UI (model-training view of the experiment)
    and the ZenML dashboard, set apart from the log above."""
    from mlflow import MlflowClient

    from tracking.mlflow import MODEL_TRAINING_VIEW

    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    page = f"#/experiments/{found.experiment_id}?{MODEL_TRAINING_VIEW}" if found else ""
    if is_server_uri(tracking_uri):
        mlflow_lines = [f"  open {tracking_uri.rstrip('/')}/{page}"]
    else:
        mlflow_lines = [f"  {_tool('mlflow')} ui --backend-store-uri {tracking_uri}",
                        f"  then open http://127.0.0.1:5000/{page}"]
    rule = "=" * 78
    print("\n".join([
        rule,
        "MLflow UI: runs, per-round charts (also against training tasks), task maps, models",
        *mlflow_lines,
        "ZenML dashboard: the pipeline's steps per round and their artifacts",
        f"  {_tool('zenml')} login --local          (then open the URL it prints; stop: zenml logout --local)",
        rule,
    ]))


def report_study(tracking_uri: str, experiment: str, runs: Sequence[Any]) -> Path:
    """Write the study of ``runs`` to ``outputs/study-<experiment>/``, log its parent MLflow
    run and print ``study.md``; returns the folder."""
    from pipelines.study import build_study, log_study, write_study

    study = build_study(tracking_uri, runs)
    tags = runs[0].data.tags
    title = (f"{experiment}: {' vs '.join(study.strategies)}, seeds {','.join(map(str, study.seeds))} "
             f"({tags.get('model')} on {tags.get('pool')})")
    out_dir = OUTPUTS / f"study-{experiment}"
    files = write_study(study, out_dir, title)
    run_id = log_study(tracking_uri, experiment, study, files, title)
    print((out_dir / "study.md").read_text(encoding="utf-8"))
    print(f"Study written to {out_dir} and logged to MLflow run {run_id} (the pairs' runs are its children).")
    return out_dir


def run_all(configs: Sequence[ExperimentConfig], is_study: bool, info: Any) -> None:
    """Run each config's pipeline (a study reuses pairs that finished before), print
    each run's rounds, and report the study."""
    from pipelines.stack import check_schedule_support
    from pipelines.study import finished_run, find_run_id, gather_runs

    if configs[0].schedule:
        check_schedule_support(info)

    for config in configs:
        print(f"== strategy {config.strategy}: rounds 0..{config.selection_rounds}, model {config.model}, "
              f"pool {config.pool.source}, seed {config.seed}, stack '{info.stack}'")
        done = finished_run(info.tracking_uri, config.tracking.experiment, config.strategy, config.seed,
                            config.study_key()) if is_study else None
        if done is not None:
            print(f"== {config.strategy}, seed {config.seed}: finished before (MLflow run {done.info.run_id}); reused")
            continue
        run = run_pipeline(config, info.tracker)
        if config.schedule:
            print(f"Scheduled '{config.strategy}' with cron '{config.schedule}' on stack '{info.stack}'.")
            continue
        run_id = find_run_id(info.tracking_uri, config.tracking.experiment, run.name)
        print(f"== {config.strategy}, seed {config.seed}: ZenML run '{run.name}', MLflow run {run_id}")
        print_rounds(info.tracking_uri, run_id)

    if is_study:
        experiment = configs[0].tracking.experiment
        runs = gather_runs(info.tracking_uri, experiment, configs[0].study.strategies, configs[0].study.seeds,
                           study_key=configs[0].study_key())
        report_study(info.tracking_uri, experiment, runs)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        if args.report is not None:
            if not args.report.strip():
                raise ConfigError("--report needs an MLflow experiment name")
            config = load_experiment(args)
        else:
            configs, is_study = plan_runs(args)
            config = configs[0]
            pool_size = check_pool(config)
            for each in configs:
                each.check_budget(pool_size, f"the {each.pool.source} pool")
            check_resources(config)

        from pipelines.stack import prepare_stack, use_repo_source_root
        from pipelines.study import gather_runs

        use_repo_source_root()
        info = prepare_stack(config)
        if info.created:
            print(f"Registered and activated the local ZenML stack '{info.stack}' with the MLflow "
                  f"experiment tracker '{info.tracker}' ({info.tracking_uri}).")
        if args.report is not None:
            strategies = parse_list(args.strategies, "--strategies") if args.strategies is not None else None
            seeds = parse_list(args.seeds, "--seeds", int) if args.seeds is not None else None
            runs = gather_runs(info.tracking_uri, args.report, strategies, seeds)
            report_study(info.tracking_uri, args.report, runs)
        else:
            run_all(configs, is_study, info)
    except ActiveITError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume from the last finished step", file=sys.stderr)
        return 130
    print(f"Done in {time.perf_counter() - started:.0f} s.")
    print_ui_commands(info.tracking_uri, args.report or config.tracking.experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())

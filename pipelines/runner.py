"""Run what ``run.py`` planned: set up the stack, run (or schedule) each config's pipeline,
reuse the pairs of a study that finished before, and write the study's report."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activeit.errors import ActiveITError
from activeit.experiment import ExperimentConfig
from pipelines.console import print_rounds
from pipelines.stack import StackInfo, check_schedule_support, prepare_stack, use_repo_source_root
from pipelines.study import build_study, find_run_id, finished_run, gather_runs, log_study, write_study


def prepare(config: ExperimentConfig) -> StackInfo:
    """The config's ZenML stack with its MLflow tracker (registered and activated if need be)."""
    use_repo_source_root()
    info = prepare_stack(config)
    if info.created:
        print(f"Registered and activated the local ZenML stack '{info.stack}' with the MLflow "
              f"experiment tracker '{info.tracker}' ({info.tracking_uri}).")
    return info


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


def run_all(configs: Sequence[ExperimentConfig], is_study: bool, info: StackInfo, outputs: Path) -> None:
    """Run each config's pipeline (a study reuses pairs that finished before), print
    each run's rounds, and report the study in ``outputs``."""
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
        report_study(info.tracking_uri, experiment, runs, outputs)


def report_study(tracking_uri: str, experiment: str, runs: Sequence[Any], outputs: Path) -> Path:
    """Write the study of ``runs`` to ``outputs/study-<experiment>/``, log its parent MLflow
    run and print ``study.md``; returns the folder."""
    study = build_study(tracking_uri, runs)
    tags = runs[0].data.tags
    title = (f"{experiment}: {' vs '.join(study.strategies)}, seeds {','.join(map(str, study.seeds))} "
             f"({tags.get('model')} on {tags.get('pool')})")
    out_dir = outputs / f"study-{experiment}"
    files = write_study(study, out_dir, title)
    run_id = log_study(tracking_uri, experiment, study, files, title)
    print((out_dir / "study.md").read_text(encoding="utf-8"))
    print(f"Study written to {out_dir} and logged to MLflow run {run_id} (the pairs' runs are its children).")
    return out_dir

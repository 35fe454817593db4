"""Run what ``run.py`` planned: set up the stack, run (or schedule) each config's pipeline,
reuse the pairs of a study that finished before, and write the study's report."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

from activeit.errors import ActiveITError
from activeit.evaluation import ROUGE_L
from experiment.config import ExperimentConfig
from pipelines.console import print_rounds, print_study_verdict
from pipelines.stack import LOCAL_FLAVORS, StackInfo, check_schedule_support, prepare_stack, use_repo_source_root
from pipelines.watch import reap_killed_runs, watched
from pipelines.study import study_folder, write_study
from tracking.policy import run_name
from tracking.study import build_study, check_same_study, find_run_id, finished_run, gather_runs, log_study


def prepare(config: ExperimentConfig) -> StackInfo:
    """The config's ZenML stack with its MLflow tracker (registered and activated if need be)."""
    use_repo_source_root()
    info = prepare_stack(config)
    if info.created:
        print(f"Registered and activated the local ZenML stack '{info.stack}' with the MLflow "
              f"experiment tracker '{info.tracker}' ({info.tracking_uri}).")
    return info


def run_pipeline(config: ExperimentConfig, info: StackInfo) -> Any:
    """Run (or schedule) the pipeline; a failed step becomes one line naming it. A run of a
    local orchestrator is watched: when it stops early, ZenML and MLflow say so."""
    from pipelines.active_tuning import configured

    name = None if config.schedule else run_name(config, datetime.now())
    local = name is not None and info.orchestrator_flavor in LOCAL_FLAVORS
    try:
        with watched(name, config.tracking.experiment, info.tracking_uri) if local else nullcontext():
            return configured(config, name)(config=config, experiment_tracker=info.tracker)
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
    check_same_study(info.tracking_uri, configs[0])
    if info.orchestrator_flavor in LOCAL_FLAVORS:
        for name in reap_killed_runs():
            print(f"== ZenML run '{name}' was killed before it finished (its process is gone): now marked "
                  "failed in ZenML and killed in MLflow")

    for config in configs:
        print(f"== strategy {config.strategy}: rounds 0..{config.selection_rounds}, model {config.model}, "
              f"pool {config.pool.source}, seed {config.seed}, stack '{info.stack}'")
        done = finished_run(info.tracking_uri, config.tracking.experiment, config.strategy, config.seed,
                            config.study_key()) if is_study else None
        if done is not None:
            print(f"== {config.strategy}, seed {config.seed}: finished before (MLflow run {done.info.run_id}); reused")
            continue
        run = run_pipeline(config, info)
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
        report_study(info.tracking_uri, experiment, runs, outputs, metric=configs[0].study.metric)


def report_study(
    tracking_uri: str, experiment: str, runs: Sequence[Any], outputs: Path, subset: bool = False, metric: str = ROUGE_L
) -> Path:
    """Write the study of ``runs`` to ``outputs/study-<experiment>/`` (a ``subset`` picked by
    ``--strategies`` / ``--seeds``: to a folder of its own, named after what it holds), log
    its parent MLflow run and print ``study.md``, comparing on ``metric``; returns the folder."""
    study = build_study(tracking_uri, runs, metric)
    tags = runs[0].data.tags
    title = (f"{experiment}: {' vs '.join(study.strategies)}, seeds {','.join(map(str, study.seeds))} "
             f"({tags.get('model')} on {tags.get('pool')})")
    out_dir = outputs / study_folder(experiment, study if subset else None, metric)
    files = write_study(study, out_dir, title)
    run_id = log_study(tracking_uri, experiment, study, files, title, adopt=not subset)
    print((out_dir / "study.md").read_text(encoding="utf-8"))
    children = "" if subset else " (the pairs' runs are its children)"
    print(f"Study written to {out_dir} and logged to MLflow run {run_id}{children}.")
    print_study_verdict(study)
    return out_dir

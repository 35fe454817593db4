"""Logging one active-tuning run to MLflow: the experiment's view, the run's tags,
description and params, and per round its metrics and files.

Everything here logs into the *active* MLflow run (the ZenML MLflow tracker opens one per
pipeline run).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from activeit.evaluation import EvalReport
from activeit.scoring.scores import ScoreTable
from activeit.selection.strategies import STRATEGY_REGISTRY, Selection
from experiment.config import ExperimentConfig
from tracking.schema import (
    BASE_PREFIX,
    BY_TASKS_PREFIX,
    COMPLETE_TAG,
    DESCRIPTION_TAG,
    EVALUATION_FILE,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    PICKED_CATEGORIES_KEY,
    PREDICTIONS_FILE,
    SCORES_FILE,
    SCORING_TIME,
    SCORING_TOKENS,
    SCORING_WORK_SAVED,
    SELECTION_FILE,
    STUDY_KEY_TAG,
    TASK_MAP_FILE,
    TRAINING_FILE,
    TRAINING_TASKS_KEY,
    round_folder,
)


class _NoAutologWarning(logging.Filter):
    """Drops ZenML's "Failed to disable MLflow autologging for ... ['fastai']": ZenML
    disables autologging for every framework MLflow knows, and fastai is not installed."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to disable MLflow autologging")


def quiet_autolog_warning() -> None:
    """Silence that warning at its source, ZenML's MLflow tracker logger (once)."""
    logger = logging.getLogger("zenml.integrations.mlflow.experiment_trackers.mlflow_experiment_tracker")
    if not any(isinstance(f, _NoAutologWarning) for f in logger.filters):
        logger.addFilter(_NoAutologWarning())


def run_tags(config: ExperimentConfig) -> dict[str, str]:
    """The tags of an experiment's MLflow run."""
    pool = config.pool.source + (f":{Path(config.pool.path).name}" if config.pool.path else "")
    return {
        "strategy": config.strategy,
        "seed": str(config.seed),
        "model": config.model,
        "pool": pool,
        "config_hash": config.digest(),
        STUDY_KEY_TAG: config.study_key(),
    }


def run_description(config: ExperimentConfig) -> str:
    """What a run does, in words: strategy, seed, pool and model."""
    pool = config.pool.source + (f" pool at {config.pool.path}" if config.pool.path else " pool")
    picks = STRATEGY_REGISTRY[config.strategy]
    later = (f"then {config.selection_rounds} round(s) of {picks.description}"
             + ("" if picks.takes_all else f", {config.tasks_per_round} per round"))
    return (f"Active instruction tuning with the **{config.strategy}** strategy, seed {config.seed}: "
            f"`{config.model}` fine-tuned on tasks of the {pool}, {config.initial_tasks} random tasks in round 0, "
            f"{later}. Each round is evaluated (ROUGE-L, exact match) on held-out test tasks; "
            f"metrics use step = round, and `{BY_TASKS_PREFIX}*` step = training tasks (base model at 0).")


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Open the experiment in MLflow's model-training view."""
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)


def config_params(config: ExperimentConfig) -> dict[str, str]:
    """The flattened config as MLflow params, strings as MLflow stores them (lists and
    mappings as JSON)."""
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in config.flat().items()}


def log_config(config: ExperimentConfig) -> None:
    """The experiment's view, the run's description and tags, and the flattened config as
    params (:func:`config_params`)."""
    mark_model_training(MlflowClient(), mlflow.active_run().info.experiment_id)
    mlflow.set_tags(run_tags(config) | {DESCRIPTION_TAG: run_description(config)})
    mlflow.log_params(config_params(config))


def _prefixed(report: EvalReport, prefix: str) -> dict[str, float]:
    return {prefix + name: value for name, value in report.headline().items()}


def scoring_tokens(scores: ScoreTable) -> float | None:
    """The token slots a score table's forward passes ran (decoding and teacher forcing, padded);
    None for a table that did not count them."""
    stats = scores.meta.get("stats") or {}
    counted = [stats[key] for key in ("decoding_padded_tokens", "forcing_padded_tokens") if key in stats]
    return float(sum(counted)) if counted else None


def round_metrics(
    report: EvalReport,
    num_training_tasks: int,
    training_metrics: Mapping[str, Any],
    scoring_time_s: float | None = None,
    scores: ScoreTable | None = None,
) -> dict[str, float]:
    """The :data:`~tracking.schema.ROUND_METRICS` of one round (groups without instances,
    times not measured, and the work saved of a round not scored adaptively are left out)."""
    metrics: dict[str, float | None] = {
        "num_training_tasks": float(num_training_tasks),
        "train_loss": training_metrics.get("final_loss"),
        "training_time_s": training_metrics.get("wall_time_s"),
        SCORING_TIME: scoring_time_s,
        SCORING_TOKENS: scoring_tokens(scores) if scores is not None else None,
        SCORING_WORK_SAVED: (scores.meta.get("adaptive") or {}).get("work_saved") if scores is not None else None,
    }
    return report.headline() | {key: float(value) for key, value in metrics.items() if value is not None}


def log_round(
    config: ExperimentConfig,
    round_index: int,
    selection: Selection,
    training_tasks: Sequence[str],
    report: EvalReport,
    training_metrics: Mapping[str, Any],
    scores: ScoreTable | None = None,
    scoring_time_s: float | None = None,
    base_report: EvalReport | None = None,
) -> None:
    """Metrics (``step=round``; the base model's once, as ``base_*``) and the round's files:
    selection (with the task-map categories of the picks), evaluation (with the per-task
    scores a study pairs), the per-instance predictions and scores, scores, task map.
    The last round tags the run complete."""
    mlflow.log_metrics(round_metrics(report, len(training_tasks), training_metrics, scoring_time_s, scores),
                       step=round_index)
    mlflow.log_metrics(_prefixed(report, BY_TASKS_PREFIX), step=len(training_tasks))
    if base_report is not None:
        mlflow.log_metrics(_prefixed(base_report, BASE_PREFIX), step=0)
        mlflow.log_metrics(_prefixed(base_report, BY_TASKS_PREFIX), step=0)
    folder = round_folder(round_index)
    picked = selection.to_dict()
    categories = picked.pop("categories")
    mlflow.log_dict(picked | {TRAINING_TASKS_KEY: list(training_tasks), PICKED_CATEGORIES_KEY: categories},
                    f"{folder}/{SELECTION_FILE}")
    if round_index == config.selection_rounds:
        mlflow.set_tag(COMPLETE_TAG, "true")
    mlflow.log_dict(report.metrics(), f"{folder}/{EVALUATION_FILE}")
    mlflow.log_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in report.predictions),
                    f"{folder}/{PREDICTIONS_FILE}")
    mlflow.log_dict({k: v for k, v in training_metrics.items() if k != "config"}, f"{folder}/{TRAINING_FILE}")
    if scores is not None and len(scores):
        from activeit.selection.taskmap import plot_task_map

        with tempfile.TemporaryDirectory() as tmp:
            table = scores.save(Path(tmp) / SCORES_FILE)
            mlflow.log_artifact(str(table), folder)
            png = plot_task_map(scores, Path(tmp) / TASK_MAP_FILE, selected=selection.tasks,
                                title=f"{config.strategy}, round {round_index}")
            mlflow.log_artifact(str(png), folder)

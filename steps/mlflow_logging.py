"""MLflow logging of one active-tuning run: tags, params, per-round metrics and artifacts,
and every round's model as a version of a registered model.

Everything here logs into the *active* MLflow run (the ZenML MLflow tracker opens one
per pipeline run); reading back (:func:`metric_rows`) takes an explicit tracking URI.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from activeit.config import ExperimentConfig
from activeit.evaluation import EvalReport
from activeit.scores import ScoreTable
from activeit.strategies import Selection

#: Metrics logged once per round with ``step=round``.
ROUND_METRICS = (
    "rougeL", "rougeL_classification", "rougeL_generation", "exact_match",
    "num_training_tasks", "train_loss", "training_time_s", "scoring_time_s",
)
#: Tag on model versions: the ZenML artifact they were logged from (no duplicates on resume).
SOURCE_TAG = "zenml_artifact_id"
#: Files of a model folder that are bookkeeping, not model.
NOT_MODEL_FILES = ("model_folder.json", "summary.md")


def run_tags(config: ExperimentConfig) -> dict[str, str]:
    """The tags of an experiment's MLflow run."""
    pool = config.pool.source + (f":{Path(config.pool.path).name}" if config.pool.path else "")
    return {
        "strategy": config.strategy,
        "seed": str(config.seed),
        "model": config.model,
        "pool": pool,
        "config_hash": config.digest(),
    }


def round_metrics(
    report: EvalReport,
    num_training_tasks: int,
    training_metrics: Mapping[str, Any],
    scoring_time_s: float | None = None,
) -> dict[str, float]:
    """The :data:`ROUND_METRICS` of one round (groups without instances are left out)."""
    metrics: dict[str, float | None] = {
        "rougeL": report.overall.get("rougeL"),
        "rougeL_classification": report.classification.get("rougeL"),
        "rougeL_generation": report.generation.get("rougeL"),
        "exact_match": report.overall.get("exact_match"),
        "num_training_tasks": float(num_training_tasks),
        "train_loss": training_metrics.get("final_loss"),
        "training_time_s": training_metrics.get("wall_time_s"),
        "scoring_time_s": scoring_time_s,
    }
    return {key: float(value) for key, value in metrics.items() if value is not None}


def log_config(config: ExperimentConfig) -> None:
    """Tags and the flattened config as params (MLflow params are strings)."""
    mlflow.set_tags(run_tags(config))
    params = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in config.flat().items()}
    mlflow.log_params(params)


def log_round(
    config: ExperimentConfig,
    round_index: int,
    selection: Selection,
    training_tasks: Sequence[str],
    report: EvalReport,
    training_metrics: Mapping[str, Any],
    scores: ScoreTable | None = None,
    scoring_time_s: float | None = None,
) -> None:
    """Metrics (``step=round``) and the round's files: selection, evaluation, scores, task map."""
    mlflow.log_metrics(round_metrics(report, len(training_tasks), training_metrics, scoring_time_s), step=round_index)
    folder = f"round_{round_index}"
    mlflow.log_dict(selection.to_dict() | {"training_tasks": list(training_tasks)}, f"{folder}/selected_tasks.json")
    mlflow.log_dict(report.metrics(), f"{folder}/evaluation.json")
    mlflow.log_dict({k: v for k, v in training_metrics.items() if k != "config"}, f"{folder}/training.json")
    if scores is not None and len(scores):
        from activeit.taskmap import plot_task_map

        with tempfile.TemporaryDirectory() as tmp:
            table = scores.save(Path(tmp) / "score_table.csv")
            mlflow.log_artifact(str(table), folder)
            png = plot_task_map(scores, Path(tmp) / "task_map.png", selected=selection.tasks,
                                title=f"{config.strategy}, round {round_index}")
            mlflow.log_artifact(str(png), folder)


def log_and_register_model(
    model_dir: str | Path, registered_name: str, round_index: int, source_id: str
) -> int:
    """Log the model folder under ``round_<r>/model`` and register it as a new version of
    ``registered_name``; returns the version. A model already registered from the same
    ZenML artifact (a resumed or cached round) is not logged twice: its version is returned.
    """
    client = MlflowClient()
    try:
        client.create_registered_model(registered_name, description="One version per active-tuning round.")
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in client.search_model_versions(f"name='{registered_name}'"):
        if version.tags.get(SOURCE_TAG) == source_id:
            mlflow.set_tag(f"model_round_{round_index}", f"{registered_name}/{version.version}")
            return int(version.version)
    artifact_path = f"round_{round_index}/model"
    for file in sorted(Path(model_dir).iterdir()):
        if file.is_file() and file.name not in NOT_MODEL_FILES:
            mlflow.log_artifact(str(file), artifact_path)
    run_id = mlflow.active_run().info.run_id
    version = client.create_model_version(
        registered_name,
        source=mlflow.get_artifact_uri(artifact_path),
        run_id=run_id,
        tags={"round": str(round_index), SOURCE_TAG: source_id},
        description=f"round {round_index}",
    )
    mlflow.set_tag(f"model_round_{round_index}", f"{registered_name}/{version.version}")
    return int(version.version)


def metric_rows(tracking_uri: str, run_id: str, keys: Iterable[str] = ROUND_METRICS) -> list[dict[str, Any]]:
    """One dict per round (``round`` + every metric logged at that step) of a run."""
    client = MlflowClient(tracking_uri=tracking_uri)
    rounds: dict[int, dict[str, Any]] = {}
    for key in keys:
        for point in client.get_metric_history(run_id, key):
            rounds.setdefault(point.step, {"round": point.step})[key] = point.value
    return [rounds[r] for r in sorted(rounds)]

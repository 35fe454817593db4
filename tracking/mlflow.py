"""MLflow logging of one active-tuning run: tags, params, per-round metrics and artifacts,
and every round's model as a version of a registered model.

Everything here logs into the *active* MLflow run (the ZenML MLflow tracker opens one
per pipeline run); reading back (:func:`metric_rows`) takes an explicit tracking URI.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from activeit.config.experiment import ExperimentConfig, is_server_uri
from activeit.evaluation import EvalReport
from activeit.scoring.scores import ScoreTable
from activeit.selection.strategies import Selection
from activeit.study.statistics import METRICS, RoundRecord, RunRecord

#: Metrics logged once per round with ``step=round``.
ROUND_METRICS = (
    "rougeL", "rougeL_classification", "rougeL_generation", "exact_match",
    "num_training_tasks", "train_loss", "training_time_s", "scoring_time_s",
)
#: The untuned base model's test metrics are logged once (step 0) as ``base_<metric>``.
BASE_PREFIX = "base_"
#: Run tags: what a study's runs share (:meth:`ExperimentConfig.study_key`), and that every
#: round of the run has been logged.
STUDY_KEY_TAG = "study_key"
COMPLETE_TAG = "complete"
#: Tag on model versions: the ZenML artifact they were logged from (no duplicates on resume).
SOURCE_TAG = "zenml_artifact_id"
#: MLflow 3 opens an experiment in its model-training view (runs table, charts) instead of
#: the GenAI view (traces) when this experiment tag says so.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
#: The MLflow UI's query for its model-training view (MLflow 3 opens the GenAI view unless told).
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
#: MLflow's tag for a run's description (shown on the run page and in the runs table).
DESCRIPTION_TAG = "mlflow.note.content"
#: The evaluation metrics again with ``step`` = training tasks (the base model at 0), so
#: that the UI charts them against the budget as well as against the round.
BY_TASKS_PREFIX = "by_training_tasks/"


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


def report_metrics(report: EvalReport, prefix: str = "") -> dict[str, float]:
    """ROUGE-L overall / classification / generation and exact match of a report (groups
    without instances are left out)."""
    metrics = {
        "rougeL": report.overall.get("rougeL"),
        "rougeL_classification": report.classification.get("rougeL"),
        "rougeL_generation": report.generation.get("rougeL"),
        "exact_match": report.overall.get("exact_match"),
    }
    return {prefix + key: float(value) for key, value in metrics.items() if value is not None}


def round_metrics(
    report: EvalReport,
    num_training_tasks: int,
    training_metrics: Mapping[str, Any],
    scoring_time_s: float | None = None,
) -> dict[str, float]:
    """The :data:`ROUND_METRICS` of one round (groups without instances are left out)."""
    metrics: dict[str, float | None] = {
        "num_training_tasks": float(num_training_tasks),
        "train_loss": training_metrics.get("final_loss"),
        "training_time_s": training_metrics.get("wall_time_s"),
        "scoring_time_s": scoring_time_s,
    }
    return report_metrics(report) | {key: float(value) for key, value in metrics.items() if value is not None}


def run_description(config: ExperimentConfig) -> str:
    """What a run does, in words: strategy, seed, pool and model."""
    from activeit.selection.strategies import DESCRIPTIONS

    pool = config.pool.source + (f" pool at {config.pool.path}" if config.pool.path else " pool")
    later = (f"then {config.selection_rounds} round(s) of {DESCRIPTIONS[config.strategy]}"
             + ("" if config.strategy == "all" else f", {config.tasks_per_round} per round"))
    return (f"Active instruction tuning with the **{config.strategy}** strategy, seed {config.seed}: "
            f"`{config.model}` fine-tuned on tasks of the {pool}, {config.initial_tasks} random tasks in round 0, "
            f"{later}. Each round is evaluated (ROUGE-L, exact match) on held-out test tasks; "
            f"metrics use step = round, and `{BY_TASKS_PREFIX}*` step = training tasks (base model at 0).")


def mark_model_training(client: MlflowClient, experiment_id: str) -> None:
    """Open the experiment in MLflow's model-training view."""
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)


def log_config(config: ExperimentConfig) -> None:
    """The experiment's view, the run's description and tags, and the flattened config as
    params (MLflow params are strings)."""
    mark_model_training(MlflowClient(), mlflow.active_run().info.experiment_id)
    mlflow.set_tags(run_tags(config) | {DESCRIPTION_TAG: run_description(config)})
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
    base_report: EvalReport | None = None,
) -> None:
    """Metrics (``step=round``; the base model's once, as ``base_*``) and the round's files:
    selection (with the task-map categories of the picks), evaluation, scores, task map.
    The last round tags the run complete."""
    mlflow.log_metrics(round_metrics(report, len(training_tasks), training_metrics, scoring_time_s), step=round_index)
    mlflow.log_metrics(report_metrics(report, BY_TASKS_PREFIX), step=len(training_tasks))
    if base_report is not None:
        mlflow.log_metrics(report_metrics(base_report, BASE_PREFIX), step=0)
        mlflow.log_metrics(report_metrics(base_report, BY_TASKS_PREFIX), step=0)
    folder = f"round_{round_index}"
    picked: dict[str, str] = {}
    if scores is not None and len(scores):
        from activeit.selection.taskmap import categorize

        categories = categorize(scores)
        picked = {task: categories[task] for task in selection.tasks if task in categories}
    mlflow.log_dict(
        selection.to_dict() | {"training_tasks": list(training_tasks), "picked_categories": picked},
        f"{folder}/selected_tasks.json",
    )
    if round_index == config.selection_rounds:
        mlflow.set_tag(COMPLETE_TAG, "true")
    mlflow.log_dict(report.metrics(), f"{folder}/evaluation.json")
    mlflow.log_dict({k: v for k, v in training_metrics.items() if k != "config"}, f"{folder}/training.json")
    if scores is not None and len(scores):
        from activeit.selection.taskmap import plot_task_map

        with tempfile.TemporaryDirectory() as tmp:
            table = scores.save(Path(tmp) / "score_table.csv")
            mlflow.log_artifact(str(table), folder)
            png = plot_task_map(scores, Path(tmp) / "task_map.png", selected=selection.tasks,
                                title=f"{config.strategy}, round {round_index}")
            mlflow.log_artifact(str(png), folder)


def register_model(
    config: ExperimentConfig, source_uri: str, source_id: str, round_index: int, training_tasks: Sequence[str],
    report: EvalReport,
) -> int:
    """Register the stored ZenML model artifact at ``source_uri`` as a new version of the
    config's registered model, described in words and tagged (round, strategy, seed,
    training tasks, the round's metrics); returns the version.

    Nothing is copied: the version's source is the artifact's own location (its folder in
    the artifact store), so each round's weights exist once. Only a local artifact store
    under a remote tracking server is uploaded, since the server cannot read this disk. The
    artifact store is the copy the pipeline itself loads, caches and resumes from; MLflow's
    registry is the catalogue that points at it. A model already registered from the same
    ZenML artifact (a resumed or cached round) is not registered twice: its version is returned.
    """
    client = MlflowClient()
    name = config.registered_model_name
    try:
        client.create_registered_model(name, description=(
            f"One version per round of active instruction tuning with the {config.strategy} strategy "
            f"(experiment {config.tracking.experiment}): `{config.model}` fine-tuned on the tasks selected so far "
            f"from the {config.pool.source} pool. Version tags: round, seed, training tasks, ROUGE-L."
        ))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    for version in client.search_model_versions(f"name='{name}'"):
        if version.tags.get(SOURCE_TAG) == source_id:
            mlflow.set_tag(f"model_round_{round_index}", f"{name}/{version.version}")
            return int(version.version)
    source = source_uri
    if "://" not in source_uri and is_server_uri(mlflow.get_tracking_uri()):
        # A tracking server cannot point at this machine's disk (it refuses a local source):
        # the model goes to the server's artifact store once, the only copy the server can serve.
        artifact_path = f"round_{round_index}/model"
        mlflow.log_artifacts(source_uri, artifact_path)
        source = mlflow.get_artifact_uri(artifact_path)
    metrics = report_metrics(report)
    rouge = f", ROUGE-L {metrics['rougeL']:.2f} on the test tasks" if "rougeL" in metrics else ""
    tags = {"round": round_index, "strategy": config.strategy, "seed": config.seed,
            "num_training_tasks": len(training_tasks), **{k: f"{v:.4f}" for k, v in metrics.items()}}
    version = client.create_model_version(
        name,
        source=source,
        run_id=mlflow.active_run().info.run_id,
        tags={SOURCE_TAG: source_id, **{key: str(value) for key, value in tags.items()}},
        description=f"Round {round_index} of {config.strategy}, seed {config.seed}: fine-tuned on "
        f"{len(training_tasks)} tasks{rouge}.",
    )
    mlflow.set_tag(f"model_round_{round_index}", f"{name}/{version.version}")
    return int(version.version)


def metric_rows(tracking_uri: str, run_id: str, keys: Iterable[str] = ROUND_METRICS) -> list[dict[str, Any]]:
    """One dict per round (``round`` + every metric logged at that step) of a run."""
    client = MlflowClient(tracking_uri=tracking_uri)
    rounds: dict[int, dict[str, Any]] = {}
    for key in keys:
        for point in client.get_metric_history(run_id, key):
            rounds.setdefault(point.step, {"round": point.step})[key] = point.value
    return [rounds[r] for r in sorted(rounds)]


def read_run_record(tracking_uri: str, run: Run) -> RunRecord:
    """A tracked run as a study record: per round its metrics, training tasks and the
    categories of its picks (from ``round_<r>/selected_tasks.json``), and the base model."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file each
    client = MlflowClient(tracking_uri=tracking_uri)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in metric_rows(tracking_uri, run.info.run_id):
            path = client.download_artifacts(run.info.run_id, f"round_{row['round']}/selected_tasks.json", tmp)
            selected = json.loads(Path(path).read_text(encoding="utf-8"))
            rounds.append(RoundRecord(
                round=int(row["round"]),
                training_tasks=tuple(selected["training_tasks"]),
                metrics={m: row[m] for m in METRICS if m in row},
                picked_categories=selected.get("picked_categories", {}),
            ))
    metrics = run.data.metrics
    return RunRecord(
        strategy=run.data.tags["strategy"],
        seed=int(run.data.tags["seed"]),
        rounds=tuple(rounds),
        base={m: metrics[BASE_PREFIX + m] for m in METRICS if BASE_PREFIX + m in metrics},
        run_id=run.info.run_id,
    )

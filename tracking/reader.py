"""Reading tracked runs back from MLflow (an explicit tracking URI): the store and an
experiment's page, a run by name, its base-model and per-round metrics, and a run as a study
record."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Run

from activeit.evaluation import HEADLINE_METRICS, STUDY_METRICS
from activeit.study.statistics import RoundRecord, RunRecord
from tracking.schema import (
    BASE_PREFIX,
    EVALUATION_FILE,
    MODEL_TRAINING_VIEW,
    PER_TASK_KEY,
    PICKED_CATEGORIES_KEY,
    ROUND_METRICS,
    SCORING_TIME,
    SCORING_TOKENS,
    SELECTION_FILE,
    TRAINING_TASKS_KEY,
    round_folder,
)


def open_store(tracking_uri: str) -> None:
    """Open the MLflow store at ``tracking_uri`` (a fresh local store creates its tables here:
    call it under a lock where runs may start at once)."""
    MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)


def experiment_page(tracking_uri: str, experiment: str) -> str:
    """The MLflow UI's page of ``experiment`` in its model-training view, relative to the UI's
    address ("" when the experiment does not exist)."""
    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    return f"#/experiments/{found.experiment_id}?{MODEL_TRAINING_VIEW}" if found else ""


def run_named(tracking_uri: str, experiment: str, run_name: str) -> Run | None:
    """The MLflow run named ``run_name`` in ``experiment`` (a ZenML pipeline run's, named
    after it), or None."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f'tags.mlflow.runName = "{run_name}"',
                              max_results=1)
    return runs[0] if runs else None


def base_metrics(tracking_uri: str, run_id: str, keys: Iterable[str]) -> dict[str, float]:
    """The untuned base model's metrics of a run (logged once as ``base_<metric>``), of ``keys``."""
    metrics = MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.metrics
    return {key: metrics[BASE_PREFIX + key] for key in keys if BASE_PREFIX + key in metrics}


def metric_rows(tracking_uri: str, run_id: str, keys: Iterable[str] = ROUND_METRICS) -> list[dict[str, Any]]:
    """One dict per round (``round`` + every metric logged at that step) of a run."""
    client = MlflowClient(tracking_uri=tracking_uri)
    rounds: dict[int, dict[str, Any]] = {}
    for key in keys:
        for point in client.get_metric_history(run_id, key):
            rounds.setdefault(point.step, {"round": point.step})[key] = point.value
    return [rounds[r] for r in sorted(rounds)]


def _round_json(client: MlflowClient, run_id: str, folder: str, name: str, into: str) -> dict[str, Any] | None:
    """A JSON file of a round's folder (None when the run logged none)."""
    if f"{folder}/{name}" not in {info.path for info in client.list_artifacts(run_id, folder)}:
        return None
    path = client.download_artifacts(run_id, f"{folder}/{name}", into)
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _task_metrics(evaluation: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """Study metric -> test task -> its value, from a round's evaluation file (empty without one)."""
    per_task = (evaluation or {}).get(PER_TASK_KEY, {})
    found = {metric: {task: float(m[metric]) for task, m in per_task.items() if m.get(metric) is not None}
             for metric in STUDY_METRICS}
    return {metric: values for metric, values in found.items() if values}


def read_run_record(tracking_uri: str, run: Run) -> RunRecord:
    """A tracked run as a study record: per round its metrics, training tasks and the
    categories of its picks (from the round's selection file), each test task's study metrics
    (from its evaluation file, where logged), its selection cost, and the base model."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file each
    client = MlflowClient(tracking_uri=tracking_uri)
    run_id = run.info.run_id
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in metric_rows(tracking_uri, run_id):
            folder = round_folder(row["round"])
            path = client.download_artifacts(run_id, f"{folder}/{SELECTION_FILE}", tmp)
            selected = json.loads(Path(path).read_text(encoding="utf-8"))
            rounds.append(RoundRecord(
                round=int(row["round"]),
                training_tasks=tuple(selected[TRAINING_TASKS_KEY]),
                metrics={m: row[m] for m in HEADLINE_METRICS if m in row},
                picked_categories=selected.get(PICKED_CATEGORIES_KEY, {}),
                task_metrics=_task_metrics(_round_json(client, run_id, folder, EVALUATION_FILE, tmp)),
                cost={m: row[m] for m in (SCORING_TIME, SCORING_TOKENS) if m in row},
            ))
    metrics = run.data.metrics
    return RunRecord(
        strategy=run.data.tags["strategy"],
        seed=int(run.data.tags["seed"]),
        rounds=tuple(rounds),
        base={m: metrics[BASE_PREFIX + m] for m in HEADLINE_METRICS if BASE_PREFIX + m in metrics},
        run_id=run_id,
    )

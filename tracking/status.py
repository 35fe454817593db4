"""An MLflow run's status that tells the truth: RUNNING until its last round is logged,
FINISHED then, KILLED or FAILED when its pipeline run stopped early.

ZenML's MLflow tracker ends the run (FINISHED) after every step that logs to it, so a run
stopped after round 0 would read FINISHED with one round: the tracker step of every round
but the last opens it again (:func:`reopen`), and whoever sees the pipeline stop early
closes it with the real status (:func:`close`).
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from tracking.reader import run_named
from tracking.schema import COMPLETE_TAG

RUNNING = RunStatus.to_string(RunStatus.RUNNING)
KILLED = RunStatus.to_string(RunStatus.KILLED)
FAILED = RunStatus.to_string(RunStatus.FAILED)


def reopen(tracking_uri: str, run_id: str) -> None:
    """Mark the run RUNNING again: more rounds are to come."""
    MlflowClient(tracking_uri=tracking_uri).update_run(run_id, status=RUNNING)


def close(tracking_uri: str, experiment: str, run_name: str, status: str) -> bool:
    """End the MLflow run of pipeline run ``run_name`` with ``status`` (:data:`KILLED`,
    :data:`FAILED`) unless it has ended on its own (all rounds logged, or its tracker step
    failed); whether it was ended here."""
    run = run_named(tracking_uri, experiment, run_name)
    complete = run is not None and run.data.tags.get(COMPLETE_TAG) == "true"
    if run is None or complete or run.info.status not in (RUNNING, RunStatus.to_string(RunStatus.FINISHED)):
        return False
    MlflowClient(tracking_uri=tracking_uri).set_terminated(run.info.run_id, status)
    return True

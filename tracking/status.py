"""An MLflow run's status that tells the truth: RUNNING until its last round is logged,
FINISHED then, KILLED or FAILED when its pipeline run stopped early.

ZenML's MLflow tracker ends the run (FINISHED) after every step that logs to it, so a run
stopped after round 0 would read FINISHED with one round: the tracker step of every round
but the last asks for the run to be opened again (:func:`hold_open`), which its success hook
does once ZenML has ended it (:func:`keep_run_open`); whoever sees the pipeline stop early
closes it with the real status (:func:`close`).
"""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient
from mlflow.entities import RunStatus

from tracking.reader import run_named
from tracking.schema import COMPLETE_TAG

RUNNING = RunStatus.to_string(RunStatus.RUNNING)
KILLED = RunStatus.to_string(RunStatus.KILLED)
FAILED = RunStatus.to_string(RunStatus.FAILED)


#: The (tracking URI, run id) that :func:`keep_run_open` opens again once the step succeeded.
_to_reopen: list[tuple[str, str]] = []


def reopen(tracking_uri: str, run_id: str) -> None:
    """Mark the run RUNNING again: more rounds are to come."""
    MlflowClient(tracking_uri=tracking_uri).update_run(run_id, status=RUNNING)


def hold_open(more_rounds: bool) -> None:
    """Called in a tracker step: with ``more_rounds``, the active MLflow run is to read RUNNING
    again once the step has ended (:func:`keep_run_open`); without, it ends FINISHED."""
    _to_reopen.clear()
    if more_rounds and (run := mlflow.active_run()) is not None:
        _to_reopen.append((mlflow.get_tracking_uri(), run.info.run_id))


def keep_run_open() -> None:
    """The tracker step's success hook: mark the MLflow run RUNNING again after ZenML ended it,
    when more rounds follow (:func:`hold_open`)."""
    while _to_reopen:
        reopen(*_to_reopen.pop())


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

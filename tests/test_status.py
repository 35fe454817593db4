"""Honest run status (issue 20, part 4), through run.py in a subprocess on this worker's
private ZenML store: a run stopped by SIGINT or SIGTERM after round 0 reads failed in ZenML
and KILLED in MLflow (not FINISHED with round 0 only); a SIGKILLed run reads RUNNING in
MLflow until the rerun that completes it marks it (ZenML failed, MLflow killed) and says so
in one line."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient
from zenml.client import Client
from zenml.enums import ExecutionStatus

from experiment.config import CONFIG_DIR, load_config
from pipelines.active_tuning import PIPELINE_NAME
from pipelines.stack import StackInfo, prepare_stack, use_repo_source_root
from tracking.reader import metric_rows, run_named

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "activeit-status-test"
COMMAND = [sys.executable, "run.py", "--strategy", "random", "--config", "configs/smoke.yaml", "--rounds", "1",
           "--seed", "3", "--experiment", EXPERIMENT]
ROUND_0_LOGGED = "`tracker_round_0` has finished"


@pytest.fixture(scope="module")
def stack() -> StackInfo:
    use_repo_source_root()
    return prepare_stack(load_config(CONFIG_DIR / "smoke.yaml"))


def _run_until_round_0(stop: signal.Signals) -> tuple[int, str]:
    """``COMMAND`` until round 0 is logged to MLflow, then ``stop`` sent to it: exit code and output."""
    process = subprocess.Popen(COMMAND, cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    logged = threading.Event()

    def read() -> None:
        for line in process.stdout:
            lines.append(line)
            if ROUND_0_LOGGED in line:
                logged.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert logged.wait(timeout=400), "".join(lines)[-3000:]
        process.send_signal(stop)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=30)
    return code, "".join(lines)


def _newest_run() -> object:
    runs = Client().list_pipeline_runs(pipeline=PIPELINE_NAME, sort_by="desc:created", size=20).items
    return next(run for run in runs if run.name.startswith(f"{EXPERIMENT}-random-seed3-"))


@pytest.fixture(scope="module")
def stopped(stack: StackInfo) -> dict[str, tuple[int, str, str]]:
    """The same command stopped by SIGINT, SIGTERM and SIGKILL after round 0, then run to
    the end: per signal (and "rerun") the exit code, the output and the ZenML run's name."""
    done: dict[str, tuple[int, str, str]] = {}
    for stop in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        code, out = _run_until_round_0(stop)
        done[stop.name] = (code, out, _newest_run().name)
    killed = done["SIGKILL"][2]  # the state a SIGKILL leaves, before the rerun looks at it:
    done["after SIGKILL"] = (0, Client().get_pipeline_run(killed).status.value,
                             run_named(stack.tracking_uri, EXPERIMENT, killed).info.status)
    rerun = subprocess.run(COMMAND, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=900)
    done["rerun"] = (rerun.returncode, rerun.stdout + rerun.stderr, _newest_run().name)
    return done


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_run_stopped_by_a_signal_is_failed_in_zenml_and_killed_in_mlflow(
    stopped: dict[str, tuple[int, str, str]], stack: StackInfo, name: str, code: int
) -> None:
    exit_code, out, run_name = stopped[name]
    assert exit_code == code, out[-3000:]
    assert "interrupted (a run that had started is marked failed in ZenML and killed in MLflow)" in out
    assert Client().get_pipeline_run(run_name).status == ExecutionStatus.FAILED
    tracked = run_named(stack.tracking_uri, EXPERIMENT, run_name)
    assert tracked.info.status == "KILLED" and "complete" not in tracked.data.tags
    assert [row["round"] for row in metric_rows(stack.tracking_uri, tracked.info.run_id)] == [0]


def test_a_killed_run_never_reads_finished_in_mlflow(stopped: dict[str, tuple[int, str, str]]) -> None:
    _, zenml_status, mlflow_status = stopped["after SIGKILL"]
    assert stopped["SIGKILL"][0] == -signal.SIGKILL
    assert zenml_status == ExecutionStatus.RUNNING.value  # nobody could tell ZenML yet
    assert mlflow_status == "RUNNING"  # not FINISHED with round 0 only


def test_the_rerun_marks_the_killed_run_and_says_so(
    stopped: dict[str, tuple[int, str, str]], stack: StackInfo
) -> None:
    code, out, run_name = stopped["rerun"]
    killed = stopped["SIGKILL"][2]
    assert code == 0, out[-3000:]
    notes = [line for line in out.splitlines() if f"ZenML run '{killed}' was killed before it finished" in line]
    assert len(notes) == 1
    assert Client().get_pipeline_run(killed).status == ExecutionStatus.FAILED
    assert run_named(stack.tracking_uri, EXPERIMENT, killed).info.status == "KILLED"
    finished = run_named(stack.tracking_uri, EXPERIMENT, run_name)
    assert Client().get_pipeline_run(run_name).status == ExecutionStatus.COMPLETED
    assert finished.info.status == "FINISHED" and finished.data.tags.get("complete") == "true"
    assert [row["round"] for row in metric_rows(stack.tracking_uri, finished.info.run_id)] == [0, 1]

"""Watching a local pipeline run, for honest run status: one that stops early reads failed
in ZenML and killed (or failed) in MLflow (:mod:`tracking.status`), never running or finished.

A run interrupted by SIGINT or SIGTERM is marked by ``run.py`` itself, on its way out
(:func:`watched`). A run killed without a word (SIGKILL, the OOM killer, a power cut) cannot
mark itself: while it runs, a marker file in the ZenML config folder names it and its
process, and the next run on this machine that finds the process gone marks it
(:func:`reap_killed_runs`). Only runs of a local orchestrator are watched: a remote run
goes on without the process that started it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tracking.status import FAILED, KILLED, close

#: The folder (in the ZenML config folder) of the markers of runs in progress on this machine.
MARKERS = "activeit-running"
KILLED_REASON = "killed before it finished (its process ended without a word, e.g. SIGKILL)"
INTERRUPTED_REASON = "interrupted (SIGINT or SIGTERM) before it finished"
FAILED_REASON = "stopped by an error before it finished"


def _marker(run_name: str) -> Path:
    from zenml.config.global_config import GlobalConfiguration

    digest = hashlib.sha256(run_name.encode()).hexdigest()[:16]
    return Path(GlobalConfiguration().config_directory) / MARKERS / f"{digest}.json"


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux's ``/proc``; "" where unknown), None when there is
    no such process or only its zombie: a pid reused by another process reads as another start."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    try:
        state, *rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if state == "Z" else rest[18]
    except (OSError, IndexError, ValueError):
        return ""


def stop(run_name: str, experiment: str, tracking_uri: str, mlflow_status: str, reason: str) -> bool:
    """Mark pipeline run ``run_name`` as ended early: its unfinished steps and the run failed in
    ZenML (with ``reason``), its MLflow run ``mlflow_status`` (unless it had ended on its own);
    whether ZenML had made the run and it had not completed."""
    from zenml.client import Client
    from zenml.enums import ExecutionStatus
    from zenml.orchestrators.publish_utils import (
        publish_pipeline_run_status_update,
        publish_step_run_status_update,
    )

    try:
        run = Client().get_pipeline_run(run_name, allow_name_prefix_match=False)
    except KeyError:  # stopped before ZenML made the run
        run = None
    early = run is not None and run.status != ExecutionStatus.COMPLETED
    if early:
        for step in run.steps.values():
            if not step.status.is_finished:
                publish_step_run_status_update(step.id, ExecutionStatus.FAILED)
        publish_pipeline_run_status_update(run.id, ExecutionStatus.FAILED, status_reason=reason)
    close(tracking_uri, experiment, run_name, mlflow_status)
    return early


@contextmanager
def watched(run_name: str, experiment: str, tracking_uri: str) -> Iterator[None]:
    """Run the body as pipeline run ``run_name``: marked while it runs, and marked failed
    (MLflow: killed after SIGINT/SIGTERM, failed after an error) when it ends early."""
    marker = _marker(run_name)
    marker.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    marker.write_text(json.dumps({"run": run_name, "experiment": experiment, "tracking_uri": tracking_uri,
                                  "pid": pid, "started": _process_start(pid)}), encoding="utf-8")
    try:
        yield
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        try:
            stop(run_name, experiment, tracking_uri, KILLED if interrupted else FAILED,
                 INTERRUPTED_REASON if interrupted else FAILED_REASON)
            marker.unlink(missing_ok=True)  # (kept if marking fails or is cut short: the next run marks it)
        except Exception as error:  # the store itself may be what failed: the first error goes on
            print(f"warning: could not mark the run '{run_name}' as stopped ({error}); the next run will",
                  file=sys.stderr)
        raise
    marker.unlink(missing_ok=True)


def reap_killed_runs() -> list[str]:
    """Mark every watched run of this machine whose process is gone as killed (ZenML: failed,
    MLflow: killed); returns the names of those that ZenML had made and that had not completed."""
    folder = _marker("").parent
    reaped = []
    for marker in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            info = json.loads(marker.read_text(encoding="utf-8"))
            alive = info["started"] is not None and _process_start(int(info["pid"])) == info["started"]
        except (OSError, ValueError, KeyError, TypeError):
            marker.unlink(missing_ok=True)  # unreadable: nothing to mark
            continue
        if alive:
            continue
        if stop(info["run"], info["experiment"], info["tracking_uri"], KILLED, KILLED_REASON):
            reaped.append(info["run"])
        marker.unlink(missing_ok=True)
    return reaped

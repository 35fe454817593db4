"""The smoke pipeline against a real MLflow tracking server (the path a remote stack takes:
HTTP, proxied artifacts), then what a user sees of it in a real browser: the MLflow UI and
the ZenML dashboard, rendered by headless Chromium (benchmarks/ui_check.py)."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from zenml.client import Client

from activeit.models.processes import free_port
from experiment.config import CONFIG_DIR, REPO_ROOT, ExperimentConfig, load_config
from pipelines.active_tuning import configured
from pipelines.stack import prepare_stack
from tracking.policy import registered_model_name
from tracking.schema import BY_TASKS_PREFIX, DESCRIPTION_TAG, EXPERIMENT_KIND_TAG, MODEL_TRAINING
from tracking.study import find_run_id

pytestmark = pytest.mark.slow
EXPERIMENT = "activeit-server"


@contextmanager
def _server(command: list[str], health_url: str, log: Path, timeout: float = 240.0) -> Iterator[None]:
    """Run a server process (its own session) until the block ends; wait for its health URL."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(health_url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{command[0:4]} did not start:\n{log.read_text()[-3000:]}")
            time.sleep(1.0)
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server``: SQLite backend, its own artifact root, a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
               "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
    url = f"http://127.0.0.1:{port}"
    with _server(command, f"{url}/health", root / "server.log"):
        yield url


@pytest.fixture(scope="module")
def tracked(server: str) -> Iterator[tuple[ExperimentConfig, Any]]:
    """The smoke pipeline, run on a stack whose MLflow tracker logs to the server."""
    config = load_config(CONFIG_DIR / "smoke.yaml", {"tracking.tracking_uri": server, "tracking.experiment": EXPERIMENT})
    client = Client()
    previous = client.active_stack_model.name
    client.activate_stack("default")  # a stack without a tracker: prepare_stack adds one for the server
    patch = pytest.MonkeyPatch()
    patch.setenv("MLFLOW_TRACKING_TOKEN", "unused")  # ZenML wants credentials; this server takes any
    try:
        info = prepare_stack(config)
        assert info.tracking_uri == server
        run = configured(config)(config=config, experiment_tracker=info.tracker)
        yield config, run
    finally:
        client.activate_stack(previous)
        patch.undo()


def test_pipeline_logs_to_a_tracking_server(server: str, tracked: tuple[ExperimentConfig, Any], tmp_path: Path) -> None:
    config, run = tracked
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING
    run_id = find_run_id(server, EXPERIMENT, run.name)
    mlflow_run = client.get_run(run_id)
    description = mlflow_run.data.tags[DESCRIPTION_TAG]
    assert all(word in description for word in ("uncertainty", "seed 0", "tiny-llama", config.pool.source))
    rounds = list(range(config.rounds + 1))
    tasks = [config.initial_tasks + r * config.tasks_per_round for r in rounds]
    for key in ("rougeL", "exact_match", "num_training_tasks", "train_loss"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == rounds, key
    assert sorted(m.step for m in client.get_metric_history(run_id, BY_TASKS_PREFIX + "rougeL")) == [0, *tasks]
    # artifacts come back through the server's artifact proxy
    files = {a.path for a in client.list_artifacts(run_id, "round_1")}
    assert {"round_1/selected_tasks.json", "round_1/score_table.csv", "round_1/task_map.png", "round_1/model"} <= files
    png = Path(client.download_artifacts(run_id, "round_1/task_map.png", str(tmp_path)))
    assert png.read_bytes()[:4] == b"\x89PNG"
    name = registered_model_name(config)
    assert "uncertainty" in client.get_registered_model(name).description
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    assert [int(v.tags["round"]) for v in versions] == rounds
    assert [int(v.tags["num_training_tasks"]) for v in versions] == tasks
    assert all(v.description.startswith(f"Round {r} ") for r, v in zip(rounds, versions))
    assert {v.run_id for v in versions} == {run_id}


def _zenml_cli() -> str:
    beside = Path(sys.executable).with_name("zenml")
    return str(beside) if beside.exists() else shutil.which("zenml") or "zenml"


def test_mlflow_ui_and_zenml_dashboard_in_a_browser(server: str, tracked: tuple[ExperimentConfig, Any]) -> None:
    """CI installs Chromium (.ci/run); the screenshots land in outputs/ui/."""
    from benchmarks.ui_check import chromium_binary, main as ui_check

    if chromium_binary() is None:
        pytest.skip("no chromium on the PATH (Debian: apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("websockets", reason="the ZenML server requirements (install.sh) bring websockets")
    pytest.importorskip("zenml.zen_server.zen_server_api", reason="the ZenML server requirements (install.sh)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = zenml_isolation.ROOT / "zenml-server.log"
    with _server([_zenml_cli(), "login", "--local", "--blocking", "--port", str(port)], f"{url}/health", log):
        assert ui_check(["--mlflow", server, "--experiment", EXPERIMENT, "--zenml", url,
                         "--out", str(REPO_ROOT / "outputs" / "ui")]) == 0


def test_a_new_token_reaches_the_existing_tracker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tracker component for a server is made once; a later run with other credentials
    in the environment updates it instead of logging with the first token."""
    from zenml.enums import StackComponentType

    from pipelines.stack import _ensure_tracker

    uri = "https://mlflow.example.com/token-check"
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "first")
    name = _ensure_tracker(Client(), uri)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "second")
    assert _ensure_tracker(Client(), uri) == name
    configuration = Client().get_stack_component(StackComponentType.EXPERIMENT_TRACKER, name).configuration
    assert (configuration["tracking_uri"], configuration["tracking_token"]) == (uri, "second")

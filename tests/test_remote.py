"""Remote fan-out against ZenML's orchestrator interface: a real orchestrator that runs each
submitted pipeline in a detached background process (tests/cluster_orchestrator.py) stands
in for a cluster. ``--parallel`` submits without waiting (``synchronous: false``, the
config's ``max_parallelism`` passed through), round 0 of a seed first so that the cache
serves it to the seed's other strategy; ``run.py --report --wait`` waits for every pair and
writes the study. And ``--wait``'s refusals, failures and timeout on a plain MLflow store."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import RunStatus
from zenml.client import Client
from zenml.enums import ExecutionStatus

import cluster_orchestrator
import run as run_py
from activeit.errors import ActiveITError, ConfigError
from experiment.config import CONFIG_DIR, load_config
from pipelines import remote
from pipelines.remote import asynchronous, submit_study, wait_for_study
from pipelines.stack import StackInfo, _ensure_tracker, prepare_stack, use_repo_source_root
from tracking.progress import ROUND_COUNTER, pair_states, set_expected
from tracking.schema import COMPLETE_TAG, STUDY_KEY_TAG

SMOKE = CONFIG_DIR / "smoke.yaml"
EXPERIMENT = "activeit-remote"
FLAVOR = cluster_orchestrator.FLAVOR


def test_asynchronous_keeps_the_orchestrators_other_settings() -> None:
    config = load_config(CONFIG_DIR / "remote.yaml")
    changed = asynchronous(config, "kubernetes")
    settings = changed.zenml.settings["orchestrator.kubernetes"]
    assert settings["synchronous"] is False and settings["max_parallelism"] == 8
    assert settings["pod_settings"] == config.zenml.settings["orchestrator.kubernetes"]["pod_settings"]
    assert "synchronous" not in config.zenml.settings["orchestrator.kubernetes"]  # (a copy)
    assert changed.study_key() == config.study_key()


def _mlflow_run(client: MlflowClient, experiment_id: str, strategy: str, seed: int, key: str, status: str,
                complete: bool = False, rounds: int = 0) -> None:
    run = client.create_run(experiment_id, tags={"strategy": strategy, "seed": str(seed), STUDY_KEY_TAG: key})
    for step in range(rounds):
        client.log_metric(run.info.run_id, ROUND_COUNTER, 3 + step, step=step)
    if complete:
        client.set_tag(run.info.run_id, COMPLETE_TAG, "true")
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    return uri, client, client.create_experiment("waited")


def test_wait_reads_the_pairs_states_and_gives_up_when_told(store: tuple[str, MlflowClient, str]) -> None:
    uri, client, experiment_id = store
    with pytest.raises(ConfigError, match="records no submitted study"):
        wait_for_study(uri, "waited", None, None, timeout_s=1, poll_s=0.01)
    set_expected(uri, "waited", ["uncertainty", "random"], [0, 1], "k1")
    _mlflow_run(client, experiment_id, "uncertainty", 0, "k1", "FINISHED", complete=True, rounds=2)
    _mlflow_run(client, experiment_id, "random", 0, "k1", "FAILED", rounds=1)  # an older try that failed ...
    _mlflow_run(client, experiment_id, "random", 0, "k1", "FINISHED", complete=True, rounds=2)  # ... then finished
    _mlflow_run(client, experiment_id, "uncertainty", 1, "k1", "RUNNING", rounds=1)
    _mlflow_run(client, experiment_id, "uncertainty", 1, "other-config", "FINISHED", complete=True, rounds=2)
    states = pair_states(uri, "waited", "k1")
    assert {pair: state.state for pair, state in states.items()} == {
        ("uncertainty", 0): "done", ("random", 0): "done", ("uncertainty", 1): "running"}
    assert states["uncertainty", 1].rounds == 1
    with pytest.raises(ActiveITError, match=r"gave up after 0 s with 2 of 4 pairs finished \(not yet: uncertainty seed 1, "
                                            r"random seed 1\)"):
        wait_for_study(uri, "waited", None, None, timeout_s=0.2, poll_s=0.05)
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.KILLED))
    _mlflow_run(client, experiment_id, "random", 1, "k1", "FAILED", rounds=0)
    with pytest.raises(ActiveITError, match=r"2 pair\(s\) of 'waited' failed \(uncertainty seed 1, random seed 1\) and "
                                            "none is running"):
        wait_for_study(uri, "waited", None, None, timeout_s=60, poll_s=0.05)
    wait_for_study(uri, "waited", None, [0], timeout_s=1, poll_s=0.05)  # seed 0 alone has finished


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StackInfo, Path]]:
    """A stack whose orchestrator is the stand-in cluster, with the local MLflow tracker."""
    use_repo_source_root()
    folder = tmp_path_factory.mktemp("cluster")
    client = Client()
    previous = client.active_stack_model.name
    patch = pytest.MonkeyPatch()
    patch.setenv(cluster_orchestrator.FOLDER_ENV, str(folder))
    patch.setenv("OMP_NUM_THREADS", "1")
    patch.setattr(remote, "SUBMIT_POLL_S", 1.0)
    patch.setattr(remote, "WAIT_POLL_S", 2.0)
    patch.setattr(remote, "ROUND_ZERO_TIMEOUT_S", 600.0)  # (fail, not hang, should round 0 never come)
    try:
        cluster_orchestrator.register(client, "activeit-test-cluster", _ensure_tracker(client, None))
        yield prepare_stack(load_config(SMOKE)), folder
    finally:
        pids = (folder / "pids.txt").read_text().split() if (folder / "pids.txt").exists() else []
        for pid in map(int, pids):  # (the stand-in cluster's background processes: ended, else ended here)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        client.activate_stack(previous)
        patch.undo()


@pytest.mark.slow
def test_pairs_are_submitted_without_waiting_round_zero_first_then_waited_for(
    cluster: tuple[StackInfo, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    info, folder = cluster
    assert info.orchestrator_flavor == FLAVOR
    study = {"rounds": 1, "tasks_per_round": 2, "initial_tasks": 2, "tracking.experiment": EXPERIMENT,
             "study.strategies": ["uncertainty", "random"], "study.seeds": [0], "study.parallel": 2,
             "zenml.settings": {f"orchestrator.{FLAVOR}": {"max_parallelism": 3}}}
    configs = [load_config(SMOKE, study | {"strategy": s, "seed": 0}) for s in ("uncertainty", "random")]
    lines: list[str] = []
    names = submit_study(configs, info, show=lines.append)
    # returned without waiting: the second pair was just submitted and has not finished
    assert pair_states(info.tracking_uri, EXPERIMENT, configs[0].study_key()).get(("random", 0)) is None or \
        pair_states(info.tracking_uri, EXPERIMENT, configs[0].study_key())["random", 0].state != "done"
    submissions = [json.loads(line) for line in (folder / "submissions.jsonl").read_text().splitlines()]
    assert [s["run"] for s in submissions] == names and len(names) == 2
    assert all(s["synchronous"] is False and s["max_parallelism"] == 3 for s in submissions)
    assert "round 0 of its seed first" in lines[0] and lines[-1].startswith("Submitted 2 pair(s)")
    # the second strategy went only once the first had logged round 0
    client = MlflowClient(info.tracking_uri)
    leader = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                f"tags.mlflow.runName = '{names[0]}'")[0]
    round0 = client.get_metric_history(leader.info.run_id, ROUND_COUNTER)[0].timestamp / 1000
    assert submissions[1]["time"] >= round0

    monkeypatch.setattr(run_py, "OUTPUTS", tmp_path)
    assert run_py.main(["--report", EXPERIMENT, "--wait", "--timeout", "900", "--config", str(SMOKE)]) == 0
    text = (tmp_path / f"study-{EXPERIMENT}" / "study.md").read_text()
    assert "| uncertainty | 1 |" in text and "| random | 1 |" in text
    follower = Client().get_pipeline_run(names[1])
    assert follower.status == ExecutionStatus.COMPLETED
    assert follower.steps["accelerate_finetuner_round_0"].status == ExecutionStatus.CACHED  # served by the leader
    assert follower.steps["base_evaluator"].status == ExecutionStatus.CACHED


def test_an_orchestrator_that_cannot_submit_without_waiting_is_refused() -> None:
    class Orchestrator:
        flavor, settings_class = "local", None

    with pytest.raises(ConfigError, match="'local' orchestrator has no 'synchronous' setting, so --parallel cannot"):
        remote.check_asynchronous(Orchestrator(), "--parallel")

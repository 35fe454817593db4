"""Studies that keep their integrity (issue 20, part 5), on MLflow runs made here by hand
(no pipeline runs): a run whose config differs from the study's is refused up front,
``--report`` of a subset writes a folder of its own, a rerun of a report reuses its parent
run; and an identical run registers no second model version (part 6)."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from scipy import stats
from zenml.client import Client

import run as run_py
from activeit.evaluation import EvalReport
from experiment.config import CONFIG_DIR, ExperimentConfig, load_config
from pipelines.stack import StackInfo, prepare_stack, use_repo_source_root
from activeit.study.statistics import INTERVAL_SCHEME, minimum_detectable_effect
from tracking.registry import register_model
from tracking.schema import (
    COMPLETE_TAG,
    EVALUATION_FILE,
    PER_TASK_KEY,
    SELECTION_FILE,
    TRAINING_TASKS_KEY,
    round_folder,
)
from tracking.study import PARENT_TAG, STUDY_TAG, check_same_study
from tracking.writer import config_params, run_tags

pytestmark = pytest.mark.slow  # ZenML's store and run.py's checks, a few seconds each
SMOKE = CONFIG_DIR / "smoke.yaml"
STRATEGIES = ("uncertainty", "random")


@pytest.fixture(scope="module")
def stack() -> StackInfo:
    use_repo_source_root()
    return prepare_stack(load_config(SMOKE))


def _config(experiment: str, strategy: str = "uncertainty", seed: int = 0, **overrides: object) -> ExperimentConfig:
    study = {"study.strategies": list(STRATEGIES), "study.seeds": [0, 1]}
    return load_config(SMOKE, {"tracking.experiment": experiment, "strategy": strategy, "seed": seed, **study,
                               **overrides})


def _log_pair(uri: str, config: ExperimentConfig, rouge: float, task_offsets: tuple[float, ...] = ()) -> str:
    """One complete tracked run of ``config`` (rounds 0 and 1), as the tracker step logs it
    (with ``task_offsets``, an evaluation file with test task ``t<i>`` at the headline + offset i)."""
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(config.tracking.experiment)
    run = client.create_run(experiment_id, tags=run_tags(config) | {COMPLETE_TAG: "true"},
                            run_name=f"{config.strategy}-seed{config.seed}")
    run_id = run.info.run_id
    for key, value in config_params(config).items():
        client.log_param(run_id, key, value)
    tasks: list[str] = []
    for round_index in (0, 1):
        tasks = [*tasks, f"{config.strategy}-{config.seed}-{round_index}"]
        for key, value in (("rougeL", rouge + round_index), ("exact_match", 1.0), ("num_training_tasks", len(tasks))):
            client.log_metric(run_id, key, value, step=round_index)
        client.log_dict(run_id, {TRAINING_TASKS_KEY: tasks, "picked_categories": {}},
                        f"{round_folder(round_index)}/{SELECTION_FILE}")
        if task_offsets:
            per_task = {f"t{i}": {"rougeL": rouge + round_index + offset, "instances": 3}
                        for i, offset in enumerate(task_offsets)}
            client.log_dict(run_id, {"overall": {"rougeL": rouge + round_index}, PER_TASK_KEY: per_task},
                            f"{round_folder(round_index)}/{EVALUATION_FILE}")
    client.set_terminated(run_id)
    return run_id


def _log_study(uri: str, experiment: str, **overrides: object) -> dict[tuple[str, int], str]:
    return {(s, seed): _log_pair(uri, _config(experiment, s, seed, **overrides), 10.0 + seed + (s == "uncertainty"))
            for s in STRATEGIES for seed in (0, 1)}


# ---------------------------------------------------------------- another config under the study's name


def test_a_run_with_another_config_is_refused_up_front(stack: StackInfo, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = "integrity-other-config"
    _log_study(stack.tracking_uri, experiment, **{"scoring.k": 10})
    runs_before = Client().list_pipeline_runs(size=1).total
    assert run_py.main(["--config", str(SMOKE), "--experiment", experiment]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: experiment '{experiment}' holds a study with scoring.k=10; this config has "
                   "scoring.k=2: give another --experiment\n")
    assert Client().list_pipeline_runs(size=1).total == runs_before  # refused before anything ran


def test_the_study_s_own_config_and_other_seeds_are_taken(stack: StackInfo) -> None:
    experiment = "integrity-same-config"
    _log_study(stack.tracking_uri, experiment)
    check_same_study(stack.tracking_uri, _config(experiment, "random", 7))  # a new seed of the same study
    check_same_study(stack.tracking_uri, load_config(SMOKE, {"tracking.experiment": experiment}))  # a single run
    check_same_study(stack.tracking_uri, _config("integrity-no-such-experiment", **{"scoring.k": 3}))


# ---------------------------------------------------------------- --report: subsets, parent runs


@pytest.fixture(scope="module")
def reported(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, dict[tuple[str, int], str]]:
    """A study of 2 strategies x 2 seeds in MLflow, reported in full once."""
    experiment = "integrity-report"
    pairs = _log_study(stack.tracking_uri, experiment)
    outputs = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_py, "OUTPUTS", outputs)
        assert run_py.main(["--report", experiment, "--config", str(SMOKE)]) == 0
    return experiment, outputs, pairs


def _parents(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], f"tags.{STUDY_TAG} = 'true'")


def test_a_subset_report_writes_its_own_folder(
    reported: tuple[str, Path, dict[tuple[str, int], str]], stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment, outputs, pairs = reported
    full = outputs / f"study-{experiment}"
    before = {p.name: p.read_bytes() for p in full.iterdir()}
    monkeypatch.setattr(run_py, "OUTPUTS", outputs)
    assert run_py.main(["--report", experiment, "--seeds", "1", "--config", str(SMOKE)]) == 0
    assert {p.name: p.read_bytes() for p in full.iterdir()} == before  # the full study is left as it was
    (subset,) = [p for p in outputs.iterdir() if p != full]
    assert subset.name.startswith(f"study-{experiment}-") and subset.name.endswith("-seeds1")
    assert "seeds 1 " in (subset / "study.md").read_text(encoding="utf-8")
    # the pairs stay children of the full study's parent run
    (parent,) = [r for r in _parents(stack.tracking_uri, experiment) if r.data.tags["seeds"] == "0,1"]
    client = MlflowClient(stack.tracking_uri)
    assert {client.get_run(i).data.tags[PARENT_TAG] for i in pairs.values()} == {parent.info.run_id}


def test_a_rerun_of_a_report_reuses_its_parent_run(
    reported: tuple[str, Path, dict[tuple[str, int], str]], stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment, outputs, _ = reported
    (first,) = [r for r in _parents(stack.tracking_uri, experiment) if r.data.tags["seeds"] == "0,1"]
    monkeypatch.setattr(run_py, "OUTPUTS", outputs)
    assert run_py.main(["--report", experiment, "--config", str(SMOKE)]) == 0
    again = [r for r in _parents(stack.tracking_uri, experiment) if r.data.tags["seeds"] == "0,1"]
    assert [r.info.run_id for r in again] == [first.info.run_id]
    history = MlflowClient(stack.tracking_uri).get_metric_history(first.info.run_id, "rougeL_uncertainty")
    assert [m.step for m in history] == [1, 2]  # logged once, not again


# ---------------------------------------------------------------- per-task pairing and power


def test_a_report_pairs_per_task_scores_and_logs_its_power(
    stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    experiment = "integrity-per-task"
    for seed, gain in ((0, 1.0), (1, 1.5)):  # uncertainty - random: +1 and +1.5 on every task
        for strategy in STRATEGIES:
            rouge = 10.0 + 20 * seed + (gain if strategy == "uncertainty" else 0.0)
            _log_pair(stack.tracking_uri, _config(experiment, strategy, seed), rouge, task_offsets=(-20.0, 0.0, 20.0))
    monkeypatch.setattr(run_py, "OUTPUTS", tmp_path)
    capsys.readouterr()
    assert run_py.main(["--report", experiment, "--config", str(SMOKE)]) == 0
    out = capsys.readouterr().out
    text = (tmp_path / f"study-{experiment}" / "study.md").read_text(encoding="utf-8")
    sd = 0.5 ** 0.5 / 2  # sd of (1, 1.5)
    low, high = stats.ttest_1samp([1.0, 1.5], 0).confidence_interval(0.95)
    assert f"| uncertainty | 1 | 2 | 2 | +1.25 | [{low:+.2f}, {high:+.2f}] |" in text
    mde = minimum_detectable_effect(sd, 2)
    verdict = next(line for line in text.splitlines() if line.startswith("- uncertainty vs random"))
    assert f"can detect differences of {mde:.2f} points" in verdict and "not resolved" in verdict
    # every task moves alike within a seed: the test sample explains none of the spread
    assert "The test sample explains 0% of the variance of Δ" in verdict
    tail = out[out.index("Study written to"):]
    assert f"{verdict}\n" in tail and tail.index(verdict) < tail.index("Done in")  # the study's last lines
    (parent,) = _parents(stack.tracking_uri, experiment)
    metrics, tags = parent.data.metrics, parent.data.tags
    assert metrics["vs_random/uncertainty/mde"] == pytest.approx(mde)
    assert metrics["vs_random/uncertainty/t_low"] == pytest.approx(low)
    assert metrics["vs_random/uncertainty/p_improvement"] == pytest.approx(
        stats.t.cdf(1.25 / (sd * (1 + 1 / 2) ** 0.5), 1))
    assert metrics["vs_random/uncertainty/variance_test_share"] == pytest.approx(0.0, abs=1e-9)
    assert tags["stats.interval"] == INTERVAL_SCHEME and tags["verdict.uncertainty"] == verdict[2:]


# ---------------------------------------------------------------- model versions


def test_an_identical_run_registers_no_second_model_version(stack: StackInfo) -> None:
    config = _config("integrity-registry")
    mlflow.set_tracking_uri(stack.tracking_uri)
    mlflow.set_experiment(config.tracking.experiment)
    versions = []
    for artifact in ("artifact-of-run-1", "artifact-of-run-2"):  # the same training, stored twice (--no-cache)
        with mlflow.start_run():
            versions.append(register_model(config, "/tmp/model", artifact, 0, ["a", "b"], _report()))
    with mlflow.start_run():
        versions.append(register_model(config, "/tmp/model", "artifact-of-round-1", 1, ["a", "b", "c"], _report()))
    assert versions == [1, 1, 2]


def _report() -> EvalReport:
    return EvalReport.from_predictions([])


def test_a_report_on_another_metric_has_its_own_run_and_folder(
    reported: tuple[str, Path, dict[tuple[str, int], str]], stack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment, outputs, pairs = reported
    monkeypatch.setattr(run_py, "OUTPUTS", outputs)
    assert run_py.main(["--report", experiment, "--config", str(SMOKE), "--metric", "loglik"]) == 0
    assert (outputs / f"study-{experiment}-loglik" / "study.md").is_file()
    parents = {r.info.run_name: r for r in _parents(stack.tracking_uri, experiment) if r.data.tags["seeds"] == "0,1"}
    (name,) = [n for n in parents if n.endswith("-loglik")]
    assert parents[name].data.tags["stats.metric"] == "loglik"
    (first,) = [r for n, r in parents.items() if not n.endswith("-loglik")]
    client = MlflowClient(stack.tracking_uri)
    assert {client.get_run(i).data.tags[PARENT_TAG] for i in pairs.values()} == {first.info.run_id}  # they stay

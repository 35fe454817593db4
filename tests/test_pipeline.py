"""The smoke pipeline end to end in a private ZenML + MLflow store: an interrupted run
resumes from the cache, MLflow has one point per round and one model version per round,
rounds select disjoint task sets, a seed reproduces a run, and run.py compares strategies.
"""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import csv
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from zenml.client import Client
from zenml.enums import ExecutionStatus

import run as run_py
from activeit.config import CONFIG_DIR, ExperimentConfig, load_config
from pipelines.active_tuning import PIPELINE_NAME, configured
from pipelines.study import find_run_id
from pipelines.stack import StackInfo, prepare_stack, use_repo_source_root
from steps.mlflow_logging import metric_rows
from steps.common import FAIL_STEP_ENV

pytestmark = pytest.mark.slow
SMOKE = CONFIG_DIR / "smoke.yaml"
FAIL_AT = "accelerate_finetuner_round_2"


@pytest.fixture(scope="module")
def config() -> ExperimentConfig:
    return load_config(SMOKE)


@pytest.fixture(scope="module")
def stack(config: ExperimentConfig) -> StackInfo:
    use_repo_source_root()
    return prepare_stack(config)


def _run(config: ExperimentConfig, stack: StackInfo, **options: Any) -> Any:
    return configured(config).with_options(**options)(config=config, experiment_tracker=stack.tracker)


def _interrupt_then_resume(config: ExperimentConfig, stack: StackInfo, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """Run with round 2's fine-tuning failing on purpose, then the same config again."""
    with monkeypatch.context() as patch:
        patch.setenv(FAIL_STEP_ENV, FAIL_AT)
        with pytest.raises(RuntimeError, match=FAIL_AT):
            _run(config, stack)
    failed = Client().get_pipeline(PIPELINE_NAME).last_run
    resumed = _run(config, stack)
    return Client().get_pipeline_run(failed.id), Client().get_pipeline_run(resumed.id)


def test_smoke_pipeline_end_to_end(
    config: ExperimentConfig, stack: StackInfo, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """One scenario in one store (one xdist worker): interrupt and resume, check what the
    run produced, reproduce it without the cache, then compare strategies with run.py."""
    failed, resumed = _interrupt_then_resume(config, stack, monkeypatch)
    check_resume_reuses_finished_rounds(failed, resumed, config)
    check_rounds_select_disjoint_task_sets(resumed, config)
    check_mlflow_has_one_point_per_round(resumed, config, stack)
    check_registered_model_has_one_version_per_round(config, stack)
    check_no_project_artifact_is_pickled(resumed)
    check_same_seed_reproduces_the_run(resumed, config, stack)
    check_run_py_compares_strategies(stack, tmp_path, monkeypatch, capsys)


def _round(step_name: str) -> int | None:
    return int(step_name.rsplit("_", 1)[1]) if "_round_" in step_name else None


def test_stack_gets_an_mlflow_tracker(stack: StackInfo) -> None:
    assert stack.tracker and stack.tracking_uri.startswith("sqlite:///")
    assert stack.orchestrator_flavor == "local"
    assert prepare_stack(load_config(SMOKE)).stack == stack.stack  # idempotent


def check_resume_reuses_finished_rounds(failed: Any, resumed: Any, config: ExperimentConfig) -> None:
    assert failed.status == ExecutionStatus.FAILED
    assert failed.steps[FAIL_AT].status == ExecutionStatus.FAILED
    assert resumed.status == ExecutionStatus.COMPLETED
    expected = {"pool_loader", "base_evaluator"} | {
        f"{name}_round_{r}" for r in range(config.rounds + 1)
        for name in ("selector", "accelerate_finetuner", "rouge_evaluator", "tracker")
    } | {f"{name}_round_{r}" for r in range(1, config.rounds + 1) for name in ("perturber", "uncertainty_scorer")}
    assert set(resumed.steps) == expected
    for name, step in resumed.steps.items():
        r = _round(name)
        if name.startswith("tracker"):
            assert step.status == ExecutionStatus.COMPLETED  # never cached: logs into the new run
        elif r is None or r < 2 or name in ("perturber_round_2", "uncertainty_scorer_round_2", "selector_round_2"):
            assert step.status == ExecutionStatus.CACHED, name
        else:
            assert step.status == ExecutionStatus.COMPLETED, name


def _selections(run: Any, rounds: int) -> list[tuple[str, ...]]:
    return [run.steps[f"selector_round_{r}"].outputs[f"selection_round_{r}"][0].load().tasks for r in range(rounds + 1)]


def check_rounds_select_disjoint_task_sets(resumed: Any, config: ExperimentConfig) -> None:
    selections = _selections(resumed, config.rounds)
    assert [len(s) for s in selections] == [config.initial_tasks] + [config.tasks_per_round] * config.rounds
    names = [n for s in selections for n in s]
    assert len(names) == len(set(names))
    trained = resumed.steps[f"selector_round_{config.rounds}"].outputs[f"train_tasks_round_{config.rounds}"][0].load()
    assert trained == names


def check_mlflow_has_one_point_per_round(resumed: Any, config: ExperimentConfig, stack: StackInfo) -> None:
    run_id = find_run_id(stack.tracking_uri, config.tracking.experiment, resumed.name)
    rounds = list(range(config.rounds + 1))
    client = MlflowClient(stack.tracking_uri)
    for key in ("rougeL", "exact_match", "num_training_tasks", "train_loss", "training_time_s"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == rounds, key
    assert [m.step for m in client.get_metric_history(run_id, "scoring_time_s")] == rounds[1:]
    counts = [row["num_training_tasks"] for row in metric_rows(stack.tracking_uri, run_id)]
    assert counts == [config.initial_tasks + r * config.tasks_per_round for r in rounds]
    mlflow_run = client.get_run(run_id)
    assert mlflow_run.data.tags["strategy"] == "uncertainty"
    assert mlflow_run.data.tags["config_hash"] == config.digest()
    assert mlflow_run.data.params["scoring.k"] == str(config.scoring.k)
    files = {a.path for a in client.list_artifacts(run_id, "round_1")}
    assert {"round_1/selected_tasks.json", "round_1/score_table.csv", "round_1/task_map.png"} <= files
    # rounds 0-1 were registered by the interrupted run: the resumed run points at those versions
    # a model version points at its stored ZenML artifact: no copy of the weights in MLflow
    assert not {a.path for a in client.list_artifacts(run_id, "round_2")} & {"round_2/model"}
    name, number = mlflow_run.data.tags["model_round_2"].split("/")
    assert (Path(client.get_model_version(name, number).source) / "model.safetensors").is_file()
    assert all(f"model_round_{r}" in mlflow_run.data.tags for r in rounds)


def check_registered_model_has_one_version_per_round(config: ExperimentConfig, stack: StackInfo) -> None:
    versions = MlflowClient(stack.tracking_uri).search_model_versions(f"name='{config.registered_model_name}'")
    assert sorted(int(v.tags["round"]) for v in versions) == list(range(config.rounds + 1))


def check_no_project_artifact_is_pickled(resumed: Any) -> None:
    for step in resumed.steps.values():
        for artifacts in step.outputs.values():
            source = str(artifacts[0].materializer.import_path)
            assert "cloudpickle" not in source, (step.name, source)


def check_same_seed_reproduces_the_run(resumed: Any, config: ExperimentConfig, stack: StackInfo) -> None:
    short = config.model_copy(update={"rounds": 1})
    again = Client().get_pipeline_run(_run(short, stack, enable_cache=False).id)
    assert all(s.status == ExecutionStatus.COMPLETED for s in again.steps.values())
    assert _selections(again, 1) == _selections(resumed, config.rounds)[:2]
    for r in (0, 1):
        def rouge(run: Any) -> float:
            return run.steps[f"rouge_evaluator_round_{r}"].outputs[f"eval_round_{r}"][0].load().overall["rougeL"]

        assert rouge(again) == pytest.approx(rouge(resumed), abs=1e-6)


def check_run_py_compares_strategies(
    stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(run_py, "OUTPUTS", tmp_path)
    assert run_py.main(["--compare", "uncertainty,random", "--config", str(SMOKE), "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "mlflow ui --backend-store-uri " + stack.tracking_uri in out
    folder = next(tmp_path.iterdir())
    with (folder / "study.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["strategy"], r["round"]) for r in rows} == {(s, str(r)) for s in ("uncertainty", "random") for r in (0, 1)}
    round0 = {r["strategy"]: r["rougeL"] for r in rows if r["round"] == "0"}
    assert round0["uncertainty"] == round0["random"]  # the shared round-0 model
    assert (folder / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name(load_config(SMOKE).tracking.experiment)
    compared = client.search_runs([experiment.experiment_id], "tags.study = 'true'")
    assert compared and {"study.csv", "study.md", "learning_curve.png"} <= {
        a.path for a in client.list_artifacts(compared[0].info.run_id)
    }


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--strategy", "clever"], "unknown strategy 'clever'"),
        (["--compare", "uncertainty,clever"], "unknown strategy 'clever'"),
        (["--rounds", "50"], "impossible budget"),
        (["--schedule", "0 3 * * 1"], "does not support schedules"),
    ],
)
def test_run_py_errors_are_one_line(
    argv: list[str], fragment: str, stack: StackInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_py.main([*argv, "--config", str(SMOKE)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err


def test_run_py_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text() + "\nlearning_rate: 0.1\n")
    assert run_py.main(["--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: unknown key 'learning_rate'"


def test_remote_config_settings_are_valid_zenml_settings() -> None:
    remote = load_config(CONFIG_DIR / "remote.yaml")
    built = configured(remote)
    assert {"docker", "resources", "orchestrator.kubernetes"} <= set(built.configuration.settings)
    assert remote.training.num_processes > 1 and remote.training.mixed_precision == "bf16"
    assert remote.schedule and remote.tracking.tracking_uri.startswith("https://")

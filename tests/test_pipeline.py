"""The smoke pipeline end to end in a private ZenML + MLflow store.

A few runs, each made once per module (fixtures), and one test per promise on them: an
interrupted run resumes from the cache, the smoke model learns, MLflow has one point per
round and one model version per round, rounds select disjoint task sets, ``run.py
--no-cache`` recomputes every step and reproduces the run (selections, losses, weights),
and ``run.py --compare`` shares round 0 through the cache and writes its table. The
module runs in one pytest-xdist worker (``xdist_group``): its fixtures share one store.
"""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import contextlib
import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from safetensors.torch import load_file
from zenml import get_step_context
from zenml.client import Client
from zenml.enums import ExecutionStatus

import run as run_py
from experiment.config import CONFIG_DIR, ExperimentConfig, load_config
from materializers.model_folder import ModelFolderMaterializer
from pipelines.active_tuning import PIPELINE_NAME, configured
from pipelines.stack import StackInfo, prepare_stack, use_repo_source_root
from steps.common import FAIL_STEP_ENV
from tracking.reader import metric_rows
from tracking.study import find_run_id

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]
SMOKE = CONFIG_DIR / "smoke.yaml"
FAIL_AT = "accelerate_finetuner_round_2"


@dataclass(frozen=True)
class RunPy:
    """What one ``run.py`` call returned and printed."""

    code: int
    out: str
    err: str


def run_py_main(argv: Sequence[str], env: dict[str, str] | None = None) -> RunPy:
    """``run.py``'s ``main(argv)`` with its output captured (usable in module fixtures)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        code = run_py.main(list(argv))
    return RunPy(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def config() -> ExperimentConfig:
    return load_config(SMOKE)


@pytest.fixture(scope="module")
def stack(config: ExperimentConfig) -> StackInfo:
    use_repo_source_root()
    return prepare_stack(config)


def _run(config: ExperimentConfig, stack: StackInfo, **options: Any) -> Any:
    return configured(config).with_options(**options)(config=config, experiment_tracker=stack.tracker)


@pytest.fixture(scope="module")
def model_loads() -> list[str]:
    """The steps that loaded a round's model (its weights) in the interrupted and resumed runs."""
    return []


@pytest.fixture(scope="module")
def interrupted(config: ExperimentConfig, stack: StackInfo, model_loads: list[str]) -> tuple[Any, Any]:
    """The smoke config with round 2's fine-tuning failing on purpose, then run again."""
    load = ModelFolderMaterializer.load

    def recording_load(self: ModelFolderMaterializer, data_type: type[Any]) -> Any:
        model_loads.append(get_step_context().step_name)
        return load(self, data_type)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ModelFolderMaterializer, "load", recording_load)
        patch.setenv(FAIL_STEP_ENV, FAIL_AT)
        with pytest.raises(RuntimeError, match=FAIL_AT):
            _run(config, stack)
        patch.delenv(FAIL_STEP_ENV)
        failed = Client().get_pipeline(PIPELINE_NAME).last_run
        resumed = _run(config, stack)
    return Client().get_pipeline_run(failed.id), Client().get_pipeline_run(resumed.id)


@pytest.fixture(scope="module")
def resumed(interrupted: tuple[Any, Any]) -> Any:
    return interrupted[1]


@pytest.fixture(scope="module")
def recomputed(resumed: Any) -> tuple[RunPy, Any]:
    """``run.py --no-cache --rounds 1`` after the cache holds rounds 0-2 of the same seed."""
    done = run_py_main(["--config", str(SMOKE), "--rounds", "1", "--no-cache"])
    assert done.code == 0, done.err[-2000:]
    return done, Client().get_pipeline_run(Client().get_pipeline(PIPELINE_NAME).last_run.id)


@dataclass(frozen=True)
class Comparison:
    printed: RunPy
    folder: Path
    runs: dict[str, Any]  # strategy -> ZenML run
    mlflow_runs: dict[str, str]  # strategy -> MLflow run id
    comparison_run: Any  # the MLflow run holding the study files (its children: the pairs' runs)


@pytest.fixture(scope="module")
def compared(resumed: Any, stack: StackInfo, config: ExperimentConfig, tmp_path_factory: pytest.TempPathFactory) -> Comparison:
    """``run.py --compare uncertainty,random --rounds 1`` after the interrupted-and-resumed run."""
    outputs = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_py, "OUTPUTS", outputs)
        done = run_py_main(["--compare", "uncertainty,random", "--config", str(SMOKE), "--rounds", "1"])
    assert done.code == 0, done.err[-2000:]
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    (comparison,) = client.search_runs([experiment.experiment_id], "tags.study = 'true'")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{comparison.info.run_id}'")
    mlflow_runs = {run.data.tags["strategy"]: run.info.run_id for run in children}
    runs = {s: Client().get_pipeline_run(client.get_run(i).info.run_name) for s, i in mlflow_runs.items()}
    (folder,) = outputs.iterdir()
    return Comparison(done, folder, runs, mlflow_runs, comparison)


def _round(step_name: str) -> int | None:
    return int(step_name.rsplit("_", 1)[1]) if "_round_" in step_name else None


def _output(run: Any, step: str, name: str, r: int) -> Any:
    return run.steps[f"{step}_round_{r}"].outputs[f"{name}_round_{r}"][0].load()


def _selections(run: Any, rounds: int) -> list[tuple[str, ...]]:
    return [_output(run, "selector", "selection", r).tasks for r in range(rounds + 1)]


def _weights_digest(run: Any, r: int) -> str:
    """A hash of the round's trained weights (names, dtypes, shapes and values)."""
    tensors = load_file(Path(_output(run, "accelerate_finetuner", "model", r).path) / "model.safetensors")
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


# ---------------------------------------------------------------- interrupt and resume


def test_stack_gets_an_mlflow_tracker(stack: StackInfo) -> None:
    assert stack.tracker and stack.tracking_uri.startswith("sqlite:///")
    assert stack.orchestrator_flavor == "local"
    assert prepare_stack(load_config(SMOKE)).stack == stack.stack  # idempotent


def test_injected_failure_stops_the_run_at_that_step(interrupted: tuple[Any, Any]) -> None:
    failed, _ = interrupted
    assert failed.status == ExecutionStatus.FAILED
    assert failed.steps[FAIL_AT].status == ExecutionStatus.FAILED
    assert failed.steps["rouge_evaluator_round_1"].status == ExecutionStatus.COMPLETED


def test_resume_reuses_finished_rounds(interrupted: tuple[Any, Any], config: ExperimentConfig) -> None:
    failed, resumed = interrupted
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
            assert step.original_step_run_id == failed.steps[name].id, name  # what the failed run computed
        else:
            assert step.status == ExecutionStatus.COMPLETED, name


def test_smoke_model_learns(resumed: Any, config: ExperimentConfig) -> None:
    """The smoke setting moves the metrics: the loss falls, round 0 scores on unseen tasks,
    and prompt uncertainty separates the candidate tasks."""
    for r in range(config.rounds + 1):
        curve = _output(resumed, "accelerate_finetuner", "training_metrics", r)["loss_curve"]
        assert len(curve) == config.training.max_steps
        assert curve[0] > 9 and curve[-1] < curve[0] / 3, (r, curve)
    report = _output(resumed, "rouge_evaluator", "eval", 0)
    assert report.overall["rougeL"] > 20, report.overall
    assert any(p["prediction"] for p in report.predictions)
    table = _output(resumed, "uncertainty_scorer", "scores", 1)
    pu = sorted(row.pu for row in table)
    assert pu[-1] > 1e-3 and len(set(pu)) == len(pu), pu


def test_rounds_select_disjoint_task_sets(resumed: Any, config: ExperimentConfig) -> None:
    selections = _selections(resumed, config.rounds)
    assert [len(s) for s in selections] == [config.initial_tasks] + [config.tasks_per_round] * config.rounds
    names = [n for s in selections for n in s]
    assert len(names) == len(set(names))
    assert _output(resumed, "selector", "train_tasks", config.rounds) == names
    # rounds >= 1 take the most prompt-uncertain of the tasks left (uncertainty strategy)
    table = _output(resumed, "uncertainty_scorer", "scores", 1)
    ranked = [row.task for row in sorted(table, key=lambda row: (-row.pu, row.task))]
    assert list(selections[1]) == ranked[: config.tasks_per_round]


def test_mlflow_has_one_point_per_round(resumed: Any, config: ExperimentConfig, stack: StackInfo) -> None:
    run_id = find_run_id(stack.tracking_uri, config.tracking.experiment, resumed.name)
    rounds = list(range(config.rounds + 1))
    client = MlflowClient(stack.tracking_uri)
    for key in ("rougeL", "exact_match", "num_training_tasks", "train_loss", "training_time_s"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == rounds, key
    assert [m.step for m in client.get_metric_history(run_id, "scoring_time_s")] == rounds[1:]
    rows = metric_rows(stack.tracking_uri, run_id)
    assert [row["num_training_tasks"] for row in rows] == [config.initial_tasks + r * config.tasks_per_round for r in rounds]
    for r, row in zip(rounds, rows):
        assert row["rougeL"] == pytest.approx(_output(resumed, "rouge_evaluator", "eval", r).overall["rougeL"])
        assert row["train_loss"] == pytest.approx(_output(resumed, "accelerate_finetuner", "training_metrics", r)["final_loss"])
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


def test_registered_model_has_one_version_per_round(resumed: Any, config: ExperimentConfig, stack: StackInfo) -> None:
    versions = MlflowClient(stack.tracking_uri).search_model_versions("name='activeit-smoke-uncertainty'")
    assert sorted(int(v.tags["round"]) for v in versions) == list(range(config.rounds + 1))


def test_tracker_registers_models_without_loading_them(resumed: Any, model_loads: list[str]) -> None:
    """Registering a round's model needs only its artifact's location: no weights are read
    (on a remote artifact store, none downloaded) by the tracker."""
    assert any(name.startswith("rouge_evaluator_round_") for name in model_loads), model_loads
    assert not [name for name in model_loads if name.startswith("tracker_round_")]


def test_no_project_artifact_is_pickled(resumed: Any) -> None:
    for step in resumed.steps.values():
        for artifacts in step.outputs.values():
            source = str(artifacts[0].materializer.import_path)
            assert "cloudpickle" not in source, (step.name, source)


# ---------------------------------------------------------------- run.py --no-cache: recompute, reproduce


def test_no_cache_recomputes_every_step(recomputed: tuple[RunPy, Any]) -> None:
    _, again = recomputed
    assert again.status == ExecutionStatus.COMPLETED
    assert {s.status for s in again.steps.values()} == {ExecutionStatus.COMPLETED}
    assert {"pool_loader", "accelerate_finetuner_round_0", "uncertainty_scorer_round_1"} <= set(again.steps)


def test_same_seed_reproduces_the_run(recomputed: tuple[RunPy, Any], resumed: Any) -> None:
    """Recomputed from scratch: the same selections, losses, weights, scores and ROUGE-L."""
    _, again = recomputed
    assert _selections(again, 1) == _selections(resumed, 2)[:2]
    for r in (0, 1):
        losses = [_output(run, "accelerate_finetuner", "training_metrics", r)["loss_curve"] for run in (again, resumed)]
        assert losses[0] == losses[1], r
        assert _weights_digest(again, r) == _weights_digest(resumed, r), r
        rouge = [_output(run, "rouge_evaluator", "eval", r).overall["rougeL"] for run in (again, resumed)]
        assert rouge[0] == pytest.approx(rouge[1], abs=1e-9)
    assert _weights_digest(resumed, 0) != _weights_digest(resumed, 1)  # the digest sees the weights
    scores = [_output(run, "uncertainty_scorer", "scores", 1) for run in (again, resumed)]
    assert scores[0].tasks == scores[1].tasks
    assert [row.pu for row in scores[0]] == pytest.approx([row.pu for row in scores[1]], abs=1e-9)


# ---------------------------------------------------------------- run.py --compare


def test_compare_shares_round_0_through_the_cache(compared: Comparison) -> None:
    random_run, uncertain_run = compared.runs["random"], compared.runs["uncertainty"]
    assert random_run.status == uncertain_run.status == ExecutionStatus.COMPLETED
    shared = random_run.steps["accelerate_finetuner_round_0"]
    assert shared.status == ExecutionStatus.CACHED
    model = shared.outputs["model_round_0"][0]
    assert model.id == uncertain_run.steps["accelerate_finetuner_round_0"].outputs["model_round_0"][0].id
    # round 1 selects by another strategy: recomputed
    assert random_run.steps["selector_round_1"].status == ExecutionStatus.COMPLETED
    assert _output(random_run, "selector", "selection", 1).strategy == "random"
    assert "uncertainty_scorer_round_1" not in random_run.steps  # random needs no scores


def test_compare_writes_the_table_and_the_curve(compared: Comparison) -> None:
    with (compared.folder / "study.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["strategy"], r["seed"], r["round"]) for r in rows} == {
        (s, "0", str(r)) for s in ("uncertainty", "random") for r in (0, 1)
    }
    round0 = {r["strategy"]: float(r["rougeL"]) for r in rows if r["round"] == "0"}
    assert round0["uncertainty"] == round0["random"] > 0
    assert (compared.folder / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"

    value = {(r["strategy"], int(r["training_tasks"])): float(r["rougeL"]) for r in rows}
    markdown = (compared.folder / "study.md").read_text(encoding="utf-8")
    lines = markdown.splitlines()
    assert lines[0].startswith("# activeit-smoke: random vs uncertainty, seeds 0 (tiny-llama on ")
    for strategy in ("random", "uncertainty"):
        for r, n in ((0, 3), (1, 6)):
            row = f"| {strategy} | {r} | {n} | {value[(strategy, n)]:.2f} |"
            assert any(line.startswith(row) for line in lines), row
    delta = value[("uncertainty", 6)] - value[("random", 6)]
    assert any(line.startswith("| uncertainty | 1 | 6 |") and f"| {delta:+.2f} |" in line for line in lines)
    assert markdown.strip() in compared.printed.out  # printed at the end too


def test_compare_is_logged_to_mlflow(compared: Comparison, stack: StackInfo) -> None:
    assert "mlflow ui --backend-store-uri " + stack.tracking_uri in compared.printed.out
    client = MlflowClient(stack.tracking_uri)
    run_id = compared.comparison_run.info.run_id
    assert {"study.csv", "study.md", "learning_curve.png"} <= {a.path for a in client.list_artifacts(run_id)}
    for strategy, mlflow_run in compared.mlflow_runs.items():
        assert client.get_run(mlflow_run).data.tags["strategy"] == strategy
        curve = client.get_metric_history(run_id, f"rougeL_{strategy}")
        assert [m.step for m in curve] == [3, 6]


# ---------------------------------------------------------------- run.py: failures are one line


def test_a_failed_step_is_one_line_saying_how_to_resume(stack: StackInfo) -> None:
    """A fresh seed (nothing cached), round 0 only, its selector failing on purpose (in an
    experiment of its own: the smoke experiment holds the --compare study, of 1 round)."""
    done = run_py_main(["--config", str(SMOKE), "--rounds", "0", "--seed", "5", "--experiment", "activeit-smoke-failure"],
                       env={FAIL_STEP_ENV: "tracker_round_7,selector_round_0"})
    assert done.code == 2
    errors = [line for line in done.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.err[-2000:]
    assert "selector_round_0" in errors[0] and "run the same command again to resume" in errors[0]
    failed = Client().get_pipeline(PIPELINE_NAME).last_run
    assert failed.status == ExecutionStatus.FAILED
    assert failed.steps["selector_round_0"].status == ExecutionStatus.FAILED
    assert "mlflow ui" not in done.out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--strategy", "clever"], "unknown strategy 'clever'"),
        (["--compare", "uncertainty,clever"], "unknown strategy 'clever'"),
        (["--compare", "uncertainty"], "--compare needs at least two different strategies"),
        (["--compare", "random,random"], "--compare needs at least two different strategies"),
        (["--compare", "uncertainty,random", "--schedule", "0 3 * * 1"], "cannot be combined with a schedule"),
        (["--rounds", "50"], "impossible budget"),
        (["--schedule", "0 3 * * 1"], "does not support schedules"),
        (["--pool-path", "no/such/tasks.jsonl"], "no/such/tasks.jsonl"),
        (["--pool-source", "niv2", "--pool-path", "no/such/niv2"], "does not exist"),
    ],
)
def test_run_py_errors_are_one_line(
    argv: list[str], fragment: str, stack: StackInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    runs_before = Client().list_pipeline_runs(size=1).total
    assert run_py.main([*argv, "--config", str(SMOKE)]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and fragment in err and err.count("\n") == 1, err
    assert "Traceback" not in out + err
    assert Client().list_pipeline_runs(size=1).total == runs_before  # refused before anything ran


def test_run_py_pool_source_without_a_path(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_py.main(["--config", str(CONFIG_DIR / "default.yaml"), "--pool-source", "self-instruct"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "pool source 'self-instruct' needs a 'path'" in err and err.count("\n") == 1


def test_run_py_bad_config_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text() + "\nlearning_rate: 0.1\n")
    assert run_py.main(["--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: unknown key 'learning_rate'"


# ---------------------------------------------------------------- the remote config


def test_remote_config_settings_are_valid_zenml_settings() -> None:
    remote = load_config(CONFIG_DIR / "remote.yaml")
    built = configured(remote)
    assert {"docker", "resources", "orchestrator.kubernetes"} <= set(built.configuration.settings)
    assert remote.training.mixed_precision == "bf16" and remote.scoring.num_processes > 1
    assert remote.training.accelerate_config == "configs/accelerate/fsdp_4gpu.yaml"  # kept relative: portable
    assert remote.tracking.tracking_uri.startswith("https://")


def test_remote_config_attaches_its_schedule() -> None:
    """Built, not run: the pipeline carries the config's cron schedule (ZenML keeps the
    run arguments of ``with_options`` in ``_run_args``, read when it is called)."""
    remote = load_config(CONFIG_DIR / "remote.yaml", {"schedule": "0 3 * * 1"})  # (its --schedule example)
    schedule = configured(remote)._run_args["schedule"]
    assert schedule.cron_expression == remote.schedule
    assert configured(load_config(SMOKE))._run_args.get("schedule") is None

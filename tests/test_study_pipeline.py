"""A tiny-model study end to end through run.py: 2 strategies x 2 seeds, round 0 shared per
seed through the cache, the report rebuilt from MLflow equals the in-run one, a rerun trains
nothing, and bad study input is one error line."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import csv
import json
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient
from zenml.client import Client
from zenml.enums import ExecutionStatus

import run as run_py
from experiment.config import CONFIG_DIR, load_config
from pipelines.stack import StackInfo, prepare_stack, use_repo_source_root
from tracking.study import PARENT_TAG, STUDY_TAG, build_study

pytestmark = pytest.mark.slow
SMOKE = CONFIG_DIR / "smoke.yaml"
EXPERIMENT = "activeit-study-test"
STUDY = ["--compare", "uncertainty,random", "--seeds", "0,1", "--config", str(SMOKE), "--rounds", "1",
         "--experiment", EXPERIMENT]


@pytest.fixture(scope="module")
def stack() -> StackInfo:
    use_repo_source_root()
    return prepare_stack(load_config(SMOKE))


@pytest.fixture(scope="module")
def study_dir(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    outputs = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_py, "OUTPUTS", outputs)
        assert run_py.main(STUDY) == 0
    return outputs / f"study-{EXPERIMENT}"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _pair_runs(stack: StackInfo) -> dict[tuple[str, int], object]:
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], "tags.complete = 'true'")
    return {(r.data.tags["strategy"], int(r.data.tags["seed"])): r for r in runs}


def test_every_pair_ran_and_the_study_files_are_written(study_dir: Path, stack: StackInfo) -> None:
    rows = _rows(study_dir / "study.csv")
    assert {(r["strategy"], r["seed"], r["round"]) for r in rows} == {
        (s, str(seed), str(r)) for s in ("uncertainty", "random") for seed in (0, 1) for r in (0, 1)
    }
    for name in ("study.md", "learning_curve.png", "selection_overlap.csv", "selection_overlap.png", "pick_categories.csv"):
        assert (study_dir / name).stat().st_size > 0, name
    text = (study_dir / "study.md").read_text()
    assert "| base model (untuned) | – | 0 |" in text and "## Budget to match" in text
    assert set(_pair_runs(stack)) == {(s, seed) for s in ("uncertainty", "random") for seed in (0, 1)}


def test_per_task_and_per_instance_scores_are_tracked_and_paired(
    study_dir: Path, stack: StackInfo, tmp_path: Path
) -> None:
    client = MlflowClient(stack.tracking_uri)
    run_id = _pair_runs(stack)["uncertainty", 0].info.run_id
    files = {a.path for a in client.list_artifacts(run_id, "round_1")}
    assert {"round_1/evaluation.json", "round_1/predictions.jsonl"} <= files
    lines = Path(client.download_artifacts(run_id, "round_1/predictions.jsonl", str(tmp_path))).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4 * 3  # 3 instances of each of the 4 test tasks
    assert {"task", "id", "prediction", "references", "rougeL"} <= set(records[0])
    study = build_study(stack.tracking_uri, _pair_runs(stack).values())
    scores = study.paired_scores("uncertainty", 1)  # the smoke pool holds out 4 test tasks per seed
    assert scores.seeds == (0, 1) and [len(row) for row in scores.differences] == [4, 4]
    assert all(len(rnd.task_metrics["rougeL"]) == 4 and len(rnd.task_metrics["loglik"]) == 4
               for run in study.runs for rnd in run.rounds)
    assert all(math.isfinite(p["loglik"]) and p["loglik"] <= 0 for p in records)
    text = (study_dir / "study.md").read_text()
    assert "## Paired statistics and power (ROUGE-L, vs random)" in text and "## Where the spread comes from" in text
    assert "| uncertainty | 1 | 2 × 4 |" in text  # 2 seeds, each with 4 test tasks of its own
    cost = study.selection_cost("uncertainty")
    assert cost.rounds == 2 and cost.seconds > 0 and cost.tokens > 0 and study.selection_cost("random") is None


def test_round_zero_is_shared_per_seed_through_the_cache(study_dir: Path, stack: StackInfo) -> None:
    rows = _rows(study_dir / "study.csv")
    for seed in ("0", "1"):
        round0 = {r["strategy"]: r for r in rows if r["seed"] == seed and r["round"] == "0"}
        assert round0["uncertainty"]["training_tasks"] == round0["random"]["training_tasks"]
    overlap = {r["round"]: float(r["jaccard"]) for r in _rows(study_dir / "selection_overlap.csv")}
    assert overlap["0"] == 1.0 and overlap["1"] < 1.0  # the same round-0 set, then different picks
    for seed in (0, 1):
        first, second = (Client().get_pipeline_run(_pair_runs(stack)[s, seed].info.run_name)
                         for s in ("uncertainty", "random"))
        # the first strategy trained round 0 (or found it cached by an earlier smoke run of this
        # worker's store); the second one always reuses it
        assert first.steps["accelerate_finetuner_round_0"].status in (ExecutionStatus.COMPLETED, ExecutionStatus.CACHED)
        assert second.steps["accelerate_finetuner_round_0"].status == ExecutionStatus.CACHED
        assert second.steps["base_evaluator"].status == ExecutionStatus.CACHED
        model = [run.steps["accelerate_finetuner_round_0"].outputs["model_round_0"][0].id for run in (first, second)]
        assert model[0] == model[1]  # the very same round-0 model artifact


def test_the_pairs_are_children_of_the_study_run(study_dir: Path, stack: StackInfo) -> None:
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    parent = client.search_runs([experiment.experiment_id], f"tags.{STUDY_TAG} = 'true'",
                                order_by=["attributes.start_time DESC"])[0]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"study.csv", "study.md", "learning_curve.png"}
    assert all(run.data.tags[PARENT_TAG] == parent.info.run_id for run in _pair_runs(stack).values())


def test_report_from_mlflow_equals_the_in_run_study(
    study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_run = {name: (study_dir / name).read_text() for name in ("study.csv", "study.md", "selection_overlap.csv")}
    monkeypatch.setattr(run_py, "OUTPUTS", tmp_path)
    assert run_py.main(["--report", EXPERIMENT, "--config", str(SMOKE)]) == 0
    rebuilt = tmp_path / f"study-{EXPERIMENT}"
    assert {name: (rebuilt / name).read_text() for name in in_run} == in_run


def test_rerunning_a_finished_study_trains_nothing(
    study_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = len(Client().list_pipeline_runs(size=1000).items)
    monkeypatch.setattr(run_py, "OUTPUTS", tmp_path)
    capsys.readouterr()
    assert run_py.main(STUDY) == 0
    assert capsys.readouterr().out.count("finished before") == 4
    assert len(Client().list_pipeline_runs(size=1000).items) == before
    assert (tmp_path / f"study-{EXPERIMENT}" / "study.csv").read_text() == (study_dir / "study.csv").read_text()


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--compare", "uncertainty,random", "--seeds", ""], "--seeds is empty"),
        (["--compare", "uncertainty,random", "--seeds", "0,1,0"], "--seeds repeats 0"),
        (["--compare", "uncertainty,random", "--seeds", "0,x"], "not a comma-separated list of ints"),
        (["--report", "no-such-experiment"], "'no-such-experiment' does not exist"),
        (["--compare", "uncertainty,random", "--seeds", "0", "--seed", "1"], "either --seed"),
    ],
)
def test_bad_study_input_is_one_line(
    argv: list[str], fragment: str, stack: StackInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_py.main([*argv, "--config", str(SMOKE)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and fragment in err and "\n" not in err


def test_report_refuses_runs_of_different_configs(stack: StackInfo, capsys: pytest.CaptureFixture[str]) -> None:
    client = MlflowClient(stack.tracking_uri)
    experiment = client.create_experiment("activeit-mixed-configs")
    for strategy, epochs in (("uncertainty", "1"), ("random", "3")):
        run = client.create_run(experiment, tags={"strategy": strategy, "seed": "0", "complete": "true"})
        for key, value in (("training.epochs", epochs), ("model", "tiny-llama"), ("seed", "0"), ("strategy", strategy)):
            client.log_param(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
    assert run_py.main(["--report", "activeit-mixed-configs", "--config", str(SMOKE)]) == 2
    err = capsys.readouterr().err.strip()
    assert "different configs: training.epochs (" in err and "\n" not in err
    assert "strategy" not in err.split("configs:")[1].split(";")[0]  # strategy and seed may differ


def test_an_a_a_study_shows_what_no_difference_looks_like(
    stack: StackInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """random vs random-b (the same strategy under a second selection stream) through the smoke
    pipeline: the same round-0 set, other picks after it, and study.md shows the pair like any
    other, with its interval, its variance split and a verdict that claims nothing it cannot."""
    experiment = "activeit-study-aa"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_py, "OUTPUTS", tmp_path)
        assert run_py.main(["--compare", "random,random-b", "--seeds", "0,1", "--config", str(SMOKE),
                            "--rounds", "1", "--experiment", experiment]) == 0
    out = capsys.readouterr().out
    text = (tmp_path / f"study-{experiment}" / "study.md").read_text(encoding="utf-8")
    overlap = {r["round"]: float(r["jaccard"]) for r in _rows(tmp_path / f"study-{experiment}" / "selection_overlap.csv")}
    assert overlap["0"] == 1.0 and overlap["1"] < 1.0  # the same round 0, then another stream's picks
    row = next(line for line in text.splitlines() if line.startswith("| random-b | 1 | 6 |"))
    assert "[" in row and "]" in row  # its t interval
    verdict = next(line for line in text.splitlines() if line.startswith("- random-b vs random"))
    assert "95% t interval" in verdict and "P(a new seed favours random-b)" in verdict
    assert "## Where the spread comes from" in text and "| random-b | 1 | 2 × 4 |" in text
    assert "| random-b | none (no scoring) |" in text
    assert verdict[2:] in out[out.index("Paired statistics (details in study.md):"):]

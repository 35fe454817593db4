"""The baselines (ifd, diverse, uncertainty-diverse) in the smoke pipeline and in a study:
``run.py --compare`` over them, in a private ZenML + MLflow store of this module's own."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import contextlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from zenml.client import Client
from zenml.enums import ExecutionStatus

import run as run_py
from activeit.selection.strategies import select_tasks
from experiment.config import CONFIG_DIR, load_config
from pipelines.stack import prepare_stack, use_repo_source_root

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("baselines")]
SMOKE = CONFIG_DIR / "smoke.yaml"
EXPERIMENT = "activeit-smoke-baselines"
BASELINES = ("ifd", "diverse", "uncertainty-diverse")


def run_py_main(argv: Sequence[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_py.main(list(argv))
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``run.py --compare random,ifd,diverse,uncertainty-diverse --rounds 1`` on the smoke config."""
    use_repo_source_root()
    stack = prepare_stack(load_config(SMOKE))
    outputs = tmp_path_factory.mktemp("outputs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_py, "OUTPUTS", outputs)
        code, out, err = run_py_main(["--compare", ",".join(("random", *BASELINES)), "--config", str(SMOKE),
                                      "--rounds", "1", "--experiment", EXPERIMENT])
    assert code == 0, err[-3000:]
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    (parent,) = client.search_runs([experiment.experiment_id], "tags.study = 'true'")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    runs = {r.data.tags["strategy"]: Client().get_pipeline_run(r.info.run_name) for r in children}
    (folder,) = outputs.iterdir()
    return {"runs": runs, "folder": folder, "out": out}


def _output(run: Any, step: str, name: str) -> Any:
    return run.steps[step].outputs[name][0].load()


def test_each_baseline_runs_its_own_steps(study: dict[str, Any]) -> None:
    runs = study["runs"]
    assert set(runs) == {"random", *BASELINES}
    for strategy, run in runs.items():
        assert run.status == ExecutionStatus.COMPLETED, strategy
        assert _output(run, "selector_round_1", "selection_round_1").strategy == strategy
    assert "ifd_scorer_round_1" in runs["ifd"].steps and "uncertainty_scorer_round_1" not in runs["ifd"].steps
    assert "uncertainty_scorer_round_1" not in runs["diverse"].steps
    assert _output(runs["ifd"], "ifd_scorer_round_1", "scoring_time_round_1") > 0
    assert "uncertainty_scorer_round_1" in runs["uncertainty-diverse"].steps
    assert {"task_embedder"} <= set(runs["diverse"].steps) and "task_embedder" not in runs["random"].steps
    # the embeddings are computed once per pool: the second strategy reuses them
    embedders = [runs[s].steps["task_embedder"] for s in ("diverse", "uncertainty-diverse")]
    assert ExecutionStatus.CACHED in {step.status for step in embedders}


def test_the_ifd_run_picks_the_highest_ifd_tasks(study: dict[str, Any]) -> None:
    run = study["runs"]["ifd"]
    table = _output(run, "ifd_scorer_round_1", "ifd_round_1")
    trained = set(_output(run, "selector_round_0", "train_tasks_round_0"))
    assert trained.isdisjoint(row.task for row in table)  # only the remaining tasks are scored
    picked = _output(run, "selector_round_1", "selection_round_1")
    highest = sorted(table, key=lambda row: (-row.ifd, row.task))[: len(picked)]
    assert picked.tasks == tuple(row.task for row in highest)


def test_the_diversity_runs_follow_their_rules(study: dict[str, Any]) -> None:
    pool = _output(study["runs"]["diverse"], "pool_loader", "task_pool")
    embeddings = _output(study["runs"]["diverse"], "task_embedder", "task_embeddings")
    assert set(embeddings.names) == {t.name for t in [*pool.train, *pool.test]}
    for strategy in ("diverse", "uncertainty-diverse"):
        run = study["runs"][strategy]
        trained = _output(run, "selector_round_0", "train_tasks_round_0")
        scores = (_output(run, "uncertainty_scorer_round_1", "scores_round_1")
                  if strategy == "uncertainty-diverse" else None)
        candidates = [t for t in pool.train if t.name not in trained]
        again = select_tasks(strategy, candidates, 3, scores=scores, embeddings=embeddings, selected=trained,
                             round_index=1)
        assert _output(run, "selector_round_1", "selection_round_1").tasks == again.tasks
    picked = _output(study["runs"]["uncertainty-diverse"], "selector_round_1", "selection_round_1")
    assert set(picked.categories) == set(picked.tasks)  # task-map categories, as for uncertainty


def test_the_embeddings_show_as_a_projection(study: dict[str, Any]) -> None:
    artifact = study["runs"]["diverse"].steps["task_embedder"].outputs["task_embeddings"][0]
    assert any(v.type == "image" for v in artifact.visualizations)
    assert artifact.run_metadata["dimension"] == 384


def test_the_study_covers_the_baselines(study: dict[str, Any]) -> None:
    markdown = (study["folder"] / "study.md").read_text(encoding="utf-8")
    for strategy in BASELINES:
        assert f"| {strategy} | 1 | 6 |" in markdown, strategy
    assert (study["folder"] / "selection_overlap.png").read_bytes()[:4] == b"\x89PNG"


def test_a_missing_encoder_is_one_line_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "encoder.yaml"
    config.write_text(SMOKE.read_text() + f"diversity:\n  encoder: {tmp_path / 'no-encoder'}\n")
    runs_before = Client().list_pipeline_runs(size=1).total
    assert run_py.main(["--config", str(config), "--strategy", "diverse", "--experiment", "activeit-smoke-enc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "sentence encoder folder" in err and err.count("\n") == 1, err
    assert Client().list_pipeline_runs(size=1).total == runs_before

"""Materializers: readable files (JSON / Parquet, never pickle), metadata, visualizations."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from zenml.client import Client
from zenml.enums import VisualizationType

from activeit.evaluation import score_predictions
from activeit.data.perturbations import perturb_tasks
from activeit.scoring.scores import InstanceScore, ScoreTable, TaskScore
from activeit.data.sources import load_pool
from activeit.selection.strategies import Selection
from activeit.data.tasks import TaskPool
from materializers import (
    EvalReportMaterializer, ModelFolder, ModelFolderMaterializer, PromptSet, PromptSetMaterializer,
    ScoreTableMaterializer, SelectionMaterializer, TaskPoolMaterializer,
)


@pytest.fixture(scope="module")
def pool() -> TaskPool:
    return load_pool("builtin", max_instances_per_task=2)


@pytest.fixture()
def uri(tmp_path: Path) -> str:
    store = Path(Client().active_stack.artifact_store.path)
    folder = store / "tests" / tmp_path.name
    folder.mkdir(parents=True)
    return str(folder)


def roundtrip(cls: type, data: Any, uri: str) -> tuple[Any, dict[str, Any], dict[str, VisualizationType]]:
    """save -> metadata -> visualizations -> load, as ZenML does; no pickle files."""
    materializer = cls(uri)
    materializer.save(data)
    metadata = materializer.extract_metadata(data)
    visuals = materializer.save_visualizations(data)
    files = os.listdir(uri)
    assert not [f for f in files if f.endswith((".pkl", ".pickle"))], files
    for path in visuals:
        assert os.path.getsize(path) > 0
    return cls(uri).load(type(data)), metadata, visuals


def test_task_pool(pool: TaskPool, uri: str) -> None:
    loaded, metadata, visuals = roundtrip(TaskPoolMaterializer, pool, uri)
    assert loaded == pool
    assert json.loads(Path(uri, "pool.json").read_text())["name"] == pool.name
    assert metadata["train_tasks"] == len(pool.train) and metadata["test_tasks"] == len(pool.test)
    assert list(visuals.values()) == [VisualizationType.MARKDOWN]


def test_prompt_set(pool: TaskPool, uri: str) -> None:
    prompts = PromptSet(round=2, prompts=perturb_tasks(pool.train[:4], k=3, seed=1))
    loaded, metadata, _ = roundtrip(PromptSetMaterializer, prompts, uri)
    assert loaded == prompts
    assert metadata == {"round": 2, "tasks": 4, "k": 3, "perturbation": "word_drop"}
    lines = Path(uri, "prompts.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["task"] == pool.train[0].name


def _score_table(pool: TaskPool) -> ScoreTable:
    rows = [TaskScore(task=t.name, pu=0.01 * (i + 1), pp=0.5 - 0.02 * i, perplexity=2.0 + i, n=2, k=2,
                      is_classification=t.is_classification, category=t.category)
            for i, t in enumerate(pool.train[:8])]
    instances = [InstanceScore(task=r.task, instance_id=f"{r.task}-0", prediction="yes", prediction_tokens=2,
                               nll0=0.7, p0=0.5, p=(0.4, 0.6)) for r in rows]
    return ScoreTable(tuple(rows), tuple(instances), {"round": 1, "model": "tiny-llama"})


def test_score_table(pool: TaskPool, uri: str) -> None:
    table = _score_table(pool)
    loaded, metadata, visuals = roundtrip(ScoreTableMaterializer, table, uri)
    assert loaded.rows == table.rows and loaded.instances == table.instances and loaded.meta == table.meta
    frame = pd.read_parquet(Path(uri, "scores.parquet"))
    assert list(frame["task"]) == list(table.tasks)
    assert metadata["tasks"] == 8 and metadata["round"] == 1
    assert metadata["pu_max"] == pytest.approx(0.08)
    kinds = sorted(visuals.values())
    assert kinds == sorted([VisualizationType.MARKDOWN, VisualizationType.IMAGE])
    png = next(p for p, kind in visuals.items() if kind == VisualizationType.IMAGE)
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adaptive_score_table_and_an_older_one(pool: TaskPool, uri: str) -> None:
    """Intervals, pairs and decisions travel through the artifact; an artifact written before
    them (no such columns) loads as an exact table."""
    table = _score_table(pool)
    stopped = replace(table.rows[0], pairs=3, pu_low=0.0, pu_high=0.3, decided="out")
    rows = (stopped, *table.rows[1:])
    meta = {"round": 1, "adaptive": {"budget": 2, "delta": 0.1, "stopped_in": 0, "stopped_out": 1,
                                     "work_saved": 0.25}}
    adaptive = ScoreTable(rows, table.instances, meta)
    loaded, metadata, visuals = roundtrip(ScoreTableMaterializer, adaptive, uri)
    assert loaded.rows == rows and loaded.rows[0].stopped_early
    assert (metadata["stopped_early"], metadata["work_saved"]) == (1, 0.25)
    summary = Path(next(p for p, kind in visuals.items() if kind == VisualizationType.MARKDOWN)).read_text()
    assert "PU interval" in summary and "1 surely out" in summary
    frame = pd.read_parquet(Path(uri, "scores.parquet")).drop(columns=["pairs", "pu_low", "pu_high", "decided"])
    frame.to_parquet(Path(uri, "scores.parquet"), index=False)
    older = ScoreTableMaterializer(uri).load(ScoreTable)
    assert [r.pu for r in older.rows] == [r.pu for r in rows]
    assert not any(r.stopped_early for r in older.rows) and older.rows[0].pu_low == older.rows[0].pu


def test_selection(uri: str) -> None:
    selection = Selection("uncertainty", 3, 0, ("task_a", "task_b"), {"task_a": 0.2, "task_b": 0.1},
                          {"task_a": "ambiguous", "task_b": "easy"})
    loaded, metadata, _ = roundtrip(SelectionMaterializer, selection, uri)
    assert loaded == selection
    assert metadata == {"strategy": "uncertainty", "round": 3, "seed": 0, "tasks": 2}
    stored = json.loads(Path(uri, "selection.json").read_text())
    assert stored["tasks"] == ["task_a", "task_b"] and stored["categories"] == {"task_a": "ambiguous", "task_b": "easy"}
    del stored["categories"]  # written before selections carried categories: loads with none
    assert Selection.from_dict(stored).categories == {}


def test_eval_report(pool: TaskPool, uri: str) -> None:
    items = [(t, i, i.outputs[0] if n % 2 else "wrong") for n, t in enumerate(pool.test[:4]) for i in t.instances]
    report = score_predictions(items)
    loaded, metadata, _ = roundtrip(EvalReportMaterializer, report, uri)
    assert loaded.to_dict() == report.to_dict()
    assert metadata["overall_rougeL"] == pytest.approx(report.overall["rougeL"])
    assert metadata["test_tasks"] == 4


def test_model_folder_is_copied_file_for_file(tmp_path: Path, uri: str) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "model.safetensors").write_bytes(b"\0" * 1024)
    model = ModelFolder(str(source), base_model="tiny-llama", round=1)
    loaded, metadata, _ = roundtrip(ModelFolderMaterializer, model, uri)
    assert (Path(loaded.path) / "model.safetensors").read_bytes() == b"\0" * 1024
    assert (loaded.base_model, loaded.round) == ("tiny-llama", 1)
    assert metadata["files"] == 2 and metadata["round"] == 1


def test_model_folder_written_in_place_is_not_copied(uri: str) -> None:
    Path(uri, "config.json").write_text("{}")
    model = ModelFolder(uri, base_model="tiny-llama", round=0)
    loaded, _, _ = roundtrip(ModelFolderMaterializer, model, uri)
    assert Path(loaded.path).resolve() == Path(uri).resolve()

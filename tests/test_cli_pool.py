"""``python -m activeit pool``: the summary of every source, as text and as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activeit.cli import main
from activeit.data.tasks import TaskPool

ROOT = Path(__file__).resolve().parents[1]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["pool", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_niv2_available_json_reports_147_train_and_16_test(niv2_root: Path) -> None:
    """The documented command, through the real entry point."""
    done = subprocess.run(
        [sys.executable, "-m", "activeit", "pool", "--source", "niv2", "--path", str(niv2_root),
         "--split-dir", "available", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["train_tasks"], summary["test_tasks"]) == (147, 16)
    assert (summary["classification_tasks"], summary["generation_tasks"]) == (2, 161)
    assert all(isinstance(summary[k], int) for k in ("train_tasks", "test_tasks", "classification_tasks", "generation_tasks"))


def test_text_summary_of_the_builtin_suite(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys)  # builtin is the default source
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "pool builtin"
    assert lines[1].split() == ["split", "tasks", "classification", "generation", "instances"]
    assert lines[2].split()[:4] == ["train", "34", "11", "23"]
    assert lines[3].split()[:4] == ["test", "10", "4", "6"]
    assert lines[4].split()[:4] == ["all", "44", "15", "29"]
    assert out.count("instances per task: min 20") == 1 and "output length (words): mean" in out  # the default cap
    assert "categories (9): numbers 6, word_lists 6" in out


def test_self_instruct_json_with_held_out_tasks(capsys: pytest.CaptureFixture[str], shared_data: Path) -> None:
    path = shared_data / "self_instruct" / "seed_tasks.jsonl"
    code, out, _ = _run(capsys, "--source", "self-instruct", "--path", str(path), "--test-tasks", "25",
                        "--validation-tasks", "10", "--json")
    summary = json.loads(out)
    assert code == 0 and (summary["train_tasks"], summary["test_tasks"], summary["splits"]["validation"]) == (140, 25, 10)
    assert summary["classification_tasks"] == 26 and summary["generation_tasks"] == 149


def test_out_saves_the_pool_and_max_instances_applies(capsys: pytest.CaptureFixture[str], tmp_path: Path, niv2_root: Path) -> None:
    target = tmp_path / "pool.json"
    code, out, _ = _run(capsys, "--source", "niv2", "--path", str(niv2_root), "--split-dir", "available",
                        "--max-instances", "5", "--seed", "2", "--out", str(target), "--json")
    assert code == 0 and json.loads(out)["instances"] == 163 * 5
    pool = TaskPool.load_json(target)
    assert len(pool) == 163 and all(len(t.instances) == 5 for t in pool)
    assert [p.name for p in tmp_path.iterdir()] == ["pool.json"]


def test_hub_offline_cli_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "activeit", "pool", "--source", "hub", "--path", "Muennighoff/natural-instructions"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path)},
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: cannot reach the Hugging Face hub to load 'Muennighoff/natural-instructions'")
    assert len(done.stderr.splitlines()) == 1

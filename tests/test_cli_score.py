"""``python -m activeit score`` end to end on the builtin pool with a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from activeit.cli import main
from activeit.scores import ScoreTable

FAST = ["--source", "builtin", "--model", "tiny-llama", "--n", "2", "--k", "2", "--max-new-tokens", "4",
        "--max-tasks", "4", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


def test_score_writes_table_detail_and_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["score", *FAST, "--out", str(out), "--budget", "2"]) == 0
    table = ScoreTable.load(out / "scores.csv")
    assert len(table) == 4 and all(r.n == 2 and r.k == 2 for r in table)
    assert len(table.instances) == 8 and all(len(s.p) == 2 for s in table.instances)
    assert (out / "scores.instances.csv").exists()
    assert (out / "task_map.png").read_bytes().startswith(b"\x89PNG")
    selection = json.loads((out / "selection.json").read_text())
    assert selection["strategy"] == "uncertainty" and len(selection["tasks"]) == 2
    assert set(json.loads((out / "task_map.json").read_text())) == set(table.tasks)
    assert "scored 4 tasks" in capsys.readouterr().out


def test_score_parquet_and_other_perturbation(tmp_path: Path) -> None:
    args = ["score", *FAST, "--out", str(tmp_path), "--format", "parquet", "--perturbation", "drop_examples"]
    assert main(args) == 0
    assert len(ScoreTable.load(tmp_path / "scores.parquet")) == 4


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--split", "nope"], "no split 'nope'"), (["--max-tasks", "0"], "--max-tasks"), (["--k", "0"], "at least 1")],
)
def test_score_errors_are_one_line(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    args = ["score", *FAST, "--out", str(tmp_path), *extra]
    if "--max-tasks" in extra:
        args.remove("--max-tasks"), args.remove("4")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error:")

"""``python -m activeit score`` end to end on the builtin pool with a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activeit.cli import main
from activeit.models.processes import free_port
from activeit.scoring.scores import ScoreTable

FAST = ["--source", "builtin", "--model", "tiny-llama", "--n", "2", "--k", "2", "--max-new-tokens", "4",
        "--max-tasks", "4", "--no-progress"]


ROOT = Path(__file__).resolve().parents[1]
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
    args = ["score", *FAST, "--out", str(tmp_path / "drop"), "--format", "parquet", "--perturbation", "drop_examples"]
    assert main(args) == 0
    dropped = ScoreTable.load(tmp_path / "drop" / "scores.parquet")
    assert main(["score", *FAST, "--out", str(tmp_path / "words")]) == 0
    words = ScoreTable.load(tmp_path / "words" / "scores.csv")
    assert dropped.tasks == words.tasks and len(dropped) == 4
    # the same predictions (same original prompt), other perturbed prompts: other p_ij
    assert [s.p0 for s in dropped.instances] == pytest.approx([s.p0 for s in words.instances], rel=1e-6)
    assert all(a.p != pytest.approx(b.p, rel=1e-6) for a, b in zip(dropped.instances, words.instances))


def test_score_with_two_processes(tmp_path: Path) -> None:
    """``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m activeit score ...``
    (README): the same table as one process, written once, the pool split between the processes."""
    single = tmp_path / "single"
    assert main(["score", *FAST, "--out", str(single)]) == 0
    launched = tmp_path / "launched"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(free_port()), "-m", "activeit", "score",
               *(a for a in FAST if a != "--no-progress"), "--out", str(launched)]
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scoring (process 0 of 2)" in done.stderr  # the main process's progress bar
    assert done.stdout.count("scored 4 tasks") == 1  # ... and it alone reports and writes
    one, two = ScoreTable.load(single / "scores.csv"), ScoreTable.load(launched / "scores.csv")
    assert two.tasks == one.tasks and len(two.instances) == len(one.instances)
    for mine, theirs in zip(one, two):
        assert (theirs.pu, theirs.pp) == pytest.approx((mine.pu, mine.pp), abs=1e-6)
    assert [s.prediction for s in two.instances] == [s.prediction for s in one.instances]


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--split", "nope"], "no split 'nope'"), (["--max-tasks", "0"], "--max-tasks"),
     (["--k", "0"], "--k: Input should be greater than or equal to 1"),
     (["--adaptive", "--strategy", "low-perplexity"], "adaptive scoring settles only the top b"),
     (["--adaptive", "--num-processes", "2"], "adaptive scoring runs in one process")],
)
def test_score_errors_are_one_line(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    args = ["score", *FAST, "--out", str(tmp_path), *extra]
    if "--max-tasks" in extra:
        args.remove("--max-tasks"), args.remove("4")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("error:")


def test_score_adaptive_settles_the_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "adaptive"
    args = ["score", *FAST, "--out", str(out), "--budget", "4", "--adaptive", "--first-stage", "2"]
    assert main(args) == 0
    table = ScoreTable.load(out / "scores.csv")
    assert all(r.decided == "in" and r.pairs == 2 for r in table)  # 4 of 4 tasks: all in after stage 1
    assert "4 tasks stopped surely in" in capsys.readouterr().out

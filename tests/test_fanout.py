"""Local fan-out (``run.py --parallel K``): the machine split between the workers and
refused beyond it, the progress view, and a smoke study end to end: a failed pair does
not stop the others, a rerun runs only the missing pairs, and K = 2 gives the same study
as K = 1 (run in a store of its own, so that no cache carries over)."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

import run as run_py
from activeit.errors import ActiveITError, ConfigError
from benchmarks.parallel import EXPERIMENT, comparable, run_isolated, study_command, threads_env
from experiment.config import CONFIG_DIR, load_config
from pipelines import fanout
from pipelines.fanout import Worker, idle_slots, plan_slots, progress_line, run_parallel
from pipelines.stack import StackInfo, prepare_stack, use_repo_source_root

SMOKE = CONFIG_DIR / "smoke.yaml"
#: 2 tasks a round: no other test's smoke run shares this study's cache.
SETTINGS = ["--rounds", "1", "--tasks-per-round", "2"]
STUDY = ["--compare", "uncertainty,random", "--seeds", "0,1", "--config", str(SMOKE), "--experiment", EXPERIMENT,
         *SETTINGS]


def _one_error_line(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert all(fragment in err for fragment in fragments), err


def test_workers_split_the_cores_and_more_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "cpu_cores", lambda: 4)
    monkeypatch.setattr(fanout, "_visible_gpus", lambda: [])
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    config = load_config(SMOKE)
    slots = plan_slots(2, config)
    assert [slot.threads for slot in slots] == [2, 2]
    assert slots[0].environment()["OMP_NUM_THREADS"] == "2" and "CUDA_VISIBLE_DEVICES" not in slots[0].environment()
    assert [slot.threads for slot in plan_slots(3, config)] == [1, 1, 1]
    with pytest.raises(ConfigError, match=r"--parallel 5 needs more CPU cores than the 4 .* at most 4"):
        plan_slots(5, config)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # K x threads = 6 > 4
    with pytest.raises(ConfigError, match=r"OMP_NUM_THREADS=3 .* at most 1"):
        plan_slots(2, config, "study.parallel in my.yaml")
    monkeypatch.delenv("OMP_NUM_THREADS")
    two = load_config(SMOKE, {"training.num_processes": 2})  # each worker launches 2 CPU processes
    assert [slot.threads for slot in plan_slots(2, two)] == [1, 1]
    with pytest.raises(ConfigError, match=r"--parallel 3 x 2 processes .* at most 2"):
        plan_slots(3, two)


def test_each_worker_gets_its_own_gpus_and_more_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout, "cpu_cores", lambda: 16)
    monkeypatch.setattr(fanout, "_visible_gpus", lambda: ["3", "5", "6", "7"])
    config = load_config(SMOKE)
    slots = plan_slots(4, config)
    assert [slot.environment()["CUDA_VISIBLE_DEVICES"] for slot in slots] == ["3", "5", "6", "7"]
    assert [slot.threads for slot in slots] == [4, 4, 4, 4]
    with pytest.raises(ConfigError, match=r"--parallel 5 needs 5 GPU\(s\) .* 4 are visible; set --parallel to at most 4"):
        plan_slots(5, config)
    wide = load_config(SMOKE, {"scoring.num_processes": 2})
    assert [slot.gpus for slot in plan_slots(2, wide)] == [("3", "5"), ("6", "7")]
    with pytest.raises(ConfigError, match=r"needs 6 GPU\(s\) \(2 per worker\)"):
        plan_slots(3, wide)


def test_parallel_and_wait_flags_are_refused_where_they_mean_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_py.main(["--config", str(SMOKE), "--parallel", "2"]) == 2
    _one_error_line(capsys, "--parallel runs the pairs of a study at once", "--compare")
    assert run_py.main(["--config", str(SMOKE), "--compare", "uncertainty,random", "--parallel", "0"]) == 2
    _one_error_line(capsys, "--parallel")
    assert run_py.main(["--wait"]) == 2
    _one_error_line(capsys, "--wait", "--report EXPERIMENT")
    assert run_py.main(["--report", "x", "--timeout", "10"]) == 2
    _one_error_line(capsys, "--timeout", "--wait")
    assert run_py.main(["--report", "x", "--wait", "--timeout", "0"]) == 2
    _one_error_line(capsys, "--timeout is 0")


def test_idle_slots_count_what_the_last_wave_leaves_unused() -> None:
    """3 seeds in 2 slots: the third runs alone (one slot idle); 4 seeds keep both busy; one
    seed in 4 slots leaves 3 idle."""
    assert [idle_slots(workers, 2) for workers in (1, 2, 3, 4)] == [1, 0, 1, 0]
    assert idle_slots(1, 4) == 3 and idle_slots(6, 3) == 0 and idle_slots(7, 3) == 2


def test_the_progress_view_names_each_pair_state(tmp_path: Path) -> None:
    configs = [load_config(SMOKE, {"strategy": s, "seed": seed}) for seed in (0, 1, 2) for s in ("uncertainty", "random")]
    workers = [Worker(seed, [c for c in configs if c.seed == seed], tmp_path) for seed in (0, 1, 2)]
    workers[0].status_file.write_text(json.dumps({"running": None, "done": ["uncertainty"], "failed": {"random": "boom"}}))
    workers[0].process, workers[0].ended = object(), True  # (a worker that has ended)
    workers[1].status_file.write_text(json.dumps({"running": "random", "done": ["uncertainty"], "failed": {}}))
    workers[1].process, workers[1].rounds = object(), {"random": 1}
    assert progress_line(workers, rounds=1) == (
        "== pairs: 2 done; 1 running: random seed 1 (round 1/1); 2 waiting; 1 failed: random seed 0")


@pytest.fixture(scope="module")
def stack() -> StackInfo:
    use_repo_source_root()
    return prepare_stack(load_config(SMOKE))


@pytest.fixture(scope="module")
def failed_then_resumed(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Seed 1's pairs fail (ZenML settings it refuses: a per-run key, so the study is the
    same) while seed 0's finish; then the study runs with --parallel 2 and only seed 1's
    pairs run."""
    outputs = tmp_path_factory.mktemp("outputs")
    good = [load_config(SMOKE, {"strategy": s, "seed": seed, "rounds": 1, "tasks_per_round": 2,
                                "tracking.experiment": EXPERIMENT, "study.strategies": ["uncertainty", "random"],
                                "study.seeds": [0, 1], "study.parallel": 2})
            for seed in (0, 1) for s in ("uncertainty", "random")]
    bad = {"resources": {"cpu_count": "many"}}
    broken = [c if c.seed == 0 else c.model_copy(update={"zenml": c.zenml.model_copy(update={"settings": bad})})
              for c in good]
    assert {c.study_key() for c in broken} == {good[0].study_key()}
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")  # every pair one thread, as the --parallel 1 run it is compared with
        patch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(ActiveITError) as failed:
            run_parallel(broken, 2, stack.tracking_uri, outputs / "workers", show=lines.append)
        patch.setattr(run_py, "OUTPUTS", outputs)
        code = run_py.main([*STUDY, "--parallel", "2"])
    return {"error": str(failed.value), "lines": lines, "code": code, "outputs": outputs}


@pytest.mark.slow
def test_a_failed_pair_does_not_stop_the_others(failed_then_resumed: dict[str, object], stack: StackInfo) -> None:
    error, lines = failed_then_resumed["error"], failed_then_resumed["lines"]
    assert error.startswith("2 pair(s) did not finish: uncertainty seed 1, random seed 1") and "seed-1.log" in error
    assert lines[-1] == "== pairs: 2 done; 0 running; 0 waiting; 2 failed: uncertainty seed 1, random seed 1"
    assert any("running: " in line and "(round 0/1)" in line for line in lines)  # the view named a running round


@pytest.mark.slow
def test_a_rerun_runs_only_the_missing_pairs_and_matches_parallel_1(
    failed_then_resumed: dict[str, object], stack: StackInfo, tmp_path: Path,
) -> None:
    assert failed_then_resumed["code"] == 0
    worker_logs = failed_then_resumed["outputs"] / f"study-{EXPERIMENT}" / "workers"
    assert not (worker_logs / "seed-0.log").exists() and (worker_logs / "seed-1.log").exists()  # seed 0 was reused
    client = MlflowClient(stack.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    complete = client.search_runs([experiment.experiment_id], "tags.complete = 'true'")
    assert sorted((r.data.tags["strategy"], r.data.tags["seed"]) for r in complete) == sorted(
        (s, str(seed)) for s in ("uncertainty", "random") for seed in (0, 1))  # each pair once: nothing ran twice
    # the same study at --parallel 1, in a store of its own (no cache shared with the one above), its
    # pairs at the same one thread (a pair's numbers depend on its thread count, at float rounding)
    single = run_isolated(study_command(str(SMOKE), "uncertainty,random", "0,1", 1, SETTINGS), tmp_path / "k1",
                          extra_env=threads_env(1))
    assert single.code == 0, single.output[-3000:]
    parallel_dir = failed_then_resumed["outputs"] / f"study-{EXPERIMENT}"
    assert comparable((parallel_dir / "study.md").read_text()) == comparable(single.study_file("study.md"))
    # study.csv keeps every digit: a resumed pair's log-likelihoods may move at float rounding
    # (seen once at 1.6e-9 relative), so its numbers are compared to 1e-6
    resumed, fresh = (comparable(text).splitlines() for text in
                      ((parallel_dir / "study.csv").read_text(), single.study_file("study.csv")))
    assert len(resumed) == len(fresh)
    for line, other in zip(resumed, fresh):
        cells, other_cells = line.split(","), other.split(",")
        assert len(cells) == len(other_cells), line
        for cell, other_cell in zip(cells, other_cells):
            try:
                assert float(cell) == pytest.approx(float(other_cell), rel=1e-6, abs=1e-9), line
            except ValueError:
                assert cell == other_cell, line

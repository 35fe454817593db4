"""Faults: nothing the user had is lost, nothing is half-written, and bad input is one
`error:` line before any compute. Kills (SIGKILL) in the middle of training and scoring,
a disk that fills while a model is saved, and the edge inputs of a demanding user."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from launched import pids_holding

from activeit.cli import main as cli
from activeit.errors import ConfigError, ModelLoadError, PoolError
from activeit.models.checks import check_model
from activeit.models.tiny import tiny_model_folder
from activeit.outputs import MARKER, check_output_dir, output_dir
from activeit.data.sources import SkippedTaskWarning, load_pool
from activeit.data.sources.niv2 import read_niv2_task
from experiment.config import load_config

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["train", "--source", "builtin", "--model", "tiny-llama", "--max-steps", "1", "--max-instances", "2",
         "--tasks", "numbers_add", "--no-progress", "--no-chat"]
SCORE = ["score", "--source", "builtin", "--model", "tiny-llama", "--max-tasks", "2", "--n", "2", "--k", "2",
         "--max-new-tokens", "4", "--no-progress", "--no-chat"]


def one_error_line(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture
def no_compute(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: the error must come before any compute."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the bad input was reported")

    for module in ("activeit.cli.train", "activeit.cli.score", "activeit.cli.evaluate", "activeit.training.finetune"):
        monkeypatch.setattr(f"{module}.load_model", refuse, raising=False)


# ----------------------------------------------------------------------------- outputs


def test_train_refuses_a_folder_of_the_users_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   no_compute: None) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert cli([*TRAIN, "--out", str(tmp_path)]) == 2
    one_error_line(capsys, str(tmp_path), "did not write", "--overwrite")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_train_replaces_its_own_output_and_overwrite_replaces_anything(tmp_path: Path) -> None:
    out = tmp_path / "model"
    assert cli([*TRAIN, "--out", str(out)]) == 0
    assert (out / MARKER).exists() and (out / "model.safetensors").exists()
    assert cli([*TRAIN, "--out", str(out)]) == 0  # activeit's own folder: replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert cli([*TRAIN, "--out", str(foreign), "--overwrite"]) == 0
    assert not (foreign / "notes.txt").exists() and (foreign / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize("command", ["score", "evaluate", "train"])
def test_out_that_is_a_file_is_refused_before_compute(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    file = tmp_path / "f"
    file.write_text("hi")
    argv = {"score": SCORE, "train": TRAIN,
            "evaluate": ["evaluate", "--source", "builtin", "--model", "tiny-llama", "--no-progress"]}[command]
    assert cli([*argv, "--out", str(file)]) == 2
    one_error_line(capsys, str(file), "is a file")
    assert file.read_text() == "hi"


def test_an_unwritable_place_is_refused_before_compute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("activeit.outputs.tempfile.mkstemp", read_only)
    assert cli([*SCORE, "--out", str(tmp_path / "scores")]) == 2
    one_error_line(capsys, "cannot write", "read-only file system")
    assert cli(["pool", "--source", "builtin", "--out", str(tmp_path / "pool.json")]) == 2
    one_error_line(capsys, "cannot write")


def test_pool_out_creates_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "pool.json"
    assert cli(["pool", "--source", "builtin", "--out", str(target), "--json"]) == 0
    assert json.loads(target.read_text())["name"] == "builtin"


def test_a_full_disk_while_saving_leaves_the_previous_output_intact(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_dir(out) as tmp:
        (tmp / "model.safetensors").write_text("round 1")
    with pytest.raises(OSError, match="No space"):
        with output_dir(out) as tmp:
            (tmp / "model.safetensors").write_text("half of round 2")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (out / "model.safetensors").read_text() == "round 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_check_output_dir_accepts_new_empty_and_own_folders(tmp_path: Path) -> None:
    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    with pytest.raises(ConfigError, match="is a file"):
        (tmp_path / "file").write_text("x")
        check_output_dir(tmp_path / "file")


def _listing(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder that ``train`` wrote."""
    model = tmp_path_factory.mktemp("trained") / "model"
    assert cli([*TRAIN, "--out", str(model)]) == 0
    return model


@pytest.mark.parametrize("command", ["evaluate", "score"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_equal_to_the_model_never_replaces_the_model(
    command: str, overwrite: list[str], trained: Path, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    """Data loss 1: ``evaluate --model runs/model --out runs/model`` deleted the trained model."""
    before = _listing(trained)
    argv = [command, "--source", "builtin", "--model", str(trained), "--no-chat", "--no-progress"]
    assert cli([*argv, "--out", str(trained), *overwrite]) == 2
    one_error_line(capsys, f"--out: '{trained}' is the --model folder", "choose another folder")
    assert cli([*argv, "--out", str(trained.parent), *overwrite]) == 2
    one_error_line(capsys, f"--out: '{trained.parent}' contains the --model folder")
    assert _listing(trained) == before


def test_out_holding_another_commands_output_is_refused(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    """A model ``train`` wrote is no place for ``evaluate``'s output, even with another --model."""
    before = _listing(trained)
    argv = ["evaluate", "--source", "builtin", "--model", "tiny-llama", "--no-chat", "--no-progress"]
    assert cli([*argv, "--out", str(trained)]) == 2
    one_error_line(capsys, f"--out: '{trained}' holds the output of 'train', not of 'evaluate'", "--overwrite")
    with pytest.raises(AssertionError, match="a model was loaded"):  # --overwrite: past the checks
        cli([*argv, "--out", str(trained), "--overwrite"])
    assert _listing(trained) == before


def test_a_file_the_user_added_to_an_output_folder_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Data loss 2: ``echo notes > runs/score/notes.txt`` was deleted by the next ``score --out runs/score``."""
    out = tmp_path / "score"
    assert cli([*SCORE, "--out", str(out)]) == 0
    assert cli([*SCORE, "--out", str(out)]) == 0  # its own files only: replaced
    capsys.readouterr()
    (out / "notes.txt").write_text("notes")
    assert cli([*SCORE, "--out", str(out)]) == 2
    one_error_line(capsys, f"--out: '{out}' holds files 'score' did not write (notes.txt)", "--overwrite")
    assert (out / "notes.txt").read_text() == "notes"
    (out / "notes.txt").unlink()
    (out / "task_map.png").unlink()  # fewer of its own files: still its own
    assert cli([*SCORE, "--out", str(out)]) == 0


def test_pool_out_never_replaces_an_existing_file_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Data loss 3: ``pool --out FILE`` silently replaced the user's file."""
    mine = tmp_path / "mine.json"
    mine.write_text("my notes")
    assert cli(["pool", "--source", "builtin", "--out", str(mine)]) == 2
    one_error_line(capsys, f"--out: '{mine}' already exists", "--overwrite")
    assert mine.read_text() == "my notes"
    assert cli(["pool", "--source", "builtin", "--out", str(mine), "--overwrite"]) == 0
    assert json.loads(mine.read_text())["name"] == "builtin"


def test_pool_out_never_replaces_the_pool_it_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "tasks.jsonl"
    source.write_text(json.dumps({"instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}]}) + "\n")
    before = source.read_text()
    assert cli(["pool", "--source", "self-instruct", "--path", str(source), "--out", str(source), "--overwrite"]) == 2
    one_error_line(capsys, f"--out: '{source}' is the pool --path")
    assert source.read_text() == before


@pytest.mark.parametrize("command", ["score", "evaluate", "train"])
def test_out_containing_the_pool_path_is_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    source = folder / "tasks.jsonl"
    source.write_text(json.dumps({"name": "numbers_add", "instruction": "Say hi.",
                                  "instances": [{"input": "", "output": "hi"}]}) + "\n")
    argv = {"score": SCORE, "train": TRAIN,
            "evaluate": ["evaluate", "--source", "builtin", "--model", "tiny-llama", "--no-progress"]}[command]
    argv = [a if a != "builtin" else "self-instruct" for a in argv]
    assert cli([*argv, "--path", str(source), "--out", str(folder), "--overwrite"]) == 2
    one_error_line(capsys, f"--out: '{folder}' contains the pool --path '{source}'")
    assert [p.name for p in folder.iterdir()] == ["tasks.jsonl"]


@pytest.mark.parametrize("command", ["score", "evaluate", "train"])
@pytest.mark.parametrize("out", ["", ".", ".."])
def test_out_that_is_empty_or_holds_the_current_folder_is_refused(
    command: str, out: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    no_compute: None,
) -> None:
    """Data loss 4: ``--out ""`` was taken as the current folder (and with --overwrite renamed)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    argv = {"score": SCORE, "train": TRAIN,
            "evaluate": ["evaluate", "--source", "builtin", "--model", "tiny-llama", "--no-progress"]}[command]
    assert cli([*argv, "--out", out, "--overwrite"]) == 2
    one_error_line(capsys, "--out", "the current folder", "give a folder of its own")
    assert [p.name for p in work.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("command", ["score", "evaluate", "train"])
@pytest.mark.parametrize("which", ["home", "home/.cache", "home/.config", "parent of home", "$HF_HOME", "top level"])
def test_out_is_never_the_home_folder_or_a_cache_even_with_overwrite(
    command: str, which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    no_compute: None,
) -> None:
    """Data loss (issue 35): ``score --out $HOME --overwrite`` replaced the whole home folder."""
    home = tmp_path / "users" / "me"
    for folder in (home / ".cache" / "huggingface", home / ".config" / "zenml", tmp_path / "hf"):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("mine")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.chdir(tmp_path)
    out = {"home": home, "home/.cache": home / ".cache", "home/.config": home / ".config",
           "parent of home": home.parent, "$HF_HOME": tmp_path / "hf", "top level": Path("/tmp")}[which]
    argv = {"score": SCORE, "train": TRAIN,
            "evaluate": ["evaluate", "--source", "builtin", "--model", "tiny-llama", "--no-progress"]}[command]
    assert cli([*argv, "--out", str(out), "--overwrite"]) == 2
    err = one_error_line(capsys, "--out", "give a folder of its own")
    assert ("never writes over it, even with --overwrite" in err) != (which == "top level")
    kept = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("keep.txt"))
    assert kept == ["hf/keep.txt", "users/me/.cache/huggingface/keep.txt", "users/me/.config/zenml/keep.txt"]


def test_out_inside_another_output_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    """``score --out <a trained model's folder>/sub`` wrote inside the model's folder silently."""
    model = tmp_path / "model"
    with output_dir(model, command="train") as tmp:
        (tmp / "model.safetensors").write_text("weights")
    monkeypatch.chdir(tmp_path)
    assert cli([*SCORE, "--out", str(model / "sub")]) == 2
    one_error_line(capsys, f"lies inside '{model}', the output of 'train'", "give a folder outside it")
    assert sorted(p.name for p in model.iterdir()) == [MARKER, "model.safetensors"]


def test_an_output_marker_records_the_command_and_its_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_dir(out, command="score") as tmp:
        (tmp / "scores.csv").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.json").write_text("{}")
    marker = json.loads((out / MARKER).read_text())
    assert marker["command"] == "score" and marker["files"] == ["scores.csv", "sub", "sub/x.json"]
    check_output_dir(out, command="score")
    with pytest.raises(ConfigError, match="holds the output of 'score', not of 'evaluate'"):
        check_output_dir(out, command="evaluate")
    check_output_dir(out, command="evaluate", overwrite=True)
    (out / MARKER).write_text("written by activeit; a new run may replace this folder\n")  # before 0.2
    with pytest.raises(ConfigError, match="does not record which files"):
        check_output_dir(out, command="score")


# ----------------------------------------------------------------------------- kills


def _kill_during(argv: list[str], marker: str, cwd: Path) -> None:
    """Start ``python -m activeit argv`` and SIGKILL it as soon as its progress bar shows ``marker``."""
    process = subprocess.Popen([sys.executable, "-m", "activeit", *argv], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = bytearray()

    def read() -> None:
        while chunk := process.stderr.read1(4096):  # type: ignore[union-attr]
            seen.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while marker.encode() not in seen and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    reader.join(timeout=5)
    assert running and marker.encode() in seen, f"not killed while running: {bytes(seen)[-500:]!r}"


LONG_TRAIN = ["train", "--source", "builtin", "--model", "tiny-llama", "--max-steps", "300", "--max-instances", "8",
              "--tasks", "numbers_add,word_lists_first_letter", "--no-chat", "--batch-size", "2", "--epochs", "200"]


def test_a_killed_training_leaves_nothing_and_a_rerun_gives_the_same_model(tmp_path: Path) -> None:
    out = tmp_path / "model"
    _kill_during([*LONG_TRAIN, "--out", str(out)], "step/s, epoch=", tmp_path)  # killed inside the training loop
    assert not out.exists()
    short = [*LONG_TRAIN[:6], "20", *LONG_TRAIN[7:], "--no-progress"]
    assert cli([*short, "--out", str(out)]) == 0
    assert cli([*short, "--out", str(tmp_path / "again")]) == 0
    first, second = (json.loads((d / "training_metrics.json").read_text()) for d in (out, tmp_path / "again"))
    assert first["loss_curve"] == second["loss_curve"] and first["steps"] == 20


def test_a_killed_scoring_leaves_no_output_and_a_rerun_scores_the_same(tmp_path: Path) -> None:
    out = tmp_path / "scores"
    argv = [a for a in SCORE if a != "--no-progress"] + ["--max-tasks", "6", "--out", str(out)]
    _kill_during(argv, "scoring", tmp_path)
    assert not out.exists()
    quiet = [*argv, "--no-progress"]
    assert cli(quiet) == 0
    first = (out / "scores.csv").read_text()
    assert cli([*quiet[:-2], str(tmp_path / "again"), "--no-progress"]) == 0
    assert (tmp_path / "again" / "scores.csv").read_text() == first


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_no_worker_outlives_a_killed_run(kill: signal.Signals, tmp_path: Path) -> None:
    """``run.py`` killed while 2 CPU processes score: 10 s later no process of that launch
    runs and its folder in the temporary folder is gone."""
    import yaml

    config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text(encoding="utf-8"))
    config["rounds"] = 1
    config["training"].update(max_steps=1, epochs=1)
    # scoring that lasts minutes (a worker that merely finished would not count), killed within seconds
    config["scoring"].update(num_processes=2, n=6, k=64, max_new_tokens=256)
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false",
           "TMPDIR": str(temporary), "CUDA_VISIBLE_DEVICES": ""}  # CPU processes, on any machine
    for name in ("ACTIVEIT_ZENML_ISOLATED", "MLFLOW_TRACKING_URI", "ZENML_ACTIVE_STACK_ID"):
        env.pop(name, None)
    run = subprocess.Popen([sys.executable, "run.py", "--config", str(tmp_path / "two.yaml")], cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = str(temporary / "activeit-launch-")
    try:
        deadline = time.monotonic() + 600
        while len(pids_holding(marker)) < 3 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # the launcher and its 2 workers
        assert len(pids_holding(marker)) >= 3, "the scoring step never started its 2 processes"
        time.sleep(2)  # the workers are scoring
        assert run.poll() is None
        run.send_signal(kill)
        time.sleep(10)
        assert pids_holding(marker) == []
        assert list(temporary.glob("activeit-launch-*")) == []
    finally:
        if run.poll() is None:
            run.kill()
        run.wait()
        for pid in pids_holding(marker):  # what a failed check left behind
            os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- inputs


def test_task_files_that_are_folders_are_format_errors(tmp_path: Path, write_niv2: Any, niv2_task: Any,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = write_niv2(tmp_path / "niv2", {"ok": niv2_task(), "ok_test": niv2_task()}, ["ok", "bad"], ["ok_test"])
    (root / "tasks" / "bad.json").mkdir()
    with pytest.raises(Exception, match="is not a file"):
        read_niv2_task(root / "tasks" / "bad.json")
    with pytest.warns(UserWarning, match="is not a file"):
        pool = load_pool("niv2", root, skip_invalid=True)
    assert [t.name for t in pool.train] == ["ok"]
    folder = tmp_path / "si"
    folder.mkdir()
    (folder / "x.jsonl").mkdir()
    (folder / "good.jsonl").write_text(json.dumps({"instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}]}))
    assert len(load_pool("self-instruct", folder).train) == 1


def test_an_empty_split_file_says_so(tmp_path: Path, write_niv2: Any, niv2_task: Any) -> None:
    root = write_niv2(tmp_path / "niv2", {"ok": niv2_task()}, [], ["ok"])
    with pytest.raises(PoolError, match="names no train task") as error:
        load_pool("niv2", root)
    assert "all-languages" not in str(error.value)


def test_models_are_checked_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_model(str(tmp_path / "missing"))
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    (config_only / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="no \\*.safetensors weights"):
        check_model(str(config_only))
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    for file in tiny_model_folder("tiny-llama").iterdir():
        data = file.read_bytes()
        (truncated / file.name).write_bytes(data[: len(data) // 2] if file.suffix == ".safetensors" else data)
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        check_model(str(truncated))
    with pytest.raises(ModelLoadError, match="no chat template"):
        check_model("tiny-gpt2", chat=True)
    check_model("tiny-llama", chat=True)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("rounds: 2\nrounds: 3\n", "duplicate key 'rounds'"),
        ("", "the config file is empty"),
        ("tracking:\n  experiment: ''\n", "must not be blank"),
    ],
)
def test_config_files_are_strict(text: str, fragment: str, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(path)


def test_a_config_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00r")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--experiment", ""], ("command line: --experiment", "must not be blank")),
        (["--rounds", "-1"], ("command line: --rounds",)),
        (["--schedule", "x y"], ("command line: --schedule", "not a cron expression")),
        (["--model", "/no/such/model"], ("model folder '/no/such/model' does not exist",)),
        (["--pool-path", ""], ("--pool-path is empty",)),
        (["--pool-source", "builtin"], ("configs/smoke.yaml: pool.test_tasks: 4 test tasks to hold out",
                                        "set pool.test_tasks to 0")),
        (["--schedule", "0 0 3 * * 1"], ("command line: --schedule", "it has 6 field(s)")),
        (["--metric", "bleu"], ("--metric", "unknown study.metric 'bleu'")),
    ],
)
def test_run_py_checks_everything_before_it_starts(
    argv: list[str], fragments: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    result = subprocess.run([sys.executable, "run.py", "--config", "configs/smoke.yaml", *argv], cwd=ROOT,
                            capture_output=True, text=True, env={**os.environ, "ZENML_CONFIG_PATH": "/nonexistent/zenml"},
                            timeout=300)
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ")
    for fragment in fragments:
        assert fragment in err
    assert not Path("/nonexistent/zenml").exists()  # nothing started: no ZenML store was made


def test_relative_pool_path_is_resolved_against_the_current_folder(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", str(ROOT / "configs/smoke.yaml"),
                             "--pool-source", "niv2", "--pool-path", "here"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and f"'{tmp_path / 'here'}' does not exist" in result.stderr


def test_two_first_runs_at_once_on_a_fresh_store_both_finish(tmp_path: Path) -> None:
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
    env.pop("ACTIVEIT_ZENML_ISOLATED", None)
    command = [sys.executable, "run.py", "--strategy", "random", "--config", "configs/smoke.yaml", "--rounds", "0"]
    runs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [o[-2000:] for o in outputs]
    assert all("Traceback" not in o for o in outputs)
    from mlflow import MlflowClient

    uri = next(line.split()[-1] for line in outputs[0].splitlines() if "--backend-store-uri" in line)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(load_config(ROOT / "configs/smoke.yaml").tracking.experiment)
    tracked = client.search_runs([experiment.experiment_id], "tags.complete = 'true'")
    assert len(tracked) == 2  # one MLflow run each, not mixed
    assert all([m.step for m in client.get_metric_history(r.info.run_id, "rougeL")] == [0] for r in tracked)


@pytest.mark.parametrize(("extra", "fragments"), [
    (["--strategy", "ifd"], ("--strategy ifd picks by IFD scores", "python run.py --strategy ifd")),
    (["--strategy", "diverse"], ("--strategy diverse picks by task embeddings", "python run.py --strategy diverse")),
    (["--adaptive", "--checkpoint", "{tmp}"], ("--checkpoint: '{tmp}' is a folder; give a file name",)),
    (["--adaptive", "--checkpoint", "{tmp}/missing/journal"], ("--checkpoint: the folder '{tmp}/missing' does not exist",)),
    (["--adaptive", "--budget", "0"], ("--budget must be at least 1",)),
])
def test_score_refuses_before_the_model_loads(
    extra: list[str], fragments: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], no_compute: None,
) -> None:
    """Issue 35: these were refused (or crashed) only after the model loaded and PU scoring ran."""
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    assert cli([*SCORE, "--out", str(tmp_path / "out"), *argv]) == 2
    one_error_line(capsys, *(f.replace("{tmp}", str(tmp_path)) for f in fragments))
    assert not (tmp_path / "out").exists()


def test_tasks_that_name_a_missing_file_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    """``--tasks ./nofile.txt`` said "no task named ./nofile.txt"."""
    monkeypatch.chdir(tmp_path)
    argv = [a if a != "numbers_add" else "./nofile.txt" for a in TRAIN]
    assert cli([*argv, "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, "--tasks: the file './nofile.txt' does not exist")
    (tmp_path / "names").mkdir()
    argv = [a if a != "numbers_add" else "names" for a in TRAIN]
    assert cli([*argv, "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, "--tasks: 'names' is a folder")


def test_a_save_to_disk_folder_with_broken_metadata_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An hf-disk folder whose dataset_info.json is broken raised a JSONDecodeError traceback."""
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"instruction": ["Say hi."] * 3, "output": ["hi"] * 3}).save_to_disk(str(folder))
    (folder / "dataset_info.json").write_text("{broken")
    capsys.readouterr()  # the save's progress bar
    assert cli(["pool", "--source", "hf-disk", "--path", str(folder)]) == 2
    one_error_line(capsys, f"'{folder / 'dataset_info.json'}' is not valid JSON", "save_to_disk")


def test_records_wrapped_in_an_object_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An Alpaca file {"data": [...]} was blamed on a missing column."""
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps({"data": [{"instruction": "Say hi.", "output": "hi"}] * 2}))
    assert cli(["pool", "--source", "alpaca", "--path", str(path)]) == 2
    one_error_line(capsys, "one JSON object holding its 2 records under 'data'", "give the list itself")


def test_a_demonstration_with_an_empty_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An instance with an empty output became a task's demonstration and reached the prompts."""
    path = tmp_path / "tasks.jsonl"
    rows = [{"name": "t1", "instruction": "Say hi.", "instances": [{"input": "a", "output": ""},
                                                                    {"input": "b", "output": "hi"}]},
            {"name": "t2", "instruction": "Say yo.", "instances": [{"input": "a", "output": "yo"},
                                                                    {"input": "b", "output": "yo"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert cli(["pool", "--source", "self-instruct", "--path", str(path)]) == 2
    one_error_line(capsys, "task 't1' demonstration 1 has an empty output", "--skip-invalid")
    with pytest.warns(SkippedTaskWarning, match="1 demonstration"):
        pool = load_pool("self-instruct", path, skip_invalid=True)
    assert all(e.output.strip() for t in pool.train for e in t.positive_examples)


def test_adaptive_without_a_budget_says_which_top_it_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--adaptive`` without ``--budget`` raced for the top 1 of a small pool silently."""
    monkeypatch.chdir(tmp_path)
    assert cli([*SCORE, "--adaptive", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "note: --adaptive settles the top 1 of the 2 tasks (no --budget given" in err


def test_evaluate_max_instances_zero_names_its_own_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_compute: None
) -> None:
    assert cli(["evaluate", "--source", "builtin", "--model", "tiny-llama", "--max-instances", "0",
                "--out", str(tmp_path / "out")]) == 2
    one_error_line(capsys, "--max-instances must be at least 1, got 0")


def test_a_bad_flag_value_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's refusals were a usage block and a 'prog: error:' line."""
    with pytest.raises(SystemExit) as stop:
        cli([*SCORE, "--max-new-tokens", "abc"])
    assert stop.value.code == 2
    one_error_line(capsys, "argument --max-new-tokens: invalid int value: 'abc'", "--help")

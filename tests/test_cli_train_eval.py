"""``python -m activeit train`` and ``evaluate`` on the offline builtin pool."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tiny_tasks import constant_task

from activeit.cli import main
from activeit.cli.common import read_task_names
from activeit.errors import PoolError
from activeit.models.checks import check_model
from activeit.models.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from activeit.models.tiny import tiny_model_folder

TASKS = "word_lists_first_letter,numbers_parity"


def test_task_names_from_a_list_or_a_file(tmp_path: Path) -> None:
    assert read_task_names(" a, b ,a,") == ["a", "b"]
    lines = tmp_path / "tasks.txt"
    lines.write_text("a\n\n# a comment\nb  # why b\n", encoding="utf-8")
    assert read_task_names(str(lines)) == ["a", "b"]
    listed = tmp_path / "tasks.json"
    listed.write_text('["a", "c"]', encoding="utf-8")
    assert read_task_names(str(listed)) == ["a", "c"]
    selection = tmp_path / "selection.json"
    selection.write_text(json.dumps({"strategy": "random", "round": 0, "tasks": ["c", "d"]}), encoding="utf-8")
    assert read_task_names(str(selection)) == ["c", "d"]
    selection.write_text('{"strategy": "random"}', encoding="utf-8")
    with pytest.raises(PoolError, match="'tasks' list"):
        read_task_names(str(selection))
    with pytest.raises(PoolError, match="no task names"):
        read_task_names(" , ")


def test_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model"
    code = main(["train", "--source", "builtin", "--tasks", TASKS, "--model", "tiny-llama",
                 "--out", str(model), "--max-instances", "4", "--epochs", "2", "--batch-size", "4",
                 "--lr", "1e-3", "--warmup-steps", "1", "--no-chat", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"saved {model}" in printed and "tasks 2, examples 8, steps 4" in printed
    metrics = json.loads((model / "training_metrics.json").read_text())
    assert metrics["config"]["max_instances_per_task"] == 4 and metrics["config"]["chat"] is False

    out = tmp_path / "eval"
    code = main(["evaluate", "--model", str(model), "--source", "builtin", "--split", "test",
                 "--max-instances", "2", "--max-new-tokens", "3", "--no-chat", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "split 'test': 10 tasks, 20 instances" in printed and "overall" in printed
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["overall"]["instances"] == 20 and len(saved["per_task"]) == 10
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 20

    code = main(["evaluate", "--model", str(model), "--tasks", TASKS, "--max-instances", "1",
                 "--max-new-tokens", "2", "--no-chat", "--out", str(out), "--no-progress"])
    assert code == 0
    assert set(json.loads((out / "metrics.json").read_text())["per_task"]) == set(TASKS.split(","))


def test_unknown_task_names_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--tasks", "word_list_count,nope", "--model", "tiny-llama",
                 "--out", str(tmp_path / "m")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "word_list_count (did you mean word_lists_count?), nope" in err
    assert not (tmp_path / "m").exists()


def _constant_task_file(path: Path, n: int) -> Path:
    """A Self-Instruct JSONL file holding one constant-answer task (``say_banana``)."""
    task = constant_task(n=n)
    record = {"name": task.name, "instruction": task.definition,
              "instances": [{"input": i.input, "output": i.outputs[0]} for i in task.instances]}
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    return path


def test_train_with_two_processes_learns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``train --num-processes 2``: two CPU processes under accelerate launch share the batches."""
    tasks = _constant_task_file(tmp_path / "tasks.jsonl", n=34)  # 2 demonstrations + 32 instances
    model = tmp_path / "model"
    code = main(["train", "--source", "self-instruct", "--path", str(tasks), "--tasks", "say_banana",
                 "--model", "tiny-llama", "--out", str(model), "--num-processes", "2", "--epochs", "4",
                 "--max-instances", "32",
                 "--batch-size", "4", "--lr", "1e-2", "--warmup-steps", "0", "--no-chat", "--no-progress"])
    assert code == 0
    assert "examples 32, steps 16, processes 2" in capsys.readouterr().out  # 8 batches per epoch, halved
    metrics = json.loads((model / "training_metrics.json").read_text())
    assert metrics["num_processes"] == 2 and metrics["final_loss"] < 1.0 < 5 < metrics["loss_curve"][0]
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--source", "self-instruct", "--path", str(tasks),
                 "--tasks", "say_banana", "--max-instances", "4", "--max-new-tokens", "3", "--no-chat",
                 "--out", str(out), "--no-progress"]) == 0
    predictions = [json.loads(line)["prediction"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and all(p.split() and set(p.split()) == {"banana"} for p in predictions)


def test_non_finite_loss_stops_training_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    code = main(["train", "--source", "builtin", "--tasks", "numbers_add", "--model", "tiny-llama", "--out", str(out),
                 "--max-instances", "8", "--batch-size", "8", "--epochs", "2", "--lr", "inf", "--warmup-steps", "0",
                 "--no-chat", "--no-progress"])
    assert code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: non-finite loss") and "at step 2 " in errors[0]
    assert list(tmp_path.iterdir()) == []  # no model written


# ----------------------------------------------------------------------------- refused before compute


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: the error must come before any compute."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model was loaded before the bad input was reported")

    for module in ("activeit.cli.evaluate", "activeit.training.finetune"):
        monkeypatch.setattr(f"{module}.load_model", refuse)


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err.strip()


def test_evaluate_on_an_empty_split_is_one_error_line(
    tmp_path: Path, write_niv2: Any, niv2_task: Any, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    """It exited 0 and wrote empty metrics."""
    root = write_niv2(tmp_path / "niv2", {"ok": niv2_task()}, ["ok"], [])
    out = tmp_path / "eval"
    assert main(["evaluate", "--source", "niv2", "--path", str(root), "--model", "tiny-llama", "--out", str(out),
                 "--no-progress"]) == 2
    assert _one_error_line(capsys) == (
        f"error: pool 'niv2:default' split 'test' has no tasks to evaluate; choose another --split (these have "
        "tasks: train) or name tasks with --tasks"
    )
    assert not out.exists()


@pytest.mark.parametrize("flags", [["--lora-rank", "4"], ["--lora-alpha", "8", "--lora-target-modules", "q_proj"]])
def test_lora_flags_without_method_lora_are_refused(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    """They were accepted and ignored: a full fine-tune ran."""
    out = tmp_path / "model"
    assert main(["train", "--source", "builtin", "--tasks", "numbers_add", "--model", "tiny-llama", *flags,
                 "--out", str(out), "--no-progress"]) == 2
    given = " ".join(f for f in flags if f.startswith("--"))
    verb = "applies" if len(flags) == 2 else "apply"
    assert _one_error_line(capsys) == (
        f"error: {given} only {verb} to LoRA, but the method is 'full'; add --method lora, or drop {given}"
    )
    assert not out.exists()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter of tiny-llama (attention and output layers)."""
    out = tmp_path_factory.mktemp("lora") / "adapter"
    assert main(["train", "--source", "builtin", "--tasks", "numbers_add", "--model", "tiny-llama", "--method", "lora",
                 "--lora-target-modules", "q_proj", "v_proj", "lm_head", "--max-steps", "1", "--max-instances", "2",
                 "--no-chat", "--no-progress", "--out", str(out)]) == 0
    return out


def _rebased(adapter: Path, folder: Path, base: str) -> Path:
    """A copy of ``adapter`` that records ``base`` as its base model."""
    folder.mkdir()
    (folder / ADAPTER_WEIGHTS).write_bytes((adapter / ADAPTER_WEIGHTS).read_bytes())
    config = json.loads((adapter / ADAPTER_CONFIG).read_text())
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config | {"base_model_name_or_path": base}))
    return folder


def test_an_adapter_on_a_base_it_does_not_fit_is_one_error_line(
    adapter: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], no_model: None
) -> None:
    """The recorded base exists but is another model: peft's NoMatchingPeftModuleError or
    dozens of "size mismatch" lines, after the base model had loaded."""
    narrow = tmp_path / "narrow-llama"  # the same family, other sizes
    narrow.mkdir()
    for file in tiny_model_folder("tiny-llama").iterdir():
        (narrow / file.name).write_bytes(file.read_bytes())
    config = json.loads((narrow / "config.json").read_text())
    (narrow / "config.json").write_text(json.dumps(config | {"hidden_size": 32, "head_dim": 8}))
    cases = {
        "tiny-gpt2": "it has no layer model.layers.0.self_attn.q_proj (and 4 more)",
        str(narrow): "layer lm_head maps 32 -> 49152 features, the adapter's 64 -> 49152 (and 4 more)",
    }
    for n, (base, problem) in enumerate(cases.items()):
        folder = _rebased(adapter, tmp_path / f"adapter-{n}", base)
        for command in (["evaluate"], ["score", "--max-tasks", "1"]):
            assert main([*command, "--source", "builtin", "--model", str(folder), "--out", str(tmp_path / "out"),
                         "--no-chat", "--no-progress"]) == 2
            assert _one_error_line(capsys) == (
                f"error: adapter '{folder}' does not fit its base model '{base}': {problem}; make "
                f"base_model_name_or_path in {ADAPTER_CONFIG} name the model the adapter was trained on"
            )
    check_model(str(adapter))  # its own base fits
    assert not (tmp_path / "out").exists()

"""LoRA fine-tuning: it learns, its artifact is small, it scores like its merged model,
it continues, and bad input is refused in one line."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from score_worker import WORKER_CONFIG, handmade_tasks
from tiny_tasks import constant_task

from activeit.errors import ConfigError, ModelLoadError
from activeit.evaluation import evaluate_model
from activeit.models.checks import check_lora
from activeit.models.loading import load_model
from activeit.models.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, LORA_TARGET_MODULES
from activeit.models.tiny import tiny_model_folder
from activeit.scoring.scorer import score_tasks
from activeit.config.settings import EvaluationSettings, TrainingSettings
from activeit.data.tasks import Task, TaskPool
from activeit.training.finetune import TrainingResult, finetune
from materializers import ModelFolder
from steps import accelerate_finetuner

ROOT = Path(__file__).resolve().parents[1]
#: The tiny random model's embeddings are too small for its hidden layers alone to move the
#: logits far; adapting the output layer too lets LoRA learn the task outright.
LORA = TrainingSettings(epochs=6, learning_rate=1e-2, warmup_steps=0, batch_size=4, max_instances_per_task=16,
                        chat=False, method="lora", lora_target_modules=("q_proj", "v_proj", "lm_head"))
EVAL = EvaluationSettings(max_new_tokens=4, chat=False)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def yes_task() -> Task:
    return constant_task("say_yes", "yes", n=16)


@pytest.fixture(scope="module")
def adapter(yes_task: Task, tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    return finetune("tiny-llama", [yes_task], tmp_path_factory.mktemp("lora") / "adapter", LORA, progress=False)


def test_lora_learns_the_constant_answer_task(yes_task: Task, adapter: TrainingResult) -> None:
    metrics = adapter.metrics
    assert metrics["method"] == "lora" and metrics["base_model"] == "tiny-llama"
    assert metrics["loss_curve"][0] > 5 and metrics["final_loss"] < 1.0
    before = evaluate_model(load_model("tiny-llama"), [yes_task], EVAL, progress=False)
    after = evaluate_model(load_model(str(adapter.model_dir)), [yes_task], EVAL, progress=False)
    assert before.overall["rougeL"] < 10 and after.overall["rougeL"] == 100.0


def test_the_adapter_artifact_is_small_and_names_its_base(adapter: TrainingResult) -> None:
    files = {p.name for p in adapter.model_dir.iterdir()}
    assert {ADAPTER_CONFIG, ADAPTER_WEIGHTS} <= files and "model.safetensors" not in files
    assert json.loads((adapter.model_dir / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "tiny-llama"
    full = (tiny_model_folder("tiny-llama") / "model.safetensors").stat().st_size
    size = sum(p.stat().st_size for p in adapter.model_dir.iterdir())
    assert size < full / 5  # an adapter of the output layer too; of the default targets: < 1 %
    assert adapter.metrics["trainable_parameters"] * 4 < full / 5


def test_scoring_with_the_adapter_equals_scoring_with_the_merged_model(
    adapter: TrainingResult, tmp_path: Path
) -> None:
    # default targets (no tied output layer): "merge" really merges
    result = finetune("tiny-llama", [constant_task(n=8)], tmp_path / "a",
                      LORA.replace(lora_target_modules=None, epochs=1), progress=False)
    for folder in (result.model_dir, adapter.model_dir):
        kept, merged = load_model(str(folder), adapter="keep"), load_model(str(folder))
        assert any("lora" in name for name, _ in kept.model.named_modules())
        assert (folder == adapter.model_dir) == any("lora" in name for name, _ in merged.model.named_modules())
        tasks = handmade_tasks(3)
        a = score_tasks(kept, tasks, WORKER_CONFIG, progress=False)
        b = score_tasks(merged, tasks, WORKER_CONFIG, progress=False)
        for x, y in zip(a.instances, b.instances):
            assert x.prediction == y.prediction
            assert abs(x.p0 - y.p0) < 1e-4 and all(abs(p - q) < 1e-4 for p, q in zip(x.p, y.p))
        assert all(abs(x.pu - y.pu) < 1e-4 for x, y in zip(a, b))


def test_continue_mode_trains_the_previous_rounds_adapter(yes_task: Task, adapter: TrainingResult) -> None:
    pool = TaskPool({"train": (yes_task,), "test": ()}, name="yes")
    training = LORA.replace(epochs=1, mode="continue")
    previous = ModelFolder(str(adapter.model_dir), base_model="tiny-llama", round=0)
    model, metrics = accelerate_finetuner.entrypoint(
        "tiny-llama", pool, ["say_yes"], _selection("say_yes"), training, 1, previous_model_folder=previous
    )
    assert metrics["loss_curve"][0] < 1.0  # it started from the trained adapter, not ~10.8
    assert metrics["model_name"] == previous.path and metrics["base_model"] == "tiny-llama"
    config = json.loads((Path(model.path) / ADAPTER_CONFIG).read_text())
    assert config["base_model_name_or_path"] == "tiny-llama" and model.round == 1


def _selection(*tasks: str):
    from activeit.selection.strategies import Selection

    return Selection(strategy="random", round=1, seed=0, tasks=tasks)


# ---- bad input -----------------------------------------------------------------------------


def test_lora_on_a_family_without_default_targets_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    check_lora("tiny-llama", "lora")
    check_lora("tiny-llama", "full")
    monkeypatch.delitem(LORA_TARGET_MODULES, "llama")
    with pytest.raises(ConfigError, match=r"training.lora_target_modules: no default for model family 'llama'"):
        check_lora("tiny-llama", "lora")
    check_lora("tiny-llama", "lora", ["q_proj"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "activeit", *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_lora_with_unknown_target_modules_is_one_error_line(tmp_path: Path) -> None:
    done = _cli("train", "--source", "builtin", "--tasks", "numbers_add", "--model", "tiny-llama",
                "--out", str(tmp_path / "m"), "--method", "lora", "--lora-target-modules", "no_such_layer",
                "--max-steps", "1", "--no-progress")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("error: training.lora_target_modules:")
    assert not (tmp_path / "m").exists() and list(tmp_path.iterdir()) == []


def test_an_adapter_whose_base_is_missing_is_one_error_line(adapter: TrainingResult, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / ADAPTER_WEIGHTS).write_bytes((adapter.model_dir / ADAPTER_WEIGHTS).read_bytes())
    config = json.loads((adapter.model_dir / ADAPTER_CONFIG).read_text())
    (broken / ADAPTER_CONFIG).write_text(json.dumps(config | {"base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(ModelLoadError, match=r"adapter .*broken': its base model .*gone' cannot be loaded"):
        load_model(str(broken))
    done = _cli("evaluate", "--source", "builtin", "--model", str(broken), "--out", str(tmp_path / "eval"),
                "--no-progress")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: adapter ") and "base_model_name_or_path" in last
    assert "Traceback" not in done.stderr and not (tmp_path / "eval").exists()


def test_run_py_refuses_lora_without_targets_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import run as run_py

    monkeypatch.delitem(LORA_TARGET_MODULES, "llama")
    config = tmp_path / "lora.yaml"
    config.write_text("model: tiny-llama\nrounds: 1\ninitial_tasks: 2\ntasks_per_round: 2\n"
                      "training:\n  method: lora\n")
    assert run_py.main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: training.lora_target_modules: no default for model family")
    assert list(tmp_path.iterdir()) == [config]

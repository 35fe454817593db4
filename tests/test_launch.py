"""Several processes from the pipeline's steps, the GPU-count check, the saved dtype, and
which rounds get a registered model."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from score_worker import handmade_tasks
from tiny_tasks import constant_task

from activeit.config import ExperimentConfig, TrackingSettings
from activeit.errors import ConfigError
from activeit.launch import check_processes, launch_finetune, score, train
from activeit.models import tiny_model_folder
from activeit.perturb import perturb_tasks
from activeit.settings import ScoringSettings, TrainingSettings
from activeit.tasks import TaskPool
from activeit.training import resolve_mixed_precision
from materializers import ModelFolder, PromptSet
from steps import uncertainty_scorer

SCORING = ScoringSettings(n=2, k=2, max_new_tokens=4, token_budget=700, tasks_per_chunk=2)


def test_the_scorer_step_with_two_processes_gathers_the_one_process_table() -> None:
    tasks = handmade_tasks(4)
    pool = TaskPool({"train": tuple(tasks), "test": ()}, name="hand")
    prompts = PromptSet(1, perturb_tasks(tasks, SCORING.perturbation, SCORING.k, SCORING.seed))
    model = ModelFolder(str(tiny_model_folder("tiny-llama")), base_model="tiny-llama", round=0)
    one, _ = uncertainty_scorer.entrypoint(model, pool, prompts, SCORING)
    two, _ = uncertainty_scorer.entrypoint(model, pool, prompts, SCORING.replace(num_processes=2))
    assert (one.meta["processes"], two.meta["processes"]) == (1, 2)
    assert one.tasks == two.tasks == tuple(t.name for t in tasks)
    for mine, theirs in zip(one, two):
        assert theirs.pu == pytest.approx(mine.pu, abs=1e-7)
        assert theirs.pp == pytest.approx(mine.pp, rel=1e-5)
        assert theirs.perplexity == pytest.approx(mine.perplexity, rel=1e-5)
    assert [s.prediction for s in one.instances] == [s.prediction for s in two.instances]


def test_more_gpu_processes_than_gpus_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_processes(2, "training.num_processes")
    check_processes(4, "training.num_processes", cpu=True)
    with pytest.raises(ConfigError, match=r"^scoring.num_processes is 3 but only 2 GPU\(s\) are visible"):
        score("tiny-llama", handmade_tasks(1), SCORING.replace(num_processes=3))
    with pytest.raises(ConfigError, match=r"^training.num_processes is 3 "):
        train("tiny-llama", [constant_task()], tmp_path / "m", TrainingSettings(num_processes=3))
    assert list(tmp_path.iterdir()) == []


def test_cpu_processes_never_resolve_auto_to_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert resolve_mixed_precision("auto") == "no"  # emulated bf16 (V100, T4) does not count
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert resolve_mixed_precision("auto") == "bf16"
    assert resolve_mixed_precision("auto", cpu=True) == "no"
    assert resolve_mixed_precision("fp16", cpu=True) == "fp16"


@pytest.mark.parametrize(("precision", "dtype"), [("no", "F32"), ("bf16", "BF16")])
def test_weights_are_saved_in_the_dtype_they_were_trained_in(tmp_path: Path, precision: str, dtype: str) -> None:
    config = TrainingSettings(epochs=1, max_steps=1, batch_size=2, max_instances_per_task=2, warmup_steps=0,
                              chat=False, mixed_precision=precision)
    # its own process: accelerate's mixed precision is fixed once per process
    result = launch_finetune("tiny-llama", [constant_task(n=2)], tmp_path / "m", config, cpu=True, progress=False)
    assert result.metrics["mixed_precision"] == precision
    assert sorted(p.suffix for p in result.model_dir.iterdir() if p.name.startswith("model")) == [".safetensors"]
    with safe_open(str(result.model_dir / "model.safetensors"), "pt") as weights:
        assert {weights.get_slice(k).get_dtype() for k in weights.keys()} == {dtype}


@pytest.mark.parametrize(("log_models", "registered"), [("all", [0, 1, 2]), ("last", [2]), ("none", [])])
def test_log_models_decides_which_rounds_are_registered(log_models: str, registered: list[int]) -> None:
    config = ExperimentConfig(rounds=2, initial_tasks=1, tasks_per_round=1,
                              tracking=TrackingSettings(log_models=log_models))
    assert [r for r in range(3) if config.registers_model(r)] == registered


def test_step_settings_name_a_model_step() -> None:
    config = ExperimentConfig(zenml={"step_settings": {"accelerate_finetuner": {"resources": {"gpu_count": 2}}}})
    assert config.zenml.step_settings["accelerate_finetuner"]["resources"]["gpu_count"] == 2
    with pytest.raises(ConfigError, match="unknown step 'trainer'"):
        ExperimentConfig(zenml={"step_settings": {"trainer": {}}})

"""Several processes from the pipeline's steps, the GPU-count check, the saved dtype, and
which rounds get a registered model."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file
from score_worker import handmade_tasks
from tiny_tasks import constant_task

from activeit.experiment import CONFIG_DIR, ExperimentConfig, TrackingSettings
from activeit.errors import ConfigError
from activeit.models.processes import check_processes, free_port
from activeit.scoring.launch import score
from activeit.training.launch import launch_finetune, train
from activeit.models.tiny import tiny_model_folder
from activeit.data.perturbations import perturb_tasks
from activeit.config.settings import ScoringSettings, TrainingSettings
from activeit.data.tasks import TaskPool
from activeit.models.devices import resolve_mixed_precision
from materializers import ModelFolder, PromptSet
from pipelines.active_tuning import check_step_settings
from steps import uncertainty_scorer
from tracking.policy import registers_model

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


def test_an_accelerate_config_file_lays_out_the_processes(tmp_path: Path) -> None:
    """The file, not ``num_processes``, decides how many processes score (here 2 CPU
    workers, the way a multi-GPU file would lay them out); the table is the one-process one."""
    port = free_port()
    layout = tmp_path / "two_workers.yaml"
    layout.write_text(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_machines: 1\nmachine_rank: 0\n"
        f"num_processes: 2\nmain_process_ip: 127.0.0.1\nmain_process_port: {port}\nmixed_precision: 'no'\n",
        encoding="utf-8",
    )
    tasks = handmade_tasks(3)
    one = score("tiny-llama", tasks, SCORING, progress=False)
    launched = score("tiny-llama", tasks, SCORING.replace(accelerate_config=str(layout)), progress=False)
    assert (one.meta["processes"], launched.meta["processes"]) == (1, 2)
    assert [s.pu for s in launched] == pytest.approx([s.pu for s in one], abs=1e-7)
    assert [s.prediction for s in launched.instances] == [s.prediction for s in one.instances]


def test_fsdp_from_the_example_file_saves_the_whole_model(tmp_path: Path) -> None:
    """``configs/accelerate/fsdp_4gpu.yaml`` made to fit this machine (2 CPU processes, the
    tiny model's block class): the weights are sharded while training and gathered whole
    into the saved model, which matches one process at the same effective batch."""
    example = yaml.safe_load((CONFIG_DIR / "accelerate" / "fsdp_4gpu.yaml").read_text(encoding="utf-8"))
    example.update(num_processes=2, mixed_precision="no", main_process_port=free_port())
    example["fsdp_config"].update(fsdp_transformer_layer_cls_to_wrap="LlamaDecoderLayer")
    layout = tmp_path / "fsdp.yaml"
    layout.write_text(yaml.safe_dump(example), encoding="utf-8")
    config = TrainingSettings(epochs=2, batch_size=2, max_instances_per_task=4, warmup_steps=0, chat=False,
                              mixed_precision="no", learning_rate=1e-3)
    alone = train("tiny-llama", [constant_task(n=4)], tmp_path / "one", config.replace(batch_size=4), progress=False)
    sharded = train("tiny-llama", [constant_task(n=4)], tmp_path / "fsdp",
                    config.replace(accelerate_config=str(layout)), progress=False)
    assert sharded.metrics["num_processes"] == 2
    assert sharded.metrics["loss_curve"] == pytest.approx(alone.metrics["loss_curve"], abs=1e-4)
    whole, gathered = (load_file(str(r.model_dir / "model.safetensors")) for r in (alone, sharded))
    assert {k: v.shape for k, v in gathered.items()} == {k: v.shape for k, v in whole.items()}
    assert max(float((gathered[k] - whole[k]).abs().max()) for k in whole) < 1e-4


def test_a_missing_accelerate_config_file_is_one_line_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"accelerate config file 'no/such.yaml' does not exist \(relative paths "
                       r"start at .*\); give the path of an existing file"):
        TrainingSettings(accelerate_config="no/such.yaml")
    # on the command line a relative path starts at the current folder
    (tmp_path / "fsdp.yaml").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "activeit", "train", "--source", "builtin", "--model", "tiny-llama", "--tasks",
         "x", "--accelerate-config", "fsdp.yaml", "--out", "model"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: command line: --accelerate-config: accelerate config file '{tmp_path / 'fsdp.yaml'}' is a "
        "folder; give the path of an existing file"
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["fsdp.yaml"]


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
        # tiny-llama ties its output layer to the embeddings: one tensor in the file, in either dtype
        assert "lm_head.weight" not in weights.keys() and "model.embed_tokens.weight" in weights.keys()


@pytest.mark.parametrize(("log_models", "registered"), [("all", [0, 1, 2]), ("last", [2]), ("none", [])])
def test_log_models_decides_which_rounds_are_registered(log_models: str, registered: list[int]) -> None:
    config = ExperimentConfig(rounds=2, initial_tasks=1, tasks_per_round=1,
                              tracking=TrackingSettings(log_models=log_models))
    assert [r for r in range(3) if registers_model(config, r)] == registered


def test_step_settings_name_a_model_step() -> None:
    config = ExperimentConfig(zenml={"step_settings": {"accelerate_finetuner": {"resources": {"gpu_count": 2}}}})
    assert config.zenml.step_settings["accelerate_finetuner"]["resources"]["gpu_count"] == 2
    check_step_settings(config, "c.yaml")
    with pytest.raises(ConfigError, match="^c.yaml: key 'zenml.step_settings': unknown step 'trainer'"):
        check_step_settings(ExperimentConfig(zenml={"step_settings": {"trainer": {}}}), "c.yaml")

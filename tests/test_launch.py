"""Several processes from the pipeline's steps, the GPU-count check, the saved dtype, and
which rounds get a registered model."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from pydantic import ValidationError
from safetensors import safe_open
from safetensors.torch import load_file
from launched import pids_holding
from score_worker import handmade_tasks
from tiny_tasks import constant_task

from activeit.errors import ConfigError
from activeit.cli import main as cli
from activeit.models.lifeline import alive
from activeit.models.processes import check_processes, cpu_cores, free_port
from activeit.scoring.launch import score
from activeit.training.launch import launch_finetune, train
from activeit.models.tiny import tiny_model_folder
from activeit.data.perturbations import perturb_tasks
from activeit.config.settings import ScoringSettings, TrainingSettings
from activeit.data.tasks import TaskPool
from activeit.models.devices import resolve_mixed_precision
from experiment.config import CONFIG_DIR, ExperimentConfig, TrackingSettings
from materializers import ModelFolder, PromptSet
from pipelines.active_tuning import check_step_settings
from steps import uncertainty_scorer
from tracking.policy import registers_model

ROOT = Path(__file__).resolve().parents[1]
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
    monkeypatch.setattr("activeit.models.processes.cpu_cores", lambda: 8)
    check_processes(2, "training.num_processes")
    check_processes(4, "training.num_processes", cpu=True)  # CPU processes: the cores count
    with pytest.raises(ConfigError, match=r"^scoring.num_processes is 3 but only 2 GPU\(s\) are visible"):
        score("tiny-llama", handmade_tasks(1), SCORING.replace(num_processes=3))
    with pytest.raises(ConfigError, match=r"^training.num_processes is 3 "):
        train("tiny-llama", [constant_task()], tmp_path / "m", TrainingSettings(num_processes=3))
    assert list(tmp_path.iterdir()) == []


def test_more_cpu_processes_than_cores_are_refused_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """64 CPU processes on a 2-core machine started 64 workers, and the OOM killer fired."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("activeit.models.processes.cpu_cores", lambda: 2)
    check_processes(2, "scoring.num_processes")
    message = r"^scoring.num_processes is 3 but this machine has only 2 CPU core\(s\) for CPU processes; set it to at most 2$"
    with pytest.raises(ConfigError, match=message):
        check_processes(3, "scoring.num_processes")
    with pytest.raises(ConfigError, match=message):
        score("tiny-llama", handmade_tasks(1), SCORING.replace(num_processes=3))
    with pytest.raises(ConfigError, match=r"^training.num_processes is 64 but this machine has only 2 CPU core"):
        train("tiny-llama", [constant_task()], tmp_path / "m", TrainingSettings(num_processes=64))

    def no_pool(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the pool was loaded before the process count was checked")

    for command in ("score", "train"):
        monkeypatch.setattr(f"activeit.cli.{command}.pool_from_args", no_pool)
    assert cli(["score", "--model", "tiny-llama", "--num-processes", "64", "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err == ("error: --num-processes is 64 but this machine has only 2 CPU core(s) for "
                                       "CPU processes; set it to at most 2\n")
    assert cli(["train", "--model", "tiny-llama", "--tasks", "x", "--num-processes", "3", "--cpu",
                "--out", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err.startswith("error: --num-processes is 3 but this machine has only 2 CPU core(s)")
    assert list(tmp_path.iterdir()) == []


def test_run_py_refuses_more_processes_than_cores_before_any_step(tmp_path: Path) -> None:
    config = tmp_path / "many.yaml"
    config.write_text((CONFIG_DIR / "smoke.yaml").read_text(encoding="utf-8").replace(
        "scoring:\n", f"scoring:\n  num_processes: {cpu_cores() + 1}\n"), encoding="utf-8")
    done = subprocess.run([sys.executable, "run.py", "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "CUDA_VISIBLE_DEVICES": ""},
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: scoring.num_processes is {cpu_cores() + 1} but this machine has only {cpu_cores()} CPU core(s) for "
        f"CPU processes; set it to at most {cpu_cores()}"
    ]
    assert not (tmp_path / "zenml").exists()  # nothing started


def _spawn(code: str, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True, **kwargs)


def _gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


WATCHED = ("import time; from activeit.models.lifeline import {call}; {setup}print('ready', flush=True); "
           "time.sleep(120)")


@pytest.mark.parametrize("how", ["watchdog", "parent-death signal"])
def test_a_launched_process_ends_when_its_parent_dies(how: str) -> None:
    """A worker (in a session of its own, as torch's agent starts it) watches its parent;
    the launcher asks the kernel for SIGTERM when its parent dies."""
    if how == "watchdog":
        child = WATCHED.format(call="exit_now, watch_parent", setup="watch_parent(exit_now('gone')); ")
    else:
        child = WATCHED.format(call="die_with_parent", setup="import os; die_with_parent(os.getppid()); ")
    middle = _spawn("import subprocess, sys, time\n"
                    f"child = subprocess.Popen([sys.executable, '-c', {child!r}], start_new_session=True, "
                    "stdout=subprocess.PIPE, text=True)\n"
                    "assert child.stdout.readline() == 'ready\\n'\n"
                    "print(child.pid, flush=True)\ntime.sleep(120)")
    try:
        pid = int(middle.stdout.readline())  # type: ignore[union-attr]
        assert alive(pid)
        middle.kill()
        middle.wait()
        assert _gone_within(pid, 5)
    finally:
        middle.kill()
        middle.wait()


def test_a_launched_process_whose_caller_died_before_it_started_ends_at_once() -> None:
    code = WATCHED.format(call="die_with_parent", setup="die_with_parent(1); ")  # "the caller" is not its parent
    child = _spawn(code)
    assert child.wait(timeout=30) == -signal.SIGTERM


def test_interrupting_the_caller_ends_the_launch_and_removes_its_folder(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) to the process that called launch(): the launcher's group is ended,
    the workers stop and the work folder is gone."""
    (tmp_path / "sleeper.py").write_text("import time\n\ndef run(spec):\n    time.sleep(300)\n", encoding="utf-8")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    caller = _spawn("from activeit.models.processes import launch, work_folder\n"
                    "with work_folder() as work:\n"
                    "    print(work, flush=True)\n"
                    "    launch('sleeper:run', {}, 2, 'no', True, work)\n",
                    env={**os.environ, "PYTHONPATH": str(tmp_path), "TMPDIR": str(temporary)})
    try:
        work = caller.stdout.readline().strip()  # type: ignore[union-attr]
        deadline = time.monotonic() + 300
        while len(pids_holding(work)) < 3 and time.monotonic() < deadline:  # the launcher and 2 workers
            time.sleep(0.2)
        launched = pids_holding(work)
        assert len(launched) == 3, launched
        time.sleep(2)  # the workers are running
        caller.send_signal(signal.SIGINT)
        assert caller.wait(timeout=30) != 0
        assert all(_gone_within(pid, 10) for pid in launched)
        assert list(temporary.iterdir()) == []
    finally:
        caller.kill()
        caller.wait()


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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_stopped_caller_leaves_no_traceback_from_the_launch(sig: signal.Signals, tmp_path: Path) -> None:
    """Issue 35: a SIGTERM or SIGKILL to the caller of a 2-process launch made the dying
    launcher print torch-elastic SignalException tracebacks (after the prompt came back)."""
    (tmp_path / "sleeper.py").write_text("import time\n\ndef run(spec):\n    time.sleep(300)\n", encoding="utf-8")
    caller = subprocess.Popen(
        [sys.executable, "-c", "from activeit.models.processes import launch, work_folder\n"
         "with work_folder() as work:\n    print(work, flush=True)\n    launch('sleeper:run', {}, 2, 'no', True, work)\n"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        work = caller.stdout.readline().strip()  # type: ignore[union-attr]
        deadline = time.monotonic() + 300
        while len(pids_holding(work)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        launched = pids_holding(work)
        assert len(launched) == 3, launched
        time.sleep(2)
        caller.send_signal(sig)
        caller.wait(timeout=30)
        assert all(_gone_within(pid, 15) for pid in launched)
        err = caller.stderr.read()  # type: ignore[union-attr]  (every holder of the pipe is gone)
        assert "Traceback" not in err and "SignalException" not in err, err
    finally:
        caller.kill()
        caller.wait()


def test_sigterm_to_a_cli_command_is_one_line() -> None:
    code = ("import time, activeit.cli as cli, activeit.cli.pool as pool\n"
            "pool.run = lambda args: (print('ready', flush=True), time.sleep(60))  # a command that takes long\n"
            "raise SystemExit(cli.main(['pool']))\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline() == "ready\n"  # type: ignore[union-attr]
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 143
        err = child.stderr.read().strip()  # type: ignore[union-attr]
        assert err.startswith("terminated (SIGTERM): stopped before the end") and "\n" not in err, err
    finally:
        child.kill()
        child.wait()


def test_a_process_ended_without_teardown_keeps_its_output_and_exit_code() -> None:
    """exit_without_teardown skips interpreter finalization (gloo's group is never destroyed)
    but what the process printed, buffered or logged still comes out, with its code."""
    script = (
        "import logging, sys\n"
        "from activeit.models.processes import distributed_initialized, exit_without_teardown\n"
        "logging.basicConfig(stream=sys.stderr, format='%(message)s')\n"
        "print('written to stdout', end='')\n"
        "sys.stderr.write('written to stderr ')\n"
        "logging.getLogger('x').warning('logged')\n"
        "assert not distributed_initialized()\n"
        "exit_without_teardown(3)\n"
        "print('never')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env=os.environ | {"PYTHONUNBUFFERED": ""})
    assert done.returncode == 3, done.stderr
    assert done.stdout == "written to stdout"
    assert done.stderr.startswith("written to stderr ") and "logged" in done.stderr

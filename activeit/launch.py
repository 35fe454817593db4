"""Where fine-tuning and scoring run: in this process, or in several started by ``accelerate launch``.

:func:`train` and :func:`score` are the one dispatch used by the pipeline steps and the
command line. Under ``accelerate launch`` the tasks and settings travel as a JSON file,
every process runs :func:`~activeit.training.finetune.finetune` (or
:func:`~activeit.scoring.scorer.score_tasks` on its share of the pool) with them, and the result
is read back: the model from the output folder, the gathered score table from a JSON file
the main process writes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from activeit.errors import ActiveITError, ConfigError, TrainingError
from activeit.outputs import check_output_dir
from activeit.data.perturbations import PerturbedPrompts
from activeit.scoring.scores import ScoreTable
from activeit.config.settings import ScoringSettings, TrainingSettings, repo_path
from activeit.data.tasks import Task
from activeit.models.devices import resolve_mixed_precision
from activeit.training.finetune import TrainingResult, finetune
from activeit.training.saving import METRICS_FILE


def check_processes(num_processes: int, field: str, cpu: bool = False) -> None:
    """Refuse more GPU processes than visible GPUs (each process takes one GPU of its own)."""
    if cpu or not torch.cuda.is_available():
        return
    visible = torch.cuda.device_count()
    if num_processes > visible:
        raise ConfigError(
            f"{field} is {num_processes} but only {visible} GPU(s) are visible; set it to at most {visible} "
            "(or make more GPUs visible with CUDA_VISIBLE_DEVICES)"
        )


def train(
    model_name: str,
    tasks: Sequence[Task],
    out_dir: str | Path,
    config: TrainingSettings,
    *,
    cpu: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainingResult:
    """Fine-tune here, or under ``accelerate launch`` when ``config.num_processes > 1``, when
    ``config.accelerate_config`` names a launch config, or when ``cpu`` asks for CPU
    processes on a machine that has a GPU."""
    check_processes(config.num_processes, "training.num_processes", cpu)
    if _needs_launch(config, cpu):
        return launch_finetune(model_name, tasks, out_dir, config, cpu=cpu, progress=progress, overwrite=overwrite)
    return finetune(model_name, tasks, out_dir, config, progress=progress, overwrite=overwrite)


def score(
    model_name: str,
    tasks: Sequence[Task],
    config: ScoringSettings,
    prompts: Mapping[str, PerturbedPrompts] | None = None,
    *,
    cpu: bool = False,
    progress: bool = True,
) -> ScoreTable:
    """Score ``tasks`` with ``model_name`` here (placed on this process's device), or under
    ``accelerate launch`` in ``config.num_processes`` processes (the main one writes the
    gathered table, read back here): the same table as one process gives."""
    from activeit.models.devices import place_model
    from activeit.models.loading import load_model
    from activeit.scoring.scorer import score_tasks

    check_processes(config.num_processes, "scoring.num_processes", cpu)
    if not _needs_launch(config, cpu):
        return score_tasks(place_model(load_model(model_name)), tasks, config, prompts, progress=progress)
    with tempfile.TemporaryDirectory(prefix="activeit-launch-") as work:
        table_file = Path(work) / "table.json"
        error = _launch({
            "kind": "score",
            "model_name": model_name,
            "tasks": [t.to_dict() for t in tasks],
            "prompts": {name: p.to_dict() for name, p in prompts.items()} if prompts is not None else None,
            "config": config.model_dump(),
            "progress": progress,
            "out_file": str(table_file),
        }, config.num_processes, "no", cpu, Path(work), config.accelerate_config)
        if error:
            raise ActiveITError(f"scoring under accelerate launch failed: {error}")
        if not table_file.exists():
            raise ActiveITError("the launched scoring finished but wrote no score table")
        return ScoreTable.from_dict(json.loads(table_file.read_text(encoding="utf-8")))


def _needs_launch(config: ScoringSettings | TrainingSettings, cpu: bool) -> bool:
    """Whether the work needs a new ``accelerate launch`` rather than running in this process.
    A process that ``accelerate launch`` already started (``WORLD_SIZE`` > 1) does its own
    share here: the command line run as ``accelerate launch -m activeit ...``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return False
    return config.num_processes > 1 or config.accelerate_config is not None or (cpu and torch.cuda.is_available())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(
    spec: dict[str, Any], num_processes: int, mixed_precision: str, cpu: bool, work: Path,
    accelerate_config: str | None = None,
) -> str:
    """Run ``python -m activeit.launch SPEC`` under ``accelerate launch``; returns the
    error the main process reported ("" when it succeeded).

    With ``accelerate_config`` the file lays out the processes (distributed type, FSDP or
    DeepSpeed, machines, port) and ``num_processes`` overrides its count only when above 1;
    without it, ``num_processes`` local processes (one per GPU, or CPU processes over gloo).
    The mixed precision is always the caller's (the trained weights' dtype follows it).
    """
    cpu = cpu or not torch.cuda.is_available()
    spec_path, error_file = work / "spec.json", work / "error.txt"
    spec_path.write_text(json.dumps(spec | {"error_file": str(error_file)}), encoding="utf-8")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--mixed_precision", mixed_precision]
    if accelerate_config is not None:
        command += ["--config_file", str(repo_path(accelerate_config))]
        if num_processes > 1:
            command += ["--num_processes", str(num_processes)]
    else:
        command += [
            "--num_processes", str(num_processes), "--num_machines", "1",
            "--main_process_port", str(free_port()), "--dynamo_backend", "no",
        ]
        if num_processes > 1:  # torchrun-style workers; on CPU they talk over gloo
            command.append("--multi_gpu")
    env = dict(os.environ)
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
        if num_processes == 1 and accelerate_config is None:
            command.append("--cpu")
    command += ["-m", "activeit.launch", str(spec_path)]
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode == 0:
        return ""
    detail = error_file.read_text(encoding="utf-8").strip() if error_file.exists() else ""
    return detail or f"accelerate launch exited with code {completed.returncode} (see the output above)"


def launch_finetune(
    model_name: str,
    tasks: Sequence[Task],
    out_dir: str | Path,
    config: TrainingSettings = TrainingSettings(),
    cpu: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainingResult:
    """Run :func:`~activeit.training.finetune.finetune` in ``config.num_processes`` processes with ``accelerate launch``.

    The tasks and the config travel as a JSON file; the result (model and metrics) is
    read back from ``out_dir``. ``cpu=True`` (implied without CUDA) runs CPU processes
    that talk over gloo; otherwise one process per GPU. Raises :class:`TrainingError`
    when the launched run fails.
    """
    out_dir = check_output_dir(out_dir, "output folder", overwrite)
    cpu = cpu or not torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="activeit-launch-") as work:
        error = _launch({
            "kind": "train",
            "model_name": model_name,
            "tasks": [t.to_dict() for t in tasks],
            "out_dir": str(out_dir.resolve()),
            "config": config.model_dump(),
            "progress": progress,
            "overwrite": overwrite,
        }, config.num_processes, resolve_mixed_precision(config.mixed_precision, cpu), cpu, Path(work),
            config.accelerate_config)
    if error:
        raise TrainingError(error)
    metrics_path = out_dir / METRICS_FILE
    if not metrics_path.exists():
        raise TrainingError(f"the launched run finished but wrote no {metrics_path}")
    return TrainingResult(out_dir, json.loads(metrics_path.read_text(encoding="utf-8")))


def _run_spec(spec: dict[str, Any]) -> None:
    """What one launched process does with a spec written by :func:`launch_finetune` or :func:`score`."""
    tasks = [Task.from_dict(t) for t in spec["tasks"]]
    if spec["kind"] == "train":
        finetune(spec["model_name"], tasks, spec["out_dir"], TrainingSettings.model_validate(spec["config"]),
                 progress=spec["progress"], overwrite=spec["overwrite"])
        return
    from activeit.models.devices import place_model, process_state
    from activeit.models.loading import load_model
    from activeit.scoring.scorer import score_tasks

    prompts = spec["prompts"] and {name: PerturbedPrompts.from_dict(p) for name, p in spec["prompts"].items()}
    state = process_state()
    table = score_tasks(place_model(load_model(spec["model_name"])), tasks,
                        ScoringSettings.model_validate(spec["config"]), prompts or None, progress=spec["progress"])
    if state.is_main_process:
        Path(spec["out_file"]).write_text(json.dumps(table.to_dict()), encoding="utf-8")
    state.wait_for_everyone()


def _launched_main(spec_path: str) -> int:
    """Entry of each process started by :func:`_launch`."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        _run_spec(spec)
    except ActiveITError as exc:
        if os.environ.get("RANK", "0") == "0":
            Path(spec["error_file"]).write_text(str(exc), encoding="utf-8")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_launched_main(sys.argv[1]))

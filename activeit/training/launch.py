"""Where fine-tuning runs: in this process, or in several started by ``accelerate launch``.

:func:`train` is the one dispatch the pipeline step and the command line use. Under
``accelerate launch`` the tasks and settings travel as a JSON file, every process runs
:func:`~activeit.training.finetune.finetune` with them (:func:`run_launched`), and the
model and its metrics are read back from the output folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from activeit.config.settings import TrainingSettings
from activeit.data.tasks import Task
from activeit.errors import TrainingError
from activeit.models.devices import resolve_mixed_precision
from activeit.models.processes import check_processes, launch, needs_launch, work_folder
from activeit.outputs import check_output_dir
from activeit.training.finetune import TrainingResult, finetune
from activeit.training.saving import METRICS_FILE


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
    if needs_launch(config.num_processes, config.accelerate_config, cpu):
        return launch_finetune(model_name, tasks, out_dir, config, cpu=cpu, progress=progress, overwrite=overwrite)
    return finetune(model_name, tasks, out_dir, config, progress=progress, overwrite=overwrite)


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

    ``cpu=True`` (implied without CUDA) runs CPU processes that talk over gloo; otherwise
    one process per GPU. Raises :class:`TrainingError` when the launched run fails.
    """
    out_dir = check_output_dir(out_dir, "output folder", overwrite)
    cpu = cpu or not torch.cuda.is_available()
    with work_folder() as work:
        error = launch("activeit.training.launch:run_launched", {
            "model_name": model_name,
            "tasks": [t.to_dict() for t in tasks],
            "out_dir": str(out_dir.resolve()),
            "config": config.model_dump(),
            "progress": progress,
            "overwrite": overwrite,
        }, config.num_processes, resolve_mixed_precision(config.mixed_precision, cpu), cpu, work,
            config.accelerate_config)
    if error:
        raise TrainingError(error)
    metrics_path = out_dir / METRICS_FILE
    if not metrics_path.exists():
        raise TrainingError(f"the launched run finished but wrote no {metrics_path}")
    return TrainingResult(out_dir, json.loads(metrics_path.read_text(encoding="utf-8")))


def run_launched(spec: dict[str, Any]) -> None:
    """What one launched process does with the spec :func:`launch_finetune` wrote."""
    finetune(spec["model_name"], [Task.from_dict(t) for t in spec["tasks"]], spec["out_dir"],
             TrainingSettings.model_validate(spec["config"]), progress=spec["progress"], overwrite=spec["overwrite"])

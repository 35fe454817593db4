"""Where fine-tuning runs: in this process, or in several started by ``accelerate launch``.

:func:`train` is the one dispatch used by the pipeline step and the command line. Under
``accelerate launch`` the tasks and settings travel as a JSON file, every process runs
:func:`~activeit.training.finetune` with them, and the result is read back from the
output folder.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from activeit.errors import ActiveITError, TrainingError
from activeit.outputs import check_output_dir
from activeit.settings import TrainingSettings
from activeit.tasks import Task
from activeit.training import METRICS_FILE, TrainingResult, finetune, resolve_mixed_precision


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
    """Fine-tune here, or under ``accelerate launch`` when ``config.num_processes > 1`` or
    when ``cpu`` asks for CPU processes on a machine that has a GPU."""
    if config.num_processes > 1 or (cpu and torch.cuda.is_available()):
        return launch_finetune(model_name, tasks, out_dir, config, cpu=cpu, progress=progress, overwrite=overwrite)
    return finetune(model_name, tasks, out_dir, config, progress=progress, overwrite=overwrite)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_finetune(
    model_name: str,
    tasks: Sequence[Task],
    out_dir: str | Path,
    config: TrainingSettings = TrainingSettings(),
    cpu: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainingResult:
    """Run :func:`~activeit.training.finetune` in ``config.num_processes`` processes with ``accelerate launch``.

    The tasks and the config travel as a JSON file; the result (model and metrics) is
    read back from ``out_dir``. ``cpu=True`` (implied without CUDA) runs CPU processes
    that talk over gloo; otherwise one process per GPU. Raises :class:`TrainingError`
    when the launched run fails.
    """
    out_dir = check_output_dir(out_dir, "output folder", overwrite)
    num_processes = config.num_processes
    cpu = cpu or not torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="activeit-launch-") as work:
        spec = Path(work) / "spec.json"
        error_file = Path(work) / "error.txt"
        spec.write_text(json.dumps({
            "model_name": model_name,
            "tasks": [t.to_dict() for t in tasks],
            "out_dir": str(out_dir.resolve()),
            "config": config.model_dump(),
            "progress": progress,
            "overwrite": overwrite,
            "error_file": str(error_file),
        }), encoding="utf-8")
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--num_processes", str(num_processes), "--num_machines", "1",
            "--main_process_port", str(_free_port()),
            "--mixed_precision", resolve_mixed_precision(config.mixed_precision),
            "--dynamo_backend", "no",
        ]
        env = dict(os.environ)
        if num_processes > 1:  # torchrun-style workers; on CPU they talk over gloo
            command.append("--multi_gpu")
        if cpu:
            env["ACCELERATE_USE_CPU"] = "true"
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
            if num_processes == 1:
                command.append("--cpu")
        command += ["-m", "activeit.launch", str(spec)]
        completed = subprocess.run(command, env=env, check=False)
        if completed.returncode != 0:
            detail = error_file.read_text(encoding="utf-8").strip() if error_file.exists() else ""
            raise TrainingError(
                detail or f"accelerate launch exited with code {completed.returncode} (see the output above)"
            )
    metrics_path = out_dir / METRICS_FILE
    if not metrics_path.exists():
        raise TrainingError(f"the launched run finished but wrote no {metrics_path}")
    return TrainingResult(out_dir, json.loads(metrics_path.read_text(encoding="utf-8")))


def _launched_main(spec_path: str) -> int:
    """Entry of each process started by :func:`launch_finetune`."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        finetune(
            spec["model_name"],
            [Task.from_dict(t) for t in spec["tasks"]],
            spec["out_dir"],
            TrainingSettings.model_validate(spec["config"]),
            progress=spec["progress"],
            overwrite=spec["overwrite"],
        )
    except ActiveITError as exc:
        if os.environ.get("RANK", "0") == "0":
            Path(spec["error_file"]).write_text(str(exc), encoding="utf-8")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_launched_main(sys.argv[1]))

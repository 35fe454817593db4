"""Running work in several processes with ``accelerate launch``: the process check, the
decision to launch, and the launcher itself.

The launcher knows no kind of work: a caller names the function each process runs
(``"activeit.scoring.launch:run_launched"``) and passes a JSON-able spec; every process
started by ``accelerate launch`` runs ``python -m activeit.models.processes ENTRY SPEC``,
which imports that function and calls it with the spec. An :class:`ActiveITError` raised
there travels back as the launch's error.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from activeit.config.settings import repo_path
from activeit.errors import ActiveITError, ConfigError


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


def needs_launch(num_processes: int, accelerate_config: str | None, cpu: bool) -> bool:
    """Whether the work needs a new ``accelerate launch`` rather than running in this process.
    A process that ``accelerate launch`` already started (``WORLD_SIZE`` > 1) does its own
    share here: the command line run as ``accelerate launch -m activeit ...``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return False
    return num_processes > 1 or accelerate_config is not None or (cpu and torch.cuda.is_available())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    entry: str, spec: dict[str, Any], num_processes: int, mixed_precision: str, cpu: bool, work: Path,
    accelerate_config: str | None = None,
) -> str:
    """Run ``entry`` (``"module:function"``) with ``spec`` in every process of an
    ``accelerate launch``; returns the error the main process reported ("" when it succeeded).

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
    command += ["-m", "activeit.models.processes", entry, str(spec_path)]
    completed = subprocess.run(command, env=env, check=False)
    if completed.returncode == 0:
        return ""
    detail = error_file.read_text(encoding="utf-8").strip() if error_file.exists() else ""
    return detail or f"accelerate launch exited with code {completed.returncode} (see the output above)"


def _entry_function(entry: str) -> Callable[[dict[str, Any]], None]:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def _launched_main(entry: str, spec_path: str) -> int:
    """What each process started by :func:`launch` runs."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        _entry_function(entry)(spec)
    except ActiveITError as exc:
        if os.environ.get("RANK", "0") == "0":
            Path(spec["error_file"]).write_text(str(exc), encoding="utf-8")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_launched_main(sys.argv[1], sys.argv[2]))

"""Running work in several processes with ``accelerate launch``: the process check, the
decision to launch, and the launcher itself.

The launcher knows no kind of work: a caller names the function each process runs
(``"activeit.scoring.launch:run_launched"``) and passes a JSON-able spec in a work folder
(:func:`work_folder`); every process started by ``accelerate launch`` runs
``python -m activeit.models.processes ENTRY SPEC``, which imports that function and calls
it with the spec. An :class:`ActiveITError` raised there travels back as the launch's error.

``accelerate launch`` itself runs in a launcher process of its own session
(``python -m activeit.models.processes --launcher WORK ...``), tied to its caller
(:mod:`activeit.models.lifeline`): the caller ends its process group when the launch ends
or the caller is interrupted; when the caller dies, the launcher gets SIGTERM, ends the
workers and removes the work folder; and every worker stops when its parent or the caller
is gone.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from activeit.config.settings import repo_path
from activeit.errors import ActiveITError, ConfigError
from activeit.models.lifeline import (
    CALLER_PID_ENV,
    alive,
    caller_pid,
    die_with_parent,
    end_group,
    exit_now,
    wait_unreaped,
    watch_parent,
)

#: The name of every launch's work folder (in the temporary folder) starts with this.
WORK_PREFIX = "activeit-launch-"


def cpu_cores() -> int:
    """The CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_processes(num_processes: int, field: str, cpu: bool = False) -> None:
    """Refuse more processes than there is room for: more GPU processes than visible GPUs
    (each takes one of its own), more CPU processes (``cpu``, or no GPU) than CPU cores."""
    import torch

    if cpu or not torch.cuda.is_available():
        cores = cpu_cores()
        if num_processes > cores:
            raise ConfigError(f"{field} is {num_processes} but this machine has only {cores} CPU core(s) for CPU "
                              f"processes; set it to at most {cores}")
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
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return False
    return num_processes > 1 or accelerate_config is not None or (cpu and torch.cuda.is_available())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def work_folder() -> Iterator[Path]:
    """A new temporary folder for one launch's files, removed when the block ends (and by
    the launcher, should this process die first)."""
    with tempfile.TemporaryDirectory(prefix=WORK_PREFIX) as work:
        yield Path(work)


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
    The launcher runs in a session of its own, ended (SIGTERM, then SIGKILL) when the
    launch returns or is interrupted.
    """
    import torch

    cpu = cpu or not torch.cuda.is_available()
    spec_path, error_file = work / "spec.json", work / "error.txt"
    spec_path.write_text(json.dumps(spec | {"error_file": str(error_file)}), encoding="utf-8")
    command = [sys.executable, "-m", "activeit.models.processes", "--launcher", str(work),
               "--mixed_precision", mixed_precision]
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
    # TMPDIR: what torch's agent and the workers leave in the temporary folder goes with the work folder
    env = dict(os.environ) | {CALLER_PID_ENV: str(os.getpid()), "TMPDIR": str(work)}
    # torch's agent logs each signal it forwards as a warning (its loggers take their level from
    # LOGLEVEL as its modules load); the caller says in one line why a launch ended
    env.setdefault("LOGLEVEL", "ERROR")
    if cpu:
        env["ACCELERATE_USE_CPU"] = "true"
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // num_processes)))
        if num_processes == 1 and accelerate_config is None:
            command.append("--cpu")
    command += ["-m", "activeit.models.processes", entry, str(spec_path)]
    launcher = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        wait_unreaped(launcher.pid)
    finally:
        returncode = end_group(launcher)
    if returncode == 0:
        return ""
    detail = error_file.read_text(encoding="utf-8").strip() if error_file.exists() else ""
    return detail or f"accelerate launch exited with code {returncode} (see the output above)"


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _launcher_main(work: str, accelerate_args: list[str]) -> int:
    """What the launcher process runs: ``accelerate launch`` in this process, which gets
    SIGTERM when its caller dies (torch's agent then ends the workers); the work folder goes
    with the caller."""
    caller = caller_pid()
    if caller is None:
        raise SystemExit(f"error: {CALLER_PID_ENV} is not set: the launcher runs only under launch()")
    signal.signal(signal.SIGTERM, _raise_exit)
    die_with_parent(caller)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)  # its plain loggers (see launch())
    try:
        from accelerate.commands.launch import launch_command, launch_command_parser
        from torch.distributed.elastic.multiprocessing.api import SignalException

        try:
            launch_command(launch_command_parser().parse_args(accelerate_args))
        except SignalException as stopped:  # a stop from outside (the caller ended or was killed): no traceback
            return 128 + int(stopped.sigval)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # ending anyway: a repeated stop must not cut the cleanup
        if os.getppid() != caller or not alive(caller):  # no one is left to read or remove it
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _entry_function(entry: str) -> Callable[[dict[str, Any]], None]:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def _launched_main(entry: str, spec_path: str) -> int:
    """What each process started by :func:`launch` runs; it stops as soon as its parent
    (torch's agent) or the caller is gone. Returns the exit code for :func:`exit_without_teardown`."""
    watch_parent(exit_now("the launch this process belongs to was ended"), caller_pid())
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        _entry_function(entry)(spec)
    except ActiveITError as exc:
        if os.environ.get("RANK", "0") == "0":
            Path(spec["error_file"]).write_text(str(exc), encoding="utf-8")
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def distributed_initialized() -> bool:
    """Whether this process joined a torch.distributed process group (torch is not imported for it)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized()


def exit_without_teardown(code: int) -> NoReturn:
    """End a process of a distributed run once its work is done and written, without tearing
    gloo's process group down: destroyed while its worker thread still drops the last
    collective's tensors (which needs the GIL the destroying thread holds), it deadlocks for
    good (3 of 120 two-process CPU launches on 2 busy cores: DDP's reducer freeing the
    group after ``destroy_process_group``); left to interpreter finalization, its threads can abort the
    process (``terminate called without an active exception``). Output streams and logging
    are flushed first; files the work wrote are already closed."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    if sys.argv[1] == "--launcher":
        sys.exit(_launcher_main(sys.argv[2], sys.argv[3:]))
    exit_without_teardown(_launched_main(sys.argv[1], sys.argv[2]))

"""Command-line pieces shared by the subcommands: the task-pool options and task names."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activeit.config.flags import add_settings_arguments, settings_from_args
from activeit.config.settings import PoolSettings
from activeit.data.sources import SkippedTaskWarning, load_pool_from
from activeit.errors import ActiveITError, PoolError
from activeit.data.tasks import Task, TaskPool
from activeit.models.lora import adapter_base


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose and shape a task pool (the fields of :class:`PoolSettings`)."""
    add_settings_arguments(parser.add_argument_group("task pool"), PoolSettings, skip=("seed",))


def add_output_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    """``--out DIR`` (required) and ``--overwrite``: outputs never replace someone else's files."""
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help=help)
    parser.add_argument("--overwrite", action="store_true",
                        help="replace --out even when it holds files this command did not write (never the "
                        "--model folder, the pool --path or the current folder)")


def protected_paths(args: argparse.Namespace) -> dict[str, Path]:
    """What ``--out`` may never be or hold: the ``--model`` folder (and an adapter's base
    folder) and the pool ``--path``, where they are local."""
    keep: dict[str, Path] = {}
    model = Path(args.model).expanduser() if getattr(args, "model", None) else None
    if model is not None and model.exists():
        keep["--model folder"] = model
        with contextlib.suppress(ActiveITError, OSError, ValueError):  # a broken adapter is check_model's to report
            if (base := adapter_base(model)) and Path(base).expanduser().exists():
                keep["base model folder of --model"] = Path(base).expanduser()
    if getattr(args, "path", None):
        keep["pool --path"] = Path(args.path).expanduser()
    return keep


def pool_from_args(args: argparse.Namespace) -> TaskPool:
    """The pool the options of :func:`add_pool_arguments` describe (seed: ``args.seed``,
    else 0). Skipped invalid tasks are reported as one ``warning:`` line each on stderr."""
    settings = settings_from_args(args, PoolSettings, seed=getattr(args, "seed", None))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedTaskWarning)
        pool = load_pool_from(settings)
    for warning in caught:
        if issubclass(warning.category, SkippedTaskWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return pool


def read_task_names(value: str) -> list[str]:
    """Task names from comma-separated names or a file.

    A file holds one name per line (blank lines and ``#`` comments skipped), a JSON list,
    or a JSON object with a ``"tasks"`` list (a saved ``Selection``).
    """
    if not value.strip():
        raise PoolError("--tasks is empty; give task names separated by commas, or a file of them")
    path = Path(value)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith(("[", "{")):
            try:
                data: Any = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PoolError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
            names = data.get("tasks") if isinstance(data, dict) else data
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PoolError(f"{path}: expected a JSON list of task names or an object with a 'tasks' list")
        else:
            names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    elif path.is_dir():
        raise PoolError(f"--tasks: '{value}' is a folder; give task names separated by commas, or a file of them")
    elif os.sep in value or value.startswith(".") or path.suffix.lower() in (".txt", ".json", ".jsonl"):
        raise PoolError(f"--tasks: the file '{value}' does not exist; give a file of task names (one a line, or a "
                        "JSON list) or the names themselves separated by commas")
    else:
        names = value.split(",")
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise PoolError(f"no task names in '{value}'")
    return names


def named_tasks(pool: TaskPool, names: Sequence[str]) -> tuple[Task, ...]:
    """The named tasks; one error naming every unknown name (with close matches)."""
    unknown = [n for n in names if n not in pool]
    if unknown:
        known = [t.name for t in pool]
        described = [
            name + "".join(f" (did you mean {m}?)" for m in difflib.get_close_matches(name, known, 1))
            for name in unknown[:10]
        ]
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise PoolError(
            f"pool '{pool.name}' ({len(known)} tasks) has no task named {', '.join(described)}{more}"
        )
    return pool.tasks(names)

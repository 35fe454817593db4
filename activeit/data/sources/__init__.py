"""Task-pool sources: NIV2 (official layout), Self-Instruct JSONL, the hub, the builtin suite,
and instance records grouped into tasks (Alpaca, ShareGPT, chat messages, a dataset on disk).

:func:`load_pool` is the one entry point; it reads a source and then applies the options
every source shares (instance cap, held-out test and validation tasks), all seeded.
"""

from __future__ import annotations

import importlib
import random
from collections.abc import Mapping
from pathlib import Path

from activeit.errors import ConfigError, PoolError, PoolSettingError
from activeit.config.settings import SOURCES, PoolSettings
from activeit.data.sources._common import SkippedTaskWarning, without_empty_references
from activeit.data.sources.grouping import Grouping
from activeit.data.tasks import Task, TaskPool


#: The record sources: their module and reader (each ``reader(path, grouping, *, skip_invalid)``).
RECORD_READERS: dict[str, tuple[str, str]] = {
    "alpaca": ("alpaca", "load_alpaca"),
    "sharegpt": ("sharegpt", "load_sharegpt"),
    "messages": ("messages", "load_messages"),
    "hf-disk": ("hf_disk", "load_hf_disk"),
}

__all__ = ["SOURCES", "SkippedTaskWarning", "hold_out", "load_pool", "load_pool_from"]


def hold_out(tasks: tuple[Task, ...], count: int, seed: int, purpose: str) -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    """Split ``count`` seeded tasks off ``tasks``: ``(kept, held_out)``, both in pool order."""
    if count <= 0:
        return tasks, ()
    if count >= len(tasks):
        raise PoolError(
            f"cannot hold out {count} {purpose} task(s) from {len(tasks)} train task(s); "
            "ask for fewer"
        )
    picked = set(random.Random(f"activeit:{purpose}:{seed}").sample(range(len(tasks)), count))
    return (
        tuple(t for i, t in enumerate(tasks) if i not in picked),
        tuple(t for i, t in enumerate(tasks) if i in picked),
    )


def _read(source: str, path: str | Path | None, split_dir: str, english_only: bool, skip_invalid: bool,
          grouping: Grouping) -> TaskPool:
    if source == "niv2":
        from activeit.data.sources.niv2 import load_niv2

        return load_niv2(path, split_dir, english_only=english_only, skip_invalid=skip_invalid)
    if source == "self-instruct":
        from activeit.data.sources.self_instruct import load_self_instruct

        return load_self_instruct(path, skip_invalid=skip_invalid)
    if source == "hub":
        from activeit.data.sources.hub import load_hub

        return load_hub(None if path is None else str(path))
    if source == "builtin":
        from activeit.data.sources.builtin import load_builtin

        return load_builtin()
    if source in RECORD_READERS:  # alpaca, sharegpt, messages, hf-disk: instance records grouped into tasks
        module, reader = RECORD_READERS[source]
        return getattr(importlib.import_module(f"activeit.data.sources.{module}"), reader)(
            path, grouping, skip_invalid=skip_invalid
        )
    raise PoolError(f"unknown pool source '{source}'; choose one of {', '.join(SOURCES)}")


def load_pool(
    source: str,
    path: str | Path | None = None,
    *,
    split_dir: str = "default",
    english_only: bool = True,
    max_instances_per_task: int | None = None,
    validation_tasks: int = 0,
    test_tasks: int = 0,
    seed: int = 0,
    skip_invalid: bool = False,
    columns: Mapping[str, str] | None = None,
    group_by: str | None = None,
    task_clusters: int | None = None,
) -> TaskPool:
    """Read a task pool (``source`` in :data:`SOURCES`).

    ``path``: the NIV2 root or the Self-Instruct file/folder, a dataset id for ``hub``,
    ignored for ``builtin``, the file, folder or dataset of a record source. ``split_dir``
    and ``english_only`` apply to NIV2; ``columns`` (role -> column), ``group_by`` and
    ``task_clusters`` to the record sources (:mod:`activeit.data.sources.grouping`).
    ``max_instances_per_task`` keeps a seeded subset of each task's instances
    (:meth:`Task.sample_instances`). ``test_tasks`` holds out that many seeded train tasks
    as ``test`` for sources without a test split; ``validation_tasks`` then holds out
    that many as ``validation``. ``skip_invalid`` turns invalid tasks into
    :class:`SkippedTaskWarning` warnings. Raises :class:`PoolError` /
    :class:`TaskFormatError` with one clear line; an empty train split is an error.
    """
    for option, value in (("validation_tasks", validation_tasks), ("test_tasks", test_tasks)):
        if value < 0:
            raise PoolError(f"{option} must be >= 0, got {value}")
    if max_instances_per_task is not None and max_instances_per_task < 1:
        raise PoolError(f"max_instances_per_task must be >= 1, got {max_instances_per_task}")
    pool = _read(source, path, split_dir, english_only, skip_invalid, Grouping(dict(columns or {}), group_by, task_clusters))
    splits = without_empty_references(pool.splits, pool.name, skip_invalid)
    if not splits.get("train"):
        raise PoolError(
            f"pool '{pool.name}' is empty: no train task was read"
            + (" (all invalid and skipped)" if skip_invalid else "")
        )
    if max_instances_per_task is not None:
        splits = {
            split: tuple(t.with_instances(t.sample_instances(max_instances_per_task, seed)) for t in tasks)
            for split, tasks in splits.items()
        }
    if test_tasks:
        if splits.get("test"):
            raise PoolSettingError(
                "pool.test_tasks",
                f"{test_tasks} test tasks to hold out, but source '{source}' has its own test split "
                f"({len(splits['test'])} tasks); set pool.test_tasks to 0 (or drop it) for this source",
            )
        splits["train"], splits["test"] = hold_out(splits["train"], test_tasks, seed, "test")
    if validation_tasks:
        splits["train"], held = hold_out(splits["train"], validation_tasks, seed, "validation")
        splits["validation"] = splits.get("validation", ()) + held
    return TaskPool(splits, name=pool.name)


def load_pool_from(settings: PoolSettings, *, need_test_tasks: bool = False) -> TaskPool:
    """The pool a :class:`~activeit.config.settings.PoolSettings` describes: the one path by which
    the pipeline step, ``run.py`` and the command line load a pool.

    ``need_test_tasks``: an active-tuning run evaluates on the test split, so a pool
    without one is an error (one line saying how to hold some out).
    """
    pool = load_pool(
        settings.source,
        settings.path,
        split_dir=settings.split_dir,
        english_only=settings.english_only,
        max_instances_per_task=settings.max_instances,
        validation_tasks=settings.validation_tasks,
        test_tasks=settings.test_tasks,
        seed=settings.seed,
        skip_invalid=settings.skip_invalid,
        columns=settings.column_map,
        group_by=settings.group_by,
        task_clusters=settings.task_clusters,
    )
    if need_test_tasks and not pool.test:
        raise ConfigError(f"pool '{pool.name}' has no test tasks to evaluate on (set pool.test_tasks)")
    return pool

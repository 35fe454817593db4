"""Helpers shared by the pool sources: invalid-task handling, demonstrations, paths."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

from activeit.errors import ActiveITError, PoolError
from activeit.data.tasks import Example, Instance, Task

#: Demonstrations a source builds from a task's own instances when it has none.
MAX_DEMONSTRATIONS = 2


class SkippedTaskWarning(UserWarning):
    """Something in the pool was left out or overridden: an invalid task or missing task file
    under ``skip_invalid``, non-English tasks, a metadata value that could not be used.
    The command line prints each as one ``warning:`` line."""


def skip_or_raise(error: ActiveITError, skip_invalid: bool) -> None:
    """Raise ``error``, or turn it into a :class:`SkippedTaskWarning` when ``skip_invalid``."""
    if not skip_invalid:
        raise error
    warnings.warn(f"skipped: {error}", SkippedTaskWarning, stacklevel=3)


def existing_path(path: str | Path | None, source: str, expected: str) -> Path:
    """``path`` as a :class:`Path`, or a :class:`PoolError` saying what was expected."""
    if path is None or str(path) == "":
        raise PoolError(f"source '{source}' needs a path: pass --path {expected}")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise PoolError(f"source '{source}': path '{resolved}' does not exist (expected {expected})")
    return resolved


def demonstrations_from_instances(
    instances: Sequence[Instance], max_demonstrations: int = MAX_DEMONSTRATIONS
) -> tuple[tuple[Example, ...], tuple[Instance, ...]]:
    """Split a task's instances into demonstrations and the instances left.

    For sources whose records carry no separate demonstrations (Self-Instruct, hub rows):
    the first ``min(max_demonstrations, len(instances) - 1)`` instances become positive
    examples (their first reference as output) and are *removed* from the instances, so
    that at least one instance is left and no prompt ever shows its own answer. A task
    with a single instance therefore gets no demonstration (a definition-only prompt,
    which is how Self-Instruct itself trains).
    """
    count = max(0, min(max_demonstrations, len(instances) - 1))
    demos = tuple(Example(input=i.input, output=i.outputs[0]) for i in instances[:count])
    return demos, tuple(instances[count:])


def _has_text(output: str) -> bool:
    return bool(output.strip())


def _without_empty_demonstrations(task: Task) -> Task:
    kept = tuple(e for e in task.positive_examples if _has_text(e.output))
    return task if len(kept) == len(task.positive_examples) else dataclasses.replace(task, positive_examples=kept)


def without_empty_references(
    splits: Mapping[str, tuple[Task, ...]], pool: str, skip_invalid: bool
) -> dict[str, tuple[Task, ...]]:
    """``splits`` when no reference output and no demonstration's output is empty (blank);
    else a :class:`PoolError` naming the first, or under ``skip_invalid`` the splits without
    them (an instance left with no reference, and a task left without instances, go too) and
    one warning each."""
    empty_demos = [(t, n) for tasks in splits.values() for t in tasks
                   for n, e in enumerate(t.positive_examples) if not _has_text(e.output)]
    if empty_demos and not skip_invalid:
        task, number = empty_demos[0]
        raise PoolError(f"pool '{pool}': task '{task.name}' demonstration {number + 1} has an empty output (a prompt "
                        "would teach the model to answer nothing); fix the data, or set pool.skip_invalid "
                        "(--skip-invalid) to leave such demonstrations out")
    if empty_demos:
        warnings.warn(f"skipped: {len(empty_demos)} demonstration(s) with an empty output in pool '{pool}', first: "
                      f"task '{empty_demos[0][0].name}'", SkippedTaskWarning, stacklevel=3)
        splits = {split: tuple(_without_empty_demonstrations(t) for t in tasks) for split, tasks in splits.items()}
    bad = [(t, i) for tasks in splits.values() for t in tasks for i in t.instances if not all(map(_has_text, i.outputs))]
    if not bad:
        return dict(splits)
    first = f"task '{bad[0][0].name}' instance '{bad[0][1].id}'"
    if not skip_invalid:
        raise PoolError(f"pool '{pool}': {first} has an empty reference output (a reference needs text); fix "
                        "the data, or set pool.skip_invalid (--skip-invalid) to leave empty references out")
    kept: dict[str, tuple[Task, ...]] = {}
    for split, tasks in splits.items():
        cleaned = []
        for task in tasks:
            instances = [Instance(i.id, i.input, tuple(filter(_has_text, i.outputs))) for i in task.instances]
            instances = [i for i in instances if i.outputs]
            if instances:
                cleaned.append(task.with_instances(instances))
        kept[split] = tuple(cleaned)
    dropped = sum(len(tasks) for tasks in splits.values()) - sum(len(tasks) for tasks in kept.values())
    warnings.warn(f"skipped: {len(bad)} instance(s) with an empty reference output in pool '{pool}', first: {first}"
                  + (f"; {dropped} task(s) left without instances were dropped" if dropped else ""),
                  SkippedTaskWarning, stacklevel=3)
    return kept

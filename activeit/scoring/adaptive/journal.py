"""The journal of an adaptive scoring run: a checkpoint file that an interrupted run resumes from.

The first line describes the run (model, settings, budget, a fingerprint of the tasks, prompts
and weights), then one line per chunk scored (its stage, its place in the stage and, per task,
the new predictions, L_i0 and L_ij); see :class:`Checkpoint`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from activeit.config.settings import ScoringSettings
from activeit.data.perturbations import PerturbedPrompts
from activeit.data.tasks import Task
from activeit.errors import ActiveITError
from activeit.models.loading import LoadedModel

#: What the first line of a checkpoint says it is, and the version of its records (2: stages chunked by rows).
CHECKPOINT_KIND, CHECKPOINT_VERSION = "activeit adaptive scoring checkpoint", 2


def budget_record(budget: int | Mapping[bool, int]) -> int | dict[str, int]:
    """The round's budget as JSON holds it: b, or ``{"True": b_classification, "False": b_generation}``."""
    return budget if not isinstance(budget, Mapping) else {str(k): v for k, v in budget.items()}


def _flat(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested record as ``{"a.b": value}``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(found: Mapping[str, Any], wanted: Mapping[str, Any], shown: int = 3) -> str:
    """What differs between a journal's header and this run's, e.g. ``config.k: 4 in the file,
    2 now``; the fingerprint of tasks and prompts in words."""
    theirs, ours = _flat(found), _flat(wanted)
    keys = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    words = [("other tasks or prompts (their fingerprint differs)" if key == "fingerprint"
              else f"{key}: {theirs.get(key, '(unset)')} in the file, {ours.get(key, '(unset)')} now")
             for key in keys[:shown]]
    return "; ".join(words) + (f"; and {len(keys) - shown} more" if len(keys) > shown else "")


class Checkpoint:
    """An interrupted run's work, so that the next run with the same file resumes it.

    A journal: the first line describes the run (model, settings, budget, a fingerprint of the
    tasks and prompts), then one line per chunk scored (its stage, its place in the stage and,
    per task, the new predictions, L_i0 and L_ij). Each line is written whole and flushed to
    disk before the next chunk starts; a line cut short by the interruption is dropped on
    resume. Resuming replays the lines in the order the stages consume them (the chunks and
    the decisions are the same, so the table is the uninterrupted run's) and appends the rest.
    Memory stays flat: the file is read line by line as the stages reach them.
    """

    @classmethod
    def of_run(cls, path: str | Path, loaded: LoadedModel, tasks: Sequence[Task], config: ScoringSettings,
               budget: int | Mapping[bool, int], prompts: Mapping[str, PerturbedPrompts] | None) -> Checkpoint:
        """The checkpoint at ``path`` for this run: resumed when it holds the same run's header, begun when empty."""
        header = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "model": loaded.name,
                  "config": config.model_dump(mode="json"), "budget": budget_record(budget),
                  "tasks": len(tasks), "fingerprint": fingerprint(loaded, tasks, prompts)}
        return cls(Path(path), json.loads(json.dumps(header)))

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path, self.replayed = path, 0
        if not path.parent.is_dir():
            raise ActiveITError(f"adaptive scoring checkpoint '{path}': folder '{path.parent}' does not exist")
        end, records = 0, 0
        if path.exists() and path.stat().st_size:
            with path.open("rb") as file:
                first = file.readline()
                try:
                    found = json.loads(first)
                except ValueError:
                    found = None
                if not isinstance(found, dict) or found.get("kind") != CHECKPOINT_KIND or not first.endswith(b"\n"):
                    raise ActiveITError(f"'{path}' is not an adaptive scoring checkpoint; pass another path")
                if found != header:
                    raise ActiveITError(f"checkpoint '{path}' is of another run ({_differences(found, header)}); "
                                        "remove it, or pass another path, to start afresh")
                end = len(first)
                for line in file:
                    try:
                        json.loads(line)
                    except ValueError:
                        break
                    if not line.endswith(b"\n"):
                        break
                    end, records = end + len(line), records + 1
        with path.open("ab") as file:  # drop a line cut short
            file.truncate(end)
        self._pending = records
        self._reader = path.open("rb")
        self._reader.readline()
        self._out = path.open("ab")
        if end == 0:
            self._write(header)

    def next(self, stage: int, first: int) -> list[Any] | None:
        """The recorded chunk ``first`` of ``stage``, or None once every recorded chunk is replayed."""
        if not self._pending:
            return None
        self._pending -= 1
        record = json.loads(self._reader.readline())
        if (record["stage"], record["first"]) != (stage, first):
            raise ActiveITError(f"checkpoint '{self.path}' is out of step (chunk {record['first']} of stage "
                                f"{record['stage']} where chunk {first} of stage {stage} was due); remove it")
        self.replayed += 1
        if not self._pending:
            self._reader.close()
        return record["tasks"]

    def write(self, stage: int, first: int, entries: list[Any]) -> None:
        self._write({"stage": stage, "first": first, "tasks": entries})

    def _write(self, record: dict[str, Any]) -> None:
        self._out.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
        self._out.flush()
        os.fsync(self._out.fileno())

    def close(self) -> None:
        self._reader.close()
        self._out.close()


def fingerprint(loaded: LoadedModel, tasks: Sequence[Task], prompts: Mapping[str, PerturbedPrompts] | None) -> str:
    """A digest of the tasks (and the prompts given) and of the model's weights."""
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(repr((task.name, task.definition, task.positive_examples, task.instances)).encode())
        if prompts is not None:
            digest.update(repr(prompts[task.name]).encode())
    with torch.no_grad():
        total = sum(float(p.float().sum()) for p in loaded.model.parameters())
    digest.update(f"{total:.12e}".encode())
    return digest.hexdigest()

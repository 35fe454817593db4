"""Self-Instruct JSONL: one record (an instruction and its instances) -> one task.

Record format (``seed_tasks.jsonl`` of yizhongw/self-instruct, one JSON object a line)::

    {"id": "seed_task_0", "name": "...", "instruction": "...",
     "instances": [{"input": "...", "output": "..."}], "is_classification": false}

``name`` (else ``id``, else ``<file stem>_<line>``) names the task; a repeated name gets
the record's id appended, then its line number (then a count) until the name is new. ``is_classification`` comes from the record
when present, otherwise from the label-set heuristic
(:func:`activeit.data.tasks.looks_like_classification`). ``motivation_app`` (the user-oriented
set) or ``category`` becomes the task's category.

Demonstrations: records carry no separate demonstrations and few instances (one each in
the seed set), so :func:`activeit.data.sources._common.demonstrations_from_instances` turns
the first instances into positive examples only when at least one other instance is
left: a one-instance task keeps its instance and gets a definition-only prompt, since
showing an instance as its own demonstration would put the answer in the prompt.

Flat Alpaca-style records (``instruction``, ``input``, ``output`` on one line, as in
machine-generated Self-Instruct data) are grouped by instruction into one task each.
Self-Instruct has no test split: ``load_pool(..., test_tasks=N)`` holds out N tasks.
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from activeit.config.settings import SOURCES
from activeit.errors import PoolError, TaskFormatError
from activeit.data.sources._common import (
    SkippedTaskWarning,
    demonstrations_from_instances,
    existing_path,
    skip_or_raise,
)
from activeit.data.tasks import Instance, Task, TaskPool, looks_like_classification

INSTRUCTION_FIX = 'each line needs "instruction" and "instances": [{"input": ..., "output": ...}]'


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line."""
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line
    except UnicodeDecodeError:
        raise TaskFormatError(path, "<file>", "is not UTF-8 text", "save it as UTF-8 JSON Lines") from None


def _json_array_error(path: Path) -> TaskFormatError:
    """A whole file that is one JSON array (Alpaca's layout) rather than one record a line."""
    fix = ("set pool.source to 'alpaca'" if "alpaca" in SOURCES else
           "write one JSON object a line") + "; pool.source 'self-instruct' reads JSON Lines, one record a line"
    return TaskFormatError(path, "<file>", "looks like a JSON array (Alpaca data?), not JSON Lines", fix)


def _parse(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise TaskFormatError(where, "<line>", f"is not valid JSON ({exc.msg})", INSTRUCTION_FIX) from None


def _string(record: Mapping[str, Any], key: str, where: str) -> str:
    value = record.get(key, "")
    if not isinstance(value, str):
        raise TaskFormatError(where, key, f"must be a string, got {type(value).__name__}", INSTRUCTION_FIX)
    return value


def _instruction(record: Any, where: str) -> str:
    if not isinstance(record, Mapping):
        raise TaskFormatError(where, "<line>", f"must be a JSON object, got {type(record).__name__}", INSTRUCTION_FIX)
    if "instruction" not in record:
        raise TaskFormatError(where, "instruction", "is missing", INSTRUCTION_FIX)
    instruction = _string(record, "instruction", where).strip()
    if not instruction:
        raise TaskFormatError(where, "instruction", "is empty", INSTRUCTION_FIX)
    return instruction


def _instance(item: Any, where: str, field: str, instance_id: str) -> Instance:
    if not isinstance(item, Mapping) or "output" not in item:
        raise TaskFormatError(where, field, "needs an 'output' (and usually an 'input')", INSTRUCTION_FIX)
    output = item["output"]
    outputs = tuple(output) if isinstance(output, list) else (output,)
    if not outputs or not all(isinstance(o, str) for o in outputs):
        raise TaskFormatError(where, f"{field}.output", "must be a string or a non-empty list of strings")
    return Instance(id=instance_id, input=_string(item, "input", where), outputs=outputs)


def _task(name: str, instruction: str, instances: list[Instance], record: Mapping[str, Any]) -> Task:
    flag = record.get("is_classification")
    if flag is not None and not isinstance(flag, bool):
        warnings.warn(f"task '{name}': is_classification {flag!r} is not true/false; using the label-set "
                      "heuristic instead", SkippedTaskWarning, stacklevel=2)
    outputs = [o for i in instances for o in i.outputs]
    demos, kept = demonstrations_from_instances(instances)
    category = record.get("motivation_app") or record.get("category")
    return Task(
        name=name,
        definition=instruction,
        positive_examples=demos,
        instances=kept,
        categories=(str(category),) if category else (),
        source="self-instruct",
        is_classification=bool(flag) if isinstance(flag, bool) else looks_like_classification(outputs),
    )


def read_self_instruct_file(path: Path, *, skip_invalid: bool = False, taken: set[str] | None = None) -> list[Task]:
    """The tasks of one JSONL file (see the module docstring); ``taken``: the names already
    used (by other files of a folder), updated with this file's."""
    tasks: list[Task] = []
    names: set[str] = taken if taken is not None else set()
    flat: dict[str, tuple[str, list[Instance], Mapping[str, Any]]] = {}

    def unique(base: str, *suffixes: str) -> str:
        """``base``, else ``base_<suffix>`` for the first suffix not taken, else the last one
        with a count appended."""
        candidates = [base, *(f"{base}_{suffix}" for suffix in suffixes)]
        counted = (f"{candidates[-1]}_{count}" for count in itertools.count(2))
        name = next(c for c in itertools.chain(candidates, counted) if c not in names)
        names.add(name)
        return name

    for index, (number, text) in enumerate(_lines(path)):
        where, line = f"{path}:{number}", str(number)
        if index == 0 and text.lstrip().startswith("["):
            skip_or_raise(_json_array_error(path), skip_invalid)
            return []
        try:
            record = _parse(text, where)
            instruction = _instruction(record, where)
            base = str(record.get("name") or record.get("id") or f"{path.stem}_{line}")
            if "instances" not in record and "output" in record:  # a flat (Alpaca-style) record
                if instruction not in flat:
                    flat[instruction] = (unique(base, line), [], record)
                name, group, _ = flat[instruction]
                group.append(_instance(record, where, "<record>", f"{name}-{len(group)}"))
                continue
            items = record.get("instances")
            if not isinstance(items, list) or not items:
                raise TaskFormatError(where, "instances", "is missing or empty", INSTRUCTION_FIX)
            name = unique(base, str(record.get("id") or line), line)
            instances = [_instance(x, where, f"instances[{k}]", f"{name}-{k}") for k, x in enumerate(items)]
        except TaskFormatError as error:
            skip_or_raise(error, skip_invalid)
            continue
        tasks.append(_task(name, instruction, instances, record))
    tasks.extend(_task(name, instruction, group, record) for instruction, (name, group, record) in flat.items())
    return tasks


def load_self_instruct(path: str | Path | None, *, skip_invalid: bool = False) -> TaskPool:
    """All tasks of a JSONL file, or of every ``*.jsonl`` in a folder, as the train split."""
    path = existing_path(path, "self-instruct", "<a Self-Instruct .jsonl file or a folder of them>")
    files = sorted(p for p in path.glob("*.jsonl") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise PoolError(f"self-instruct: folder '{path}' holds no .jsonl file")
    taken: set[str] = set()
    tasks = [task for file in files for task in read_self_instruct_file(file, skip_invalid=skip_invalid, taken=taken)]
    return TaskPool({"train": tuple(tasks)}, name=f"self-instruct:{path.name}")

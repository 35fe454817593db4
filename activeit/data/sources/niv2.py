"""Super-NaturalInstructions (NIV2) in its official on-disk layout.

::

    <root>/splits/<split_dir>/train_tasks.txt   one task name per line
    <root>/splits/<split_dir>/test_tasks.txt
    <root>/tasks/<task name>.json               Definition, Positive/Negative Examples,
                                                Instances (id, input, output list), ...

NIV2 files carry no classification flag. docs/METHOD.md's rule ("Strategies") is "a task counts as
classification when its definition names its label set"; :func:`niv2_is_classification`
implements it as a stated heuristic: the reference outputs form a label set
(:func:`activeit.data.tasks.looks_like_classification`: at most 10 distinct outputs of at most
3 words, some repeating) **and** the definition names that set (at least two of the labels,
or the only one, appear in the definition as whole words, case-insensitively).
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from activeit.errors import PoolError, TaskFormatError
from activeit.data.sources._common import SkippedTaskWarning, existing_path, skip_or_raise
from activeit.data.tasks import Example, Instance, Task, TaskPool, looks_like_classification

LANGUAGE_FIELDS = ("Input_language", "Output_language", "Instruction_language")
SPLIT_FILES = {"train": "train_tasks.txt", "test": "test_tasks.txt"}
_TRAILING_PUNCTUATION = " .!?,;:'\"`"


def _normalize_label(text: str) -> str:
    return " ".join(text.lower().split()).strip(_TRAILING_PUNCTUATION)


def definition_names_labels(definition: str, labels: Iterable[str]) -> bool:
    """True when ``definition`` names the label set: at least two labels (or the only one)
    occur in it as whole words, case-insensitively."""
    text = definition.lower()
    wanted = {label for label in (_normalize_label(x) for x in labels) if label}
    if not wanted:
        return False
    named = sum(1 for label in wanted if re.search(rf"(?<!\w){re.escape(label)}(?!\w)", text))
    return named >= min(2, len(wanted))


def niv2_is_classification(definition: str, outputs: Iterable[str]) -> bool:
    """The NIV2 classification heuristic (see the module docstring)."""
    outputs = list(outputs)
    return looks_like_classification(outputs) and definition_names_labels(definition, outputs)


def _field(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], path: Path, fix: str) -> Any:
    if key not in data:
        raise TaskFormatError(path, key, "is missing", fix)
    value = data[key]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise TaskFormatError(path, key, f"must be a {names}, got {type(value).__name__}", fix)
    return value


def _text(value: Any, path: Path, field: str) -> str:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value[0]
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        kinds = sorted({type(v).__name__ for v in value if not isinstance(v, str)})
        got = f"a list holding {', '.join(kinds)}" if kinds else "an empty list"
        raise TaskFormatError(path, field, f"must be a string or a list of strings, got {got}")
    raise TaskFormatError(path, field, f"must be a string, got {type(value).__name__}")


def _strings(data: Mapping[str, Any], key: str, path: Path) -> tuple[str, ...]:
    """An optional metadata field (``Categories``, ``Domains``, ``Source``): a list of strings
    (or one string)."""
    value = data.get(key, [])
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        got = type(value).__name__ if not isinstance(value, list) else "a list holding " + ", ".join(
            sorted({type(v).__name__ for v in value if not isinstance(v, str)}))
        raise TaskFormatError(path, key, f"must be a list of strings, got {got}", f'write it as "{key}": ["..."]')
    return tuple(value)


def _examples(data: Mapping[str, Any], key: str, path: Path) -> tuple[Example, ...]:
    raw = data.get(key, [])
    if not isinstance(raw, list):
        raise TaskFormatError(path, key, "must be a list of {input, output, explanation} objects")
    examples = []
    for number, item in enumerate(raw):
        where = f"{key}[{number}]"
        if not isinstance(item, Mapping) or "input" not in item or "output" not in item:
            raise TaskFormatError(path, where, "needs an 'input' and an 'output'")
        examples.append(
            Example(
                input=_text(item["input"], path, f"{where}.input"),
                output=_text(item["output"], path, f"{where}.output"),
                explanation=str(item.get("explanation", "")),
            )
        )
    return tuple(examples)


def _instances(data: Mapping[str, Any], path: Path) -> tuple[Instance, ...]:
    raw = _field(data, "Instances", list, path, "add a list of {id, input, output: [...]} objects")
    if not raw:
        raise TaskFormatError(path, "Instances", "is empty", "a task needs at least one instance")
    instances = []
    for number, item in enumerate(raw):
        where = f"Instances[{number}]"
        if not isinstance(item, Mapping) or "input" not in item or "output" not in item:
            raise TaskFormatError(path, where, "needs an 'input' and an 'output'")
        outputs = item["output"]
        if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
            raise TaskFormatError(
                path, f"{where}.output", f"must be a non-empty list of strings, got {outputs!r:.60}",
                'write the reference(s) as a list, e.g. "output": ["yes"]',
            )
        if not isinstance(item["input"], str):
            raise TaskFormatError(path, f"{where}.input", "must be a string")
        instances.append(
            Instance(id=str(item.get("id", f"{path.stem}-{number}")), input=item["input"], outputs=tuple(outputs))
        )
    return tuple(instances)


def is_english(data: Mapping[str, Any]) -> bool:
    """True unless a language field names anything but English (missing fields count as English)."""
    for key in LANGUAGE_FIELDS:
        value = data.get(key, ["English"])
        values = value if isinstance(value, list) else [value]
        if any(v != "English" for v in values):
            return False
    return True


def parse_niv2_task(data: Any, path: Path, name: str | None = None) -> Task:
    """One NIV2 task from its parsed JSON (``path`` is named in errors)."""
    if not isinstance(data, Mapping):
        raise TaskFormatError(path, "<root>", f"must be a JSON object, got {type(data).__name__}")
    fix = 'write the instruction as "Definition": ["<the instruction>"]'
    raw = _field(data, "Definition", (list, str), path, fix)
    definition = _text(raw, path, "Definition").strip() if raw else ""
    if not definition:
        raise TaskFormatError(path, "Definition", "is empty", fix)
    instances = _instances(data, path)
    return Task(
        name=name or path.stem,
        definition=definition,
        positive_examples=_examples(data, "Positive Examples", path),
        negative_examples=_examples(data, "Negative Examples", path),
        instances=instances,
        categories=_strings(data, "Categories", path),
        domains=_strings(data, "Domains", path),
        source=", ".join(_strings(data, "Source", path)),
        is_classification=niv2_is_classification(definition, (o for i in instances for o in i.outputs)),
    )


def read_niv2_task(path: Path) -> tuple[Task, bool]:
    """Parse one task file; returns the task and whether it is English-only."""
    if not path.is_file():
        raise TaskFormatError(path, "<file>", "is not a file (a folder?)", "put the task's JSON file there")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TaskFormatError(path, "<file>", f"is not valid JSON ({exc})", "fix or re-download the file") from None
    return parse_niv2_task(data, path), is_english(data)


def _split_names(split_file: Path) -> list[str]:
    """The task names of a split file (one a line; blank lines and ``#`` comments left out)."""
    try:
        lines = split_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TaskFormatError(split_file, "<file>", "is not UTF-8 text", "save the split file as UTF-8, or skip it with --skip-invalid") from None
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def load_niv2(
    root: str | Path | None,
    split_dir: str = "default",
    *,
    english_only: bool = True,
    skip_invalid: bool = False,
) -> TaskPool:
    """The train and test tasks named by ``<root>/splits/<split_dir>``.

    A split file naming a task whose file is missing is an error (naming both files)
    unless ``skip_invalid``, which warns once per split file and loads the rest; so are
    malformed task files (one warning each) and split files that are not UTF-8 (skipped
    whole). ``english_only`` drops tasks whose language fields name another language. A
    train split left without a task is one error line saying why.
    """
    root = existing_path(root, "niv2", "<the root of a natural-instructions checkout>")
    folder = root / "splits" / split_dir
    if not folder.is_dir():
        have = sorted(p.name for p in (root / "splits").iterdir() if p.is_dir()) if (root / "splits").is_dir() else []
        raise PoolError(
            f"niv2: split dir '{folder}' does not exist; "
            + (f"split dirs here: {', '.join(have)}" if have else f"'{root}' has no splits/ folder (is it an NIV2 checkout?)")
        )
    task_dir = root / "tasks"
    present = {p.stem for p in task_dir.glob("*.json")} if task_dir.is_dir() else set()
    splits: dict[str, tuple[Task, ...]] = {}
    for split, filename in SPLIT_FILES.items():
        split_file = folder / filename
        if not split_file.is_file():
            raise PoolError(f"niv2: split file '{split_file}' is missing (an NIV2 split dir has {' and '.join(SPLIT_FILES.values())})")
        try:
            names, unreadable = _split_names(split_file), False
        except TaskFormatError as error:
            skip_or_raise(error, skip_invalid)
            names, unreadable = [], True
        if not names and split == "train" and not unreadable:
            raise PoolError(f"niv2: the pool is empty: split file '{split_file}' names no train task (one name per line)")
        missing = [n for n in names if n not in present]
        missing_set = set(missing)
        if missing:
            message = (
                f"{split_file} names {len(missing)} task(s) with no task file, "
                f"first: {task_dir / (missing[0] + '.json')}"
            )
            if not skip_invalid:
                raise PoolError(
                    f"{message} (use a split dir whose tasks are all present, e.g. --split-dir available, "
                    "or --skip-invalid to load the rest)"
                )
            warnings.warn(f"skipped: {message}", SkippedTaskWarning, stacklevel=2)
        tasks, dropped, invalid = [], [], 0
        for name in names:
            if name in missing_set:
                continue
            try:
                task, english = read_niv2_task(task_dir / f"{name}.json")
            except TaskFormatError as error:
                skip_or_raise(error, skip_invalid)
                invalid += 1
                continue
            if english or not english_only:
                tasks.append(task)
            else:
                dropped.append(name)
        if dropped:
            warnings.warn(
                f"{split_file}: {len(dropped)} non-English task(s) left out, first: {dropped[0]} "
                "(--all-languages keeps them)", SkippedTaskWarning, stacklevel=2,
            )
        if split == "train" and not tasks:
            reasons = [
                "the split file is not UTF-8 text (skipped)" if unreadable else "",
                f"{len(missing)} without a task file (skipped)" if missing else "",
                f"{invalid} invalid (skipped, see the warnings)" if invalid else "",
                f"{len(dropped)} not in English (--all-languages keeps them)" if dropped else "",
            ]
            raise PoolError(f"niv2: the pool is empty: no train task of {split_file} could be used: "
                            + "; ".join(r for r in reasons if r))
        splits[split] = tuple(tasks)
    return TaskPool(splits, name=f"niv2:{split_dir}")

"""What the instance-record formats share (Alpaca, ShareGPT, chat messages, hf-disk rows).

A format module declares a pydantic record model and how a valid record becomes an
instruction, an input and its outputs (a :class:`RecordFormat`). This module reads the
records of a JSON file (a list of records) or a JSON Lines file (one a line), renames
the columns by the column mapping, validates each record and hands the valid ones to
:mod:`activeit.data.sources.grouping`.

Bad input is one error naming the file, the record (``record N``: the 1-based position in a
JSON list or a table; ``line N`` in JSON Lines) and the field: a record missing a column, a
record of another format (a mixed-format file), a conversation without an assistant turn.
An empty file, a column mapping or ``group_by`` naming a column that no record has, and a
file in another format altogether are errors too, found before any record is parsed. Under
``skip_invalid`` the invalid records are left out and counted in one warning.

Conversations (ShareGPT, messages): the turns before the last assistant turn are the
prompt and the last assistant turn is the output. The instruction is the system message
(the ``system`` column and any system turns), else the first user turn; the other prompt
turns are the input: a single user turn as it is, several as a ``User: ...`` /
``Assistant: ...`` transcript. Turns after the last assistant turn are ignored.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, ConfigDict, StringConstraints, ValidationError

from activeit.errors import PoolError, TaskFormatError
from activeit.data.sources._common import SkippedTaskWarning, existing_path
from activeit.data.sources.grouping import Entry, Grouping, make_tasks
from activeit.data.tasks import TaskPool

#: The column only one format's records have (what tells a mixed-format file), and its format.
SIGNATURES: dict[str, str] = {"instruction": "alpaca", "conversations": "sharegpt", "messages": "messages"}
TITLES: dict[str, str] = {"alpaca": "Alpaca", "sharegpt": "ShareGPT", "messages": "chat-messages"}
#: Speaker names of ShareGPT (``from``) and chat messages (``role``), and what they are.
SPEAKERS: dict[str, str] = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
    "system": "system", "developer": "system",
    "tool": "tool", "function": "tool", "function_call": "tool", "observation": "tool", "ipython": "tool",
}
LABELS = {"user": "User", "assistant": "Assistant", "tool": "Tool"}
FILE_SUFFIXES = (".json", ".jsonl")


def _outputs(value: Any) -> Any:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("must be a string or a non-empty list of strings")


def _speaker(value: Any) -> Any:
    if isinstance(value, str) and value.strip().lower() in SPEAKERS:
        return SPEAKERS[value.strip().lower()]
    raise ValueError(f"is {value!r}, not a speaker name ({', '.join(SPEAKERS)})")


#: The keys of a conversation turn in each conversation format, and how a file of the other
#: format is read: ``source -> (speaker key, text key, the column mapping it takes)``.
TURN_KEYS: dict[str, tuple[str, str, str]] = {
    "sharegpt": ("from", "value", "conversations=messages"),
    "messages": ("role", "content", "messages=conversations"),
}


def foreign_turn(data: Any, source: str) -> Any:
    """A turn's raw ``data``, or a ValueError when it is a turn of the other conversation format."""
    other = next(name for name in TURN_KEYS if name != source)
    (mine, text, _), (theirs, their_text, mapping) = TURN_KEYS[source], TURN_KEYS[other]
    if isinstance(data, Mapping) and data.get(mine) is None and data.get(theirs) is not None:
        raise ValueError(f"has '{theirs}' / '{their_text}' (a {TITLES[other]} turn) where {TITLES[source]} turns "
                         f"have '{mine}' / '{text}'; read the file with --source {other} (--columns {mapping})")
    return data


def _label(value: Any) -> Any:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


#: A non-blank string, stripped.
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
#: One reference output or a non-empty list of them.
Outputs = Annotated[tuple[str, ...], BeforeValidator(_outputs)]
#: ``user`` / ``assistant`` / ``system`` / ``tool``, from any of the names in :data:`SPEAKERS`.
Speaker = Annotated[str, BeforeValidator(_speaker)]
#: A name or category: a string (an integer label is taken as its digits).
Label = Annotated[str | None, BeforeValidator(_label)]


class RecordBase(BaseModel):
    """The optional columns of every record format: the task's name (when grouping by
    instruction), its category and its classification flag. Other columns are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: Label = None
    category: Label = None
    is_classification: bool | None = None


class RecordProblem(Exception):
    """A valid record that still makes no instance: ``field`` (a role, then a path) and the problem."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field, self.problem = field, problem


class InvalidLine(NamedTuple):
    """A JSON Lines line that is not JSON (an invalid record, skippable like the others)."""

    message: str


#: A record's (instruction, input, outputs).
Parts = tuple[str, str, tuple[str, ...]]


@dataclass(frozen=True)
class RecordFormat:
    """One record format: its ``pool.source`` name, record model and how a record becomes an
    instance (``parts``, which may raise :class:`RecordProblem`)."""

    name: str
    model: type[RecordBase]
    parts: Callable[[Any], Parts]
    fix: str

    @property
    def title(self) -> str:
        return TITLES[self.name]

    @property
    def signature(self) -> str:
        return next(key for key, name in SIGNATURES.items() if name == self.name)

    def columns(self, grouping: Grouping) -> dict[str, str]:
        """Role -> the file's column: the mapping's names, else the roles' own."""
        unknown = [role for role in grouping.columns if role not in self.model.model_fields]
        if unknown:
            raise PoolError(f"the column mapping names role '{unknown[0]}', which {self.title} records do not "
                            f"have (their roles: {', '.join(self.model.model_fields)})")
        return {role: grouping.columns.get(role, role) for role in self.model.model_fields}


def _listing(columns: Iterable[str]) -> str:
    names = sorted(columns)
    return ", ".join(names[:20]) + (f", ... ({len(names) - 20} more)" if len(names) > 20 else "") if names else "none"


def check_columns(fmt: RecordFormat, grouping: Grouping, present: set[str], where: str) -> dict[str, str]:
    """The role -> column mapping of ``fmt``, checked against the columns the records have
    (``present``): a mapped or grouping column, or a required one, that no record has is
    an error, and so is a file in another format."""
    columns = fmt.columns(grouping)
    for role, column in grouping.columns.items():
        if column not in present:
            raise TaskFormatError(where, column, f"is in no record, but the column mapping names it for "
                                  f"'{role}' (the records' columns: {_listing(present)})")
    if grouping.group_by and grouping.group_by not in present:
        raise TaskFormatError(where, grouping.group_by, "is in no record, but group_by names it "
                              f"(the records' columns: {_listing(present)})")
    for role, info in fmt.model.model_fields.items():
        if info.is_required() and columns[role] not in present:
            other = next((key for key, name in SIGNATURES.items() if key in present and name != fmt.name), None)
            if other and role == fmt.signature:
                name = SIGNATURES[other]
                raise TaskFormatError(where, other, f"the file holds {TITLES[name]} records, not {fmt.title} ones",
                                      f"read it with --source {name}")
            raise TaskFormatError(where, columns[role], f"is in no record (the records' columns: {_listing(present)})",
                                  f"name the {role} column with --columns {role}=COLUMN")
    return columns


def _field(loc: Sequence[Any], columns: Mapping[str, str]) -> str:
    if not loc:
        return "<record>"
    head, *rest = loc
    text = columns.get(head, str(head))
    return text + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest)


EXPECTED = {
    "string_type": "must be a string", "list_type": "must be a list", "tuple_type": "must be a list",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "model_type": "must be an object", "dict_type": "must be an object",
}


def _problem(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    if kind == "missing":
        return "is missing"
    if kind in ("too_short", "string_too_short"):
        return "is empty"
    if kind in EXPECTED:
        value = error.get("input")
        return f"{EXPECTED[kind]}, got {value!r}" if isinstance(value, str) else f"{EXPECTED[kind]}, got {type(value).__name__}"
    return str(error["msg"]).removeprefix("Value error, ")


def parse_rows(
    fmt: RecordFormat,
    rows: Iterable[tuple[int, Any]],
    where: str,
    unit: str,
    origin: str,
    grouping: Grouping,
    columns: Mapping[str, str],
    skip_invalid: bool,
) -> tuple[list[Entry], list[TaskFormatError]]:
    """The entries of the valid ``(number, row)`` records and the errors of the invalid ones
    (the first raised at once unless ``skip_invalid``)."""
    entries: list[Entry] = []
    errors: list[TaskFormatError] = []
    own = columns[fmt.signature]
    for number, row in rows:
        here = f"{where}: {unit} {number}"
        try:
            entries.append(_entry(fmt, row, here, origin, number, grouping, columns, own))
        except TaskFormatError as error:
            if not skip_invalid:
                raise
            errors.append(error)
    return entries, errors


def _entry(fmt: RecordFormat, row: Any, here: str, origin: str, number: int, grouping: Grouping,
           columns: Mapping[str, str], own: str) -> Entry:
    if isinstance(row, InvalidLine):
        raise TaskFormatError(here, "<line>", f"is not valid JSON ({row.message})",
                              "JSON Lines holds one record a line; a .json file holds a [list] of records")
    if not isinstance(row, Mapping):
        raise TaskFormatError(here, "<record>", f"must be a JSON object, got {type(row).__name__}", fmt.fix)
    if row.get(own) is None:
        other = next((key for key, name in SIGNATURES.items() if name != fmt.name and row.get(key) is not None), None)
        if other:
            name = SIGNATURES[other]
            raise TaskFormatError(here, other, f"is a {TITLES[name]} record in a file read as {fmt.title}",
                                  f"a file holds one format; --source {name} reads {TITLES[name]} files")
    values = {role: row[column] for role, column in columns.items() if row.get(column) is not None}
    try:
        record = fmt.model.model_validate(values)
        instruction, text, outputs = fmt.parts(record)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise TaskFormatError(here, _field(first["loc"], columns), _problem(first), fmt.fix) from None
    except RecordProblem as problem:
        role, _, rest = problem.field.partition("[")
        raise TaskFormatError(here, columns.get(role, role) + (f"[{rest}" if rest else ""), problem.problem, fmt.fix) from None
    group = None
    if grouping.group_by:
        value = row.get(grouping.group_by)
        if value is None or not str(value).strip():
            raise TaskFormatError(here, grouping.group_by, "is missing or empty (group_by names it)")
        group = str(value).strip()
    return Entry(origin, number, instruction, text, outputs, record.name, record.category, record.is_classification, group)


def conversation_parts(turns: Sequence[tuple[str, str]], system: str | None, column: str, content: str) -> Parts:
    """A conversation's (instruction, input, outputs) by the rule of the module docstring;
    ``turns``: (speaker, text); ``column`` and ``content`` name the turns' fields in errors."""
    last = max((k for k, (who, _) in enumerate(turns) if who == "assistant"), default=None)
    if last is None:
        raise RecordProblem(column, "has no assistant turn (its last assistant turn is the output)")
    systems = [text.strip() for text in [system or "", *(t for who, t in turns[:last] if who == "system")]]
    dialogue = [(k, who, text) for k, (who, text) in enumerate(turns[:last]) if who != "system"]
    instruction = "\n\n".join(s for s in systems if s)
    if not instruction:
        first = next((i for i, (_, who, _) in enumerate(dialogue) if who == "user"), None)
        if first is None:
            raise RecordProblem(column, "has no system message and no user turn before its last assistant turn")
        k, _, text = dialogue.pop(first)
        instruction = text.strip()
        if not instruction:
            raise RecordProblem(f"{column}[{k}].{content}", "is empty (the first user turn is the instruction)")
    if len(dialogue) == 1 and dialogue[0][1] == "user":
        prompt = dialogue[0][2]
    else:
        prompt = "\n\n".join(f"{LABELS[who]}: {text}" for _, who, text in dialogue)
    return instruction, prompt, (turns[last][1],)


#: Keys under which exports often wrap their list of records (``{"data": [...]}``).
WRAPPER_KEYS = ("data", "records", "rows", "examples", "items", "samples", "train")


def _refuse_wrapped_list(path: Path, text: str) -> None:
    """A file that is one JSON object wrapping the list of records under a key such as
    ``data``: one line naming the key and the fix (otherwise it reads as one record whose
    columns are missing)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return
    if not isinstance(data, dict):
        return
    key = next((k for k in WRAPPER_KEYS if isinstance(data.get(k), list) and data[k]
                and all(isinstance(r, dict) for r in data[k])), None)
    if key is not None:
        raise PoolError(f"{path}: the file is one JSON object holding its {len(data[key])} records under '{key}'; "
                        f"give the list itself: a .json file of [records] or JSON Lines (e.g. jq '.{key}' "
                        f"{path.name} > records.json)")


def read_json_records(path: Path) -> tuple[str, list[tuple[int, Any]]]:
    """``("record", rows)`` of a JSON list or ``("line", rows)`` of JSON Lines: each row a
    ``(number, value)``, an unparsable line an :class:`InvalidLine`. An empty file is an error."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TaskFormatError(path, "<file>", "is not UTF-8 text", "save it as UTF-8 JSON") from None
    first = re.search(r"\S", text)
    if first is None:
        raise PoolError(f"{path}: the file is empty (no records)")
    if first.group() == "[":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskFormatError(path, "<file>", f"is not valid JSON ({exc.msg}, line {exc.lineno})",
                                  "a .json file holds one [list] of records; JSON Lines, one record a line") from None
        if not data:
            raise PoolError(f"{path}: the file holds no records (an empty list)")
        return "record", list(enumerate(data, start=1))
    if first.group() == "{":
        _refuse_wrapped_list(path, text)
    rows: list[tuple[int, Any]] = []
    for number, line in enumerate(text.split("\n"), start=1):  # not splitlines: JSON strings may hold U+2028
        if line.strip():
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                rows.append((number, InvalidLine(exc.msg)))
    return "line", rows


def _refuse_no_objects(path: Path, unit: str, rows: Sequence[tuple[int, Any]], fmt: RecordFormat) -> None:
    """A file none of whose rows is a JSON object: say what its first row is, not that a column is missing."""
    number, first = rows[0]
    if isinstance(first, InvalidLine):
        raise PoolError(f"{path}: line {number} is not JSON ({first.message}): the file is neither a JSON list of "
                        f"records nor JSON Lines; give a .json or .jsonl file of {fmt.title} records")
    kind = type(first).__name__ if first is not None else "null"
    raise PoolError(f"{path}: {unit} {number} is a JSON {kind}, not an object, and so is every other {unit}; each "
                    f"{fmt.title} record is an object of columns, e.g. {{\"{fmt.columns(Grouping())[fmt.signature]}\": ...}}")


def warn_skipped(errors: Sequence[TaskFormatError], total: int, where: str) -> None:
    """One :class:`SkippedTaskWarning` counting the invalid records left out (none: no warning)."""
    if errors:
        first = str(errors[0]).removeprefix(f"{where}: ")
        warnings.warn(f"skipped {len(errors)} invalid record(s) of {total} in {where}; the first: {first}",
                      SkippedTaskWarning, stacklevel=3)


def load_record_files(fmt: RecordFormat, path: str | Path | None, grouping: Grouping, *, skip_invalid: bool = False) -> TaskPool:
    """The tasks of a JSON or JSON Lines file of ``fmt`` records, or of every ``.json`` /
    ``.jsonl`` file in a folder, as the train split."""
    path = existing_path(path, fmt.name, f"<a .json / .jsonl file of {fmt.title} records, or a folder of them>")
    files = sorted(p for p in path.iterdir() if p.suffix in FILE_SUFFIXES and p.is_file()) if path.is_dir() else [path]
    if not files:
        raise PoolError(f"{fmt.name}: folder '{path}' holds no .json or .jsonl file")
    entries: list[Entry] = []
    errors: list[TaskFormatError] = []
    total = 0
    for file in files:
        unit, rows = read_json_records(file)
        present = set().union(*(row.keys() for _, row in rows if isinstance(row, Mapping)))
        if not present and rows:
            _refuse_no_objects(file, unit, rows, fmt)
        columns = check_columns(fmt, grouping, present, str(file))
        valid, invalid = parse_rows(fmt, rows, str(file), unit, file.stem, grouping, columns, skip_invalid)
        entries += valid
        errors += invalid
        total += len(rows)
    warn_skipped(errors, total, str(path))
    return TaskPool({"train": make_tasks(entries, grouping, fmt.name)}, name=f"{fmt.name}:{path.name}")

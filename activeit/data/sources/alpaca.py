"""Alpaca: a JSON list (or JSON Lines) of ``instruction`` / ``input`` / ``output`` records.

One record is one instance (``output`` a string, or a list of references); records are
grouped into tasks by :mod:`activeit.data.sources.grouping`, by default one task per distinct
instruction (the Self-Instruct way). Optional columns: ``name`` (the task's name, else
``<file stem>_<record number>``), ``category``, ``is_classification`` (else the label-set
heuristic). Other column names are mapped with ``columns`` (``--columns instruction=prompt
output=response``); the rest of a record is ignored. Reading and errors:
:mod:`activeit.data.sources.records`.
"""

from __future__ import annotations

from pathlib import Path

from activeit.data.sources.grouping import Grouping
from activeit.data.sources.records import Outputs, Parts, RecordBase, RecordFormat, Text, load_record_files
from activeit.data.tasks import TaskPool


class AlpacaRecord(RecordBase):
    """One Alpaca record (one instance)."""

    instruction: Text
    input: str = ""
    output: Outputs


def _parts(record: AlpacaRecord) -> Parts:
    return record.instruction, record.input, record.output


ALPACA = RecordFormat(
    name="alpaca",
    model=AlpacaRecord,
    parts=_parts,
    fix='an Alpaca record has "instruction", "output" and usually "input"; other names: --columns ROLE=COLUMN',
)


def load_alpaca(path: str | Path | None, grouping: Grouping = Grouping(), *, skip_invalid: bool = False) -> TaskPool:
    """The tasks of an Alpaca file (or a folder of them) as the train split."""
    return load_record_files(ALPACA, path, grouping, skip_invalid=skip_invalid)

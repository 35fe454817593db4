"""ShareGPT: records with ``conversations``, a list of ``{"from": ..., "value": ...}`` turns.

``from`` is ``human`` / ``user``, ``gpt`` / ``assistant`` (or ``chatgpt``, ``bard``, ``bing``,
``model``), ``system``, or a tool turn (``function_call``, ``observation``, ``tool``); an
optional ``system`` column holds the system prompt (the LLaMA-Factory layout). The turns
before the last assistant turn are the prompt and the last assistant turn is the output
(the rule: :mod:`activeit.data.sources.records`); records are grouped into tasks by
:mod:`activeit.data.sources.grouping`. Optional columns as for Alpaca: ``name``,
``category``, ``is_classification``; ``columns`` maps other names (``conversations=turns``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from activeit.data.sources.grouping import Grouping
from activeit.data.sources.records import (
    Parts,
    RecordBase,
    RecordFormat,
    Speaker,
    conversation_parts,
    foreign_turn,
    load_record_files,
)
from activeit.data.tasks import TaskPool


class ShareGPTTurn(BaseModel):
    """One turn: who speaks (``from``) and what (``value``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    speaker: Speaker = Field(alias="from")
    value: str

    @model_validator(mode="before")
    @classmethod
    def _not_a_message(cls, data: Any) -> Any:
        return foreign_turn(data, "sharegpt")


class ShareGPTRecord(RecordBase):
    """One ShareGPT conversation (one instance)."""

    conversations: list[ShareGPTTurn] = Field(min_length=1)
    system: str | None = None


def _parts(record: ShareGPTRecord) -> Parts:
    turns = [(turn.speaker, turn.value) for turn in record.conversations]
    return conversation_parts(turns, record.system, "conversations", "value")


SHAREGPT = RecordFormat(
    name="sharegpt",
    model=ShareGPTRecord,
    parts=_parts,
    fix='a ShareGPT record has "conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]',
)


def load_sharegpt(path: str | Path | None, grouping: Grouping = Grouping(), *, skip_invalid: bool = False) -> TaskPool:
    """The tasks of a ShareGPT file (or a folder of them) as the train split."""
    return load_record_files(SHAREGPT, path, grouping, skip_invalid=skip_invalid)

"""Chat messages (the OpenAI / Hugging Face chat format): records with ``messages``, a list
of ``{"role": ..., "content": ...}``.

``role`` is ``system`` (or ``developer``), ``user``, ``assistant`` or ``tool``; ``content`` a
string or a list of ``{"type": "text", "text": ...}`` parts (joined by newlines). The turns
before the last assistant message are the prompt and the last assistant message is the
output (the rule: :mod:`activeit.data.sources.records`); records are grouped into tasks by
:mod:`activeit.data.sources.grouping`. Optional columns as for Alpaca: ``name``,
``category``, ``is_classification``; ``columns`` maps other names (``messages=chat``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

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


def _text(content: Any) -> Any:
    """A string, or text parts joined by newlines."""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        if all(isinstance(p.get("text"), str) for p in content):
            return "\n".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ValueError("must be a string or a list of {\"type\": \"text\", \"text\": ...} parts")
    return content


class Message(BaseModel):
    """One message: its ``role`` and ``content``."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    role: Speaker
    content: Annotated[str, BeforeValidator(_text)]

    @model_validator(mode="before")
    @classmethod
    def _not_a_sharegpt_turn(cls, data: Any) -> Any:
        return foreign_turn(data, "messages")


class MessagesRecord(RecordBase):
    """One conversation in the chat-messages format (one instance)."""

    messages: list[Message] = Field(min_length=1)


def _parts(record: MessagesRecord) -> Parts:
    turns = [(message.role, message.content) for message in record.messages]
    return conversation_parts(turns, None, "messages", "content")


MESSAGES = RecordFormat(
    name="messages",
    model=MessagesRecord,
    parts=_parts,
    fix='a chat-messages record has "messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]',
)


def load_messages(path: str | Path | None, grouping: Grouping = Grouping(), *, skip_invalid: bool = False) -> TaskPool:
    """The tasks of a chat-messages file (or a folder of them) as the train split."""
    return load_record_files(MESSAGES, path, grouping, skip_invalid=skip_invalid)

"""Command-line flags generated from settings fields: the one way ``run.py`` and
``python -m activeit`` make theirs.

A field becomes ``--field-name``; a field of a section, named by its dotted key
(``pool.source``), becomes ``--pool-source``; a field may name its own flag
(``json_schema_extra={"flag": "--lr"}``). Type, choices and help come from the field. A flag
left out stays ``None``, so the settings (or the config file) keep their own value: every
default is declared once, in the settings.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from activeit.config.settings import Settings, describe_error
from activeit.errors import ConfigError

S = TypeVar("S", bound=Settings)
METAVARS: dict[Any, str] = {int: "N", float: "X"}


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return annotation


def _field(settings: type[BaseModel], key: str) -> FieldInfo:
    """The field of a dotted key (``pool.source``: the ``source`` field of the ``pool`` section)."""
    *sections, name = key.split(".")
    for section in sections:
        settings = settings.model_fields[section].annotation  # type: ignore[assignment]
    return settings.model_fields[name]


def _extra(field: FieldInfo) -> Mapping[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, Mapping) else {}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose refusals are one ``error:`` line (exit 2), like every other
    refusal of activeit, instead of a usage block and a ``prog: error:`` line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def flag_of(settings: type[BaseModel], key: str) -> str:
    """The command-line flag of a (dotted) field key."""
    return _extra(_field(settings, key)).get("flag", "--" + key.replace(".", "-").replace("_", "-"))


def add_settings_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    settings: type[BaseModel],
    keys: Iterable[str] | None = None,
    *,
    skip: Iterable[str] = (),
    show_defaults: bool = True,
    choices: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Add one flag per field key of ``settings`` (default: every field but those marked
    ``cli: False`` and ``skip``). ``choices`` adds choices a field cannot name itself."""
    skipped = set(skip)
    for key in keys if keys is not None else settings.model_fields:
        field = _field(settings, key)
        extra = _extra(field)
        if key in skipped or (keys is None and extra.get("cli") is False):
            continue
        kind = _base_type(field.annotation)
        name = key.rsplit(".", 1)[-1]
        shown = "" if field.default is None or not show_defaults else f" (default: {field.default})"
        options: dict[str, Any] = {"dest": key, "default": None, "help": (field.description or "") + shown}
        if kind is bool and (extra.get("store_true") or extra.get("invert")):
            options.update(action="store_const", const=not extra.get("invert"),
                           help=extra.get("flag_help", field.description))
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction, help=field.description)
        elif typing.get_origin(kind) in (list, tuple):
            options.update(nargs="+", type=typing.get_args(kind)[0], metavar=extra.get("metavar", name.upper()))
        elif typing.get_origin(kind) is Literal or key in (choices or {}):
            options.update(choices=(choices or {}).get(key) or typing.get_args(kind))
        else:
            options.update(type=kind, metavar=extra.get("metavar", METAVARS.get(kind, name.upper())))
        parser.add_argument(flag_of(settings, key), **options)


def given_values(args: argparse.Namespace, settings: type[BaseModel], keys: Iterable[str]) -> dict[str, Any]:
    """The field keys whose flags were given, with their values. A path field's value is
    taken from the current folder (settings take relative paths from the repository root)."""
    values = {}
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            path = _extra(_field(settings, key)).get("path")
            values[key] = str(Path(value).expanduser().resolve()) if path else value
    return values


def settings_from_args(args: argparse.Namespace, settings: type[S], **given: Any) -> S:
    """``settings`` built from the flags of :func:`add_settings_arguments` that were given,
    plus ``given`` (which wins); the rest keep the settings' defaults. A bad value is one
    :class:`ConfigError` line naming the flag."""
    values = given_values(args, settings, settings.model_fields) | {k: v for k, v in given.items() if v is not None}
    try:
        return settings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, "command line", lambda key: flag_of(settings, key))) from None

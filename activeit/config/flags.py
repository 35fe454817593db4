"""Command-line flags generated from the settings' fields (:mod:`activeit.config.settings`).

Each field becomes ``--field-name`` (or the ``flag`` its ``json_schema_extra`` names) with
the field's type, choices and description; the default shown is the field's default. A flag
left out stays ``None`` in the namespace, so :func:`settings_from_args` lets the settings
class fill in its own default: every default is declared once, in the settings.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from activeit.errors import ConfigError
from activeit.config.settings import Settings, describe_error, validating_config

S = TypeVar("S", bound=Settings)
METAVARS: dict[Any, str] = {int: "N", float: "X"}


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return annotation


def add_settings_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    settings: type[Settings],
    *,
    skip: Iterable[str] = (),
) -> None:
    """Add one flag per field of ``settings`` (fields marked ``cli: False`` and ``skip`` left out)."""
    skipped = set(skip)
    for name, field in settings.model_fields.items():
        extra: Mapping[str, Any] = field.json_schema_extra or {}  # type: ignore[assignment]
        if name in skipped or extra.get("cli") is False:
            continue
        kind = _base_type(field.annotation)
        flag = extra.get("flag", "--" + name.replace("_", "-"))
        shown = "" if field.default is None else f" (default: {field.default})"
        options: dict[str, Any] = {"dest": name, "default": None, "help": (field.description or "") + shown}
        if kind is bool and (extra.get("store_true") or extra.get("invert")):
            options.update(action="store_const", const=not extra.get("invert"), help=extra.get("flag_help", field.description))
        elif kind is bool:
            options.update(action=argparse.BooleanOptionalAction, help=field.description)
        elif typing.get_origin(kind) in (list, tuple):
            options.update(nargs="+", type=typing.get_args(kind)[0], metavar=extra.get("metavar", name.upper()))
        elif typing.get_origin(kind) is Literal or "choices" in extra:
            options.update(choices=extra.get("choices") or typing.get_args(kind))
        else:
            options.update(type=kind, metavar=extra.get("metavar", METAVARS.get(kind, name.upper())))
        parser.add_argument(flag, **options)


def flag_of(settings: type[Settings], name: str) -> str:
    """The command-line flag of a field."""
    field = settings.model_fields.get(name)
    extra: Mapping[str, Any] = (field.json_schema_extra or {}) if field else {}  # type: ignore[assignment]
    return extra.get("flag", "--" + name.replace("_", "-"))


def _from_here(value: str) -> str:
    """A path given on the command line: relative to the current folder (settings take
    relative paths from the repository root)."""
    return str(Path(value).expanduser().resolve())


def settings_from_args(args: argparse.Namespace, settings: type[S], **given: Any) -> S:
    """``settings`` built from the flags of :func:`add_settings_arguments` that were given,
    plus ``given`` (which wins); the rest keep the settings' defaults. A bad value is one
    :class:`ConfigError` line naming the flag."""
    values = {
        name: _from_here(getattr(args, name)) if (settings.model_fields[name].json_schema_extra or {}).get("path")
        else getattr(args, name)
        for name in settings.model_fields
        if getattr(args, name, None) is not None
    }
    try:
        with validating_config():
            return settings.model_validate(values | {k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, "command line", lambda key: flag_of(settings, key))) from None

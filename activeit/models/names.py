"""What a model name points to: a built-in model's cached folder, a local folder, or a hub id."""

from __future__ import annotations

import difflib
from pathlib import Path

from activeit.errors import ModelLoadError
from activeit.models.builtin import DEFAULT_MODEL, smollm2_folder
from activeit.models.hub import hub_unreachable_reason
from activeit.models.tiny import TINY_MODELS, tiny_model_folder


def resolve_model_path(name: str) -> str:
    """The folder or hub id that ``from_pretrained`` should read for ``name``."""
    if name == DEFAULT_MODEL:
        return str(smollm2_folder())
    if name in TINY_MODELS:
        return str(tiny_model_folder(name))
    return name


def local_folder(name: str) -> Path | None:
    """``name``'s local folder, or None for a hub id while the hub is reachable; a missing
    folder or an unreachable hub is one :class:`ModelLoadError` line."""
    source = resolve_model_path(name)
    local = Path(source).expanduser()
    if local.exists():
        return local
    if source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise ModelLoadError(f"model folder '{source}' does not exist (--model / model: names a folder, "
                             f"a hub id or a built-in model: {', '.join((DEFAULT_MODEL, *TINY_MODELS))})")
    if reason := hub_unreachable_reason():
        raise ModelLoadError(unreachable_message(name, reason))
    return None


def unreachable_message(name: str, reason: str) -> str:
    """Why ``name`` cannot be loaded while the hub is out of reach: a bare name (no ``owner/``)
    is most likely a mistyped built-in name, so that is said first, with the nearest one."""
    builtin = (DEFAULT_MODEL, *TINY_MODELS)
    if "/" in name:
        return (f"cannot load model '{name}' from the Hugging Face hub ({reason}); pass a local "
                "folder or a built-in name, or set HF_HUB_OFFLINE=1 to use a cached copy")
    close = difflib.get_close_matches(name, builtin, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return (f"model '{name}' is not a built-in model ({', '.join(builtin)}) or a local folder{hint}, and as a "
            f"Hugging Face hub id it cannot be reached ({reason})")

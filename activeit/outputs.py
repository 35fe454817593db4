"""Output folders and files that never destroy a model or the user's data and are never half-written.

Every folder activeit writes carries a marker file recording the command that wrote it and
the files it wrote. Without ``overwrite`` a command replaces only a folder that the same
command wrote and that holds none but those files; ``--out`` may never be the current
folder (or hold it), nor be or hold the model or the pool a command reads, even with
``overwrite``; an existing output file is replaced only when told. The checks run *before*
a model loads or anything is computed (:func:`check_output_dir`, :func:`check_output_file`);
a folder is written into a temporary sibling and swapped in at the end (:func:`output_dir`,
:func:`write_text`): a failure leaves what was there before untouched. A cached folder
(:func:`build_once`) is built the same way, once, and then kept.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from activeit.errors import ConfigError

#: Written into every folder activeit creates: which command wrote it, and its files.
MARKER = ".activeit-output"
#: The command whose output a folder is when none is named: the training library writes
#: model folders for ``train`` and for the pipeline's fine-tuning step alike.
MODEL_COMMAND = "train"
#: What a built-once cache folder records as its writer (never replaced).
CACHE_COMMAND = "cache"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable(folder: Path, what: str) -> None:
    """One line naming ``what`` when nothing can be created in ``folder`` (or its nearest
    existing ancestor, where the missing parents would be made)."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise ConfigError(f"{what}: '{existing}' is a file, not a folder; choose another path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".activeit-probe-", dir=existing)
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write in '{existing}' ({exc.strerror.lower()}); choose a writable path") from None
    os.close(handle)
    os.unlink(probe)


#: Environment variables that name folders of the user's caches and settings.
USER_FOLDER_VARIABLES = ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "HF_HOME", "TORCH_HOME",
                         "ACTIVEIT_CACHE", "ZENML_CONFIG_PATH", "MLFLOW_TRACKING_DIR", "VIRTUAL_ENV")


def user_folders() -> dict[str, Path]:
    """Folders no output may be or hold, whatever ``overwrite`` says: the home folder, its
    caches and settings (~/.cache, ~/.config, ~/.local and those the environment names),
    this Python's environment, and the file system's root."""
    home = Path.home()
    found = {"home folder": home, "cache folder": home / ".cache", "settings folder": home / ".config",
             "user data folder": home / ".local", "Python environment": Path(sys.prefix),
             "file system root": Path(Path.cwd().anchor or "/")}
    for name in USER_FOLDER_VARIABLES:
        if os.environ.get(name):
            found[f"${name} folder"] = Path(os.environ[name]).expanduser()
    return {name: folder.resolve() for name, folder in found.items()}


def _check_user_folders(target: Path, path: Path, what: str) -> None:
    """Refuse an output that is or holds one of :func:`user_folders`, or that is a top-level
    folder of the file system (/tmp, /home, ...), or that lies inside another activeit output
    (a trained model's folder, a cache): writing there would replace or mix with it."""
    for name, folder in user_folders().items():
        if target == folder or target in folder.parents:
            relation = "is" if target == folder else "holds"
            raise ConfigError(f"{what}: '{path}' {relation} the {name} ({folder}); activeit never writes over it, "
                              "even with --overwrite; give a folder of its own, e.g. runs/out")
    if target.parent == target.parent.parent and target != target.parent:
        raise ConfigError(f"{what}: '{path}' is a top-level folder of the file system; give a folder of its own "
                          f"inside it, e.g. {target / 'activeit-out'}")
    for ancestor in target.parents:
        if (ancestor / MARKER).is_file():
            record = _record(ancestor)
            writer = f"'{record['command']}'" if record else "activeit"
            raise ConfigError(f"{what}: '{path}' lies inside '{ancestor}', the output of {writer}; writing there "
                              "would mix with it; give a folder outside it")


def _check_protected(path: Path, what: str, protect: Mapping[str, str | Path] | None, other: str) -> None:
    """Refuse, even with ``overwrite``, an output that is or holds the current folder, one of
    :func:`user_folders` or one of ``protect`` (what it is -> its path: the model folder, the
    pool a command reads), or that lies inside another activeit output; ``other`` names what
    to give instead."""
    target, here = path.resolve(), Path.cwd().resolve()
    if target == here:
        raise ConfigError(f"{what}: '{path}' is empty or the current folder ('{here}'); give a folder of its "
                          "own, e.g. runs/out")
    if target in here.parents:
        raise ConfigError(f"{what}: '{path}' holds the current folder ('{here}'); give a folder of its "
                          "own, e.g. runs/out")
    _check_user_folders(target, path, what)
    for name, kept in (protect or {}).items():
        kept_path = Path(kept).expanduser()
        resolved = kept_path.resolve()
        if target == resolved:
            raise ConfigError(f"{what}: '{path}' is the {name}; writing there would replace it, so choose another "
                              f"{other}")
        if target in resolved.parents:
            raise ConfigError(f"{what}: '{path}' contains the {name} '{kept_path}'; writing there would replace it, "
                              f"so choose another {other}")


def _entries(folder: Path) -> list[str]:
    """Every file and folder under ``folder`` (relative, sorted), the marker left out."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name != MARKER or p.parent != folder)


def _record(folder: Path) -> dict[str, object] | None:
    """The marker of ``folder`` (command and files); None when it records neither."""
    try:
        record = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("command"), str) or not isinstance(record.get("files"), list):
        return None
    return record


def _check_replaceable(path: Path, what: str, command: str) -> None:
    """Refuse a non-empty folder unless ``command`` wrote it and it holds none but its files."""
    if not (path / MARKER).exists():
        raise ConfigError(f"{what}: '{path}' already holds files activeit did not write; choose an empty or new "
                          "folder, or pass --overwrite to replace its contents")
    record = _record(path)
    if record is None:
        raise ConfigError(f"{what}: '{path}' was written by an older activeit whose marker does not record which "
                          "files it wrote; choose another folder, or pass --overwrite to replace its contents")
    if record["command"] != command:
        raise ConfigError(f"{what}: '{path}' holds the output of '{record['command']}', not of '{command}'; "
                          "choose another folder, or pass --overwrite to replace its contents")
    others = sorted(set(_entries(path)) - set(map(str, record["files"])))
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise ConfigError(f"{what}: '{path}' holds files '{command}' did not write ({shown}); move them away or "
                          "choose another folder, or pass --overwrite to replace its contents")


def check_output_dir(
    path: str | Path, what: str = "--out", overwrite: bool = False, *, command: str = MODEL_COMMAND,
    protect: Mapping[str, str | Path] | None = None,
) -> Path:
    """Check, before any compute, that ``path`` can become ``command``'s output folder: not
    the current folder nor one of ``protect`` (or a folder holding them), not a file, new or
    empty or ``command``'s own output (unless ``overwrite``), and writable."""
    path = Path(path).expanduser()
    _check_protected(path, what, protect, "folder")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: '{path}' is a file; give a folder (it is created if missing)")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        _check_replaceable(path, what, command)
    _check_writable(path.parent, what)
    return path


def check_output_file(
    path: str | Path, what: str = "--out", overwrite: bool = False, *, protect: Mapping[str, str | Path] | None = None,
) -> Path:
    """Check, before any compute, that the file ``path`` can be written (it is replaced
    atomically): not one of ``protect``, not a folder, not an existing file unless ``overwrite``."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what}: '{path}' is a folder; give a file name")
    _check_protected(path, what, protect, "file name")
    if path.exists() and not overwrite:
        raise ConfigError(f"{what}: '{path}' already exists; choose another file name, or pass --overwrite to "
                          "replace it")
    _check_writable(path.parent, what)
    return path


def _temporary_sibling(path: Path) -> Path:
    """A new empty folder next to ``path`` (its parents made), to be renamed to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))


def _mark(folder: Path, command: str) -> None:
    """Record ``command`` and the files it wrote in ``folder``."""
    record = {"command": command, "files": _entries(folder),
              "note": "written by activeit; the same command may replace this folder while it holds only these files"}
    (folder / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


@contextlib.contextmanager
def output_dir(
    path: str | Path, overwrite: bool = False, what: str = "--out", *, command: str = MODEL_COMMAND,
) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path`` to write into; when the block succeeds it
    replaces ``path`` (marked as ``command``'s, with the files written), when it fails it is
    removed and ``path`` stays as it was."""
    path = check_output_dir(path, what, overwrite, command=command)
    tmp = _temporary_sibling(path)
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    try:
        yield tmp
        _mark(tmp, command)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def build_once(path: str | Path, build: Callable[[Path], None]) -> Path:
    """The cached folder ``path``, built by ``build(tmp)`` in a temporary sibling (marked as
    activeit's) and renamed into place only when ``build`` succeeds. An existing ``path`` is
    kept as it is: built before, or by a concurrent process that won the race."""
    path = Path(path)
    if path.exists():
        return path
    tmp = _temporary_sibling(path)
    try:
        build(tmp)
        _mark(tmp, CACHE_COMMAND)
        try:
            tmp.rename(path)
        except OSError:  # another process renamed its build into place first
            if not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path

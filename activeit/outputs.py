"""Output folders and files that never destroy the user's data and are never half-written.

Every folder activeit writes carries a marker file. A command refuses an output folder that
holds files it did not write (unless told ``overwrite``), checks that it can write there
*before* it loads a model or computes anything (:func:`check_output_dir`,
:func:`check_output_file`), writes into a temporary sibling and swaps it in at the end
(:func:`output_dir`, :func:`write_text`): a failure leaves what was there before untouched.
A cached folder (:func:`build_once`) is built the same way, once, and then kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from activeit.errors import ConfigError

#: Written into every folder activeit creates: such a folder may be replaced by a new run.
MARKER = ".activeit-output"


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


def check_output_dir(path: str | Path, what: str = "--out", overwrite: bool = False) -> Path:
    """Check, before any compute, that ``path`` can become an output folder: not a file, not
    a folder of someone else's files (unless ``overwrite``), and writable."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: '{path}' is a file; give a folder (it is created if missing)")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).exists() and not overwrite:
        raise ConfigError(
            f"{what}: '{path}' already holds files activeit did not write; choose an empty or new "
            "folder, or pass --overwrite to replace its contents"
        )
    _check_writable(path.parent, what)
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """Check, before any compute, that the file ``path`` can be written (it is replaced atomically)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what}: '{path}' is a folder; give a file name")
    _check_writable(path.parent, what)
    return path


def _temporary_sibling(path: Path) -> Path:
    """A new empty folder next to ``path`` (its parents made), to be renamed to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))


def _mark(folder: Path) -> None:
    (folder / MARKER).write_text("written by activeit; a new run may replace this folder\n", encoding="utf-8")


@contextlib.contextmanager
def output_dir(path: str | Path, overwrite: bool = False, what: str = "--out") -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``path`` to write into; when the block succeeds it
    replaces ``path`` (marked as activeit's), when it fails it is removed and ``path`` stays
    as it was."""
    path = check_output_dir(path, what, overwrite)
    tmp = _temporary_sibling(path)
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    try:
        yield tmp
        _mark(tmp)
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
        _mark(tmp)
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

"""Finding the processes of a launch: by a text in their command line (the launch's folder)."""

from __future__ import annotations

from pathlib import Path


def pids_holding(text: str) -> list[int]:
    """The pids of the processes whose command line holds ``text``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # gone meanwhile
            continue
    return pids

"""Tracking that holds the load: 8 smoke pairs at once, each its own run.py process with
one CPU thread, against ``mlflow server`` over a PostgreSQL that the test starts itself
(Debian's postgresql package, as the postgres user under root, a free loopback port, its
folder removed after), in a fresh ZenML store of ZenML's local SQLite kind: every pair's
run is there with every round's metrics, files and model versions, every ZenML run
completed, and no log names a lock error (benchmarks/tracking_load.py, which also
measures the default SQLite set-up)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from benchmarks.tracking_load import measure
from tracking.server import postgres_bin

pytestmark = pytest.mark.slow
PAIRS = 8
#: The peak memory of one smoke pair's run.py process (ZenML, MLflow, torch, the tiny model).
PAIR_MEMORY_GB = 1.3


def _at_once() -> int:
    """All 8 at once (1 thread each: 8 concurrent writers, the CPU work of 8 pairs in any
    case) where the memory holds them, else as many as it holds (at least 2)."""
    try:
        available = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemAvailable:")) / 2**20
    except (OSError, StopIteration):
        return PAIRS
    return max(2, min(PAIRS, int(available / PAIR_MEMORY_GB)))


def test_concurrent_pairs_lose_nothing_on_a_postgresql_tracking_server() -> None:
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian/Ubuntu: apt-get install postgresql; .ci/run installs it)")
    folder = Path(tempfile.mkdtemp(prefix="activeit-load-"))
    folder.chmod(0o711)  # the postgres user passes through to its own folder
    try:
        problems, _ = measure("postgres", PAIRS, _at_once(), folder)
        assert problems == []
        assert not (folder / "postgres" / "data" / "postmaster.pid").exists()  # (stopped; the folder goes below)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

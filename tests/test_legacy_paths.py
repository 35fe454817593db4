"""Artifacts stored before the move into subpackages name their types by the old module
paths; those paths still import, as the very same modules (for one release)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activeit.legacy_paths import MOVED

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("old", "new"), sorted(MOVED.items()))
def test_an_old_path_is_the_moved_module(old: str, new: str) -> None:
    moved = importlib.import_module(new)
    assert importlib.import_module(old) is moved
    assert moved.__spec__.name == new  # the module keeps its own spec


def test_a_type_stored_under_its_old_path_loads(tmp_path: Path) -> None:
    """ZenML loads a stored artifact's type by its recorded path (source_utils.load)."""
    code = (
        "from zenml.utils import source_utils\n"
        "from activeit.data.tasks import TaskPool\n"
        "from activeit.selection.strategies import Selection\n"
        "assert source_utils.load('activeit.tasks.TaskPool') is TaskPool\n"
        "assert source_utils.load('activeit.strategies.Selection') is Selection\n"
        "print('ok')"
    )
    script = tmp_path / "load_old_path.py"  # ZenML needs a main module file to find its source root
    script.write_text(code)
    env = {**os.environ, "ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert result.stdout.strip() == "ok", result.stderr[-2000:]

"""The quickstart as a new user types it: ``./install.sh`` made ``.venv`` (CI runs it with a
PATH that holds only the system ``python3``: .ci/run), and the smoke run works from it, ending
with the round table and the commands that open the MLflow UI and the ZenML dashboard."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from experiment.config import CONFIG_DIR, REPO_ROOT

pytestmark = pytest.mark.slow
VENV = REPO_ROOT / ".venv"


def _venv_home() -> str:
    """The interpreter folder the environment was made from (``home`` in pyvenv.cfg)."""
    for line in (VENV / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return value.strip()
    return ""


def test_install_made_a_virtual_environment() -> None:
    if not (VENV / "bin" / "python").exists():
        pytest.skip("no .venv: run ./install.sh (CI does)")
    assert _venv_home(), "pyvenv.cfg names no base interpreter"
    pip = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "show", "activeit", "torch", "zenml"],
                         capture_output=True, text=True, check=True).stdout
    assert "Version: 2.13.0" in pip and "Version: 0.98.0" in pip  # torch pinned (CPU), zenml pinned
    assert f"Editable project location: {REPO_ROOT}" in pip


def test_smoke_run_from_the_installed_environment(tmp_path: Path) -> None:
    if not (VENV / "bin" / "python").exists():
        pytest.skip("no .venv: run ./install.sh (CI does)")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ZENML_", "MLFLOW_", "ACTIVEIT_ZENML"))}
    env |= {"ZENML_CONFIG_PATH": str(tmp_path / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
    done = subprocess.run(
        [".venv/bin/python", "run.py", "--strategy", "uncertainty", "--config", str(CONFIG_DIR / "smoke.yaml"),
         "--rounds", "1", "--experiment", "activeit-quickstart"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    tail = done.stdout.splitlines()[-14:]
    assert any(line.split()[:2] == ["base", "0"] for line in tail), tail
    assert any(line.split()[:1] == ["1"] for line in tail), tail
    assert any(".venv/bin/mlflow ui --backend-store-uri sqlite:///" in line for line in tail), tail
    assert any("workflowType=machine_learning" in line for line in tail), tail
    assert any(".venv/bin/zenml login --local" in line for line in tail), tail

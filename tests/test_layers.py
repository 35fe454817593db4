"""The architecture's promises, checked on the source: layers point down, light modules stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module a file imports (at any depth of the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("activeit", ("zenml", "mlflow", "steps", "pipelines", "materializers")),
        ("steps", ("pipelines",)),
        ("materializers", ("steps", "pipelines", "mlflow")),
    ],
)
def test_layers_only_point_down(layer: str, forbidden: tuple[str, ...]) -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / layer).rglob("*.py"))
        for name in imported_modules(path)
        if name.split(".")[0] in forbidden
    ]
    assert not offenders, offenders


def test_light_modules_do_not_import_torch() -> None:
    """Validating a config, selecting, plotting a task map and reading scores need no torch."""
    light = ("activeit.config.experiment", "activeit.config.settings", "activeit.scoring.scores", "activeit.selection.strategies",
             "activeit.selection.taskmap", "activeit.evaluation", "activeit.data.sources", "activeit.config.flags")
    code = f"import sys\nimport {', '.join(light)}\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_strategy_names_are_declared_once() -> None:
    declaring = [
        path.relative_to(ROOT).as_posix()
        for path in sorted(ROOT.glob("*/**/*.py"))
        if "tests" not in path.parts and not path.relative_to(ROOT).parts[0].startswith(".")  # not .venv
        if '"high-perplexity", "low-perplexity"' in path.read_text(encoding="utf-8")
    ]
    assert declaring == ["activeit/selection/strategies.py"]

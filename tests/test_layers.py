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
        ("activeit", ("zenml", "mlflow", "steps", "pipelines", "materializers", "tracking", "experiment")),
        ("experiment", ("zenml", "mlflow", "steps", "pipelines", "materializers", "tracking")),
        ("tracking", ("zenml", "steps", "pipelines", "materializers")),
        ("materializers", ("steps", "pipelines", "tracking", "mlflow")),
        ("steps", ("pipelines",)),
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


def test_only_tracking_talks_to_mlflow() -> None:
    """Every MLflow read and write, run status and run name is tracking/'s: no other layer, nor
    run.py, imports mlflow (ZenML's own MLflow integration, ``zenml.integrations.mlflow``, is
    ZenML's; benchmarks and tests read MLflow as any user would)."""
    sources = [ROOT / "run.py", *(path for layer in ("activeit", "experiment", "steps", "pipelines", "materializers")
                                  for path in sorted((ROOT / layer).rglob("*.py")))]
    offenders = [f"{path.relative_to(ROOT)} imports {name}" for path in sources
                 for name in imported_modules(path) if name.split(".")[0] == "mlflow"]
    assert not offenders, offenders


def test_a_run_is_named_in_one_place() -> None:
    """The name of a pipeline run and its MLflow run is :func:`tracking.policy.run_name`'s alone."""
    building = [
        path.relative_to(ROOT).as_posix()
        for layer in ("activeit", "experiment", "steps", "pipelines", "tracking", "materializers")
        for path in sorted((ROOT / layer).rglob("*.py"))
        if "-seed{" in path.read_text(encoding="utf-8")
    ]
    assert building == ["tracking/policy.py"]


#: The library's rooms from the ground up: a room imports only rooms below it (and itself).
LIBRARY_FLOORS = (
    ("errors",),
    ("outputs", "legacy_paths"),
    ("config",),
    ("models",),
    ("data",),
    ("scoring",),
    ("selection", "training", "evaluation"),
    ("study",),
    ("cli",),
    ("__main__",),
)


def _room(module: str) -> str:
    """``activeit.scoring.engine.forcing`` -> ``scoring``."""
    return module.split(".")[1] if module.count(".") else module


def test_library_rooms_only_import_rooms_below() -> None:
    floor = {room: level for level, rooms in enumerate(LIBRARY_FLOORS) for room in rooms}
    offenders = []
    for path in sorted((ROOT / "activeit").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if len(parts) == 2 and parts[1] == "__init__":
            continue
        room = parts[1]
        assert room in floor, f"activeit/{room} has no floor in LIBRARY_FLOORS"
        for name in imported_modules(path):
            if name.startswith("activeit.") and _room(name) != room and floor[_room(name)] >= floor[room]:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, offenders


def test_only_the_scorer_and_the_evaluator_use_the_engine() -> None:
    """The shared-prefix engine is the scorer's; evaluation decodes through it too; nobody else."""
    users = sorted(
        path.relative_to(ROOT).as_posix()
        for path in ROOT.glob("*/**/*.py")
        if path.relative_to(ROOT).parts[0] in ("activeit", "experiment", "steps", "pipelines", "tracking", "materializers")
        and any(name.startswith("activeit.scoring.engine") for name in imported_modules(path))
    )
    outside = [user for user in users if not user.startswith(("activeit/scoring/", "activeit/evaluation.py"))]
    assert not outside, outside
    assert "activeit/evaluation.py" in users


def test_light_modules_do_not_import_torch() -> None:
    """Validating a config, selecting, plotting a task map and reading scores need no torch."""
    light = ("experiment.config", "activeit.config.settings", "activeit.scoring.scores", "activeit.selection.strategies",
             "activeit.selection.taskmap", "activeit.evaluation", "activeit.data.sources", "activeit.config.flags")
    code = f"import sys\nimport {', '.join(light)}\nprint('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_strategy_names_are_declared_once() -> None:
    declaring = [
        path.relative_to(ROOT).as_posix()
        for path in sorted(ROOT.glob("*/**/*.py"))
        if "tests" not in path.parts and not path.relative_to(ROOT).parts[0].startswith(".")  # not .venv
        if '"low-perplexity"' in path.read_text(encoding="utf-8")
    ]
    assert declaring == ["activeit/selection/strategies.py"]

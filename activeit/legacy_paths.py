"""Old module paths, kept importable for one release (0.1.x) after the move into subpackages.

Artifacts that ZenML stored before the move record their types by the old paths (a cached
``TaskPool`` says ``activeit.tasks.TaskPool``). :func:`install` makes ``import activeit.tasks``
return the module that now lives at ``activeit.data.tasks``, so such a cache still loads.
Modules whose old name is now a package's (``activeit.config``, ``activeit.models``,
``activeit.scoring``, ``activeit.training``, ``activeit.study``) held no stored types.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

#: Old dotted path -> where the module lives now.
MOVED: dict[str, str] = {
    "activeit.tasks": "activeit.data.tasks",
    "activeit.prompts": "activeit.data.prompts",
    "activeit.perturb": "activeit.data.perturbations",
    "activeit.sources": "activeit.data.sources",
    "activeit.settings": "activeit.config.settings",
    "activeit.devices": "activeit.models.devices",
    "activeit.batching": "activeit.models.batching",
    "activeit.scores": "activeit.scoring.scores",
    "activeit.scoring_reference": "activeit.scoring.reference",
    "activeit.forcing": "activeit.scoring.engine.forcing",
    "activeit.prefix_cache": "activeit.scoring.engine.prefix_cache",
    "activeit.prefix_decoding": "activeit.scoring.engine.decoding",
    "activeit.generation": "activeit.scoring.engine.generation",
    "activeit.strategies": "activeit.selection.strategies",
    "activeit.taskmap": "activeit.selection.taskmap",
    "activeit.study_plots": "activeit.study.plots",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.own_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        """The target module ran when it was imported; keep its own spec (importlib set the alias's)."""
        module.__spec__ = self.own_spec


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: Any = None) -> ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, _Alias(MOVED[fullname]))


def install() -> None:
    """Resolve the old paths from now on (once per interpreter)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())

"""Typed errors of the library: each names the file and field at fault and the fix."""

from __future__ import annotations

from pathlib import Path


class ActiveITError(Exception):
    """Base class of every error the library raises on purpose."""


class TaskFormatError(ActiveITError):
    """A task file (or record) is malformed."""

    def __init__(self, path: str | Path, field: str, problem: str, fix: str = "") -> None:
        self.path = str(path)
        self.field = field
        self.problem = problem
        self.fix = fix
        message = f"{self.path}: field '{field}': {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class PoolError(ActiveITError):
    """A task pool cannot be built (missing path, missing split file, empty pool, ...)."""


class PoolSettingError(PoolError):
    """A pool setting does not fit the pool's source (``key`` names it, for the config's error)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class ModelLoadError(ActiveITError):
    """A model cannot be loaded (unknown name, no network, unsafe weights, ...)."""


class ConfigError(ActiveITError):
    """An experiment configuration is invalid."""


class TrainingError(ActiveITError):
    """Fine-tuning failed (non-finite loss, empty data, ...)."""

"""The validated experiment configuration: one pydantic model, loaded from YAML.

A config file describes one experiment (one MLflow experiment): the task pool, the base
model, the strategy and the round schedule, and the settings of scoring, training,
evaluation and tracking. Unknown keys are rejected with one line naming the key and the
file. Relative paths resolve against the repository root, not the working directory.

The section fields mirror the library's dataclasses (``ScoringConfig``,
``TrainingConfig``, ``EvalConfig``); :func:`to_dataclass` builds those from a section.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from activeit.errors import ConfigError

#: The repository root: relative paths in configs resolve against it.
REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

#: Mirrors ``activeit.strategies.STRATEGIES`` (kept here so that validating a config does
#: not import torch).
STRATEGIES = (
    "uncertainty", "random", "high-perplexity", "low-perplexity", "all",
    "ambiguous", "easy", "difficult",
)
SOURCES = ("niv2", "self-instruct", "hub", "builtin")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolSection(_Section):
    """Where the task pool comes from and how it is split."""

    source: Literal["niv2", "self-instruct", "hub", "builtin"] = "builtin"
    path: str | None = None
    split_dir: str = "default"
    english_only: bool = True
    max_instances: int | None = Field(default=None, ge=1)
    validation_tasks: int = Field(default=0, ge=0)
    test_tasks: int = Field(default=0, ge=0)
    skip_invalid: bool = False

    @model_validator(mode="after")
    def _path_required(self) -> PoolSection:
        if self.source in ("niv2", "self-instruct", "hub") and not self.path:
            raise ValueError(f"pool source '{self.source}' needs a 'path'")
        return self


class ScoringSection(_Section):
    """Prompt-uncertainty scoring (``activeit.scoring.ScoringConfig``)."""

    n: int = Field(default=10, ge=1)
    k: int = Field(default=10, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    max_source_length: int = Field(default=1024, ge=16)
    perturbation: str = "word_drop"
    drop_prob: float = Field(default=0.2, ge=0.0, le=1.0)
    token_budget: int | None = Field(default=None, ge=1)
    logit_budget: int | None = Field(default=None, ge=1)
    tasks_per_chunk: int | None = Field(default=None, ge=1)
    reuse_prefix: bool = True


class TrainingSection(_Section):
    """Fine-tuning (``activeit.training.TrainingConfig``) and how it is launched."""

    epochs: int = Field(default=8, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    warmup_steps: int = Field(default=50, ge=0)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_instances_per_task: int = Field(default=200, ge=1)
    max_source_length: int = Field(default=1024, ge=16)
    max_target_length: int = Field(default=128, ge=1)
    gradient_checkpointing: bool = False
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    max_steps: int | None = Field(default=None, ge=1)
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    #: >1 launches ``accelerate launch --num_processes N`` (CPU: gloo; GPU: one per device).
    num_processes: int = Field(default=1, ge=1)
    #: retrain: every round from the base model on all tasks selected so far (reference);
    #: continue: from the previous round's model on the newly selected tasks.
    mode: Literal["retrain", "continue"] = "retrain"


class EvaluationSection(_Section):
    """ROUGE-L evaluation on the test tasks (``activeit.evaluation.EvalConfig``)."""

    max_instances_per_task: int = Field(default=100, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    max_source_length: int = Field(default=1024, ge=16)
    token_budget: int | None = Field(default=None, ge=1)


class TrackingSection(_Section):
    """MLflow: one experiment per config; the stack's tracker URI unless one is given."""

    experiment: str = "activeit"
    tracking_uri: str | None = None


class ZenMLSection(_Section):
    """Orchestration: a stack to use and pipeline settings passed to ZenML unchanged
    (``docker``, ``resources``, ``orchestrator.<flavor>``, ...)."""

    stack: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    enable_cache: bool = True


class ExperimentConfig(_Section):
    """One active-tuning experiment."""

    pool: PoolSection = PoolSection()
    model: str = "smollm2-135m-instruct"
    #: Wrap prompts in the model's chat template (None: decide from the model), the same
    #: way in scoring, training and evaluation.
    chat: bool | None = None
    strategy: str = "uncertainty"
    #: Selection rounds after round 0 (round 0 is the random initial set).
    rounds: int = Field(default=4, ge=0)
    initial_tasks: int = Field(default=68, ge=1)
    tasks_per_round: int = Field(default=68, ge=1)
    seed: int = 0
    classification_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    scoring: ScoringSection = ScoringSection()
    training: TrainingSection = TrainingSection()
    evaluation: EvaluationSection = EvaluationSection()
    tracking: TrackingSection = TrackingSection()
    #: A cron expression: the pipeline is scheduled instead of run (orchestrator permitting).
    schedule: str | None = None
    zenml: ZenMLSection = ZenMLSection()

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy '{value}'; choose one of {', '.join(STRATEGIES)}")
        return value

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) not in (5, 6):
            raise ValueError(f"'{value}' is not a cron expression (5 fields: m h dom mon dow)")
        return value

    @property
    def selection_rounds(self) -> int:
        """Rounds after round 0 that select tasks: ``all`` takes the whole rest at once."""
        return min(self.rounds, 1) if self.strategy == "all" else self.rounds

    @property
    def tasks_needed(self) -> int:
        """Training tasks the schedule consumes (``all``: just the initial set up front)."""
        if self.strategy == "all":
            return self.initial_tasks
        return self.initial_tasks + self.rounds * self.tasks_per_round

    @property
    def registered_model_name(self) -> str:
        """The MLflow registered model holding every round's model of this strategy."""
        return f"{self.tracking.experiment}-{self.strategy}"

    def check_budget(self, pool_size: int, pool_name: str = "pool") -> None:
        """Raise :class:`ConfigError` when the schedule needs more tasks than the pool has."""
        if self.tasks_needed > pool_size:
            raise ConfigError(
                f"impossible budget: initial_tasks {self.initial_tasks} + rounds {self.rounds} "
                f"x tasks_per_round {self.tasks_per_round} = {self.tasks_needed} tasks, but "
                f"{pool_name} has only {pool_size} selectable train tasks"
            )

    def flat(self) -> dict[str, Any]:
        """The config as ``{"section.key": value}`` (MLflow params)."""
        return flatten(self.model_dump(mode="json"))

    def digest(self) -> str:
        """A short stable hash of the full config."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> dotted keys; lists stay values."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[last] = value


def _describe(error: ValidationError, source: str) -> str:
    """The first validation problem as one line naming the key and the file."""
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key '{key}'"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] in ("value_error", "assertion_error") and not first["loc"]:
        return f"{source}: {message}"
    return f"{source}: key '{key}': {message}"


def parse_config(
    data: Mapping[str, Any] | None, source: str = "<config>", overrides: Mapping[str, Any] | None = None
) -> ExperimentConfig:
    """Validate a config mapping; ``overrides`` maps dotted keys to values (None = keep)."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys to values at the top level")
    merged = json.loads(json.dumps(dict(data or {})))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(merged, dotted, value)
    try:
        config = ExperimentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    return config.model_copy(update={"pool": config.pool.model_copy(update={"path": _resolve_pool_path(config.pool)})})


def _resolve_pool_path(pool: PoolSection) -> str | None:
    """A relative pool path resolved against the repository root (``~`` expanded); a hub
    id, which names no local file, is left as it is."""
    if pool.path is None or pool.source == "hub":
        return pool.path
    path = Path(pool.path).expanduser()
    return str(path if path.is_absolute() else (REPO_ROOT / path).resolve())


def load_config(path: str | Path = DEFAULT_CONFIG, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Read and validate a YAML config; errors are one line naming the file and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    return parse_config(data, str(path), overrides)


def to_dataclass(cls: type, section: BaseModel, **extra: Any) -> Any:
    """Build a library dataclass (``ScoringConfig``, ...) from a config section and extras.

    ``None`` values keep the dataclass default. A key the dataclass does not declare is
    dropped only while it holds its default (launch options such as ``num_processes``);
    otherwise it is an error, never a silent drop.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    defaults = {name: info.default for name, info in type(section).model_fields.items()}
    values = {**section.model_dump(), **extra}
    ignored = {k for k in values if k not in known and k in defaults and values[k] == defaults[k]}
    unknown = sorted(set(values) - known - ignored - {"num_processes", "mode"})
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {', '.join(unknown)}")
    return cls(**{k: v for k, v in values.items() if k in known and v is not None})

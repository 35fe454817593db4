"""The validated experiment configuration: one pydantic model, loaded from YAML.

A config file describes one experiment (one MLflow experiment): the task pool, the base
model, the strategy and the round schedule, the settings of scoring, training and
evaluation, and how it is tracked, orchestrated, studied and scheduled. Unknown keys are
rejected with one line naming the key and the file. Relative paths resolve against the
repository root, not the working directory. Every key a config leaves out takes the code's
default: the offline default regime (``configs/default.yaml`` states no value).

The pool, scoring, training, evaluation and diversity sections are the library's own
settings (:mod:`activeit.config.settings`); the tracking, zenml and study sections and the
schedule are the pipeline side's (:mod:`experiment.sections`), since the library knows
nothing of ZenML or MLflow. ``seed`` and ``chat`` are written once, at the top level:
validation passes them to every section, and a dump leaves the sections' copies out again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from activeit.config.settings import (
    REPO_ROOT,
    SHARED_FIELDS,
    DiversitySettings,
    EvaluationSettings,
    PoolSettings,
    ScoringSettings,
    TrainingSettings,
    WithChat,
    WithSeed,
    describe_error,
    repo_path,
)
from activeit.data.perturbations import PERTURBATIONS
from activeit.errors import ConfigError
from activeit.selection.strategies import STRATEGIES, check_adaptive
from experiment.sections import StudySettings, TrackingSettings, ZenMLSettings, check_cron, one_of

CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


#: Keys that may differ between the runs of one study (they name the pair, or how it ran).
PER_RUN_KEYS = ("strategy", "seed", "study.", "zenml.", "schedule")


class ExperimentConfig(WithSeed, WithChat):
    """One active-tuning experiment (``seed`` and ``chat`` hold for every section)."""

    pool: PoolSettings = PoolSettings()
    model: str = Field(
        default="smollm2-135m-instruct", description="base model: smollm2-135m-instruct, tiny-llama, a folder or a hub id"
    )
    strategy: str = Field(
        default="uncertainty", description=f"selection strategy: {', '.join(STRATEGIES)}",
        json_schema_extra={"metavar": "NAME"},
    )
    rounds: int = Field(default=2, ge=0, description="selection rounds after round 0 (round 0: the random initial set)")
    initial_tasks: int = Field(default=3, ge=1, description="random tasks of round 0")
    tasks_per_round: int = Field(default=3, ge=1, description="tasks selected per round")
    classification_ratio: float | None = Field(
        default=None, ge=0.0, le=1.0, description="share of classification tasks in each selection"
    )
    scoring: ScoringSettings = ScoringSettings()
    training: TrainingSettings = TrainingSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    diversity: DiversitySettings = DiversitySettings()
    tracking: TrackingSettings = TrackingSettings()
    schedule: str | None = Field(
        default=None, description='run on a schedule instead of now, a cron expression such as "0 3 * * 1" '
        "(needs an orchestrator that supports schedules)", json_schema_extra={"metavar": "CRON"},
    )
    zenml: ZenMLSettings = ZenMLSettings()
    study: StudySettings = StudySettings()

    @model_validator(mode="before")
    @classmethod
    def _seed_and_chat_once(cls, data: Any) -> Any:
        """Pass the top-level ``seed`` and ``chat`` to every section that has them; a section
        may not set its own."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        for section, names in SHARING.items():
            value = data.get(section, {})
            if isinstance(value, BaseModel):
                value = value.model_dump(exclude=set(names))
            if not isinstance(value, Mapping):
                continue  # pydantic reports it
            for name in names:
                if name in value:
                    raise ValueError(f"key '{section}.{name}': set '{name}' once, at the top level "
                                     "(it applies to every section)")
            data[section] = {**value, **{name: data[name] for name in names if name in data}}
        return data

    @model_serializer(mode="wrap")
    def _dump_seed_and_chat_once(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A dump holds ``seed`` and ``chat`` at the top level only, like a config file (and
        validates back)."""
        data = handler(self)
        for section, names in SHARING.items():
            for name in names:
                if isinstance(data.get(section), dict):
                    data[section].pop(name, None)
        return data

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        return one_of(value, STRATEGIES, "strategy")

    @field_validator("scoring")
    @classmethod
    def _known_perturbation(cls, value: ScoringSettings) -> ScoringSettings:
        one_of(value.perturbation, sorted(PERTURBATIONS), "perturbation")
        return value

    @model_validator(mode="after")
    def _adaptive_strategy(self) -> ExperimentConfig:
        """Adaptive scoring settles only the top b by PU: refuse it for a strategy ranking the whole table."""
        if self.scoring.adaptive:
            try:
                check_adaptive(self.strategy)
            except ValueError as error:
                raise ValueError(f"key 'scoring.adaptive': {error}") from None
        return self

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

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
        return _hash(self.model_dump(mode="json"))

    def study_key(self) -> str:
        """A short hash of what the runs of one study share: the config without
        :data:`PER_RUN_KEYS` (strategy, seed, how it was run)."""
        return _hash(shared_params(self.flat()))


#: The sections that take the top-level ``seed`` and ``chat``, and which of them
#: (``{"pool": ("seed",), "scoring": ("seed", "chat"), ...}``).
SHARING: dict[str, tuple[str, ...]] = {
    section: tuple(name for name in SHARED_FIELDS if name in field.annotation.model_fields)
    for section, field in ExperimentConfig.model_fields.items()
    if isinstance(field.annotation, type) and issubclass(field.annotation, (WithSeed, WithChat))
}


def shared_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config keys a study's runs must agree on (:data:`PER_RUN_KEYS` left out)."""
    return {key: value for key, value in flat.items() if not key.startswith(PER_RUN_KEYS)}


def _hash(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
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


def parse_config(
    data: Mapping[str, Any] | None,
    source: str = "<config>",
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> ExperimentConfig:
    """Validate a config mapping; ``overrides`` maps dotted keys to values (None = keep).
    A bad override is blamed on its command-line flag (``flags``: dotted key -> flag)."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys to values at the top level")
    merged = json.loads(json.dumps(dict(data or {})))
    for dotted, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(merged, dotted, value)
    try:
        config = ExperimentConfig.model_validate(merged)
    except ValidationError as exc:
        key = ".".join(str(part) for part in exc.errors()[0]["loc"])
        if overrides and overrides.get(key) is not None:
            flag = (flags or {}).get(key, key)
            raise ConfigError(describe_error(exc, "command line", lambda _: flag)) from None
        raise ConfigError(describe_error(exc, source)) from None
    return config.model_copy(update={"pool": config.pool.model_copy(update={"path": _resolve_pool_path(config.pool)})})


def _resolve_pool_path(pool: PoolSettings) -> str | None:
    """A relative pool path resolved against the repository root (``~`` expanded); a hub
    id, which names no local file, is left as it is."""
    if pool.path is None or pool.source == "hub":
        return pool.path
    return str(repo_path(pool.path).resolve())


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (the last would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_config(
    path: str | Path = DEFAULT_CONFIG,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, str] | None = None,
) -> ExperimentConfig:
    """Read and validate a YAML config; errors are one line naming the file and key (or the
    command-line flag of an override, see :func:`parse_config`)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file '{path}' is a folder; give a YAML file, e.g. configs/default.yaml")
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the config as UTF-8") from None
    if not text.strip():
        raise ConfigError(f"{path}: the config file is empty (start from configs/default.yaml)")
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506  (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or ""
        detail = f": {problem}" if problem.startswith("duplicate key") else ""
        raise ConfigError(f"{path}: not valid YAML{where}{detail}") from None
    if data is None:
        raise ConfigError(f"{path}: the config file is empty (only comments); start from configs/default.yaml")
    return parse_config(data, str(path), overrides, flags)

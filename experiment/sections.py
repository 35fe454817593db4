"""The orchestration sections of an experiment config: MLflow tracking, the ZenML stack and
settings, a study, and the cron check of a schedule.

Plain data (no ZenML or MLflow import): what they mean is decided by ``tracking/`` and
``pipelines/``. The library's own sections (pool, scoring, training, evaluation, diversity)
are :mod:`activeit.config.settings`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator

from activeit.config.settings import Seed, Settings
from activeit.evaluation import LOGLIK, STUDY_METRICS
from activeit.selection.strategies import STRATEGIES


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def one_of(value: str, known: Sequence[str], what: str) -> str:
    """``value`` when it is one of ``known``; else a ValueError naming the choices."""
    if value not in known:
        raise ValueError(f"unknown {what} '{value}'; choose one of {', '.join(known)}")
    return value


#: The five fields of a cron expression: name, range and the names a field may use for its
#: values (the orchestrators' cron, Kubernetes' among them, has no seconds field).
CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    ("day of week", 0, 7, ("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
)


def _cron_value(text: str, low: int, names: tuple[str, ...]) -> int:
    """One value of a cron field: a number, or a name (``jan`` = 1, ``sun`` = 0)."""
    if text.lower() in names:
        return names.index(text.lower()) + low
    if not text.isdigit():
        raise ValueError(text)
    return int(text)


def check_cron(value: str) -> str:
    """``value`` when it is a cron expression (``m h dom mon dow``) whose every value is in its
    field's range; else a ValueError naming the field."""
    fields = value.split()
    if len(fields) != len(CRON_FIELDS):
        raise ValueError(f"'{value}' is not a cron expression: it has {len(fields)} field(s), a cron expression 5 "
                         "(minute hour day-of-month month day-of-week; no seconds), e.g. \"0 3 * * 1\"")
    for text, (name, low, high, names) in zip(fields, CRON_FIELDS):
        for item in text.split(","):
            span, _, step = item.partition("/")
            try:
                if step and int(step) < 1:
                    raise ValueError(step)
                bounds = [] if span == "*" else [_cron_value(part, low, names) for part in span.split("-", 1)]
            except ValueError:
                raise ValueError(f"'{value}': {name} '{item}' is not a number, a range a-b, * or a step /n") from None
            for number in bounds:
                if not low <= number <= high:
                    raise ValueError(f"'{value}': {name} {number} is out of range {low}-{high}")
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                raise ValueError(f"'{value}': {name} range '{span}' runs backwards")
    return value


class TrackingSettings(Settings):
    """MLflow: one experiment per config; the stack's tracker URI unless one is given
    (``tracking/`` decides what these mean)."""

    experiment: Annotated[str, AfterValidator(_not_blank)] = Field(
        default="activeit-default", description="MLflow experiment name (not blank)",
        json_schema_extra={"flag": "--experiment"},
    )
    tracking_uri: str | None = None
    #: Which rounds' models get a registered MLflow version (pointing at the stored ZenML
    #: artifact; nothing is copied): every round, the last one, or none.
    log_models: Literal["all", "last", "none"] = "all"


class ZenMLSettings(Settings):
    """Orchestration: a stack to use and pipeline settings passed to ZenML unchanged
    (``docker``, ``resources``, ``orchestrator.<flavor>``, ...)."""

    stack: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    #: Settings of single steps by step name, on top of ``settings``: e.g. GPUs only for the
    #: steps that use them (``pipelines/`` checks the names before a run).
    step_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    enable_cache: bool = True


class StudySettings(Settings):
    """A study: every (strategy, seed) pair of runs, compared with statistics over seeds
    (``run.py --compare S1,S2 --seeds 0,1,2`` sets the same)."""

    strategies: list[str] = Field(default_factory=list)
    seeds: list[Seed] = Field(default_factory=list)
    metric: str = Field(
        default=LOGLIK,
        description=f"the metric a study's verdict compares strategies on: {' or '.join(STUDY_METRICS)} (loglik: the "
        "mean per-token log-likelihood of the reference answers, continuous, no decoding, and on the default "
        "study about half ROUGE-L's MDE, docs/STATISTICS.md; rougeL: the paper's, every table's headline)",
        json_schema_extra={"flag": "--metric", "metavar": "METRIC"},
    )

    parallel: int = Field(
        default=1, ge=1, description="pairs run at once: 1 runs them one after the other; K > 1 runs K seeds "
        "side by side (locally: K worker processes, the CPU cores or GPUs split between them; on a remote "
        "stack: K pairs submitted at a time without waiting)",
        json_schema_extra={"flag": "--parallel", "metavar": "K"},
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        return one_of(value, STUDY_METRICS, "study.metric")

    @field_validator("strategies")
    @classmethod
    def _known_strategies(cls, value: list[str]) -> list[str]:
        for name in value:
            one_of(name, STRATEGIES, "strategy")
        if len(set(value)) != len(value):
            raise ValueError(f"strategies are repeated in {value}")
        return value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError(f"seeds are repeated in {value}")
        return value

"""Scores of prompt uncertainty: per instance, per task, the table, and the formulas (no torch).

docs/METHOD.md ("Prompt uncertainty"), for one task with ``n`` instances and ``k`` perturbed prompts: ``L_ij`` is the
mean per-token NLL of the greedy prediction ``y_i`` (EOS included) under prompt ``j``
(``j = 0`` the original), ``p_ij = exp(-L_ij)``, and

* ``PU = mean_{i, j>=1} |p_ij - p_i0|`` (prompt uncertainty),
* ``PP = mean_i p_i0`` (prediction probability),
* ``perplexity = mean_i exp(L_i0)``.

Adaptive scoring (:mod:`activeit.scoring.adaptive`) may stop a task before all its pairs are
scored: its unscored ``p_ij`` are NaN, PU is then the mean over the pairs scored, and the row
says how many pairs are behind it, the interval of PU and whether it stopped surely inside or
outside the top b. :func:`task_metrics` is the one place these formulas live; everything that selects,
plots, stores or tracks scores depends on this module only, never on the scorer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from activeit.errors import ActiveITError
from activeit.data.tasks import Task

TABLE_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class InstanceScore:
    """Per-instance detail: the greedy prediction and its probabilities under each prompt."""

    task: str
    instance_id: str
    prediction: str
    prediction_tokens: int  # including the EOS token
    nll0: float  # L_i0, mean NLL per token under the original prompt
    p0: float  # p_i0 = exp(-L_i0)
    p: tuple[float, ...]  # p_ij for j = 1..k (NaN: not scored, adaptive scoring stopped before it)


#: :attr:`TaskScore.decided` of a task that adaptive scoring stopped early, surely inside or outside the top b.
DECISIONS = ("in", "out")


@dataclass(frozen=True)
class TaskScore:
    """One task's scores. ``category`` is the task's own category (e.g. NIV2's), not its task-map one.

    ``n`` and ``k`` count the instances and perturbed prompts behind the scores, ``pairs`` the
    (instance, perturbed prompt) pairs behind PU (``n * k`` unless stopped early) and
    ``[pu_low, pu_high]`` is PU's interval (``[pu, pu]`` when every pair is scored); ``decided``
    is ``"in"`` / ``"out"`` for a task adaptive scoring stopped surely inside / outside the top b,
    ``""`` for one scored in full. Rows written before these fields existed load with them so.
    """

    task: str
    pu: float
    pp: float
    perplexity: float
    n: int
    k: int
    is_classification: bool
    category: str
    pairs: int | None = None
    pu_low: float | None = None
    pu_high: float | None = None
    decided: str = ""

    def __post_init__(self) -> None:
        for name, value in (("pairs", self.n * self.k), ("pu_low", self.pu), ("pu_high", self.pu)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
        if self.decided not in ("", *DECISIONS):
            raise ActiveITError(f"task '{self.task}': decided must be '', 'in' or 'out', got {self.decided!r}")

    @property
    def stopped_early(self) -> bool:
        return bool(self.decided)


def task_metrics(nll: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """``(PU, PP, perplexity)`` from ``nll[i][j]`` = L_ij (j = 0 the original prompt; a NaN
    L_ij with j >= 1 is a pair not scored, and PU is the mean over the pairs that are)."""
    if not nll or any(len(row) < 2 for row in nll):
        raise ActiveITError("task_metrics needs at least one instance and one perturbed prompt")
    p = [[math.exp(-value) for value in row] for row in nll]
    terms = [abs(pij - row[0]) for row in p for pij in row[1:] if not math.isnan(pij)]
    if not terms:
        raise ActiveITError("task_metrics needs at least one scored (instance, perturbed prompt) pair")
    pu = sum(terms) / len(terms)
    pp = sum(row[0] for row in p) / len(p)
    perplexity = sum(math.exp(row[0]) for row in nll) / len(nll)
    return pu, pp, perplexity


def summarize_task(task: Task, instances: Sequence[InstanceScore]) -> TaskScore:
    """The task's row from its per-instance detail."""
    if not instances:
        raise ActiveITError(f"task '{task.name}' has no scored instances")
    nll = [[s.nll0, *(math.nan if math.isnan(p) else -math.log(max(p, 1e-300)) for p in s.p)] for s in instances]
    pu, pp, perplexity = task_metrics(nll)
    scored = [[not math.isnan(p) for p in s.p] for s in instances]
    return TaskScore(
        task=task.name,
        pu=pu,
        pp=pp,
        perplexity=perplexity,
        n=len(instances),
        k=sum(map(any, zip(*scored))),
        is_classification=task.is_classification,
        category=task.category,
        pairs=sum(map(sum, scored)),
    )


@dataclass(frozen=True)
class TaskTable:
    """Rows of per-task values (each with a ``task`` name) looked up by task name, with
    per-instance detail and metadata: the shape of every score table (PU's, IFD's)."""

    rows: tuple[Any, ...]
    instances: tuple[Any, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    #: What a row holds, for a missing task's KeyError ("no scores for task 'x'").
    what: ClassVar[str] = "scores"

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "instances", tuple(self.instances))
        index = {row.task: row for row in self.rows}
        if len(index) != len(self.rows):
            raise ActiveITError(f"{type(self).__name__}: a task appears twice")
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)

    def __contains__(self, task: object) -> bool:
        return task in self._index  # type: ignore[attr-defined]

    def __getitem__(self, task: str) -> Any:
        try:
            return self._index[task]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"no {self.what} for task '{task}'") from None


@dataclass(frozen=True)
class ScoreTable(TaskTable):
    """Task scores (one :class:`TaskScore` per task) with per-instance detail and metadata."""

    rows: tuple[TaskScore, ...]
    instances: tuple[InstanceScore, ...] = ()

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(row.task for row in self.rows)

    def instances_of(self, task: str) -> tuple[InstanceScore, ...]:
        return tuple(s for s in self.instances if s.task == task)

    def to_frame(self) -> Any:
        """The task rows as a pandas DataFrame."""
        import pandas as pd

        columns = [f.name for f in TaskScore.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(row) for row in self.rows], columns=columns)

    def instances_frame(self) -> Any:
        """The per-instance detail as a pandas DataFrame (``p`` is a list per row)."""
        import pandas as pd

        columns = [f.name for f in InstanceScore.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(s) | {"p": list(s.p)} for s in self.instances], columns=columns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [asdict(row) for row in self.rows],
            "instances": [asdict(s) | {"p": list(s.p)} for s in self.instances],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreTable:
        return cls(
            rows=tuple(TaskScore(**row) for row in data["rows"]),
            instances=tuple(InstanceScore(**(s | {"p": tuple(s["p"])})) for s in data.get("instances", ())),
            meta=dict(data.get("meta", {})),
        )

    @staticmethod
    def instances_path(path: str | Path) -> Path:
        """Where :meth:`save` puts the per-instance detail of a table saved at ``path``."""
        path = Path(path)
        return path.with_name(f"{path.stem}.instances{path.suffix}")

    def save(self, path: str | Path) -> Path:
        """Write the task rows to ``path`` (.csv or .parquet) and the detail beside it."""
        path = Path(path)
        suffix = _table_suffix(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        detail = self.instances_frame()
        if suffix == ".csv":
            self.to_frame().to_csv(path, index=False)
            detail["p"] = detail["p"].map(json.dumps)
            detail.to_csv(self.instances_path(path), index=False)
        else:
            self.to_frame().to_parquet(path, index=False)
            detail.to_parquet(self.instances_path(path), index=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScoreTable:
        """Read a table written by :meth:`save` (the detail too when it is there)."""
        import pandas as pd

        path = Path(path)
        suffix = _table_suffix(path)
        if not path.exists():
            raise ActiveITError(f"score table '{path}' does not exist")
        read = pd.read_csv if suffix == ".csv" else pd.read_parquet
        frame = read(path)
        rows = tuple(
            TaskScore(
                task=str(r["task"]), pu=float(r["pu"]), pp=float(r["pp"]),
                perplexity=float(r["perplexity"]), n=int(r["n"]), k=int(r["k"]),
                is_classification=bool(r["is_classification"]), category=str(r["category"]),
                # tables written before adaptive scoring have none of these columns
                pairs=_optional(r.get("pairs"), int), pu_low=_optional(r.get("pu_low"), float),
                pu_high=_optional(r.get("pu_high"), float), decided=_optional(r.get("decided"), str) or "",
            )
            for r in frame.to_dict("records")
        )
        instances: tuple[InstanceScore, ...] = ()
        detail_path = cls.instances_path(path)
        if detail_path.exists():
            detail = read(detail_path, keep_default_na=False) if suffix == ".csv" else read(detail_path)
            instances = tuple(
                InstanceScore(
                    task=str(r["task"]), instance_id=str(r["instance_id"]), prediction=str(r["prediction"]),
                    prediction_tokens=int(r["prediction_tokens"]), nll0=float(r["nll0"]), p0=float(r["p0"]),
                    p=tuple(float(x) for x in (json.loads(r["p"]) if suffix == ".csv" else r["p"])),
                )
                for r in detail.to_dict("records")
            )
        return cls(rows, instances)


def _optional(value: Any, kind: type) -> Any:
    """A cell read back: None when missing or empty (NaN, or an empty CSV cell), else ``kind(value)``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return kind(value)


def _table_suffix(path: Path) -> str:
    if path.suffix not in TABLE_SUFFIXES:
        raise ActiveITError(f"score table '{path}': use a .csv or .parquet file name")
    return path.suffix

"""Instruction-following difficulty (IFD), Cherry LLM (Li et al., NAACL 2024), per task.

For an instance with instruction ``Q`` (here: the task's prompt, definition + demonstrations +
the instance's input) and reference answer ``A`` (its first reference output, cut to
``max_new_tokens`` tokens, then EOS, as PU's predictions are):

* ``s(A|Q)``: the mean per-token NLL of ``A`` after the full prompt (the *conditioned* loss);
* ``s(A)``: the mean per-token NLL of ``A`` after the answer marker alone (the prompt
  format's "Output:" with no definition, demonstration or input; Cherry's ``### Response:``);
* ``IFD = s(A|Q) / s(A)``, as the reference code computes it (a ratio of mean losses):
  high when the instruction helps the model little with the answer.

A task's IFD is the mean over its ``n`` seeded instances (the same draw as PU's). Cherry drops
instances with IFD > 1 before selecting; the task mean keeps them (a task is picked whole).
Both passes are teacher forcing on the shared-prefix engine
(:func:`activeit.scoring.engine.forcing.teacher_forced_nll`): the task prefix runs once per
task and the answer marker once for all tasks. :func:`activeit.scoring.reference.reference_ifd`
is the plain, unbatched computation it is tested against.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from activeit.config.settings import ScoringSettings
from activeit.data.tasks import Instance, Task
from activeit.errors import ActiveITError
from activeit.scoring.scores import TaskTable

if TYPE_CHECKING:  # the table types stay importable without torch (the selection layer reads them)
    from activeit.models.loading import LoadedModel
    from activeit.scoring.scorer import Scorer

TABLE_FILE = "ifd.json"


def instance_ifd(conditioned: float, direct: float) -> float:
    """``s(A|Q) / s(A)``: the conditioned mean NLL over the direct one (``inf`` when ``s(A)`` is 0)."""
    return conditioned / direct if direct > 0 else float("inf")


@dataclass(frozen=True)
class InstanceIFD:
    """One instance's two losses and their ratio."""

    task: str
    instance_id: str
    answer_tokens: int  # including the EOS token
    conditioned_nll: float  # s(A|Q)
    direct_nll: float  # s(A)
    ifd: float


@dataclass(frozen=True)
class TaskIFD:
    """One task's mean IFD over ``n`` instances."""

    task: str
    ifd: float
    n: int
    is_classification: bool
    category: str


@dataclass(frozen=True)
class IFDTable(TaskTable):
    """Task IFDs (one row per task) with per-instance detail and metadata; looked up by task name."""

    rows: tuple[TaskIFD, ...]
    instances: tuple[InstanceIFD, ...] = ()
    what: ClassVar[str] = "IFD"

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "instances": [asdict(s) for s in self.instances],
                "meta": self.meta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IFDTable:
        return cls(tuple(TaskIFD(**r) for r in data["rows"]),
                   tuple(InstanceIFD(**s) for s in data.get("instances", ())), dict(data.get("meta", {})))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> IFDTable:
        path = Path(path)
        if not path.is_file():
            raise ActiveITError(f"IFD table '{path}' does not exist")
        return cls.from_dict(json.loads(path.read_text()))


def summarize_ifd(task: Task, instances: Sequence[InstanceIFD]) -> TaskIFD:
    """The task's row: the mean IFD of its instances."""
    if not instances:
        raise ActiveITError(f"task '{task.name}' has no instances to compute IFD on")
    return TaskIFD(task.name, statistics.fmean(s.ifd for s in instances), len(instances),
                   task.is_classification, task.category)


def answer_ids(scorer: Scorer, instance: Instance) -> tuple[int, ...]:
    """``A``: the instance's first reference output as target ids, cut to ``max_new_tokens`` + EOS."""
    if not instance.outputs:
        raise ActiveITError(f"instance '{instance.id}' has no reference output for IFD")
    ids = scorer.formatter.encode_target(instance.outputs[0])
    limit = scorer.config.max_new_tokens
    return tuple(ids) if len(ids) <= limit + 1 else (*ids[:limit], ids[-1])


def score_ifd(
    loaded: LoadedModel, tasks: Sequence[Task], config: ScoringSettings = ScoringSettings(), progress: bool = True
) -> IFDTable:
    """The IFD of each of ``tasks`` under ``loaded`` (rows in the order of ``tasks``).

    ``config`` gives ``n``, ``seed`` (the instance draw), ``max_new_tokens`` (the answer's
    length cap), ``max_source_length``, ``chat`` and the batch budgets; in chunks of
    ``tasks_per_chunk`` tasks, each chunk's conditioned and direct pairs in one forcing call.
    """
    from tqdm.auto import tqdm

    from activeit.scoring.engine.forcing import ForcedPair
    from activeit.scoring.scorer import Scorer

    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ActiveITError("a task is given twice to score_ifd")
    scorer = Scorer(loaded, config)
    marker = scorer.split(scorer.formatter.encode_answer_only())
    started = time.perf_counter()
    rows, detail = [], []
    with tqdm(total=len(tasks), unit="task", desc="IFD", disable=not progress) as bar:
        for first in range(0, len(tasks), config.tasks_per_chunk):
            chunk = tasks[first : first + config.tasks_per_chunk]
            items = [(task, instance) for task in chunk for instance in task.sample_instances(config.n, config.seed)]
            if not items:
                raise ActiveITError(f"task(s) {', '.join(t.name for t in chunk)} have no instances for IFD")
            answers = [answer_ids(scorer, instance) for _, instance in items]
            conditioned = [ForcedPair(*scorer.split(scorer.formatter.encode_instance(task, instance)), answer)
                           for (task, instance), answer in zip(items, answers)]
            direct = [ForcedPair(*marker, answer) for answer in answers]
            nll = scorer.force(conditioned + direct)
            by_task: dict[str, list[InstanceIFD]] = {task.name: [] for task in chunk}
            for number, ((task, instance), answer) in enumerate(zip(items, answers)):
                cond, alone = nll[number], nll[len(items) + number]
                by_task[task.name].append(
                    InstanceIFD(task.name, instance.id, len(answer), cond, alone, instance_ifd(cond, alone)))
            for task in chunk:
                rows.append(summarize_ifd(task, by_task[task.name]))
                detail.extend(by_task[task.name])
            bar.update(len(chunk))
    stats = scorer.stats() | {"wall_s": time.perf_counter() - started}
    meta = {"model": loaded.name, "config": config.model_dump(), "stats": stats}
    return IFDTable(tuple(rows), tuple(detail), meta)

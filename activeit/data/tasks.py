"""The task data model: immutable tasks, instances and a task pool with named splits.

A *task* is what the method selects: an instruction (definition), a few positive and
negative demonstrations, and instances with one or more reference outputs.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from activeit.errors import PoolError
from activeit.outputs import write_text

#: Classification heuristic used when a source has no metadata: at most this many
#: distinct reference outputs over the task's instances ...
CLASSIFICATION_MAX_LABELS = 10
#: ... each of at most this many whitespace words.
CLASSIFICATION_MAX_WORDS = 3


@dataclass(frozen=True)
class Example:
    """A demonstration: an input, its output and an optional explanation."""

    input: str
    output: str
    explanation: str = ""


@dataclass(frozen=True)
class Instance:
    """One evaluation/training instance with all its acceptable reference outputs."""

    id: str
    input: str
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    """An instruction-following task."""

    name: str
    definition: str
    positive_examples: tuple[Example, ...]
    instances: tuple[Instance, ...]
    negative_examples: tuple[Example, ...] = ()
    categories: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    source: str = ""
    is_classification: bool = False

    @property
    def category(self) -> str:
        """The first category, or "Uncategorized"."""
        return self.categories[0] if self.categories else "Uncategorized"

    def sample_instances(self, n: int, seed: int) -> tuple[Instance, ...]:
        """``n`` instances drawn without replacement, deterministic in ``(name, seed)``."""
        if n >= len(self.instances):
            return self.instances
        rng = random.Random(f"{self.name}:{seed}")
        picked = sorted(rng.sample(range(len(self.instances)), n))
        return tuple(self.instances[i] for i in picked)

    def with_instances(self, instances: Sequence[Instance]) -> Task:
        """A copy of this task with other instances."""
        return replace(self, instances=tuple(instances))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists instead of tuples)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Task:
        """The inverse of :meth:`to_dict`."""
        return cls(
            name=data["name"],
            definition=data["definition"],
            positive_examples=tuple(Example(**e) for e in data.get("positive_examples", ())),
            negative_examples=tuple(Example(**e) for e in data.get("negative_examples", ())),
            instances=tuple(
                Instance(id=i["id"], input=i["input"], outputs=tuple(i["outputs"]))
                for i in data["instances"]
            ),
            categories=tuple(data.get("categories", ())),
            domains=tuple(data.get("domains", ())),
            source=data.get("source", ""),
            is_classification=bool(data.get("is_classification", False)),
        )


def looks_like_classification(outputs: Iterable[str]) -> bool:
    """The label-set heuristic: few distinct, short outputs.

    A task counts as classification when its reference outputs take at most
    ``CLASSIFICATION_MAX_LABELS`` distinct values (case- and space-insensitive), each of at
    most ``CLASSIFICATION_MAX_WORDS`` words, and at least one value repeats (so that a
    handful of free-form answers is not mistaken for a label set).
    """
    normalized = [" ".join(o.lower().split()) for o in outputs]
    if not normalized:
        return False
    labels = set(normalized)
    return (
        len(labels) <= CLASSIFICATION_MAX_LABELS
        and len(labels) < len(normalized)
        and all(len(label.split()) <= CLASSIFICATION_MAX_WORDS for label in labels)
    )


@dataclass(frozen=True)
class TaskPool:
    """Tasks grouped in named splits (``train``, ``test``, optionally ``validation``)."""

    splits: Mapping[str, tuple[Task, ...]]
    name: str = "pool"
    _index: dict[str, Task] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        frozen = {split: tuple(tasks) for split, tasks in self.splits.items()}
        object.__setattr__(self, "splits", frozen)
        index: dict[str, Task] = {}
        for split, tasks in frozen.items():
            for task in tasks:
                if task.name in index:
                    raise PoolError(
                        f"pool '{self.name}': task '{task.name}' appears twice "
                        f"(second time in split '{split}'); task names must be unique"
                    )
                index[task.name] = task
        object.__setattr__(self, "_index", index)

    def split(self, name: str) -> tuple[Task, ...]:
        """The tasks of one split; a clear error naming the splits that exist."""
        if name not in self.splits:
            raise PoolError(
                f"pool '{self.name}' has no split '{name}'; it has: {', '.join(self.splits)}"
            )
        return self.splits[name]

    @property
    def train(self) -> tuple[Task, ...]:
        return self.splits.get("train", ())

    @property
    def test(self) -> tuple[Task, ...]:
        return self.splits.get("test", ())

    def task(self, name: str) -> Task:
        """A task by name."""
        try:
            return self._index[name]
        except KeyError:
            raise PoolError(f"pool '{self.name}' has no task named '{name}'") from None

    def tasks(self, names: Iterable[str]) -> tuple[Task, ...]:
        """Several tasks by name, in the order given."""
        return tuple(self.task(n) for n in names)

    def __iter__(self) -> Iterator[Task]:
        return iter(self._index.values())

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "splits": {s: [t.to_dict() for t in tasks] for s, tasks in self.splits.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskPool:
        return cls(
            name=data.get("name", "pool"),
            splits={s: tuple(Task.from_dict(t) for t in ts) for s, ts in data["splits"].items()},
        )

    def save_json(self, path: str | Path) -> None:
        """Write the pool as one JSON file (atomically)."""
        write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load_json(cls, path: str | Path) -> TaskPool:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def summary(self) -> dict[str, Any]:
        """Counts per split, classification/generation, categories, instances (in all and per
        task), output lengths in words."""
        train, test = self.train, self.test
        everything = list(self)
        out_words = [
            len(o.split()) for t in everything for i in t.instances for o in i.outputs
        ]
        out_words.sort()
        categories: dict[str, int] = {}
        for t in everything:
            categories[t.category] = categories.get(t.category, 0) + 1

        def pct(values: list[int], q: float) -> int:
            return values[min(len(values) - 1, int(q * len(values)))] if values else 0

        per_task = sorted(len(t.instances) for t in everything)
        return {
            "name": self.name,
            "train_tasks": len(train),
            "test_tasks": len(test),
            "splits": {s: len(ts) for s, ts in self.splits.items()},
            "per_split": {
                s: {
                    "tasks": len(ts),
                    "classification": sum(t.is_classification for t in ts),
                    "generation": sum(not t.is_classification for t in ts),
                    "instances": sum(len(t.instances) for t in ts),
                }
                for s, ts in self.splits.items()
            },
            "classification_tasks": sum(t.is_classification for t in everything),
            "generation_tasks": sum(not t.is_classification for t in everything),
            "instances": sum(len(t.instances) for t in everything),
            "instances_per_task": {
                "min": per_task[0] if per_task else 0,
                "median": pct(per_task, 0.5),
                "max": per_task[-1] if per_task else 0,
            },
            "categories": dict(sorted(categories.items(), key=lambda kv: (-kv[1], kv[0]))),
            "output_words": {
                "mean": round(sum(out_words) / len(out_words), 2) if out_words else 0.0,
                "median": pct(out_words, 0.5),
                "p90": pct(out_words, 0.9),
                "max": out_words[-1] if out_words else 0,
            },
        }

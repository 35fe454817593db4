"""Task embeddings and the two diversity rules built on them.

* A task's text is its definition plus its first demonstration (input and output), embedded
  by a sentence encoder (:mod:`activeit.models.encoder`) into unit vectors, so cosine
  similarity is a dot product.
* **k-center greedy** (the core-set rule MoDS uses for coverage): each next pick is the
  candidate farthest, in cosine distance, from its nearest center; the centers are the tasks
  already trained on and the picks so far. With no center yet the first pick is the
  candidate nearest the candidates' mean direction (the most central task).
* **The representation filter** (DEITA): walking a ranking, a task whose cosine similarity to
  a task already selected (trained on or picked) is ``threshold`` or more is skipped.

Both are rules for the *next pick* given the picks so far, so that the selector can apply them
within the classification / generation quotas (:mod:`activeit.selection.strategies`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from activeit.data.tasks import Task
from activeit.errors import ActiveITError

EMBEDDINGS_FILE = "embeddings.npy"
NAMES_FILE = "tasks.json"


def task_text(task: Task) -> str:
    """What represents a task to the encoder: its definition and its first demonstration."""
    text = task.definition.strip()
    if task.positive_examples:
        example = task.positive_examples[0]
        text += f"\nInput: {example.input.strip()}\nOutput: {example.output.strip()}"
    return text


@dataclass(frozen=True)
class TaskEmbeddings:
    """One unit-length row of ``vectors`` per task of ``names``, and the encoder behind them."""

    names: tuple[str, ...]
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        vectors = np.asarray(self.vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(self.names):
            raise ActiveITError(f"task embeddings: {len(self.names)} names but vectors of shape {vectors.shape}")
        if len(set(self.names)) != len(self.names):
            raise ActiveITError("task embeddings: a task appears twice")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        object.__setattr__(self, "vectors", vectors / np.where(norms > 0, norms, 1.0))
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "_row", {name: row for row, name in enumerate(self.names)})

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, task: object) -> bool:
        return task in self._row  # type: ignore[attr-defined]

    def of(self, tasks: Sequence[str]) -> np.ndarray:
        """The rows of ``tasks`` (an ActiveITError naming those that have no embedding)."""
        missing = [t for t in tasks if t not in self]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise ActiveITError(f"no embedding for task(s) {shown}")
        return self.vectors[[self._row[t] for t in tasks]]  # type: ignore[attr-defined]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / EMBEDDINGS_FILE, self.vectors)
        (folder / NAMES_FILE).write_text(json.dumps({"names": list(self.names), "meta": self.meta}, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TaskEmbeddings:
        folder = Path(folder)
        data = json.loads((folder / NAMES_FILE).read_text())
        return cls(tuple(data["names"]), np.load(folder / EMBEDDINGS_FILE), data.get("meta", {}))


def embed_tasks(encoder: Any, tasks: Sequence[Task], batch_size: int = 32, name: str = "") -> TaskEmbeddings:
    """The unit embeddings of ``tasks``' texts (:func:`task_text`) by a ``SentenceTransformer``
    (which batches them sorted by length)."""
    import torch

    texts = [task_text(task) for task in tasks]
    with torch.inference_mode():
        vectors = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                 convert_to_numpy=True, show_progress_bar=False)
    return TaskEmbeddings(tuple(t.name for t in tasks), vectors,
                          {"encoder": name, "dimension": int(vectors.shape[1]) if len(texts) else 0})


def cosine_distances(vectors: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``1 - cos`` from every row of ``vectors`` to its nearest row of ``centers`` (unit rows)."""
    if not len(centers):
        return np.full(len(vectors), np.inf)
    return 1.0 - (vectors @ centers.T).max(axis=1)


def farthest_candidate(
    embeddings: TaskEmbeddings, candidates: Sequence[str], centers: Sequence[str]
) -> tuple[str, float]:
    """k-center greedy's next pick among ``candidates`` (names, in tie-break order) and its
    distance to the nearest of ``centers``; with no center, the candidate nearest the
    candidates' mean direction (distance ``inf``)."""
    if not candidates:
        raise ActiveITError("k-center greedy: no candidate left")
    vectors = embeddings.of(candidates)
    if not centers:
        mean = vectors.mean(axis=0)
        closeness = vectors @ mean
        best = int(np.flatnonzero(closeness == closeness.max())[0])
        return candidates[best], float("inf")
    distances = cosine_distances(vectors, embeddings.of(centers))
    best = int(np.flatnonzero(distances == distances.max())[0])
    return candidates[best], float(distances[best])


def first_dissimilar(
    embeddings: TaskEmbeddings, ranked: Sequence[str], selected: Sequence[str], threshold: float
) -> str | None:
    """The first task of ``ranked`` whose cosine similarity to every task of ``selected`` is
    below ``threshold`` (the representation filter); None when every one is too similar."""
    if not ranked:
        return None
    if not selected:
        return ranked[0]
    similarity = (embeddings.of(ranked) @ embeddings.of(selected).T).max(axis=1)
    keep = np.flatnonzero(similarity < threshold)
    return ranked[int(keep[0])] if len(keep) else None


def projection_2d(embeddings: TaskEmbeddings) -> np.ndarray:
    """The embeddings on their first two principal components (zeros where there are fewer)."""
    centered = embeddings.vectors - embeddings.vectors.mean(axis=0)
    if len(centered) < 2:
        return np.zeros((len(centered), 2))
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    points = centered @ components[:2].T
    return np.pad(points, ((0, 0), (0, 2 - points.shape[1])))


def plot_embeddings(
    embeddings: TaskEmbeddings, path: str | Path, title: str, groups: Mapping[str, str] | None = None
) -> Path:
    """A 2-D PCA projection of the task embeddings, one colour per group (e.g. train / test)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = projection_2d(embeddings)
    groups = groups or {}
    fig, ax = plt.subplots(figsize=(7, 6))
    labels = sorted({groups.get(n, "task") for n in embeddings.names})
    for label in labels:
        rows = [i for i, n in enumerate(embeddings.names) if groups.get(n, "task") == label]
        ax.scatter(points[rows, 0], points[rows, 1], s=18, alpha=0.75, label=f"{label} ({len(rows)})")
    ax.set_xlabel("principal component 1")
    ax.set_ylabel("principal component 2")
    ax.set_title(title)
    if len(labels) > 1:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

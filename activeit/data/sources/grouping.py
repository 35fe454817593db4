"""Instances into tasks: prompt uncertainty scores *tasks*, and the record formats (Alpaca,
ShareGPT, messages, hf-disk rows) hold *instances*. Three ways of grouping them:

- by instruction (the default, the Self-Instruct way): one task per distinct instruction;
- by a column (``group_by: category``): one task per value of that column;
- by TF-IDF clusters (``task_clusters: N``): the distinct instructions in at most N k-means
  clusters of their TF-IDF vectors (scikit-learn, in a 100-dimension LSA space; seeded 0, so
  every pool seed sees the same tasks: :func:`cluster_labels`). A sentence encoder would group
  by meaning rather than by shared words; none is built yet.

When a group holds one instruction, that instruction is the task's definition and the
records' inputs are its instances' inputs. When it holds several (a column or a cluster), the
definition is the group's most common instruction (a cluster: the one nearest its centroid)
and each instance keeps its own instruction at the top of its input, so that no instance
loses what it asks. Demonstrations come from the task's own instances, as for Self-Instruct
(:func:`activeit.data.sources._common.demonstrations_from_instances`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from activeit.errors import PoolError
from activeit.data.sources._common import demonstrations_from_instances
from activeit.data.tasks import Instance, Task, looks_like_classification

#: k-means (and the SVD) are seeded once for all pools: the tasks are the data's, not a run's.
CLUSTER_SEED = 0
#: Dimensions of the LSA space the TF-IDF vectors are clustered in.
LSA_DIMENSIONS = 100


@dataclass(frozen=True)
class Grouping:
    """How a record source reads its columns and makes tasks (the pool settings' ``columns``,
    ``group_by`` and ``task_clusters``)."""

    columns: Mapping[str, str] = field(default_factory=dict)
    group_by: str | None = None
    clusters: int | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """One valid record: an instruction, an input and its reference outputs, with the optional
    columns a task takes from its first record, and where the record was read."""

    origin: str  # the file's stem (or the split's name): with ``number``, the fallback task name
    number: int
    instruction: str
    input: str
    outputs: tuple[str, ...]
    name: str | None = None
    category: str | None = None
    is_classification: bool | None = None
    group: str | None = None


def make_tasks(entries: Sequence[Entry], grouping: Grouping, source: str, names: set[str] | None = None) -> tuple[Task, ...]:
    """The tasks of ``entries``, in order of first appearance (see the module docstring).
    ``names``: task names already taken (by another split), extended with these."""
    taken = set() if names is None else names
    if grouping.clusters:
        groups = _clusters(entries, grouping.clusters)
    elif grouping.group_by:
        groups = [(str(key), members, _most_common(members)) for key, members in _by(entries, lambda e: e.group).items()]
    else:
        groups = [
            (members[0].name or f"{members[0].origin}_{members[0].number}", members, key)
            for key, members in _by(entries, lambda e: e.instruction).items()
        ]
    return tuple(_task(_unique(base, members[0], taken), definition, members, source) for base, members, definition in groups)


def _by(entries: Sequence[Entry], key: Callable[[Entry], str | None]) -> dict[str | None, list[Entry]]:
    groups: dict[str | None, list[Entry]] = {}
    for entry in entries:
        groups.setdefault(key(entry), []).append(entry)
    return groups


def _most_common(members: Sequence[Entry]) -> str:
    """The most common instruction of a group (the first of equally common ones)."""
    return Counter(e.instruction for e in members).most_common(1)[0][0]


def _unique(base: str, first: Entry, taken: set[str]) -> str:
    name, suffix = base, 1
    while name in taken:
        name = f"{base}_{first.number}" if suffix == 1 else f"{base}_{first.number}_{suffix}"
        suffix += 1
    taken.add(name)
    return name


def _task(name: str, definition: str, members: Sequence[Entry], source: str) -> Task:
    mixed = any(e.instruction != definition for e in members)
    instances = [
        Instance(
            id=f"{name}-{k}",
            input=(e.instruction + (f"\n\n{e.input}" if e.input else "")) if mixed else e.input,
            outputs=e.outputs,
        )
        for k, e in enumerate(members)
    ]
    flags = [e.is_classification for e in members if e.is_classification is not None]
    outputs = [o for e in members for o in e.outputs]
    demos, kept = demonstrations_from_instances(instances)
    category = next((e.category for e in members if e.category), None)
    return Task(
        name=name,
        definition=definition,
        positive_examples=demos,
        instances=kept,
        categories=(category,) if category else (),
        source=source,
        # (one output repeats no label: the heuristic's answer, without reading a long output)
        is_classification=flags[0] if flags else len(outputs) > 1 and looks_like_classification(outputs),
    )


def cluster_labels(texts: Sequence[str], count: int) -> tuple[list[int], list[int]]:
    """``texts`` in at most ``count`` clusters: TF-IDF vectors (English stop words left out),
    reduced to 100 LSA dimensions (truncated SVD) and normalized, then k-means (mini-batch past
    10,000 texts). Returns each text's cluster and, per cluster, the index of its text nearest
    the centroid; clusters are numbered by their first text, an empty one is dropped."""
    if count > len(texts):
        raise PoolError(f"cannot cluster {len(texts)} distinct instruction(s) into {count} tasks; "
                        "ask for fewer task_clusters")
    import numpy as np
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize
    from threadpoolctl import threadpool_limits

    try:
        sparse = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit_transform(texts)
    except ValueError:  # every instruction is stop words only
        raise PoolError("cannot cluster the instructions: they hold no word but English stop words") from None
    small = len(texts) <= 10_000
    # a small job runs in one thread: OpenMP / BLAS threads cost more than they give (10x on a busy CPU)
    with threadpool_limits(limits=1 if small else None):
        dimensions = min(LSA_DIMENSIONS, sparse.shape[1] - 1, len(texts) - 1)
        vectors = normalize(TruncatedSVD(dimensions, random_state=CLUSTER_SEED).fit_transform(sparse)) \
            if dimensions > 1 else sparse.toarray()
        kind = KMeans if small else MiniBatchKMeans  # Lloyd's slows past ten thousand
        model = kind(n_clusters=count, random_state=CLUSTER_SEED, n_init=3).fit(vectors)
    raw = model.labels_
    order = {label: k for k, label in enumerate(dict.fromkeys(raw.tolist()))}
    central = [0] * len(order)
    for label, k in order.items():
        members = np.flatnonzero(raw == label)
        distance = ((vectors[members] - model.cluster_centers_[label]) ** 2).sum(axis=1)
        central[k] = int(members[int(np.argmin(distance))])
    return [order[label] for label in raw.tolist()], central


def _clusters(entries: Sequence[Entry], count: int) -> list[tuple[str, list[Entry], str]]:
    texts = list(dict.fromkeys(e.instruction for e in entries))
    labels, central = cluster_labels(texts, count)
    label_of = dict(zip(texts, labels))
    groups: list[list[Entry]] = [[] for _ in central]
    for entry in entries:  # in reading order
        groups[label_of[entry.instruction]].append(entry)
    width = len(str(count))
    return [(f"cluster_{k:0{width}d}", members, texts[central[k]]) for k, members in enumerate(groups)]

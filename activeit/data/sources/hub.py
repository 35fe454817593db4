"""NIV2 from the Hugging Face hub through ``datasets.load_dataset(hub_id)``.

Rows are instances, grouped into tasks by their task column. The column set is that of
``Muennighoff/natural-instructions`` (splits ``train``/``test``; one row per instance)::

    task_name   the task (rows with the same value form one task)
    id          the instance id (rows sharing an id are merged as several references)
    definition  the task's instruction
    inputs      the instance input
    targets     a reference output (a string, or a list of strings)

Aliases are accepted: ``task`` for ``task_name``, ``instruction`` for ``definition``,
``input`` for ``inputs``, ``output``/``outputs`` for ``targets``; ``id`` is optional.
Rows carry no demonstrations, so the first instances of each task become its positive
examples (:func:`activeit.data.sources._common.demonstrations_from_instances`).
``is_classification`` follows the NIV2 heuristic (:func:`niv2_is_classification`).
Split names ``validation``/``dev`` map to ``validation``; others are kept.

Without a network this fails at once with one line (a cached copy is used when
``HF_HUB_OFFLINE=1`` is set).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from activeit.errors import PoolError
from activeit.models.hub import hub_unreachable_reason
from activeit.data.sources._common import demonstrations_from_instances
from activeit.data.sources.niv2 import niv2_is_classification
from activeit.data.tasks import Instance, Task, TaskPool

COLUMNS: dict[str, tuple[str, ...]] = {
    "task": ("task_name", "task"),
    "definition": ("definition", "instruction"),
    "input": ("inputs", "input"),
    "output": ("targets", "output", "outputs"),
    "id": ("id",),
}
SPLIT_NAMES = {"dev": "validation", "valid": "validation"}
BATCH_ROWS = 10_000


def _offline_hint(hub_id: str, reason: str, cache_hint: bool) -> PoolError:
    return PoolError(
        f"cannot reach the Hugging Face hub to load '{hub_id}' ({reason}); offline, use "
        "--source niv2 --path <local natural-instructions checkout>"
        + (" (or set HF_HUB_OFFLINE=1 to use a cached copy)" if cache_hint else "")
    )


def _column(names: Sequence[str], role: str, required: bool = True) -> str | None:
    for candidate in COLUMNS[role]:
        if candidate in names:
            return candidate
    if required:
        raise PoolError(
            f"hub dataset has no {role} column (looked for {', '.join(COLUMNS[role])}; "
            f"it has {', '.join(names)})"
        )
    return None


def _rows(dataset: Any) -> Iterable[Mapping[str, Any]]:
    """Rows of a ``datasets.Dataset`` (read in column batches) or of any row iterable."""
    if hasattr(dataset, "iter") and hasattr(dataset, "column_names"):
        for batch in dataset.iter(batch_size=BATCH_ROWS):
            keys = list(batch)
            yield from (dict(zip(keys, values)) for values in zip(*(batch[k] for k in keys)))
    else:
        yield from dataset


def tasks_from_rows(dataset: Any, source: str = "hub") -> tuple[Task, ...]:
    """Group instance rows (a ``datasets.Dataset`` or a list of dicts) into tasks, in
    order of first appearance."""
    names = list(dataset.column_names) if hasattr(dataset, "column_names") else list(next(iter(dataset), {}))
    task_col, def_col = _column(names, "task"), _column(names, "definition")
    in_col, out_col = _column(names, "input"), _column(names, "output")
    id_col = _column(names, "id", required=False)
    groups: dict[str, tuple[str, dict[str, tuple[str, list[str]]]]] = {}
    for row in _rows(dataset):
        task = str(row[task_col])
        definition, instances = groups.setdefault(task, (str(row[def_col]), {}))
        key = str(row[id_col]) if id_col else f"{task}-{len(instances)}"
        targets = row[out_col]
        refs = [str(t) for t in targets] if isinstance(targets, list) else [str(targets)]
        instances.setdefault(key, (str(row[in_col]), []))[1].extend(refs)
    tasks = []
    for name, (definition, rows) in groups.items():
        instances = [Instance(id=i, input=text, outputs=tuple(refs)) for i, (text, refs) in rows.items() if refs]
        demos, kept = demonstrations_from_instances(instances)
        tasks.append(
            Task(
                name=name,
                definition=definition.strip(),
                positive_examples=demos,
                instances=kept,
                source=source,
                is_classification=niv2_is_classification(definition, (o for i in instances for o in i.outputs)),
            )
        )
    return tuple(tasks)


def load_hub(hub_id: str | None) -> TaskPool:
    """All splits of the hub dataset ``hub_id`` as a pool (see the module docstring)."""
    if not hub_id:
        raise PoolError("source 'hub' needs a dataset id: pass --path <owner/name>, e.g. Muennighoff/natural-instructions")
    hub_id = str(hub_id)
    if Path(hub_id).expanduser().is_file() or Path(hub_id).suffix.lower() in (".json", ".jsonl", ".csv", ".parquet"):
        raise PoolError(f"source 'hub': '{hub_id}' is a file, not a hub dataset id (owner/name); read a local file "
                        "with its own source (self-instruct, alpaca, sharegpt, messages or hf-disk)")
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    # datasets fixes its offline mode when imported: ask it, not the environment.
    if reason := hub_unreachable_reason(offline=bool(datasets.config.HF_HUB_OFFLINE)):
        raise _offline_hint(hub_id, reason, cache_hint=True)

    try:
        loaded = datasets.load_dataset(hub_id)
    except DatasetNotFoundError as exc:
        raise PoolError(f"no dataset '{hub_id}' on the Hugging Face hub ({str(exc).splitlines()[0]})") from None
    except (ConnectionError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _offline_hint(hub_id, reason, cache_hint=False) from None
    except Exception as exc:  # noqa: BLE001 - any other datasets failure becomes one line
        raise PoolError(f"cannot load '{hub_id}' from the hub: {type(exc).__name__}: {str(exc)[:200]}") from None
    parts = loaded.items() if isinstance(loaded, Mapping) else [("train", loaded)]
    splits = {SPLIT_NAMES.get(split, split): tasks_from_rows(data, source=hub_id) for split, data in parts}
    return TaskPool(splits, name=f"hub:{hub_id}")

"""hf-disk: a dataset on disk read through ``datasets``: a folder written by
``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (memory-mapped Arrow), or a
``.parquet`` / ``.json`` / ``.jsonl`` / ``.csv`` / ``.arrow`` file (``datasets.load_dataset``,
which caches an Arrow copy under ``HF_DATASETS_CACHE``).

Rows are instance records in one of the three record formats, told by the column mapping
(the first of ``instruction``, ``conversations``, ``messages`` it names) or else by the
dataset's columns (a ``conversations`` column: ShareGPT, ``messages``: chat messages,
otherwise Alpaca columns); columns are mapped, checked and grouped into tasks as for those
formats (:mod:`activeit.data.sources.records`, :mod:`activeit.data.sources.grouping`). A
``DatasetDict`` gives one pool split per split (``validation`` / ``dev`` -> ``validation``);
only the columns the mapping uses are read.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activeit.errors import PoolError, TaskFormatError
from activeit.data.sources._common import existing_path
from activeit.data.sources.alpaca import ALPACA
from activeit.data.sources.grouping import Grouping, make_tasks
from activeit.data.sources.hub import SPLIT_NAMES
from activeit.data.sources.messages import MESSAGES
from activeit.data.sources.records import SIGNATURES, RecordFormat, check_columns, parse_rows, warn_skipped
from activeit.data.sources.sharegpt import SHAREGPT
from activeit.data.tasks import Task, TaskPool

#: File suffix -> the ``datasets`` builder that reads it.
BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv", ".arrow": "arrow"}
FORMATS: tuple[RecordFormat, ...] = (ALPACA, SHAREGPT, MESSAGES)
BATCH_ROWS = 10_000
EXPECTED = "<a save_to_disk folder or a .parquet / .json / .jsonl / .csv / .arrow file>"


def row_format(present: set[str], grouping: Grouping) -> RecordFormat:
    """The record format of a dataset's rows (see the module docstring)."""
    for fmt in FORMATS:
        if fmt.signature in grouping.columns:
            return fmt
    return next((fmt for fmt in FORMATS if fmt.signature in present), ALPACA)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No ``datasets`` progress bars (the command line prints one line on an error)."""
    import datasets

    shown = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            datasets.enable_progress_bars()


def _parses(path: Path) -> bool:
    """Whether the file ``path`` holds valid JSON."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return True


def _load(path: Path) -> Any:
    import datasets

    with _quiet():
        if path.is_dir():
            try:
                return datasets.load_from_disk(str(path))
            except FileNotFoundError as exc:
                raise PoolError(f"hf-disk: '{path}' is not a folder written by save_to_disk "
                                f"({str(exc).splitlines()[0]})") from None
            except (ValueError, KeyError, TypeError, OSError) as exc:  # JSONDecodeError is a ValueError
                broken = next((f for f in ("dataset_info.json", "state.json", "dataset_dict.json")
                               if (path / f).is_file() and not _parses(path / f)), None)
                where = f"'{path / broken}' is not valid JSON" if broken else f"{type(exc).__name__}: {exc}"
                raise PoolError(f"hf-disk: cannot read the save_to_disk folder '{path}' ({where}); write it again "
                                "with Dataset.save_to_disk") from None
        builder = BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise PoolError(f"hf-disk: cannot read '{path.name}': expected {EXPECTED}")
        if path.stat().st_size == 0:
            raise PoolError(f"{path}: the file is empty (no records)")
        try:
            return datasets.load_dataset(builder, data_files=str(path), split="train")
        except Exception as exc:  # noqa: BLE001 - a parser's failure (pyarrow, pandas) becomes one line
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise PoolError(f"hf-disk: cannot read '{path}' with datasets ({type(exc).__name__}: {reason})") from None


def _rows(dataset: Any, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(row number, row)`` of the named columns, read in column batches."""
    number = 0
    for batch in dataset.select_columns(columns).iter(batch_size=BATCH_ROWS):
        for values in zip(*(batch[c] for c in columns)):
            number += 1
            yield number, dict(zip(columns, values))


def load_hf_disk(path: str | Path | None, grouping: Grouping = Grouping(), *, skip_invalid: bool = False) -> TaskPool:
    """A dataset on disk as a pool (see the module docstring)."""
    path = existing_path(path, "hf-disk", EXPECTED)
    loaded = _load(path)
    parts = list(loaded.items()) if hasattr(loaded, "keys") else [("train", loaded)]
    names: set[str] = set()
    splits: dict[str, tuple[Task, ...]] = {}
    errors: list[TaskFormatError] = []
    total = 0
    for split, data in parts:
        where = str(path) if len(parts) == 1 else f"{path} [{split}]"
        if len(data) == 0:
            raise PoolError(f"{where}: the dataset is empty (no records)")
        present = set(data.column_names)
        fmt = row_format(present, grouping)
        columns = check_columns(fmt, grouping, present, where)
        used = sorted({c for c in (*columns.values(), grouping.group_by, *SIGNATURES) if c in present})  # (a mixed row)
        origin = path.stem if len(parts) == 1 else f"{path.stem}_{split}"
        entries, invalid = parse_rows(fmt, _rows(data, used), where, "record", origin, grouping, columns, skip_invalid)
        errors += invalid
        total += len(data)
        name = SPLIT_NAMES.get(split, split)
        splits[name] = splits.get(name, ()) + make_tasks(entries, grouping, "hf-disk", names)
    warn_skipped(errors, total, str(path))
    return TaskPool(splits, name=f"hf-disk:{path.name}")

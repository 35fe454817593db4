"""``python -m activeit pool``: read a task pool and summarize it (text or ``--json``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from activeit.cli.common import add_pool_arguments, pool_from_args, protected_paths
from activeit.outputs import check_output_file

TOP_CATEGORIES = 12


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pool",
        help="summarize a task pool",
        description="Read a task pool and print tasks per split, classification/generation "
        "counts, categories, instance counts and output lengths.",
    )
    add_pool_arguments(parser)
    parser.add_argument("--seed", type=int, default=0, help="seed of held-out splits and instance sampling")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="also save the whole pool as JSON (written atomically)")
    parser.add_argument("--overwrite", action="store_true", help="replace the --out file when it exists")
    parser.set_defaults(handler=run)


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable form of :meth:`TaskPool.summary`."""
    rows = [("split", "tasks", "classification", "generation", "instances")]
    for split, counts in summary["per_split"].items():
        rows.append((split, *(str(counts[k]) for k in ("tasks", "classification", "generation", "instances"))))
    rows.append(("all", *(str(summary[k]) for k in ("train_tasks", "classification_tasks", "generation_tasks", "instances"))))
    rows[-1] = ("all", str(sum(summary["splits"].values())), *rows[-1][2:])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    table = [
        "  " + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    per_task, words = summary["instances_per_task"], summary["output_words"]
    categories = list(summary["categories"].items())
    shown = ", ".join(f"{name} {count}" for name, count in categories[:TOP_CATEGORIES])
    more = f", ... ({len(categories) - TOP_CATEGORIES} more)" if len(categories) > TOP_CATEGORIES else ""
    return "\n".join([
        f"pool {summary['name']}",
        *table,
        f"instances per task: min {per_task['min']}, median {per_task['median']}, max {per_task['max']}",
        f"output length (words): mean {words['mean']}, median {words['median']}, "
        f"p90 {words['p90']}, max {words['max']}",
        f"categories ({len(categories)}): {shown}{more}",
    ])


def run(args: argparse.Namespace) -> int:
    if args.out is not None:
        check_output_file(args.out, "--out", args.overwrite, protect=protected_paths(args))
    pool = pool_from_args(args)
    if args.out is not None:
        pool.save_json(args.out)
    summary = pool.summary()
    print(json.dumps(summary) if args.json else format_summary(summary))
    return 0

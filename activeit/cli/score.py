"""``python -m activeit score``: prompt uncertainty of a pool's tasks, and their task map.

Writes to ``--out``: ``scores.csv`` (or ``.parquet``) with one row per task,
``scores.instances.csv`` with the per-instance detail, ``task_map.png``,
``task_map.json`` (task -> category) and ``selection.json`` (the tasks that ``--strategy``
would pick with ``--budget``; they are highlighted in the map). Runs under
``accelerate launch`` too: the tasks are split across processes, the first one writes::

    accelerate launch --num_processes 4 -m activeit score ...                  # 4 GPUs
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m activeit score ...  # 2 CPU procs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from activeit.cli.common import add_output_arguments, add_pool_arguments, pool_from_args, protected_paths
from activeit.config.flags import add_settings_arguments, flag_of, settings_from_args
from activeit.data.perturbations import PERTURBATIONS
from activeit.models.devices import process_state
from activeit.models.processes import check_processes
from activeit.errors import ActiveITError
from activeit.scoring.launch import score
from activeit.models.builtin import DEFAULT_MODEL
from activeit.models.checks import check_model
from activeit.outputs import check_output_dir, output_dir
from activeit.config.settings import ScoringSettings
from activeit.selection.strategies import (
    NEEDS_EMBEDDINGS,
    NEEDS_IFD,
    NEEDS_SCORES,
    STRATEGIES,
    check_adaptive,
    select_tasks,
)
from activeit.selection.taskmap import categorize, plot_task_map

SHOWN = 10


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "score",
        help="prompt uncertainty (PU), prediction probability and perplexity of a pool's tasks",
        description="Score every task of a pool split by prompt uncertainty (Kung et al., 2023) and "
        "draw the task map. Writes scores.csv (or .parquet), the per-instance detail, task_map.png, "
        "task_map.json and selection.json to --out.",
    )
    add_pool_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or folder")
    parser.add_argument("--split", default="train", help="pool split to score (default: train)")
    parser.add_argument("--max-tasks", type=int, default=None, metavar="N", help="score only the first N tasks")
    add_output_arguments(parser, "output folder (created; written all at once at the end)")
    add_settings_arguments(parser.add_argument_group("scoring"), ScoringSettings,
                           choices={"perturbation": sorted(PERTURBATIONS)})
    parser.add_argument("--format", choices=("csv", "parquet"), default="csv", help="score table format")
    parser.add_argument("--strategy", choices=STRATEGIES, default="uncertainty",
                        help="strategy whose picks are highlighted in the map (default: uncertainty; ifd, diverse "
                        "and uncertainty-diverse need scores 'score' does not compute: run them with run.py)")
    parser.add_argument("--budget", type=int, default=None,
                        help="tasks to highlight, and with --adaptive the top b that scoring settles "
                        "(default: a tenth of the scored tasks, at least 1)")
    parser.add_argument("--checkpoint", type=Path, default=None, metavar="FILE",
                        help="with --adaptive: journal the scoring to FILE; run again with the same FILE and "
                        "settings to resume an interrupted run (delete it once the scores are saved)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.max_tasks is not None and args.max_tasks < 1:
        raise ActiveITError(f"--max-tasks must be at least 1, got {args.max_tasks}")
    check_output_dir(args.out, "--out", args.overwrite, command="score", protect=protected_paths(args))
    check_model(args.model, args.chat)
    config = settings_from_args(args, ScoringSettings)
    if args.checkpoint is not None and not config.adaptive:
        raise ActiveITError("--checkpoint is for --adaptive scoring (exact scoring has no checkpoint)")
    if args.checkpoint is not None:
        check_checkpoint(args.checkpoint)
    if args.strategy in NEEDS_IFD | NEEDS_EMBEDDINGS:
        needs = "IFD scores" if args.strategy in NEEDS_IFD else "task embeddings"
        raise ActiveITError(f"--strategy {args.strategy} picks by {needs}, which 'score' does not compute (it scores "
                            f"prompt uncertainty); run it in the pipeline: python run.py --strategy {args.strategy}")
    if args.budget is not None and args.budget < 1:
        raise ActiveITError(f"--budget must be at least 1, got {args.budget}")
    check_processes(config.num_processes, flag_of(ScoringSettings, "num_processes"))
    pool = pool_from_args(args)
    tasks = pool.split(args.split)[: args.max_tasks]
    if not tasks:
        raise ActiveITError(f"pool '{pool.name}' split '{args.split}' has no tasks to score")
    state = process_state()
    if config.adaptive:  # it settles the top --budget of --strategy, which must rank by PU alone
        check_adaptive(args.strategy)
    budget = _budget(args, len(tasks)) if config.adaptive else None
    if config.adaptive and args.budget is None:
        print(f"note: --adaptive settles the top {budget} of the {len(tasks)} tasks (no --budget given: a tenth of "
              "them, at least 1); pass --budget B for another top B", file=sys.stderr)
    table = score(args.model, tasks, config, budget=budget, progress=not args.no_progress, checkpoint=args.checkpoint)
    if state.is_main_process:
        write_outputs(args, config, table, tasks)
    if state.num_processes > 1:  # the group goes with the process (python -m activeit exits without teardown)
        state.wait_for_everyone()
    return 0


def write_outputs(args: argparse.Namespace, config: ScoringSettings, table: Any, tasks: Any) -> None:
    """Save the table, the selection, the categories and the map; print a summary."""
    with output_dir(args.out, args.overwrite, command="score") as tmp:
        categories = _write_files(args, config, table, tasks, tmp)
    out: Path = args.out
    path = out / f"scores.{args.format}"
    stats = table.meta.get("stats", {})
    print(f"scored {len(table)} tasks of split '{args.split}' with {args.model} "
          f"(n={config.n}, k={config.k}, {config.perturbation}) in {stats.get('wall_s', 0.0):.1f}s")
    if "adaptive" in table.meta:
        adaptive = table.meta["adaptive"]
        print(f"adaptive (top {adaptive['budget']}, delta {adaptive['delta']}): {adaptive['stopped_in']} tasks stopped "
              f"surely in, {adaptive['stopped_out']} surely out, {adaptive['work_saved']:.0%} of the work saved")
    print(f"{'task':<60} {'PU':>9} {'PP':>7} {'ppl':>9}  category")
    for row in sorted(table.rows, key=lambda r: -r.pu)[:SHOWN]:
        print(f"{row.task[:60]:<60} {row.pu:>9.3g} {row.pp:>7.4f} {row.perplexity:>9.2f}  {categories[row.task]}")
    if len(table) > SHOWN:
        print(f"... {len(table) - SHOWN} more in {path}")
    print(f"saved {path}, {table.instances_path(path).name}, task_map.png, task_map.json, selection.json in {out}")


def check_checkpoint(path: Path) -> None:
    """Refuse, before any model loads, a ``--checkpoint`` that cannot be a journal file."""
    if path.is_dir():
        raise ActiveITError(f"--checkpoint: '{path}' is a folder; give a file name, e.g. {path / 'score.journal'}")
    parent = path.expanduser().parent
    if not parent.is_dir():
        raise ActiveITError(f"--checkpoint: the folder '{parent}' does not exist; create it or give another file")
    if not os.access(parent, os.W_OK):
        raise ActiveITError(f"--checkpoint: cannot write in '{parent}'; give a file in a writable folder")


def _budget(args: argparse.Namespace, scored: int) -> int:
    """``--budget``, or a tenth of the ``scored`` tasks (at least 1)."""
    return args.budget if args.budget is not None else max(1, round(scored / 10))


def _write_files(args: argparse.Namespace, config: ScoringSettings, table: Any, tasks: Any, out: Path) -> dict[str, str]:
    """The table, the selection, the categories and the map, in ``out``."""
    table.save(out / f"scores.{args.format}")
    budget = _budget(args, len(table))
    if budget > len(table):
        print(f"warning: --budget {budget} is more than the {len(table)} scored tasks; highlighting all of them",
              file=sys.stderr)
    needs = args.strategy in NEEDS_SCORES
    selection = select_tasks(args.strategy, tasks, budget, scores=table if needs else None, seed=config.seed)
    (out / "selection.json").write_text(json.dumps(selection.to_dict(), indent=2))
    categories = categorize(table)
    (out / "task_map.json").write_text(json.dumps(categories, indent=2))
    title = f"Task map: {args.model}, {len(table)} tasks, {args.strategy} picks {len(selection)}"
    plot_task_map(table, out / "task_map.png", selected=selection.tasks, title=title)
    return categories

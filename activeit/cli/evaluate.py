"""``python -m activeit evaluate``: ROUGE-L and exact match of a model on a pool split."""

from __future__ import annotations

import argparse
from typing import Any

from activeit.errors import ActiveITError
from activeit.cli.common import (
    add_output_arguments,
    add_pool_arguments,
    named_tasks,
    pool_from_args,
    protected_paths,
    read_task_names,
)
from activeit.config.flags import add_settings_arguments, settings_from_args
from activeit.models.devices import place_model
from activeit.evaluation import METRICS_FILE, PREDICTIONS_FILE, evaluate_model
from activeit.models.builtin import DEFAULT_MODEL
from activeit.models.checks import check_model
from activeit.models.loading import load_model
from activeit.outputs import check_output_dir, output_dir
from activeit.config.settings import EvaluationSettings
from activeit.errors import PoolError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="ROUGE-L / exact match of a model on a pool split",
        description="Greedy predictions of a model on the tasks of a pool split (or named "
        f"tasks), scored with ROUGE-L and exact match; writes {METRICS_FILE} and "
        f"{PREDICTIONS_FILE} to --out. --max-instances caps the instances per task "
        f"(default {EvaluationSettings.model_fields['max_instances_per_task'].default}).",
    )
    add_pool_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or folder")
    parser.add_argument("--split", default="test", help="pool split to evaluate on (default: test)")
    parser.add_argument("--tasks", default=None, metavar="NAMES|FILE",
                        help="evaluate these tasks instead of a split (names or a file, as for train)")
    add_output_arguments(parser, "output folder (created; written all at once at the end)")
    add_settings_arguments(parser.add_argument_group("evaluation"), EvaluationSettings, skip=("max_instances_per_task",))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out", args.overwrite, command="evaluate", protect=protected_paths(args))
    check_model(args.model, args.chat)
    if args.max_instances is not None and args.max_instances < 1:  # (the pool's flag sets the evaluation's cap)
        raise ActiveITError(f"--max-instances must be at least 1, got {args.max_instances}")
    config = settings_from_args(args, EvaluationSettings, max_instances_per_task=args.max_instances)
    pool = pool_from_args(args)
    tasks = named_tasks(pool, read_task_names(args.tasks)) if args.tasks else pool.split(args.split)
    if not tasks:
        with_tasks = ", ".join(name for name, split in pool.splits.items() if split)
        raise PoolError(f"pool '{pool.name}' split '{args.split}' has no tasks to evaluate; choose another --split "
                        f"(these have tasks: {with_tasks}) or name tasks with --tasks")
    report = evaluate_model(place_model(load_model(args.model)), tasks, config, progress=not args.no_progress)
    with output_dir(args.out, args.overwrite, command="evaluate") as tmp:
        report.save(tmp)
    out = args.out
    where = f"tasks {args.tasks}" if args.tasks else f"split '{args.split}'"
    print(f"{args.model} on {pool.name} {where}: {len(tasks)} tasks, {report.overall['instances']} instances")
    print(report.summary())
    print(f"saved {out / METRICS_FILE} and {out / PREDICTIONS_FILE}")
    return 0

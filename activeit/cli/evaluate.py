"""``python -m activeit evaluate``: ROUGE-L and exact match of a model on a pool split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from activeit.cli.common import add_pool_arguments, pool_from_args
from activeit.cli.train import read_task_names, select_tasks
from activeit.evaluation import (
    METRICS_FILE,
    PREDICTIONS_FILE,
    EvalConfig,
    evaluate_model,
)
from activeit.models import DEFAULT_MODEL, load_model

DEFAULTS = EvalConfig()


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="ROUGE-L / exact match of a model on a pool split",
        description="Greedy predictions of a model on the tasks of a pool split (or named "
        f"tasks), scored with ROUGE-L and exact match; writes {METRICS_FILE} and "
        f"{PREDICTIONS_FILE} to --out. --max-instances caps the instances per task "
        f"(default {DEFAULTS.max_instances_per_task}).",
    )
    add_pool_arguments(parser)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name or folder")
    parser.add_argument("--split", default="test", help="pool split to evaluate on (default: test)")
    parser.add_argument("--tasks", default=None, metavar="NAMES|FILE",
                        help="evaluate these tasks instead of a split (names or a file, as for train)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULTS.max_new_tokens)
    parser.add_argument("--max-source-length", type=int, default=DEFAULTS.max_source_length)
    parser.add_argument("--token-budget", type=int, default=DEFAULTS.token_budget,
                        help="tokens (prompt + new) per generation batch")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap prompts in the chat template (default: when the model has one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config = EvalConfig(
        max_instances_per_task=args.max_instances or DEFAULTS.max_instances_per_task,
        max_new_tokens=args.max_new_tokens,
        max_source_length=args.max_source_length,
        token_budget=args.token_budget,
        seed=args.seed,
        chat=args.chat,
    )
    pool = pool_from_args(args)
    tasks = select_tasks(pool, read_task_names(args.tasks)) if args.tasks else pool.split(args.split)
    report = evaluate_model(load_model(args.model), tasks, config, progress=not args.no_progress)
    out = report.save(args.out)
    where = f"tasks {args.tasks}" if args.tasks else f"split '{args.split}'"
    print(f"{args.model} on {pool.name} {where}: {len(tasks)} tasks, {report.overall['instances']} instances")
    print(report.summary())
    print(f"saved {out / METRICS_FILE} and {out / PREDICTIONS_FILE}")
    return 0

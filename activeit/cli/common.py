"""Command-line pieces shared by the subcommands: the task-pool options."""

from __future__ import annotations

import argparse
import sys
import warnings

from activeit.sources import SOURCES, SkippedTaskWarning, load_pool
from activeit.tasks import TaskPool


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options that choose and shape a task pool (see :func:`load_pool`)."""
    group = parser.add_argument_group("task pool")
    group.add_argument("--source", choices=SOURCES, default="builtin",
                       help="where the tasks come from (default: builtin, the offline suite)")
    group.add_argument("--path", default=None,
                       help="NIV2 root folder, Self-Instruct .jsonl file or folder, or a hub dataset id")
    group.add_argument("--split-dir", default="default",
                       help="NIV2 split folder under <path>/splits (default: default)")
    group.add_argument("--max-instances", type=int, default=None, metavar="N",
                       help="keep at most N seeded instances per task")
    group.add_argument("--validation-tasks", type=int, default=0, metavar="N",
                       help="hold out N seeded train tasks as a validation split")
    group.add_argument("--test-tasks", type=int, default=0, metavar="N",
                       help="hold out N seeded train tasks as the test split (sources without one)")
    group.add_argument("--skip-invalid", action="store_true",
                       help="warn about invalid tasks and missing task files instead of failing")
    group.add_argument("--all-languages", action="store_true",
                       help="NIV2: keep non-English tasks too (default: English only)")


def pool_from_args(args: argparse.Namespace) -> TaskPool:
    """The pool the options of :func:`add_pool_arguments` describe (seed: ``args.seed``,
    else 0). Skipped invalid tasks are reported as one ``warning:`` line each on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkippedTaskWarning)
        pool = load_pool(
            args.source,
            args.path,
            split_dir=args.split_dir,
            english_only=not args.all_languages,
            max_instances_per_task=args.max_instances,
            validation_tasks=args.validation_tasks,
            test_tasks=args.test_tasks,
            seed=getattr(args, "seed", 0),
            skip_invalid=args.skip_invalid,
        )
    for warning in caught:
        if issubclass(warning.category, SkippedTaskWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return pool

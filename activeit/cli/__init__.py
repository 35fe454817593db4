"""``python -m activeit``: the library's command line (pool, score, train, evaluate).

Each subcommand lives in its own module of this package with a ``register(subparsers)``
function that adds its parser and sets ``handler``. Library errors become one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from activeit.errors import ActiveITError

COMMANDS = ("pool", "score", "train", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m activeit",
        description="Active instruction tuning by prompt uncertainty: inspect task pools, "
        "score tasks, fine-tune and evaluate. The full loop is run.py.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"activeit.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ActiveITError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

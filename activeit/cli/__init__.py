"""``python -m activeit``: the library's command line (pool, score, train, evaluate).

Each subcommand lives in its own module of this package with a ``register(subparsers)``
function that adds its parser and sets ``handler``. Library errors become one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Sequence

from activeit.config.flags import ArgumentParser
from activeit.errors import ActiveITError

COMMANDS = ("pool", "score", "train", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m activeit",
        description="Active instruction tuning by prompt uncertainty: inspect task pools, "
        "score tasks, fine-tune and evaluate. The full loop is run.py.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"activeit.cli.{name}").register(subparsers)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C, so that the processes a command started are ended on the
    way out and the command says why it stopped."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return int(args.handler(args) or 0)
    except ActiveITError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"{what}: stopped before the end; the processes it started were ended and no output was written "
              "(outputs are written whole at the end)", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)

#!/usr/bin/env python
"""Run active instruction tuning as a ZenML pipeline, tracked in MLflow.

    python run.py --strategy uncertainty                     # configs/default.yaml
    python run.py --strategy random --config configs/niv2.yaml --rounds 2
    python run.py --compare uncertainty,random --seeds 0,1,2    # a study over 3 seeds
    python run.py --report activeit                           # rebuild a study from MLflow
    python run.py --compare uncertainty,random --seeds 0,1,2,3 --parallel 2   # 2 seeds at a time

Round 0 fine-tunes on a seeded random task set (shared by every strategy); each later
round scores the remaining pool with the previous round's model, selects tasks by the
strategy, re-trains and evaluates ROUGE-L on held-out test tasks. Every round's metrics,
selected tasks, score table, task map and model go to MLflow. Re-running the same command
after an interruption resumes from the last finished step.

A study (``--compare``, ``--seeds`` or a config's ``study:`` section) runs every (strategy,
seed) pair, round 0 shared per seed, reuses pairs that already finished, and writes
``outputs/study-<experiment>/``: means ± std over seeds, the paired difference to random
with a 95% interval, the budget to match, selection overlap and the learning curve.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from activeit.config.flags import ArgumentParser, add_settings_arguments
from activeit.errors import ActiveITError, ConfigError
from experiment.config import DEFAULT_CONFIG, REPO_ROOT, ExperimentConfig
from pipelines.plan import OVERRIDES, check_before_running, plan_report, plan_runs

#: Where studies are written: outputs/ of the repository (ACTIVEIT_OUTPUTS: another folder, as the
#: benchmarks that run studies in isolated stores use).
OUTPUTS = Path(os.environ.get("ACTIVEIT_OUTPUTS") or REPO_ROOT / "outputs")
#: How long ``--report --wait`` waits by default, in seconds (a day).
WAIT_TIMEOUT_S = 86400.0


def build_parser() -> argparse.ArgumentParser:
    """run.py's flags; the overrides of the config are generated from its fields."""
    parser = ArgumentParser(
        prog="python run.py",
        description=__doc__,
        epilog="Relative paths inside config files resolve against the repository root. "
        "The MLflow UI command is printed at the end of each run.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group()
    add_settings_arguments(what, ExperimentConfig, ["strategy"], show_defaults=False)
    what.add_argument("--compare", metavar="S1,S2,...",
                      help="a study of these strategies (with --seeds, over several seeds): statistics, "
                      "learning curve and overlap in outputs/study-<experiment>/, also logged to MLflow")
    what.add_argument("--report", metavar="EXPERIMENT",
                      help="rebuild the study of an MLflow experiment from its runs alone (no training)")
    parser.add_argument("--seeds", metavar="N1,N2,...",
                        help="study seeds: every strategy runs once per seed (default: the config's seed)")
    parser.add_argument("--strategies", metavar="S1,S2,...", help="with --report: only these strategies")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, metavar="YAML",
                        help=f"experiment config (default: {DEFAULT_CONFIG.relative_to(REPO_ROOT)})")
    over = parser.add_argument_group("overrides of the config", "each replaces the config's value; a "
                                     "relative --pool-path starts at the current folder")
    add_settings_arguments(over, ExperimentConfig, OVERRIDES, show_defaults=False)
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute every step (by default finished steps are reused: resume)")
    parser.add_argument("--wait", action="store_true",
                        help="with --report: wait until every pair of the study has finished (pairs submitted to "
                        "a remote stack with --parallel), then write it")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help=f"with --wait: give up after this long (default {WAIT_TIMEOUT_S:.0f})")
    return parser


def parallel_flag(args: argparse.Namespace) -> str:
    """Where ``study.parallel`` came from, for a refusal: the flag or the config file."""
    return "--parallel" if getattr(args, "study.parallel", None) is not None else f"study.parallel in {args.config}"


def check_wait_flags(args: argparse.Namespace) -> None:
    """``--wait`` only with ``--report``; ``--timeout`` only with ``--wait``, and above 0."""
    if args.wait and args.report is None:
        raise ConfigError("--wait waits for a study's pairs before --report writes it: give --report EXPERIMENT")
    if args.timeout is not None and not args.wait:
        raise ConfigError("--timeout is how long --wait waits: give --wait too")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout is {args.timeout:g}; give a number of seconds above 0")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C, so that a run stopped by ``kill`` or ``timeout`` is marked
    as stopped (and its workers ended) on the way out, as after SIGINT."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    if threading.current_thread() is not threading.main_thread():  # (signal handlers live there only)
        return _main(args, started)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(args, started)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace, started: float) -> int:
    try:
        check_wait_flags(args)
        if args.report is not None:
            config, strategies, seeds = plan_report(args)
        else:
            configs, is_study = plan_runs(args)
            config = configs[0]
            if getattr(args, "study.parallel", None) not in (None, 1) and not is_study:  # (a config's: for its studies)
                raise ConfigError(f"{parallel_flag(args)} runs the pairs of a study at once; give --compare S1,S2 "
                                  "and/or --seeds N1,N2 (or set it to 1)")
            check_before_running(configs, str(args.config))

        from pipelines.runner import prepare, report_study, run_all
        from tracking.study import gather_runs

        info = prepare(config)
        if args.report is not None:
            if args.wait:
                from pipelines.remote import wait_for_study

                wait_for_study(info.tracking_uri, args.report, strategies, seeds,
                               args.timeout if args.timeout is not None else WAIT_TIMEOUT_S)
            runs = gather_runs(info.tracking_uri, args.report, strategies, seeds)
            report_study(info.tracking_uri, args.report, runs, OUTPUTS,
                         subset=strategies is not None or seeds is not None, metric=config.study.metric)
        elif is_study and config.study.parallel > 1:
            from pipelines.fanout import run_study

            run_study(configs, info, OUTPUTS, parallel_flag(args))
        else:
            run_all(configs, is_study, info, OUTPUTS)
    except ActiveITError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        print("interrupted (a run that had started is marked failed in ZenML and killed in MLflow); run the "
              "same command again to resume from the last finished step", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    from pipelines.console import print_ui_commands

    print(f"Done in {time.perf_counter() - started:.0f} s.")
    print_ui_commands(info.tracking_uri, args.report or config.tracking.experiment)
    return 0


if __name__ == "__main__":
    sys.exit(main())

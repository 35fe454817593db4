"""A whole run, before and after a change, side by side: wall time, per-step times and the round table.

Runs ``run.py <args>`` in an earlier checkout (``--before``, e.g. ``git worktree add
/tmp/main0 <commit>``) and in this one, alternating (before, after, after, before, ...), each
in a fresh process with its own ZenML store (nothing cached, nothing shared with the user's
store). Prints every run's wall time and its steps' times (read back from its ZenML store),
min / median per side, the after/before ratio of the medians, and whether the round tables
(ROUGE-L, EM, loglik, loss per round) are identical.

    python benchmarks/ab_run.py --before /tmp/main0 --repeats 2 -- --strategy uncertainty
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEP_TIMES = """
import json, sys
from zenml.client import Client
run = Client().list_pipeline_runs(sort_by="desc:created", size=1)[0]
steps = {name: (s.end_time - s.start_time).total_seconds() for name, s in run.steps.items()
         if s.start_time and s.end_time}
print(json.dumps(steps))
"""


def round_table(output: str) -> list[list[str]]:
    """The round table's rows (round, tasks, ROUGE-L, EM, loglik, loss), times left out."""
    rows = []
    for line in output.splitlines():
        cells = line.split()
        if cells and (cells[0] == "base" or cells[0].isdigit()) and len(cells) >= 6 and re.match(r"-?\d", cells[2]):
            rows.append(cells[:6])
    return rows


def one_run(tree: Path, args: list[str], python: str) -> dict:
    """``run.py args`` in ``tree`` with a private ZenML store: wall time, step times, round table."""
    with tempfile.TemporaryDirectory(prefix="activeit-ab-") as store:
        env = {**os.environ, "ZENML_CONFIG_PATH": str(Path(store) / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        started = time.perf_counter()
        done = subprocess.run([python, "run.py", *args], cwd=tree, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"error: run.py failed in {tree} (exit {done.returncode}):\n{done.stderr[-2000:]}")
        steps = subprocess.run([python, "-c", STEP_TIMES], cwd=tree, env=env, capture_output=True, text=True)
    return {"wall": wall, "steps": json.loads(steps.stdout.strip().splitlines()[-1]) if steps.returncode == 0 else {},
            "table": round_table(done.stdout + done.stderr)}


def step_kind(name: str) -> str:
    """``accelerate_finetuner_round_1`` -> ``accelerate_finetuner``."""
    return re.sub(r"_round_\d+$", "", name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the earlier checkout (a git worktree)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side (alternating)")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("run_args", nargs=argparse.REMAINDER, help="-- then run.py's arguments")
    args = parser.parse_args(argv)
    run_args = [a for a in args.run_args if a != "--"] or ["--strategy", "uncertainty"]
    if not (args.before / "run.py").is_file():
        parser.error(f"--before {args.before} has no run.py; make one with: git worktree add {args.before} <commit>")

    sides = {"before": args.before.resolve(), "after": ROOT}
    runs: dict[str, list[dict]] = defaultdict(list)
    for repeat in range(args.repeats):
        for side in ("before", "after") if repeat % 2 == 0 else ("after", "before"):
            result = one_run(sides[side], run_args, args.python)
            runs[side].append(result)
            print(f"{side:<6} run {len(runs[side])}: {result['wall']:7.1f} s", flush=True)

    kinds = sorted({step_kind(n) for side in runs.values() for r in side for n in r["steps"]})
    print(f"\nper step (sum over rounds), median of {args.repeats} runs, s:")
    print(f"  {'step':<26} {'before':>8} {'after':>8} {'ratio':>6}")
    for kind in kinds:
        medians = [statistics.median(sum(t for n, t in r["steps"].items() if step_kind(n) == kind) for r in runs[s])
                   for s in ("before", "after")]
        ratio = medians[1] / medians[0] if medians[0] else float("nan")
        print(f"  {kind:<26} {medians[0]:8.1f} {medians[1]:8.1f} {ratio:6.2f}")
    for side in ("before", "after"):
        walls = [r["wall"] for r in runs[side]]
        print(f"{side:<6} wall: min {min(walls):.1f} s, median {statistics.median(walls):.1f} s "
              f"(runs: {', '.join(f'{w:.1f}' for w in walls)})")
    tables = {side: [r["table"] for r in runs[side]] for side in runs}
    print("round table (before):")
    for row in tables["before"][0]:
        print("  " + "  ".join(row))
    if tables["after"][0] != tables["before"][0]:
        print("round table (after):")
        for row in tables["after"][0]:
            print("  " + "  ".join(row))
    same_within = all(t == tables[s][0] for s in tables for t in tables[s])
    print(f"tables identical within each side: {same_within}; before == after: {tables['before'][0] == tables['after'][0]}")
    ratio = statistics.median(r["wall"] for r in runs["after"]) / statistics.median(r["wall"] for r in runs["before"])
    print(f"ratio={ratio:.3f}")


if __name__ == "__main__":
    main()

"""How fast and how lean a large Alpaca-style file loads as a pool (issue: record formats).

Writes a seeded file of ``--records`` Alpaca records (52,000 by default, the size of
Stanford Alpaca; about Alpaca's lengths: ~11-word instructions, 40% with a ~15-word input,
~50-word outputs) into a temporary folder, then, ``--repeats`` times, in fresh processes:

- ``python -m activeit pool --source alpaca --path FILE --json``: the command's wall time
  (interpreter start and imports included) and its peak RSS;
- ``load_pool("alpaca", FILE)`` alone: its wall time, the process's peak RSS, and the peak
  minus the peak before the call (what the records and tasks cost). Linux only (VmHWM).

    python benchmarks/record_load.py [--records 52000] [--repeats 3] [--task-clusters N]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A process's peak RSS in MiB (Linux: VmHWM, which, unlike ru_maxrss, starts afresh at exec).
PEAK = "lambda: int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"
CHILD = f"""
import json, sys, time
from activeit.data.sources import load_pool
peak_mib = {PEAK}
before = peak_mib()
started = time.perf_counter()
pool = load_pool("alpaca", sys.argv[1], task_clusters=int(sys.argv[2]) or None)
seconds = time.perf_counter() - started
peak = peak_mib()
print(json.dumps({{"seconds": seconds, "peak_mb": peak, "delta_mb": peak - before,
                  "tasks": len(pool.train), "instances": sum(len(t.instances) + len(t.positive_examples) for t in pool)}}))
"""
#: ``python -m activeit ARGS`` in a process that reports its own peak RSS (MiB) on its last stderr line.
CLI_CHILD = f"""
import runpy, sys
sys.argv = ["activeit", *sys.argv[1:]]
try:
    runpy.run_module("activeit", run_name="__main__")
except SystemExit as exit:
    assert not exit.code, exit.code
print(({PEAK})(), file=sys.stderr)
"""


def write_records(path: Path, count: int, seed: int = 0) -> None:
    """``count`` seeded Alpaca records (random words: distinct instructions) as one JSON list."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    records = [
        {"instruction": f"{text(4, 18)}.", "input": text(5, 25) if rng.random() < 0.4 else "",
         "output": text(10, 90)}
        for _ in range(count)
    ]
    path.write_text(json.dumps(records, indent=4), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=52_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--task-clusters", type=int, default=0, help="also cluster into N tasks (0: by instruction)")
    parser.add_argument("--write", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        return write_records(args.write, args.records)
    with tempfile.TemporaryDirectory(prefix="activeit-52k-") as folder:
        path = Path(folder) / "alpaca_data.json"
        # written by a child process, so that this one stays small (a child starts as its copy)
        subprocess.run([sys.executable, __file__, "--write", str(path), "--records", str(args.records)], check=True)
        print(f"{args.records} records, {path.stat().st_size / 2**20:.1f} MiB ({path})")
        for repeat in range(1, args.repeats + 1):
            command = [sys.executable, "-c", CLI_CHILD, "pool", "--source", "alpaca", "--path", str(path), "--json"]
            if args.task_clusters:
                command += ["--task-clusters", str(args.task_clusters)]
            started = time.perf_counter()
            cli = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
            cli_seconds = time.perf_counter() - started
            cli_peak = float(cli.stderr.strip().splitlines()[-1])
            child = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.task_clusters)], cwd=ROOT,
                                   check=True, capture_output=True, text=True)
            load = json.loads(child.stdout)
            print(f"run {repeat}: CLI {cli_seconds:.2f} s, peak RSS {cli_peak:.0f} MiB; "
                  f"load_pool {load['seconds']:.2f} s, peak RSS {load['peak_mb']:.0f} MiB "
                  f"(+{load['delta_mb']:.0f} MiB for the load); {load['tasks']} tasks, {load['instances']} instances")


if __name__ == "__main__":
    main()

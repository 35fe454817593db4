"""Adaptive scoring of an Alpaca-sized pool: peak memory against pool size, wall time, resume.

Writes a seeded Alpaca file (:func:`benchmarks.record_load.write_records`: distinct ~11-word
instructions, 40% with an input) of the largest ``--sizes`` records into a temporary folder
(never the repository). Grouped by instruction, the Alpaca way, each record is one task with
one instance and no demonstration. Then, for each size, in a fresh process: load the first
``size`` tasks and score them adaptively (:func:`activeit.scoring.adaptive.score_adaptive`) with
the tiny test model (``tiny-llama``) for a budget of ``--budget-share`` of the tasks, journaled
to a checkpoint in the temporary folder. Printed per size: the peak RSS after loading the pool
and after scoring (Linux VmHWM), the wall time of the scoring, the stages, the tasks stopped.

``--interrupt-after S`` also interrupts the smallest size's run after S seconds (SIGINT, as
Ctrl-C) and runs it again with the same checkpoint: it resumes where it stopped, and the
resumed table is compared with the uninterrupted one (same rows). A benchmark: it measures.

    python benchmarks/large_pool.py                                # 5,000 and 52,000 tasks, k=4
    python benchmarks/large_pool.py --sizes 500,2000 --k 4 --interrupt-after 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: One scoring run in a fresh process: JSON of its peak memory, time and outcome on its last stdout line.
CHILD = """
import json, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["root"])

def peak_mib():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024

import torch
from activeit.config.settings import ScoringSettings
from activeit.data.sources import load_pool
from activeit.models.loading import load_model
from activeit.scoring.adaptive import score_adaptive

loaded = load_model("tiny-llama")
ready = peak_mib()
tasks = list(load_pool("alpaca", spec["path"]).train)[: spec["size"]]
loaded_peak = peak_mib()
config = ScoringSettings(**spec["config"])
budget = max(1, round(spec["share"] * len(tasks)))
started = time.perf_counter()
table = score_adaptive(loaded, tasks, config, budget, progress=spec["progress"], checkpoint=spec["checkpoint"])
seconds = time.perf_counter() - started
if spec["save"]:
    table.save(spec["save"])
meta = table.meta["adaptive"]
print(json.dumps({"tasks": len(tasks), "instances": sum(r.n for r in table), "budget": budget, "seconds": seconds,
                  "model_mib": ready, "loaded_mib": loaded_peak, "peak_mib": peak_mib(),
                  "stages": meta["stages"], "stopped_in": meta["stopped_in"], "stopped_out": meta["stopped_out"],
                  "pairs": meta["pairs"], "resumed_chunks": meta["resumed_chunks"],
                  "kept_mib": meta["kept_bytes_peak"] / 2**20}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="5000,52000",
                        help="comma-separated pool sizes (tasks), each in a fresh process")
    parser.add_argument("--k", type=int, default=4, help="perturbed prompts per task")
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--first-stage", type=int, default=2, help="pairs per task in stage 1")
    parser.add_argument("--delta", type=float, default=0.1)
    parser.add_argument("--budget-share", type=float, default=0.1, help="b as a share of the pool")
    parser.add_argument("--tasks-per-chunk", type=int, default=512)
    parser.add_argument("--token-budget", type=int, default=16384)
    parser.add_argument("--keep-prefixes-mb", type=float, default=256.0, help="prefix KV caches kept between stages")
    parser.add_argument("--interrupt-after", type=float, default=None, metavar="S",
                        help="interrupt the smallest run after S seconds, resume it, compare the tables")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    args = parser.parse_args(argv)
    try:
        args.size_list = sorted({int(part) for part in args.sizes.split(",") if part.strip()})
    except ValueError:
        args.size_list = []
    if not args.size_list or min(args.size_list) < 1:
        raise SystemExit(f"--sizes takes comma-separated whole numbers of at least 1, got '{args.sizes}'")
    if args.k < 1 or args.max_new_tokens < 1 or args.first_stage < 1 or args.tasks_per_chunk < 1:
        raise SystemExit("--k, --max-new-tokens, --first-stage and --tasks-per-chunk must be at least 1")
    if not 0 < args.delta < 1 or not 0 < args.budget_share < 1 or args.keep_prefixes_mb < 0:
        raise SystemExit("--delta and --budget-share must lie in (0, 1), --keep-prefixes-mb not below 0")
    if args.interrupt_after is not None and args.interrupt_after <= 0:
        raise SystemExit("--interrupt-after must be positive")
    return args


def child(args: argparse.Namespace, path: Path, size: int, checkpoint: Path | None, save: Path | None,
          interrupt_after: float | None = None) -> dict[str, Any] | None:
    """One scoring run in a fresh process; None when it was interrupted (as planned)."""
    spec = {"root": str(ROOT), "path": str(path), "size": size, "share": args.budget_share,
            "progress": not args.no_progress, "checkpoint": str(checkpoint) if checkpoint else None,
            "save": str(save) if save else None,
            "config": {"n": 1, "k": args.k, "max_new_tokens": args.max_new_tokens, "adaptive": True,
                       "delta": args.delta, "first_stage": args.first_stage, "keep_prefixes_mb": args.keep_prefixes_mb, "tasks_per_chunk": args.tasks_per_chunk,
                       "token_budget": args.token_budget, "chat": False}}
    process = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(spec)], cwd=ROOT, stdout=subprocess.PIPE,
                               text=True)
    try:
        out, _ = process.communicate(timeout=interrupt_after)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        process.communicate()
        return None
    except BaseException:
        process.kill()
        process.wait()
        raise
    if process.returncode:
        raise SystemExit(f"scoring {size} tasks failed (exit status {process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    try:
        args = parse_args(argv)
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(f"error: {stop.code}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    sizes = args.size_list
    with tempfile.TemporaryDirectory(prefix="activeit-large-pool-") as folder:
        work = Path(folder)
        path = work / "alpaca_data.json"
        # written by a child process, so that this one stays small
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "record_load.py"), "--write", str(path),
                        "--records", str(sizes[-1])], check=True)
        print(f"{sizes[-1]} Alpaca records ({path.stat().st_size / 2**20:.1f} MiB, one task each) in {work}; "
              f"tiny-llama, n=1, k={args.k}, max_new_tokens={args.max_new_tokens}, first_stage={args.first_stage}, "
              f"delta={args.delta}, b={args.budget_share:g} of the pool, {args.tasks_per_chunk} tasks per chunk, "
              f"kept prefix caches up to {args.keep_prefixes_mb:g} MiB", flush=True)
        runs = []
        for size in sizes:
            save = work / f"scores-{size}.csv"
            run = child(args, path, size, work / f"scores-{size}.checkpoint", save)
            assert run is not None
            runs.append(run)
            print(f"{run['tasks']:>6} tasks (b={run['budget']}): scored in {run['seconds']:.1f} s "
                  f"({run['tasks'] / run['seconds']:.1f} tasks/s), {run['stages']} stages, stopped "
                  f"{run['stopped_in']} in + {run['stopped_out']} out, {run['pairs']} pairs; peak RSS "
                  f"{run['model_mib']:.0f} MiB with the model, {run['loaded_mib']:.0f} MiB with the pool, "
                  f"{run['peak_mib']:.0f} MiB after scoring (+{run['peak_mib'] - run['loaded_mib']:.0f} MiB for the "
                  f"scoring; kept prefix caches at most {run['kept_mib']:.0f} MiB)", flush=True)
        if len(runs) > 1:
            first, last = runs[0], runs[-1]
            print(f"growth from {first['tasks']} to {last['tasks']} tasks ({last['tasks'] / first['tasks']:.1f}x): "
                  f"peak RSS {first['peak_mib']:.0f} -> {last['peak_mib']:.0f} MiB "
                  f"({last['peak_mib'] / first['peak_mib'] - 1:+.1%}); scoring's share "
                  f"+{first['peak_mib'] - first['loaded_mib']:.0f} -> +{last['peak_mib'] - last['loaded_mib']:.0f} MiB",
                  flush=True)
        if args.interrupt_after is not None:
            size, checkpoint, save = sizes[0], work / "resumed.checkpoint", work / "resumed.csv"
            started = time.perf_counter()
            stopped = child(args, path, size, checkpoint, save, interrupt_after=args.interrupt_after)
            lines = sum(1 for _ in checkpoint.open()) - 1 if checkpoint.exists() else 0
            print(f"interrupted the {size}-task run after {time.perf_counter() - started:.0f} s "
                  f"({'it had finished' if stopped else f'{lines} chunks journaled'}); resuming", flush=True)
            resumed = child(args, path, size, checkpoint, save)
            assert resumed is not None
            from activeit.scoring.scores import ScoreTable

            again, whole = ScoreTable.load(save), ScoreTable.load(work / f"scores-{size}.csv")
            same = [(r.task, r.pairs, r.decided) for r in again] == [(r.task, r.pairs, r.decided) for r in whole]
            worst = max(abs(a.pu - b.pu) for a, b in zip(again, whole))
            print(f"resumed: {resumed['resumed_chunks']} chunks read back, the rest scored in "
                  f"{resumed['seconds']:.1f} s "
                  f"(peak RSS {resumed['peak_mib']:.0f} MiB); against the uninterrupted run: same tasks, pairs and "
                  f"decisions {same}, max |PU difference| {worst:.1e}", flush=True)


if __name__ == "__main__":
    main()

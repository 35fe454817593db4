"""A battery of bad inputs across the CLI, run.py, studies and the study benchmarks, classified.

Each case runs as a fresh process (a ZenML store of its own, so nothing touches yours) in a
scratch folder holding a file of "the user's" that no case may change. A case is counted as

* **traceback**: its stderr holds a Python traceback;
* **loss**: the user's file changed or disappeared;
* **silent**: it exited 0 (a bad input taken without a word);
* **late**: it was refused, but only after more than ``--late`` seconds (compute ran first);
* **not one line**: refused with other than exactly one ``error:`` line on stderr (its last line);
* otherwise **ok**, with its error line printed so that a reader can judge whether it is true.

    python benchmarks/bad_input_battery.py            # every case, a summary line at the end
    python benchmarks/bad_input_battery.py --only cron
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLI = [PY, "-m", "activeit"]
RUN = [PY, str(ROOT / "run.py")]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
SCORE = [*CLI, "score", "--model", "tiny-llama", "--max-tasks", "2", "--n", "1", "--k", "1", "--max-new-tokens", "2",
         "--no-progress"]
TRAIN_BASE = [*CLI, "train", "--model", "tiny-llama", "--no-progress"]
TRAIN = [*TRAIN_BASE, "--max-steps", "1", "--tasks", "numbers_add"]
EVAL = [*CLI, "evaluate", "--model", "tiny-llama", "--no-progress"]


def cases(scratch: Path) -> dict[str, list[str]]:
    """Name -> command line; ``{s}`` is the scratch folder."""
    s = str(scratch)
    return {
        # ----------------------------------------------------------- outputs that hold what the user has
        "score --out the scratch folder (holds the user's file)": [*SCORE, "--out", s],
        "score --out the scratch folder --overwrite": [*SCORE, "--out", s, "--overwrite"],
        "score --out the user's file": [*SCORE, "--out", f"{s}/mine.txt"],
        "score --out / --overwrite": [*SCORE, "--out", "/", "--overwrite"],
        "score --out $HOME/.cache --overwrite": [*SCORE, "--out", str(Path.home() / ".cache"), "--overwrite"],
        "train --out $HOME --overwrite": [*TRAIN, "--out", str(Path.home()), "--overwrite"],
        "evaluate --out /tmp --overwrite": [*EVAL, "--out", "/tmp", "--overwrite"],
        "pool --out the user's file": [*CLI, "pool", "--out", f"{s}/mine.txt"],
        "pool --out a folder": [*CLI, "pool", "--out", s],
        "train --out the model it reads": [*TRAIN, "--out", f"{s}/m", "--model", f"{s}/m"],
        # ----------------------------------------------------------- numbers
        "score --n 0": [*SCORE, "--n", "0", "--out", f"{s}/o"],
        "score --k -1": [*SCORE, "--k", "-1", "--out", f"{s}/o"],
        "score --max-tasks 0": [*SCORE, "--max-tasks", "0", "--out", f"{s}/o"],
        "score --drop-prob 1.5": [*SCORE, "--drop-prob", "1.5", "--out", f"{s}/o"],
        "score --budget -3 --adaptive": [*SCORE, "--adaptive", "--budget", "-3", "--out", f"{s}/o"],
        "score --delta 0 --adaptive": [*SCORE, "--adaptive", "--delta", "0", "--out", f"{s}/o"],
        "score --num-processes 64": [*SCORE, "--num-processes", "64", "--out", f"{s}/o"],
        "train --max-steps 0": [*TRAIN_BASE, "--max-steps", "0", "--tasks", "numbers_add", "--out", f"{s}/o"],
        "train --lr -1": [*TRAIN, "--lr", "-1", "--out", f"{s}/o"],
        "evaluate --max-instances 0": [*EVAL, "--max-instances", "0", "--out", f"{s}/o"],
        "score --max-new-tokens abc": [*SCORE, "--max-new-tokens", "abc", "--out", f"{s}/o"],
        # ----------------------------------------------------------- names
        "score --model no-such-model": [*SCORE, "--model", "no/such/model/here", "--out", f"{s}/o"],
        "score --split nosplit": [*SCORE, "--split", "nosplit", "--out", f"{s}/o"],
        "score --perturbation nope": [*SCORE, "--perturbation", "nope", "--out", f"{s}/o"],
        "score --strategy ifd": [*SCORE, "--strategy", "ifd", "--out", f"{s}/o"],
        "score --strategy uncertainty-diverse": [*SCORE, "--strategy", "uncertainty-diverse", "--out", f"{s}/o"],
        "score --adaptive --strategy easy": [*SCORE, "--adaptive", "--strategy", "easy", "--out", f"{s}/o"],
        "score --checkpoint without --adaptive": [*SCORE, "--checkpoint", f"{s}/j", "--out", f"{s}/o"],
        "score --adaptive --checkpoint the user's file": [*SCORE, "--adaptive", "--checkpoint", f"{s}/mine.txt",
                                                          "--out", f"{s}/o"],
        "train --tasks no_such_task": [*TRAIN_BASE, "--tasks", "no_such_task", "--out", f"{s}/o"],
        "train --tasks ''": [*TRAIN_BASE, "--tasks", "", "--out", f"{s}/o"],
        "train --tasks a folder": [*TRAIN_BASE, "--tasks", s, "--out", f"{s}/o"],
        "train --tasks ./missing.txt": [*TRAIN_BASE, "--tasks", "./missing.txt", "--out", f"{s}/o"],
        "train --method qlora": [*TRAIN, "--method", "qlora", "--out", f"{s}/o"],
        "evaluate --split validation (none held out)": [*EVAL, "--split", "validation", "--out", f"{s}/o"],
        # ----------------------------------------------------------- pools
        "pool --source niv2 without --path": [*CLI, "pool", "--source", "niv2"],
        "pool --source alpaca --path missing": [*CLI, "pool", "--source", "alpaca", "--path", f"{s}/missing.json"],
        "pool --source alpaca --path the user's text file": [*CLI, "pool", "--source", "alpaca", "--path",
                                                             f"{s}/mine.txt"],
        "pool --source self-instruct --path an empty file": [*CLI, "pool", "--source", "self-instruct", "--path",
                                                             f"{s}/empty.jsonl"],
        "pool --source hf-disk --path a .txt": [*CLI, "pool", "--source", "hf-disk", "--path", f"{s}/mine.txt"],
        "pool --source sharegpt --path a list of strings": [*CLI, "pool", "--source", "sharegpt", "--path",
                                                            f"{s}/strings.json"],
        "pool --source builtin --columns x=y": [*CLI, "pool", "--source", "builtin", "--columns", "x=y"],
        "pool --test-tasks 1000 (self-instruct)": [*CLI, "pool", "--source", "self-instruct", "--path",
                                                   str(ROOT / "configs" / "smoke_tasks.jsonl"), "--test-tasks", "1000"],
        # ----------------------------------------------------------- run.py
        "run.py --config missing.yaml": [*RUN, "--config", f"{s}/missing.yaml"],
        "run.py --config the user's text file": [*RUN, "--config", f"{s}/mine.txt"],
        "run.py --config a folder": [*RUN, "--config", s],
        "run.py --strategy nope": [*RUN, "--config", SMOKE, "--strategy", "nope"],
        "run.py --compare uncertainty,uncertainty": [*RUN, "--config", SMOKE, "--compare", "uncertainty,uncertainty"],
        "run.py --compare ''": [*RUN, "--config", SMOKE, "--compare", ""],
        "run.py --seeds 1,1": [*RUN, "--config", SMOKE, "--compare", "random,random-b", "--seeds", "1,1"],
        "run.py --seeds -1": [*RUN, "--config", SMOKE, "--compare", "random,random-b", "--seeds", "-1"],
        "run.py --seeds a,b": [*RUN, "--config", SMOKE, "--compare", "random,random-b", "--seeds", "a,b"],
        "run.py --strategies without --report": [*RUN, "--config", SMOKE, "--strategies", "random"],
        "run.py --report ''": [*RUN, "--config", SMOKE, "--report", ""],
        "run.py --report no-such-experiment": [*RUN, "--config", SMOKE, "--report", "no-such-experiment"],
        "run.py --metric bleu": [*RUN, "--config", SMOKE, "--metric", "bleu"],
        "run.py --rounds 99": [*RUN, "--config", SMOKE, "--rounds", "99"],
        "run.py --tasks-per-round 0": [*RUN, "--config", SMOKE, "--tasks-per-round", "0"],
        "run.py --schedule '* * * *'": [*RUN, "--config", SMOKE, "--schedule", "* * * *"],
        "run.py --schedule on the local stack": [*RUN, "--config", SMOKE, "--schedule", "0 3 * * 1"],
        "run.py --pool-path '' ": [*RUN, "--config", SMOKE, "--pool-path", ""],
        "run.py --pool-source hub without a path": [*RUN, "--config", SMOKE, "--pool-source", "hub"],
        "run.py a config with an unknown key": [*RUN, "--config", f"{s}/unknown_key.yaml"],
        "run.py a config with study.metric: bleu": [*RUN, "--config", f"{s}/bad_metric.yaml"],
        # ----------------------------------------------------------- study benchmarks
        "calibration.py no-such-experiment": [PY, str(ROOT / "benchmarks" / "calibration.py"), "no-such-experiment",
                                              "--config", SMOKE],
        "calibration.py --studies 5": [PY, str(ROOT / "benchmarks" / "calibration.py"), "x", "--studies", "5"],
        "calibration.py --shift -1": [PY, str(ROOT / "benchmarks" / "calibration.py"), "x", "--shift", "-1"],
        "calibration.py --config missing": [PY, str(ROOT / "benchmarks" / "calibration.py"), "x", "--config",
                                            f"{s}/missing.yaml"],
        "variance.py --cache a folder": [PY, str(ROOT / "benchmarks" / "variance.py"), "x", "--cache", s,
                                         "--config", SMOKE],
        "variance.py no-such-experiment": [PY, str(ROOT / "benchmarks" / "variance.py"), "no-such-experiment",
                                           "--config", SMOKE, "--no-reevaluate"],
    }


def _prepare(scratch: Path) -> dict[str, bytes]:
    """The scratch folder's files (the user's, and the bad inputs the cases read)."""
    files = {
        "mine.txt": b"the user's only copy\n",
        "empty.jsonl": b"",
        "strings.json": b'["a", "b"]',
        "unknown_key.yaml": Path(SMOKE).read_bytes() + b"\nrounds_per_day: 3\n",
        "bad_metric.yaml": Path(SMOKE).read_bytes() + b"\nstudy:\n  metric: bleu\n",
    }
    for name, data in files.items():
        (scratch / name).write_bytes(data)
    (scratch / "m").mkdir()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bad_input_battery.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="run only the cases whose name holds this text")
    parser.add_argument("--late", type=float, default=20.0, help="seconds after which a refusal counts as late")
    args = parser.parse_args(argv)
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="activeit-battery-") as tmp:
        scratch = Path(tmp) / "work"
        scratch.mkdir()
        files = _prepare(scratch)
        env = {**os.environ, "ZENML_CONFIG_PATH": str(Path(tmp) / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false"}
        chosen = {n: c for n, c in cases(scratch).items() if args.only in n}
        for name, command in chosen.items():
            started = time.perf_counter()
            result = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=600)
            wall = time.perf_counter() - started
            err_lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
            lost = [f for f, data in files.items() if not (scratch / f).is_file() or (scratch / f).read_bytes() != data]
            if "Traceback (most recent call last)" in result.stderr:
                verdict = "traceback"
            elif lost:
                verdict = "loss"
            elif result.returncode == 0:
                verdict = "silent"
            elif wall > args.late:
                verdict = "late"
            elif len(err_lines) != 1 or not result.stderr.strip().splitlines()[-1].startswith("error:"):
                verdict = "not one line"
            else:
                verdict = "ok"
            counts[verdict] += 1
            shown = err_lines[-1] if err_lines else (result.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            print(f"[{verdict}] {name} (exit {result.returncode}, {wall:.1f} s): {shown[:300]}", flush=True)
            for f, data in files.items():  # the next case starts from the same files
                (scratch / f).write_bytes(data)
    print("battery: " + json.dumps({"cases": sum(counts.values()), **{k: counts.get(k, 0) for k in (
        "ok", "traceback", "loss", "silent", "late", "not one line")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Does ``--parallel K`` save wall time without changing results, and does a killed
parallel study leave nothing behind and resume?

    python benchmarks/parallel.py                                   # smoke, 4 seeds, K = 2
    python benchmarks/parallel.py --config configs/default.yaml --seeds 0,1,2
    python benchmarks/parallel.py --seeds 0,1 --rounds 1 --kill-after 60

Runs the same study (``--compare`` x ``--seeds`` on ``--config``) with ``--parallel 1`` (its
pairs at the default threads: every core), with ``--parallel K`` (each worker ``cores // K``
threads) and with ``--parallel 1`` pinned to ``cores // K`` threads, each in a fresh ZenML
store, MLflow store and outputs folder (so that no cache carries over). It prints the wall
time of each and whether the ``study.md`` and ``study.csv`` of K match those of the pinned
run (the selection-cost seconds, which are wall times, aside): parallelism must not change
results. A pair's numbers do depend on its CPU thread count, at float rounding (reductions
add up in another order), so the run at the default threads is compared too, for the record.
With
``--kill-after S`` it then starts the K study once more in a fresh store, sends it SIGTERM
after S seconds (as ``timeout`` or a batch scheduler would), checks that no process of it is
left and that no run reads running in ZenML or MLflow, and reruns it to the end (only the
missing pairs run; the results must match ``--parallel 1``'s). Timings are only meaningful
on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.models.processes import cpu_cores  # noqa: E402

EXPERIMENT = "activeit-parallel"
#: The wall times a study file prints (its selection cost), which no two runs share.
SECONDS = re.compile(r"\b[\d,]+(\.\d+)? s\b")


@dataclass(frozen=True)
class Outcome:
    """One ``run.py`` study in its own stores."""

    code: int
    wall_s: float
    folder: Path
    output: str
    study: str  # the study's folder under outputs/

    def study_file(self, name: str) -> str:
        """The study's ``name`` file ("" when the study wrote none)."""
        path = self.folder / "outputs" / self.study / name
        return path.read_text(encoding="utf-8") if path.exists() else ""


def flag_value(command: Sequence[str], name: str) -> str | None:
    """The value given to flag ``name`` in ``command`` (None when it is not there)."""
    return command[command.index(name) + 1] if name in command else None


def study_name(command: Sequence[str]) -> str:
    """The study folder a ``run.py`` study command writes (the project's own naming: the
    metric of its config, or of its ``--metric``, the default config's being the log-likelihood)."""
    from experiment.config import load_config
    from pipelines.study import study_folder

    metric = flag_value(command, "--metric") or load_config(ROOT / flag_value(command, "--config")).study.metric
    return study_folder(EXPERIMENT, metric=metric)


def isolated_env(folder: Path) -> dict[str, str]:
    """The environment of a study in ``folder``: its own ZenML store (and so MLflow store,
    in its artifact store) and outputs folder."""
    return {"ZENML_CONFIG_PATH": str(folder / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_LOGGING_COLORS_DISABLED": "true", "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "ACTIVEIT_OUTPUTS": str(folder / "outputs"), "ACTIVEIT_ZENML_ISOLATED": str(folder)}


def study_command(config: str, strategies: str, seeds: str, parallel: int, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, str(ROOT / "run.py"), "--config", config, "--compare", strategies, "--seeds", seeds,
            "--experiment", EXPERIMENT, "--parallel", str(parallel), *extra]


def threads_env(threads: int | None) -> dict[str, str]:
    """The CPU threads of every pair (None: each run's own default)."""
    return {} if threads is None else {name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def run_isolated(command: Sequence[str], folder: Path, timeout_s: float | None = None,
                 extra_env: dict[str, str] | None = None) -> Outcome:
    """Run ``command`` with :func:`isolated_env` in ``folder`` (and ``extra_env``); its exit
    code, wall time and output."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ZENML_ACTIVE_STACK_ID")}
    started = time.perf_counter()
    done = subprocess.run(list(command), env=env | isolated_env(folder) | (extra_env or {}), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)
    return Outcome(done.returncode, time.perf_counter() - started, folder, done.stdout + done.stderr, study_name(command))


def comparable(text: str) -> str:
    """A study file without its wall times (the selection cost's seconds)."""
    return SECONDS.sub("<s> s", text)


def same_results(first: Outcome, second: Outcome) -> list[str]:
    """The study files on which two runs differ (wall times aside), each with its first
    differing line of each; empty: identical."""
    differing = []
    for name in ("study.md", "study.csv"):
        ours, theirs = comparable(first.study_file(name)), comparable(second.study_file(name))
        if not ours or not theirs:
            differing.append(f"{name} (missing in {first.folder if not ours else second.folder})")
        elif ours != theirs:
            pairs = [(a, b) for a, b in zip(ours.splitlines(), theirs.splitlines()) if a != b][:1]
            shown = f" ({pairs[0][0]!r} vs {pairs[0][1]!r})" if pairs else ""
            differing.append(f"{name}{shown}")
    return differing


def processes_naming(text: str) -> list[int]:
    """The processes whose command line or environment names ``text`` (a study's folder)."""
    hits = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if text.encode() in (entry / "cmdline").read_bytes() or text.encode() in (entry / "environ").read_bytes():
                hits.append(int(entry.name))
        except OSError:
            continue
    return [pid for pid in hits if pid != os.getpid()]


def kill_check(command: Sequence[str], folder: Path, after_s: float) -> list[str]:
    """Start ``command`` in ``folder``'s stores, SIGTERM it after ``after_s`` seconds, and
    check what is left: no process, and no run that reads running. Returns the problems."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "ZENML_ACTIVE_STACK_ID")}
    with (folder / "killed.log").open("w") as log:
        process = subprocess.Popen(list(command), env=env | isolated_env(folder), cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT)
    time.sleep(after_s)
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    problems = [] if code == 143 else [
        f"the study finished before the stop at {after_s:g} s: give a smaller --kill-after" if code == 0
        else f"the stopped study exited {code}, not 143"]
    time.sleep(2)
    left = processes_naming(str(folder))
    if left:
        problems.append(f"processes left behind: {left}")
        for pid in left:  # (this check's own processes: the study it started)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from experiment.config import load_config; from pipelines.stack import prepare_stack, use_repo_source_root;"
            "from zenml.client import Client; from mlflow import MlflowClient; use_repo_source_root();"
            "uri = prepare_stack(load_config(sys.argv[2])).tracking_uri;"
            "runs = Client().list_pipeline_runs(size=1000).items;"
            "print('zenml', sorted({str(r.status).rsplit('.', 1)[-1].lower() for r in runs}));"
            f"e = MlflowClient(uri).get_experiment_by_name('{EXPERIMENT}');"
            "print('mlflow', sorted({r.info.status for r in MlflowClient(uri).search_runs([e.experiment_id])}) if e else [])")
    config = flag_value(command, "--config")
    states = subprocess.run([sys.executable, "-c", code, str(ROOT), config], env=env | isolated_env(folder), cwd=ROOT,
                            capture_output=True, text=True)
    if states.returncode != 0:
        problems.append(f"could not read the stores after the stop: {states.stderr.strip()[-500:]}")
    text = states.stdout
    if "running" in text.split("mlflow")[0] or "initializing" in text.split("mlflow")[0]:
        problems.append(f"a ZenML run still reads running after the stop: {text.strip()}")
    if "'RUNNING'" in text.split("mlflow")[-1]:
        problems.append(f"an MLflow run still reads RUNNING after the stop: {text.strip()}")
    print(f"   after the stop: {' '.join(text.split())}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/smoke.yaml")
    parser.add_argument("--compare", default="uncertainty,random")
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--parallel", type=int, default=2, help="K, compared with 1 (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="override the config's rounds")
    parser.add_argument("--kill-after", type=float, default=None, metavar="S",
                        help="then stop a --parallel K study after S seconds, check, and resume it")
    parser.add_argument("--keep", action="store_true", help="keep the stores (default: removed)")
    args = parser.parse_args(argv)
    extra = ["--rounds", str(args.rounds)] if args.rounds is not None else []
    base = Path(tempfile.mkdtemp(prefix="activeit-parallel-"))
    problems: list[str] = []
    k = args.parallel
    threads = max(1, cpu_cores() // k)  # what each of the K workers gets
    runs = {"1": (1, None), str(k): (k, None), f"1 at {threads} thread(s)": (1, threads)}
    outcomes = {}
    for label, (parallel, pinned) in runs.items():
        if label == str(k) and k == 1:
            continue
        folder = base / re.sub(r"\W+", "-", label)
        outcomes[label] = outcome = run_isolated(study_command(args.config, args.compare, args.seeds, parallel, extra),
                                                 folder, extra_env=threads_env(pinned))
        print(f"--parallel {label}: {outcome.wall_s:.0f} s, exit {outcome.code}")
        if outcome.code != 0:
            problems.append(f"--parallel {label} exited {outcome.code}:\n{outcome.output[-3000:]}")
    reference = outcomes[f"1 at {threads} thread(s)"]
    differing = same_results(reference, outcomes.get(str(k), reference))
    print(f"study.md and study.csv, --parallel {k} vs --parallel 1 at the same {threads} thread(s) a pair: "
          + ("identical (wall times aside)" if not differing else f"DIFFER in {', '.join(differing)}"))
    problems += [f"results differ in {name}" for name in differing]
    rounding = same_results(outcomes["1"], reference)
    print(f"   --parallel 1 at its default threads vs at {threads}: "
          + ("identical" if not rounding else f"differ in {', '.join(rounding)} (float rounding: a pair's numbers "
             "depend on its CPU thread count, the order its reductions add up in)"))
    if args.kill_after is not None:
        folder = base / "killed"
        command = study_command(args.config, args.compare, args.seeds, args.parallel, extra)
        print(f"kill check: --parallel {args.parallel} stopped (SIGTERM) after {args.kill_after:g} s")
        problems += kill_check(command, folder, args.kill_after)
        resumed = run_isolated(command, folder)
        reused = resumed.output.count("finished before; reused")
        print(f"   rerun: exit {resumed.code}, {reused} pair(s) reused, {resumed.wall_s:.0f} s")
        if resumed.code != 0:
            problems.append(f"the rerun exited {resumed.code}:\n{resumed.output[-3000:]}")
        elif same_results(reference, resumed):
            problems.append("the resumed study's results differ from --parallel 1's")
    for problem in problems:
        print(f"problem: {problem}")
    if args.keep:
        print(f"stores kept in {base}")
    else:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

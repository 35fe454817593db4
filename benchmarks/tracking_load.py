#!/usr/bin/env python
"""Many pipeline runs writing to one tracking store at once: does anything get lost?

    python benchmarks/tracking_load.py                       # 8 smoke pairs, PostgreSQL and SQLite
    python benchmarks/tracking_load.py --backend sqlite --pairs 4

Runs ``--pairs`` smoke pairs (``configs/smoke.yaml``, tiny model, 1 round after round 0;
strategies uncertainty and random over seeds 0, 1, ...) as separate ``run.py`` processes,
``--at-once`` of them at a time (default: all), one CPU thread each, in a fresh ZenML store
(SQLite, ZenML's local default) against each backend:

- ``postgres``: ``mlflow server`` over a PostgreSQL started here (:mod:`tracking.server`);
- ``sqlite``: the default local set-up, MLflow's SQLite file in the artifact store.

Then checks that every pair's MLflow run is complete, with every round's metrics and files
and its registered model versions, that every ZenML run completed, and that no log names a
lock error; prints one line per backend and each problem. Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiment.config import CONFIG_DIR  # noqa: E402
from tracking.schema import (  # noqa: E402
    COMPLETE_TAG,
    EVALUATION_FILE,
    PREDICTIONS_FILE,
    SELECTION_FILE,
    TRAINING_FILE,
    round_folder,
)

SMOKE = CONFIG_DIR / "smoke.yaml"
EXPERIMENT = "activeit-load"
ROUNDS = 1
STRATEGIES = ("uncertainty", "random")
#: What a store says when concurrent writers collide (SQLite, PostgreSQL, MLflow's retries).
LOCK_ERRORS = re.compile(r"database is locked|deadlock detected|could not serialize|OperationalError|"
                         r"UniqueViolation|IntegrityError", re.IGNORECASE)
#: The files every round logs (model versions are checked apart).
ROUND_FILES = (SELECTION_FILE, EVALUATION_FILE, PREDICTIONS_FILE, TRAINING_FILE)


@dataclass(frozen=True)
class Pair:
    strategy: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.strategy}-seed{self.seed}"


def pairs_of(count: int) -> list[Pair]:
    """``count`` pairs: each seed's strategies, seeds 0, 1, ..."""
    return [Pair(STRATEGIES[i % len(STRATEGIES)], i // len(STRATEGIES)) for i in range(count)]


def write_config(folder: Path, tracking_uri: str | None) -> Path:
    """The smoke config, logging to ``tracking_uri`` (None: the stack's default store)."""
    config = yaml.safe_load(SMOKE.read_text(encoding="utf-8"))
    if tracking_uri:
        config["tracking"]["tracking_uri"] = tracking_uri
    path = folder / "load.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def zenml_env(folder: Path) -> dict[str, str]:
    """The environment of a fresh ZenML store in ``folder`` (kept by every child process)."""
    return {"ZENML_CONFIG_PATH": str(folder / "zenml"), "ZENML_ANALYTICS_OPT_IN": "false",
            "ZENML_LOGGING_COLORS_DISABLED": "true", "ZENML_ENABLE_RICH_TRACEBACK": "false",
            "MLFLOW_TRACKING_TOKEN": "none", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "ACTIVEIT_ZENML_ISOLATED": str(folder)}


def prepare(config: Path, env: dict[str, str]) -> str:
    """Set up the stack and create the experiment once, before the writers start; the
    tracking URI (in a child process, so that this one keeps no ZenML state)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]);"
            "from experiment.config import load_config; from pipelines.stack import prepare_stack, "
            "use_repo_source_root; from tracking.server import create_experiments;"
            "use_repo_source_root(); info = prepare_stack(load_config(sys.argv[2]));"
            f"create_experiments(info.tracking_uri, ['{EXPERIMENT}']); print(info.tracking_uri)")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), str(config)], env=os.environ | env,
                          capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def run_pairs(config: Path, pairs: Sequence[Pair], at_once: int, env: dict[str, str], logs: Path) -> dict[Pair, int]:
    """Run each pair's ``run.py`` (``at_once`` at a time); each pair's exit code."""
    logs.mkdir(parents=True, exist_ok=True)
    waiting, running, codes = list(pairs), {}, {}
    try:
        while waiting or running:
            while waiting and len(running) < at_once:
                pair = waiting.pop(0)
                command = [sys.executable, str(ROOT / "run.py"), "--config", str(config), "--strategy", pair.strategy,
                           "--seed", str(pair.seed), "--rounds", str(ROUNDS), "--experiment", EXPERIMENT]
                with (logs / f"{pair.name}.log").open("w") as out:
                    running[pair] = subprocess.Popen(command, env=os.environ | env, stdout=out,
                                                     stderr=subprocess.STDOUT, cwd=ROOT)
            for pair, process in list(running.items()):
                if process.poll() is not None:
                    codes[pair] = process.returncode
                    del running[pair]
            time.sleep(0.5)
    finally:
        for process in running.values():
            process.terminate()
            process.wait()
    return codes


def check_pairs(tracking_uri: str, pairs: Sequence[Pair], codes: dict[Pair, int], logs: Path,
                env: dict[str, str]) -> list[str]:
    """What is missing or wrong after the runs: one line each (empty: nothing lost)."""
    from mlflow import MlflowClient

    problems = [f"{p.name}: run.py exited {codes.get(p)} (log {logs / (p.name + '.log')})"
                for p in pairs if codes.get(p) != 0]
    for log in sorted(logs.glob("*.log")):
        hits = sorted({m.group(0) for m in LOCK_ERRORS.finditer(log.read_text(errors="replace"))})
        if hits:
            problems.append(f"{log.name}: {', '.join(hits)}")
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
    by_pair: dict[tuple[str, str], list] = {}
    for run in runs:
        by_pair.setdefault((run.data.tags.get("strategy"), run.data.tags.get("seed")), []).append(run)
    for pair in pairs:
        found = by_pair.get((pair.strategy, str(pair.seed)), [])
        if len(found) != 1:
            problems.append(f"{pair.name}: {len(found)} MLflow runs (1 expected)")
            continue
        run = found[0]
        if run.data.tags.get(COMPLETE_TAG) != "true" or run.info.status != "FINISHED":
            problems.append(f"{pair.name}: MLflow run {run.info.run_id} is {run.info.status}, "
                            f"complete={run.data.tags.get(COMPLETE_TAG)}")
        for key in ("rougeL", "exact_match", "num_training_tasks", "train_loss"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            if steps != list(range(ROUNDS + 1)):
                problems.append(f"{pair.name}: metric {key} at steps {steps}")
        for round_index in range(ROUNDS + 1):
            folder = round_folder(round_index)
            files = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, folder)}
            missing = [name for name in ROUND_FILES if name not in files]
            if missing:
                problems.append(f"{pair.name}: {folder} lacks {', '.join(missing)}")
        versions = client.search_model_versions(f"name='{EXPERIMENT}-{pair.strategy}' and run_id='{run.info.run_id}'")
        if sorted(int(v.tags.get("round", -1)) for v in versions) != list(range(ROUNDS + 1)):
            problems.append(f"{pair.name}: model versions of rounds {sorted(v.tags.get('round') for v in versions)}")
    problems += _zenml_problems(len(pairs), env)
    return problems


def _zenml_problems(expected: int, env: dict[str, str]) -> list[str]:
    """ZenML's side, read in a child process of the same store: every run completed."""
    code = ("from zenml.client import Client; runs = Client().list_pipeline_runs(size=1000).items;"
            "print(sum(str(r.status) in ('completed', 'ExecutionStatus.COMPLETED') for r in runs), len(runs))")
    done = subprocess.run([sys.executable, "-c", code], env=os.environ | env, capture_output=True, text=True)
    if done.returncode != 0:
        return [f"ZenML store unreadable: {done.stderr.strip()[-300:]}"]
    completed, total = map(int, done.stdout.split()[-2:])
    return [] if completed == total == expected else [f"ZenML: {completed} of {total} runs completed ({expected} expected)"]


@contextmanager
def backend(kind: str, folder: Path) -> Iterator[str | None]:
    """The tracking URI a backend's config names (None: the stack's default SQLite store)."""
    if kind == "sqlite":
        yield None
        return
    from tracking.server import mlflow_server, postgres

    with postgres(folder / "postgres") as database, mlflow_server(database, folder / "mlflow") as url:
        yield url


def measure(kind: str, count: int, at_once: int, folder: Path) -> tuple[list[str], float]:
    """Run ``count`` pairs against backend ``kind`` in a fresh store under ``folder``:
    the problems found and the wall time."""
    env = zenml_env(folder)
    with backend(kind, folder) as uri:
        config = write_config(folder, uri)
        tracking_uri = prepare(config, env)
        pairs = pairs_of(count)
        started = time.perf_counter()
        codes = run_pairs(config, pairs, at_once, env, folder / "logs")
        wall = time.perf_counter() - started
        problems = check_pairs(tracking_uri, pairs, codes, folder / "logs", env)
    return problems + server_problems(folder), wall


#: What PostgreSQL logs when concurrent writers collide (its "duplicate key" errors are the
#: model registry's create-if-missing, answered RESOURCE_ALREADY_EXISTS and handled by MLflow).
DATABASE_COLLISIONS = re.compile(r"deadlock detected|could not serialize|database is locked", re.IGNORECASE)


def server_problems(folder: Path) -> list[str]:
    """Collisions in the servers' logs (the MLflow server's, PostgreSQL's), one line each."""
    problems = []
    for log in (folder / "mlflow" / "mlflow-server.log", folder / "postgres" / "postgres.log"):
        if log.exists():
            hits = sorted({m.group(0) for m in DATABASE_COLLISIONS.finditer(log.read_text(errors="replace"))})
            problems += [f"{log.name}: {hit}" for hit in hits]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("postgres", "sqlite", "both"), default="both")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--at-once", type=int, default=None, help="pairs running at a time (default: all)")
    args = parser.parse_args(argv)
    failed = False
    for kind in ("postgres", "sqlite") if args.backend == "both" else (args.backend,):
        folder = Path(tempfile.mkdtemp(prefix=f"activeit-load-{kind}-"))
        folder.chmod(0o711)  # the postgres user passes through to its own folder
        problems, wall = measure(kind, args.pairs, args.at_once or args.pairs, folder)
        verdict = "nothing lost, no lock errors" if not problems else f"{len(problems)} problem(s)"
        print(f"{kind}: {args.pairs} pairs, {args.at_once or args.pairs} at once, {wall:.0f} s: {verdict} "
              f"(logs in {folder / 'logs'})")
        for problem in problems:
            print(f"  {problem}")
        failed |= bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Local fan-out: a study's seeds side by side in K worker processes (``--parallel K``).

Each worker (``python -m pipelines.fanout SPEC``) runs the strategies of one seed in order,
so that round 0 and the base evaluation are computed once per seed (ZenML's cache) and the
later strategies reuse them; K workers run at once. The machine is split up front: on CPU
each worker gets ``cores // K`` threads (K x threads <= cores, refused otherwise), on GPUs
each its own (``CUDA_VISIBLE_DEVICES``; K above the visible GPUs is refused). A failed pair
does not stop the others; a rerun skips what finished. Ctrl-C / SIGTERM ends every worker's
process group (SIGTERM, then SIGKILL): a worker marks its stopped run failed in ZenML and
killed in MLflow on the way out, and a worker killed before it could is marked by
:func:`~pipelines.watch.reap_killed_runs`. A worker dies with the process that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from activeit.errors import ActiveITError, ConfigError
from activeit.models.lifeline import die_with_parent, wait_unreaped
from activeit.models.processes import cpu_cores
from experiment.config import REPO_ROOT, ExperimentConfig

#: How long a stopped worker has to mark its run before SIGKILL, in seconds.
STOP_GRACE_S = 60.0
#: How often the progress view looks at the workers and MLflow, in seconds.
POLL_S = 2.0
#: The thread variables a worker's share is written to (torch reads OMP_NUM_THREADS).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Slot:
    """One worker's share of the machine: CPU threads, and its GPUs (none on CPU)."""

    threads: int
    gpus: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        env = {name: str(self.threads) for name in THREAD_VARIABLES} | {"TOKENIZERS_PARALLELISM": "false"}
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpus)
        return env


def _visible_gpus() -> list[str]:
    """The GPUs this process sees, as ``CUDA_VISIBLE_DEVICES`` entries (none without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [item.strip() for item in listed.split(",") if item.strip()][: torch.cuda.device_count()]
    return [str(index) for index in range(torch.cuda.device_count())]


def plan_slots(parallel: int, config: ExperimentConfig, flag: str = "--parallel") -> list[Slot]:
    """The K worker slots, or a ConfigError naming ``flag`` when K workers do not fit: on GPUs
    each worker takes as many GPUs as its widest step has processes, on CPU as many cores
    as its processes times its threads (``OMP_NUM_THREADS`` when set, else the cores split)."""
    if parallel < 1:
        raise ConfigError(f"{flag} is {parallel}; give 1 (one pair after the other) or more workers")
    per_worker = max(1, config.training.num_processes, config.scoring.num_processes)
    gpus = _visible_gpus()
    cores = cpu_cores()
    if gpus:
        if parallel * per_worker > len(gpus):
            raise ConfigError(
                f"{flag} {parallel} needs {parallel * per_worker} GPU(s) ({per_worker} per worker) but {len(gpus)} "
                f"are visible; set {flag} to at most {max(1, len(gpus) // per_worker)}")
        threads = max(1, cores // parallel)
        return [Slot(threads, tuple(gpus[i * per_worker:(i + 1) * per_worker])) for i in range(parallel)]
    given = os.environ.get("OMP_NUM_THREADS", "")
    threads = int(given) if given.isdigit() and int(given) > 0 else cores // (parallel * per_worker)
    if threads < 1 or parallel * per_worker * threads > cores:
        shown = f" x OMP_NUM_THREADS={threads}" if given.isdigit() else ""
        processes = f" x {per_worker} processes" if per_worker > 1 else ""
        raise ConfigError(
            f"{flag} {parallel}{processes}{shown} needs more CPU cores than the {cores} of this machine; "
            f"set {flag} to at most {max(1, cores // (per_worker * (int(given) if given.isdigit() else 1)))}")
    return [Slot(threads) for _ in range(parallel)]


# -- the worker ---------------------------------------------------------------------------


class Stopped(KeyboardInterrupt):
    """SIGTERM in a worker, raised like Ctrl-C, so that the run in progress is marked stopped."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped()


def _write_json(path: Path, value: dict[str, Any]) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(value), encoding="utf-8")
    partial.replace(path)


def worker_main(spec_path: str) -> int:
    """Run the strategies of one seed in order (a finished pair is reused), each failure
    noted and the next strategy run; the status file says what is running, done, failed."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    signal.signal(signal.SIGTERM, _stop)
    die_with_parent(int(spec["parent"]))
    from pipelines.runner import prepare, run_pipeline
    from tracking.study import find_run_id, finished_run

    configs = [ExperimentConfig.model_validate(each) for each in spec["configs"]]
    status_path = Path(spec["status"])
    status: dict[str, Any] = {"running": None, "done": [], "failed": {}}
    _write_json(status_path, status)
    try:
        info = prepare(configs[0])
        for config in configs:
            done = finished_run(info.tracking_uri, config.tracking.experiment, config.strategy, config.seed,
                                config.study_key())
            if done is None:
                status["running"] = config.strategy
                _write_json(status_path, status)
                print(f"== {config.strategy}, seed {config.seed}: starting", flush=True)
                try:
                    run = run_pipeline(config, info)
                    run_id = find_run_id(info.tracking_uri, config.tracking.experiment, run.name)
                    print(f"== {config.strategy}, seed {config.seed}: ZenML run '{run.name}', MLflow run {run_id}",
                          flush=True)
                except Exception as exc:  # noqa: BLE001 (one pair's failure must not stop the seed's others)
                    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    print(f"error: {config.strategy}, seed {config.seed}: {message}", file=sys.stderr, flush=True)
                    status["failed"][config.strategy] = message
                    status["running"] = None
                    _write_json(status_path, status)
                    continue
            status["done"].append(config.strategy)
            status["running"] = None
            _write_json(status_path, status)
    except KeyboardInterrupt:
        status["stopped"] = status.pop("running")
        _write_json(status_path, status)
        print("stopped (the run in progress is marked failed in ZenML and killed in MLflow)", file=sys.stderr)
        return 143
    except ActiveITError as exc:
        print(f"error: {exc}", file=sys.stderr)
        status["failed"]["*"] = str(exc)
        _write_json(status_path, status)
        return 2
    return 1 if status["failed"] else 0


# -- the parent ---------------------------------------------------------------------------


@dataclass
class Worker:
    """One seed's worker: its configs, files and process (None until started)."""

    seed: int
    configs: list[ExperimentConfig]
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    slot: int | None = None
    ended: bool = False
    rounds: dict[str, int] = field(default_factory=dict)

    @property
    def log(self) -> Path:
        return self.folder / f"seed-{self.seed}.log"

    @property
    def status_file(self) -> Path:
        return self.folder / f"seed-{self.seed}.json"

    def status(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.status_file.read_text(encoding="utf-8"))
        return {"running": None, "done": [], "failed": {}}


def _start(worker: Worker, slot_index: int, slot: Slot) -> None:
    spec = {"parent": os.getpid(), "status": str(worker.status_file),
            "configs": [config.model_dump(mode="json") for config in worker.configs]}
    spec_path = worker.folder / f"seed-{worker.seed}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    worker.status_file.unlink(missing_ok=True)
    env = dict(os.environ) | slot.environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    with worker.log.open("a", encoding="utf-8") as log:
        worker.process = subprocess.Popen([sys.executable, "-m", "pipelines.fanout", str(spec_path)], env=env,
                                          stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          cwd=REPO_ROOT, start_new_session=True)
    worker.slot = slot_index


def stop_workers(workers: Sequence[Worker], grace_s: float = STOP_GRACE_S) -> None:
    """End every running worker's process group: SIGTERM to all at once, SIGKILL to what is
    left after ``grace_s``."""
    running = [w for w in workers if w.process is not None and not w.ended]
    for worker in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for worker in running:
        wait_unreaped(worker.process.pid, max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait()
        worker.ended = True


def progress_line(workers: Sequence[Worker], rounds: int) -> str:
    """The one-line view: pairs done, running (with the round in progress), waiting, failed."""
    done, running, waiting, failed = [], [], [], []
    for worker in workers:
        status = worker.status() if worker.process is not None else {"running": None, "done": [], "failed": {}}
        for config in worker.configs:
            pair = f"{config.strategy} seed {worker.seed}"
            if config.strategy in status.get("done", []):
                done.append(pair)
            elif config.strategy in status.get("failed", {}) or "*" in status.get("failed", {}):
                failed.append(pair)
            elif status.get("running") == config.strategy and not worker.ended:
                running.append(f"{pair} (round {worker.rounds.get(config.strategy, 0)}/{rounds})")
            elif worker.ended:
                failed.append(pair)
            else:
                waiting.append(pair)
    parts = [f"{len(done)} done", f"{len(running)} running" + (f": {', '.join(running)}" if running else ""),
             f"{len(waiting)} waiting", f"{len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")]
    return "== pairs: " + "; ".join(parts)


def idle_slots(workers: int, slots: int) -> int:
    """How many of ``slots`` stand idle while the last of ``workers`` (one per seed) run."""
    return (slots - workers % slots) % slots


def run_parallel(
    configs: Sequence[ExperimentConfig], parallel: int, tracking_uri: str, folder: Path,
    show: Callable[[str], None] = print, flag: str = "--parallel",
) -> None:
    """Run the study's pairs in ``parallel`` workers, one per seed at a time (checked up
    front by :func:`plan_slots`), with worker logs and status files in ``folder``; one
    ActiveITError naming the failed pairs and their logs when any failed."""
    from tracking.progress import pair_states
    from tracking.server import create_experiments
    from tracking.study import finished_run

    slots = plan_slots(parallel, configs[0], flag)
    folder.mkdir(parents=True, exist_ok=True)
    experiment = configs[0].tracking.experiment
    create_experiments(tracking_uri, [experiment])  # once, before the workers start
    workers: list[Worker] = []
    for seed in dict.fromkeys(config.seed for config in configs):
        of_seed = [config for config in configs if config.seed == seed]
        missing = [c for c in of_seed if finished_run(tracking_uri, experiment, c.strategy, c.seed, c.study_key()) is None]
        for config in of_seed:
            if config not in missing:
                show(f"== {config.strategy}, seed {seed}: finished before; reused")
        if missing:
            workers.append(Worker(seed, missing, folder))
    if not workers:
        return
    show(f"== {sum(len(w.configs) for w in workers)} pair(s) in {len(workers)} worker(s), {min(parallel, len(workers))} "
         f"at once ({slots[0].threads} CPU thread(s) each"
         + (f", GPU(s) {' / '.join(','.join(s.gpus) for s in slots)}" if slots[0].gpus else "")
         + f"); logs in {folder}")
    if idle := idle_slots(len(workers), len(slots)):
        show(f"   note: the last {'worker runs' if len(slots) - idle == 1 else 'workers run'} with {idle} of the "
             f"{len(slots)} slots idle (each worker's threads are fixed, so that results never depend on timing); "
             f"a seed count that {flag} {len(slots)} divides keeps every slot busy")
    rounds = configs[0].selection_rounds
    free = list(range(len(slots)))
    last_line, last_rounds = "", 0.0
    try:
        while True:
            for worker in workers:
                if worker.process is not None and not worker.ended and worker.process.poll() is not None:
                    worker.ended = True
                    free.append(worker.slot)
            for worker in workers:
                if worker.process is None and free:
                    index = free.pop(0)
                    _start(worker, index, slots[index])
            active = [w for w in workers if w.process is not None and not w.ended]
            if time.monotonic() - last_rounds > 5 * POLL_S and active:
                last_rounds = time.monotonic()
                with contextlib.suppress(Exception):  # (the view only: a busy store must not stop the study)
                    states = pair_states(tracking_uri, experiment, configs[0].study_key())
                    for worker in active:
                        for strategy in [c.strategy for c in worker.configs]:
                            if (found := states.get((strategy, worker.seed))) is not None and found.state == "running":
                                worker.rounds[strategy] = found.rounds
            line = progress_line(workers, rounds)
            if line != last_line:
                show(line)
                last_line = line
            if all(w.ended for w in workers):
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        show("== stopping every worker (each marks its run in progress as stopped)")
        stop_workers(workers)
        raise
    failed = [(w, config.strategy) for w in workers for config in w.configs
              if config.strategy not in w.status().get("done", [])]
    if failed:
        pairs = ", ".join(f"{strategy} seed {w.seed}" for w, strategy in failed)
        logs = ", ".join(sorted({str(w.log) for w, _ in failed}))
        raise ActiveITError(f"{len(failed)} pair(s) did not finish: {pairs} (logs: {logs}); the others did: run the "
                            "same command again to run only the missing pairs")


def run_study(configs: Sequence[ExperimentConfig], info: Any, outputs: Path, flag: str = "--parallel") -> None:
    """A study with ``study.parallel`` > 1: on a local orchestrator, its pairs in worker
    processes (:func:`run_parallel`), then its report; on a remote one, the pairs submitted
    without waiting (:func:`pipelines.remote.submit_study`), the report left to
    ``run.py --report EXPERIMENT --wait``."""
    from pipelines.runner import report_study
    from pipelines.stack import LOCAL_FLAVORS
    from pipelines.study import study_folder
    from pipelines.watch import reap_killed_runs
    from tracking.study import check_same_study, gather_runs

    config = configs[0]
    parallel, experiment = config.study.parallel, config.tracking.experiment
    if info.orchestrator_flavor not in LOCAL_FLAVORS:
        from pipelines.remote import submit_study

        check_same_study(info.tracking_uri, config)
        submit_study(configs, info, flag=flag)
        return
    plan_slots(parallel, config, flag)  # refused before anything runs
    check_same_study(info.tracking_uri, config)
    for name in reap_killed_runs():
        print(f"== ZenML run '{name}' was killed before it finished (its process is gone): now marked "
              "failed in ZenML and killed in MLflow")
    run_parallel(configs, parallel, info.tracking_uri,
                 outputs / study_folder(experiment, metric=config.study.metric) / "workers", flag=flag)
    runs = gather_runs(info.tracking_uri, experiment, config.study.strategies, config.study.seeds,
                       study_key=config.study_key())
    report_study(info.tracking_uri, experiment, runs, outputs, metric=config.study.metric)


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))

"""Remote fan-out: a study's pairs submitted to an orchestrator that runs elsewhere
(Kubernetes, Vertex, SageMaker, ...) without waiting for them, and the wait for them.

``run.py --parallel K`` on such a stack submits each pair as its own pipeline run with the
orchestrator's ``synchronous: false`` (its other settings, ``max_parallelism`` included,
pass through unchanged), at most K pairs in flight: first one strategy per seed, and a
seed's other strategies once that run has logged round 0, so that ZenML's cache serves
round 0 and the base evaluation to them instead of computing them again. It returns when
every pair is submitted; ``run.py --report EXPERIMENT --wait`` polls MLflow until every
expected pair has finished (:func:`wait_for_study`), then writes the study.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from activeit.errors import ActiveITError, ConfigError
from experiment.config import ExperimentConfig

#: How often the submitter and ``--wait`` look at MLflow, in seconds.
SUBMIT_POLL_S = 15.0
WAIT_POLL_S = 30.0
#: How long the submitter waits for a seed's round 0 before it gives up, in seconds.
ROUND_ZERO_TIMEOUT_S = 6 * 3600.0
#: The orchestrator setting that makes a submission return at once.
SYNCHRONOUS = "synchronous"


def check_asynchronous(orchestrator: Any, flag: str) -> None:
    """Refuse an orchestrator whose settings cannot submit without waiting."""
    settings = orchestrator.settings_class
    if settings is None or SYNCHRONOUS not in settings.model_fields:
        raise ConfigError(f"the '{orchestrator.flavor}' orchestrator has no '{SYNCHRONOUS}' setting, so {flag} cannot "
                          "submit pairs without waiting for each; run the study without it (one pair after the other)")


def asynchronous(config: ExperimentConfig, flavor: str) -> ExperimentConfig:
    """The config with ``orchestrator.<flavor>: {synchronous: false}`` added to its ZenML
    settings (whatever else the config sets there is kept)."""
    key = f"orchestrator.{flavor}"
    settings = dict(config.zenml.settings)
    settings[key] = dict(settings.get(key) or {}) | {SYNCHRONOUS: False}
    return config.model_copy(update={"zenml": config.zenml.model_copy(update={"settings": settings})})


def submit_study(
    configs: Sequence[ExperimentConfig], info: Any, flag: str = "--parallel",
    submit: Callable[[ExperimentConfig], Any] | None = None, show: Callable[[str], None] = print,
) -> list[str]:
    """Submit the study's missing pairs (round 0 of each seed first, at most ``study.parallel``
    in flight) and record the pairs it expects on the experiment; returns the submitted
    pipeline runs' names. ``submit`` runs one config's pipeline (default: run.py's)."""
    from zenml.client import Client

    from pipelines.runner import run_pipeline
    from tracking.progress import pair_states, set_expected
    from tracking.server import create_experiments

    config = configs[0]
    flavor = info.orchestrator_flavor
    check_asynchronous(Client().active_stack.orchestrator, flag)
    submit = submit or (lambda each: run_pipeline(each, info))
    uri, experiment, key, parallel = info.tracking_uri, config.tracking.experiment, config.study_key(), config.study.parallel
    create_experiments(uri, [experiment])
    set_expected(uri, experiment, config.study.strategies, config.study.seeds, key)
    states = pair_states(uri, experiment, key)
    missing = [c for c in configs if states.get((c.strategy, c.seed), None) is None or states[c.strategy, c.seed].state != "done"]
    for each in configs:
        if each not in missing:
            show(f"== {each.strategy}, seed {each.seed}: finished before; reused")
    # a seed with a finished pair has round 0 in the cache: all its pairs may go at once
    cached = {c.seed for c in configs if c not in missing}
    leaders = {c.seed: c for c in reversed(missing) if c.seed not in cached}
    queue = list(missing)
    in_flight: dict[tuple[str, int], str] = {}  # pair -> the MLflow run it had before (an earlier try's)
    leader_runs: dict[int, str] = {}  # seed -> its leader's MLflow run before (an earlier try's)
    leader_names: dict[int, str] = {}  # seed -> its leader's ZenML run
    submitted: list[str] = []
    started = time.monotonic()
    while queue:
        states = pair_states(uri, experiment, key)
        for pair, before in list(in_flight.items()):  # (ended: a run of its own, not one from an earlier try)
            if pair in states and states[pair].run_id != before and states[pair].state in ("done", "failed"):
                del in_flight[pair]
        # a leader's own run (not an earlier try's): round 0 logged, or failed
        ours = {seed: run for seed, before in leader_runs.items()
                if (run := _state_of(states, leaders[seed])) is not None and run.run_id != before}
        ready = {seed for seed, run in ours.items() if run.state == "done" or run.rounds >= 1}
        failed = [seed for seed, run in ours.items() if run.state == "failed" and seed not in ready]
        failed += [seed for seed, name in leader_names.items() if seed not in ready and seed not in failed
                   and _zenml_failed(name)]  # (stopped before it logged anything to MLflow)
        if failed:
            raise ActiveITError(f"round 0 of seed(s) {', '.join(map(str, failed))} failed on stack '{info.stack}' (see "
                                f"its run); {len(queue)} pair(s) not submitted: run the same command again to resume")
        for each in list(queue):
            if len(in_flight) >= parallel:
                break
            is_leader = leaders.get(each.seed) is each
            if not (each.seed in cached or is_leader or each.seed in ready):
                continue
            earlier = states.get((each.strategy, each.seed))
            run = submit(asynchronous(each, flavor))
            queue.remove(each)
            in_flight[each.strategy, each.seed] = earlier.run_id if earlier else ""
            submitted.append(run.name)
            if is_leader:
                leader_runs[each.seed] = in_flight[each.strategy, each.seed]
                leader_names[each.seed] = run.name
            show(f"== {each.strategy}, seed {each.seed}: submitted as ZenML run '{run.name}'"
                 + (" (round 0 of its seed first)" if is_leader and len(configs) > len(set(c.seed for c in configs)) else ""))
        if not queue:
            break
        if time.monotonic() - started > ROUND_ZERO_TIMEOUT_S:
            raise ActiveITError(f"{len(queue)} pair(s) not submitted after {ROUND_ZERO_TIMEOUT_S:.0f} s (waiting for round 0 "
                                "or a free slot); run the same command again to submit them")
        time.sleep(SUBMIT_POLL_S)
    show(f"Submitted {len(submitted)} pair(s) to stack '{info.stack}' ({parallel} at a time); when they have finished, "
         f"python run.py --report {experiment} --wait  writes the study")
    return submitted


def _zenml_failed(run_name: str) -> bool:
    """Whether ZenML reads pipeline run ``run_name`` as failed or stopped (False when unknown)."""
    from zenml.client import Client
    from zenml.enums import ExecutionStatus

    try:
        status = Client().get_pipeline_run(run_name, allow_name_prefix_match=False).status
    except Exception:  # noqa: BLE001 (unknown yet, or the store is busy: look again next time)
        return False
    return status in (ExecutionStatus.FAILED, ExecutionStatus.STOPPED)


def _state_of(states: dict[tuple[str, int], Any], config: ExperimentConfig) -> Any:
    return states.get((config.strategy, config.seed))


def wait_for_study(
    tracking_uri: str, experiment: str, strategies: Sequence[str] | None, seeds: Sequence[int] | None,
    timeout_s: float, poll_s: float | None = None,
) -> None:
    """Poll MLflow until every expected pair (the ``strategies`` x ``seeds`` given, else those
    the submission recorded) has a complete run, with a progress bar; an ActiveITError when
    a pair failed and nothing else runs, or after ``timeout_s``."""
    from tqdm import tqdm

    from tracking.progress import expected, pair_states

    recorded = expected(tracking_uri, experiment)
    strategies = list(strategies or (recorded[0] if recorded else []))
    seeds = list(seeds or (recorded[1] if recorded else []))
    if not strategies or not seeds:
        raise ConfigError(f"experiment '{experiment}' records no submitted study (run.py --parallel records one): give "
                          "--strategies S1,S2 and --seeds N1,N2 to wait for")
    key = recorded[2] if recorded else None  # (only the submitted config's runs)
    pairs = [(s, seed) for seed in seeds for s in strategies]
    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(pairs), desc=f"{experiment}: pairs finished", unit="pair") as bar:
        while True:
            states = pair_states(tracking_uri, experiment, key or None)
            done = [p for p in pairs if p in states and states[p].state == "done"]
            failed = [p for p in pairs if p in states and states[p].state == "failed"]
            running = [p for p in pairs if p in states and states[p].state == "running"]
            bar.update(len(done) - bar.n)
            bar.set_postfix_str(f"{len(running)} running, {len(pairs) - len(done) - len(running) - len(failed)} waiting, "
                                f"{len(failed)} failed")
            if len(done) == len(pairs):
                return
            if failed and not running:
                names = ", ".join(f"{s} seed {seed}" for s, seed in failed)
                raise ActiveITError(f"{len(failed)} pair(s) of '{experiment}' failed ({names}) and none is running: "
                                    "submit the study again (the same run.py command resumes only the missing pairs)")
            if time.monotonic() >= deadline:
                left = ", ".join(f"{s} seed {seed}" for s, seed in pairs if (s, seed) not in done)
                raise ActiveITError(f"--wait gave up after {timeout_s:.0f} s with {len(done)} of {len(pairs)} pairs "
                                    f"finished (not yet: {left}); run it again to go on waiting")
            time.sleep(WAIT_POLL_S if poll_s is None else poll_s)

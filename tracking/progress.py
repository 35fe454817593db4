"""Where a study's pairs stand, read from MLflow alone (they may run anywhere): which are
done, running (and how many rounds they logged) or failed, and which pairs a submitted
study expects (tags of its experiment, written when the pairs were submitted)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from tracking.schema import COMPLETE_TAG, STUDY_KEY_TAG

#: The experiment tags naming the pairs a submitted study expects.
EXPECTED_STRATEGIES_TAG = "activeit.expected.strategies"
EXPECTED_SEEDS_TAG = "activeit.expected.seeds"
EXPECTED_KEY_TAG = "activeit.expected.study_key"
#: The metric logged once per round (its history counts the rounds logged).
ROUND_COUNTER = "num_training_tasks"
ENDED_EARLY = (RunStatus.to_string(RunStatus.FAILED), RunStatus.to_string(RunStatus.KILLED))

Pair = tuple[str, int]


@dataclass(frozen=True)
class PairState:
    """A pair's newest run: done (all rounds logged; any complete run counts), running
    (with the rounds it logged) or failed (ended early: failed or killed)."""

    state: Literal["done", "running", "failed"]
    rounds: int
    run_id: str


def set_expected(tracking_uri: str, experiment: str, strategies: list[str], seeds: list[int], study_key: str) -> None:
    """Record on the experiment which pairs a submitted study expects (``--report --wait`` reads them)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    for key, value in ((EXPECTED_STRATEGIES_TAG, strategies), (EXPECTED_SEEDS_TAG, seeds), (EXPECTED_KEY_TAG, study_key)):
        client.set_experiment_tag(experiment_id, key, json.dumps(value))


def expected(tracking_uri: str, experiment: str) -> tuple[list[str], list[int], str] | None:
    """The strategies, seeds and study key last submitted to ``experiment``, or None."""
    found = MlflowClient(tracking_uri=tracking_uri).get_experiment_by_name(experiment)
    tags = found.tags if found else {}
    if EXPECTED_STRATEGIES_TAG not in tags:
        return None
    return (json.loads(tags[EXPECTED_STRATEGIES_TAG]), json.loads(tags[EXPECTED_SEEDS_TAG]),
            json.loads(tags.get(EXPECTED_KEY_TAG, '""')))


def pair_states(tracking_uri: str, experiment: str, study_key: str | None = None) -> dict[Pair, PairState]:
    """Each (strategy, seed) of ``experiment`` with a run (only runs of ``study_key`` when
    given) and its state; a pair without a run yet is absent (waiting)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    query = f"tags.{STUDY_KEY_TAG} = '{study_key}'" if study_key else ""
    states: dict[Pair, PairState] = {}
    newest: dict[Pair, object] = {}
    for run in client.search_runs([found.experiment_id], query, order_by=["attributes.start_time DESC"],
                                  max_results=50000):
        tags = run.data.tags
        if "strategy" not in tags or "seed" not in tags:
            continue
        pair = (tags["strategy"], int(tags["seed"]))
        if tags.get(COMPLETE_TAG) == "true" and (pair not in states or states[pair].state != "done"):
            states[pair] = PairState("done", -1, run.info.run_id)
        newest.setdefault(pair, run)
    for pair, run in newest.items():
        if pair in states:
            continue
        ended = run.info.status in ENDED_EARLY
        rounds = len(client.get_metric_history(run.info.run_id, ROUND_COUNTER))
        states[pair] = PairState("failed" if ended else "running", rounds, run.info.run_id)
    return states

"""A study in MLflow: its runs found and gathered (the newest complete run of each strategy
and seed, of one shared config), its parent run logged (files, paired statistics as metrics,
verdicts as tags) with the pairs' runs as its children, and a run refused that would spoil it.

The runs of a study may execute anywhere and in any order; everything here reads only what
they logged, so a study can be rebuilt from MLflow alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run

from activeit.errors import ConfigError
from activeit.evaluation import ROUGE_L
from activeit.study.report import verdict
from activeit.study.statistics import (
    IMPROVEMENT_SCHEME,
    INTERVAL_SCHEME,
    POWER_SCHEME,
    REFERENCE,
    SPLIT_SCHEME,
    TEST_SAMPLE_FACTOR,
    Comparison,
    Study,
)
from experiment.config import ExperimentConfig, shared_params
from tracking.reader import read_run_record, run_named
from tracking.schema import COMPLETE_TAG, STUDY_KEY_TAG
from tracking.writer import config_params, mark_model_training

#: Tag of the parent run that holds a study's files.
STUDY_TAG = "study"
#: MLflow's own tag that nests a run under another in the UI.
PARENT_TAG = "mlflow.parentRunId"


#: How many differing settings a refusal names.
SHOWN_KEYS = 3


def find_run_id(tracking_uri: str, experiment: str, run_name: str) -> str:
    """The MLflow run a ZenML pipeline run logged to (named after it)."""
    found = run_named(tracking_uri, experiment, run_name)
    if found is None:
        raise LookupError(f"no MLflow run named '{run_name}' in experiment '{experiment}'")
    return found.info.run_id


def study_run_name(study: Study) -> str:
    """The name of a study's parent MLflow run: its strategies and seeds (and its metric, when
    it compares on another than ROUGE-L: each metric's study has its own run)."""
    metric = "" if study.metric == ROUGE_L else f"-{study.metric}"
    return f"study-{'-vs-'.join(study.strategies)}-seeds{','.join(map(str, study.seeds))}{metric}"


def check_same_study(tracking_uri: str, config: ExperimentConfig) -> None:
    """Refuse, in one line, a run whose config differs from that of the study its experiment
    holds (the runs of a study, and those a study report gathered, may differ only in
    strategy, seed and how they ran): logged beside them, it would spoil the study."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = config.tracking.experiment
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return
    ids = [found.experiment_id]
    members = [*client.search_runs(ids, "params.`study.strategies` != '[]'"),
               *client.search_runs(ids, f"tags.`{PARENT_TAG}` LIKE '%'")]
    key = config.study_key()
    other = next((run for run in members if run.data.tags.get(STUDY_KEY_TAG, key) != key), None)
    if other is None:
        return
    theirs, ours = shared_params(other.data.params), shared_params(config_params(config))
    differing = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))[:SHOWN_KEYS]
    if not differing:  # the same params, another key (written by another version)
        theirs, ours, differing = {"study_key": other.data.tags[STUDY_KEY_TAG]}, {"study_key": key}, ["study_key"]
    shown = [", ".join(f"{k}={side.get(k, '(unset)')}" for k in differing) for side in (theirs, ours)]
    raise ConfigError(f"experiment '{experiment}' holds a study with {shown[0]}; this config has {shown[1]}: "
                      "give another --experiment")


def _complete_runs(client: MlflowClient, experiment: str) -> list[Run]:
    """Every run of ``experiment`` that logged all its rounds, newest first."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise ConfigError(f"MLflow experiment '{experiment}' does not exist at {client.tracking_uri}")
    return list(client.search_runs(
        [found.experiment_id], filter_string=f"tags.{COMPLETE_TAG} = 'true'", order_by=["attributes.start_time DESC"],
    ))


def finished_run(tracking_uri: str, experiment: str, strategy: str, seed: int, study_key: str) -> Run | None:
    """The newest complete run of (strategy, seed) under the same shared config, if any:
    a study reuses it instead of running the pair again."""
    client = MlflowClient(tracking_uri=tracking_uri)
    if client.get_experiment_by_name(experiment) is None:
        return None
    for run in _complete_runs(client, experiment):
        tags = run.data.tags
        if (tags.get("strategy"), tags.get("seed"), tags.get(STUDY_KEY_TAG)) == (strategy, str(seed), study_key):
            return run
    return None


def gather_runs(
    tracking_uri: str,
    experiment: str,
    strategies: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    study_key: str | None = None,
) -> list[Run]:
    """The newest complete run of each (strategy, seed) in ``experiment`` (only those
    asked for; with ``study_key``, only runs of that shared config). Runs of different
    configs are refused, naming the keys that differ."""
    client = MlflowClient(tracking_uri=tracking_uri)
    chosen: dict[tuple[str, int], Run] = {}
    for run in _complete_runs(client, experiment):
        tags = run.data.tags
        if "strategy" not in tags or "seed" not in tags:
            continue
        pair = (tags["strategy"], int(tags["seed"]))
        if strategies and pair[0] not in strategies or seeds and pair[1] not in seeds:
            continue
        if study_key is not None and tags.get(STUDY_KEY_TAG) != study_key:
            continue
        chosen.setdefault(pair, run)
    if not chosen:
        asked = "".join([f", strategies {','.join(strategies)}" if strategies else "",
                         f", seeds {','.join(map(str, seeds))}" if seeds else ""])
        raise ConfigError(f"MLflow experiment '{experiment}' holds no complete active-tuning run{asked}")
    runs = list(chosen.values())
    _check_same_config(runs)
    return runs


def _check_same_config(runs: Sequence[Run]) -> None:
    """One config for every run of a study (strategy and seed aside): else a ConfigError
    naming the differing keys."""
    first = shared_params(runs[0].data.params)
    for run in runs[1:]:
        other = shared_params(run.data.params)
        differing = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if differing:
            shown = ", ".join(f"{k} ({first.get(k)} vs {other.get(k)})" for k in differing[:5])
            more = f" and {len(differing) - 5} more" if len(differing) > 5 else ""
            raise ConfigError(
                f"the runs of this study used different configs: {shown}{more}; pick runs of one config "
                "with --strategies / --seeds, or use a new experiment name for a new config"
            )


def build_study(tracking_uri: str, runs: Iterable[Run], metric: str = ROUGE_L) -> Study:
    """The study of the gathered runs, comparing on ``metric``."""
    return Study(tuple(read_run_record(tracking_uri, run) for run in runs), metric)


def comparison_metrics(comparison: Comparison) -> dict[str, float]:
    """A strategy's paired statistics at one round as the parent run's metrics,
    ``vs_random/<strategy>/<statistic>`` (those not computable are left out)."""
    d, power, split = comparison.difference, comparison.power, comparison.split
    n = d.count
    values = {
        "delta": d.mean, "t_low": d.low, "t_high": d.high, "p_improvement": d.improvement,
        "resolved": None if d.low is None else float(d.resolved),
        "sd": power.sd, "mde": power.mde,
        **{f"seeds_for_{effect:g}": needed for effect, needed in power.seeds_needed.items()},
    }
    if split is not None:
        values |= {"variance_test_share": split.test_share, "sd_test": split.test ** 0.5,
                   "sd_between_seeds": split.between ** 0.5, "mde_2x_seeds": split.mde(2 * n),
                   f"mde_{TEST_SAMPLE_FACTOR}x_test_sample": split.mde(n, TEST_SAMPLE_FACTOR)}
    prefix = f"vs_{REFERENCE}/{comparison.strategy}/"
    return {prefix + k: float(v) for k, v in values.items() if v is not None and not math.isnan(v)}


def study_series(study: Study) -> dict[str, dict[int, float]]:
    """Metric -> step (training tasks) -> value of the parent run: each strategy's mean
    ``<metric>_<strategy>`` and its :func:`comparison_metrics`."""
    series: dict[str, dict[int, float]] = {}
    for strategy in study.strategies:
        for round_index, tasks in study.rounds_of(strategy):
            summary = study.summary(strategy, round_index)
            if summary is not None:
                series.setdefault(f"{study.metric}_{strategy}", {})[tasks] = summary.mean
    for comparison in study.comparisons:
        for key, value in comparison_metrics(comparison).items():
            series.setdefault(key, {})[comparison.training_tasks] = value
    return series


def _under_the_same_study(client: MlflowClient, run_id: str, parent_id: str, study: Study) -> bool:
    """Whether ``run_id`` is a child of another study run of the same strategies and seeds
    (the same study on another metric), where it stays."""
    current = client.get_run(run_id).data.tags.get(PARENT_TAG)
    if current is None or current == parent_id:
        return False
    tags = client.get_run(current).data.tags
    return (tags.get(STUDY_TAG), tags.get("strategies"), tags.get("seeds")) == (
        "true", ",".join(study.strategies), ",".join(map(str, study.seeds)))


def log_study(
    tracking_uri: str, experiment: str, study: Study, files: Sequence[Path], title: str, adopt: bool = True
) -> str:
    """The study's parent MLflow run (:func:`study_run_name`; the one logged before, if any,
    else a new one) with the study's files, :func:`study_series` with ``step`` = training
    tasks (a point logged before is not logged again), and as tags how the paired statistics
    were computed and each strategy's verdict; with ``adopt``, the pairs' runs become its
    children (but for those under the same study's run on another metric: they stay there)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    mark_model_training(client, experiment_id)
    name = study_run_name(study)
    before = client.search_runs([experiment_id], f"tags.{STUDY_TAG} = 'true' and tags.mlflow.runName = '{name}'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    run_id = before[0].info.run_id if before else None
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, description=title) as parent:
        verdicts = {f"verdict.{strategy}": verdict(found, study) for strategy in study.strategies
                    if (found := study.final_comparison(strategy)) is not None}
        mlflow.set_tags({STUDY_TAG: "true", "strategies": ",".join(study.strategies),
                         "seeds": ",".join(map(str, study.seeds)), "stats.metric": study.metric,
                         "stats.interval": INTERVAL_SCHEME, "stats.improvement": IMPROVEMENT_SCHEME,
                         "stats.power": POWER_SCHEME, "stats.spread": SPLIT_SCHEME, **verdicts})
        for key, points in study_series(study).items():
            logged = {(m.step, m.value) for m in client.get_metric_history(run_id, key)} if run_id else set()
            for step, value in points.items():
                if (step, value) not in logged:
                    mlflow.log_metric(key, value, step=step)
        for path in files:
            mlflow.log_artifact(str(path))
        if adopt:
            for run in study.runs:
                if not _under_the_same_study(client, run.run_id, parent.info.run_id, study):
                    client.set_tag(run.run_id, PARENT_TAG, parent.info.run_id)
        return parent.info.run_id

"""Step: log one round to the pipeline run's MLflow run and register its model.

Never cached: a resumed run logs every round again (its models are not registered twice).
The experiment tracker is attached when the pipeline is built, not here. The round's model
comes in unmaterialized: registering it needs only its artifact's location and id, so no
weights are read (or downloaded from a remote artifact store) here.

ZenML's tracker ends the MLflow run (FINISHED) after each step; for every round but the
last the run is opened again once the step has succeeded (:func:`tracking.status.keep_run_open`,
the success hook the pipeline attaches), so that a run stopped early never reads FINISHED.
"""

from __future__ import annotations

from typing import Annotated, Any

from zenml import step
from zenml.artifacts.unmaterialized_artifact import UnmaterializedArtifact

from activeit.evaluation import EvalReport
from activeit.scoring.scores import ScoreTable
from activeit.selection.strategies import Selection
from experiment.config import ExperimentConfig
from steps.common import fail_if_requested
from tracking.policy import registers_model
from tracking.registry import register_model
from tracking.status import hold_open
from tracking.writer import log_config, log_round, quiet_autolog_warning

quiet_autolog_warning()

@step(enable_cache=False)
def tracker(
    config: ExperimentConfig,
    round_index: int,
    selection: Selection,
    training_tasks: list[str],
    report: EvalReport,
    training_metrics: dict[str, Any],
    model: UnmaterializedArtifact,
    scores: ScoreTable | None = None,
    scoring_time_s: float | None = None,
    base_report: EvalReport | None = None,
) -> Annotated[int, "model_version_round_{round}"]:
    """Log the round's metrics and files (round 0: with the untuned base model's
    ``base_report``); returns the registered model version (0: not registered, see
    ``tracking.log_models``)."""
    fail_if_requested()
    if round_index == 0:
        log_config(config)
    log_round(config, round_index, selection, training_tasks, report, training_metrics, scores, scoring_time_s,
              base_report)
    hold_open(more_rounds=round_index < config.selection_rounds)
    if not registers_model(config, round_index):
        return 0
    return register_model(config, model.uri, str(model.id), round_index, training_tasks, report)

"""The active-tuning pipeline: the rounds of docs/METHOD.md ("The loop"), unrolled.

The untuned base model is evaluated once (the zero-task reference). Round 0: a seeded random initial set (the same for every strategy under a seed, so the
round-0 steps are shared through the cache), fine-tune, evaluate. Rounds 1..R: perturb and
score the remaining pool with the round r-1 model (strategies that need scores: PU, or IFD for
``ifd``), select, fine-tune, evaluate. The diversity strategies' task embeddings are computed
once, before the rounds. Step ids and artifact names carry the round
(``uncertainty_scorer_round_2``, ``scores_round_2``). Re-running the same config reuses
every finished step: an interrupted run resumes where it stopped.
"""

from __future__ import annotations

from typing import Any

from zenml import pipeline
from zenml.config.schedule import Schedule

from activeit.errors import ConfigError
from activeit.selection.strategies import NEEDS_EMBEDDINGS, NEEDS_IFD, NEEDS_SCORES
from experiment.config import ExperimentConfig
from steps import (
    accelerate_finetuner,
    base_evaluator,
    ifd_scorer,
    perturber,
    pool_loader,
    rouge_evaluator,
    selector,
    task_embedder,
    tracker,
    uncertainty_scorer,
)
from tracking.policy import run_name

PIPELINE_NAME = "active_tuning"
INITIAL_STRATEGY = "random"
#: The steps that run a model: the ones ``zenml.step_settings`` may configure (e.g. their GPUs).
MODEL_STEPS = tuple(step.name for step in (
    base_evaluator, uncertainty_scorer, ifd_scorer, task_embedder, accelerate_finetuner, rouge_evaluator))


def check_step_settings(config: ExperimentConfig, source: str) -> None:
    """Refuse ``zenml.step_settings`` of a step that is not one of :data:`MODEL_STEPS`:
    one line naming the config file ``source``, before anything runs."""
    for name in config.zenml.step_settings:
        if name not in MODEL_STEPS:
            raise ConfigError(f"{source}: key 'zenml.step_settings': unknown step '{name}'; "
                              f"choose one of {', '.join(MODEL_STEPS)}")


def _in_round(step: Any, round_index: int) -> Any:
    """The step with ``{round}`` in its artifact names bound to ``round_index``."""
    return step.with_options(substitutions={"round": str(round_index)})


def _with_settings(step: Any, config: ExperimentConfig) -> Any:
    """The step with its own settings from ``zenml.step_settings`` (e.g. its GPUs), if any."""
    settings = config.zenml.step_settings.get(step.name)
    return step.with_options(settings=settings) if settings else step


@pipeline(name=PIPELINE_NAME)
def active_tuning(config: ExperimentConfig, experiment_tracker: str | None = None) -> None:
    """Rounds 0..R of active instruction tuning; each round logged to MLflow when an
    experiment tracker (a stack component name) is given."""
    pool = pool_loader(pool=config.pool)
    # the diversity strategies' task embeddings: once per pool (and encoder), cached
    embeddings = (_with_settings(task_embedder, config)(pool=pool, diversity=config.diversity)
                  if config.strategy in NEEDS_EMBEDDINGS else None)
    base_report = _with_settings(base_evaluator, config)(base_model=config.model, pool=pool, evaluation=config.evaluation)
    track = None
    if experiment_tracker:
        from zenml.integrations.mlflow.flavors.mlflow_experiment_tracker_flavor import (
            MLFlowExperimentTrackerSettings,
        )

        from tracking.status import keep_run_open
        from tracking.writer import run_tags

        track = tracker.with_options(
            experiment_tracker=experiment_tracker,
            on_success=keep_run_open,
            settings={"experiment_tracker": MLFlowExperimentTrackerSettings(
                experiment_name=config.tracking.experiment, tags=run_tags(config)
            )},
        )

    training_tasks: Any = []
    model_folder: Any = None
    for r in range(config.selection_rounds + 1):
        scores = scoring_time = ifd = None
        if r == 0:
            strategy, budget = INITIAL_STRATEGY, config.initial_tasks
        else:
            strategy, budget = config.strategy, config.tasks_per_round
            if strategy in NEEDS_SCORES:
                prompts = _in_round(perturber, r)(
                    pool=pool, training_tasks=training_tasks, scoring=config.scoring, round_index=r,
                    id=f"perturber_round_{r}",
                )
                # adaptive scoring settles the selector's top b, so it takes the budget too
                adaptive = ({"budget": budget, "classification_ratio": config.classification_ratio}
                            if config.scoring.adaptive else {})
                scores, scoring_time = _in_round(_with_settings(uncertainty_scorer, config), r)(
                    model_folder=model_folder, pool=pool, prompts=prompts, scoring=config.scoring,
                    id=f"uncertainty_scorer_round_{r}", **adaptive,
                )
            if strategy in NEEDS_IFD:
                ifd, scoring_time = _in_round(_with_settings(ifd_scorer, config), r)(
                    model_folder=model_folder, pool=pool, training_tasks=training_tasks, scoring=config.scoring,
                    round_index=r, id=f"ifd_scorer_round_{r}",
                )
        selection, training_tasks = _in_round(selector, r)(
            pool=pool, training_tasks=training_tasks, strategy=strategy, budget=budget, seed=config.seed,
            classification_ratio=config.classification_ratio, round_index=r, threshold=config.diversity.threshold,
            scores=scores, ifd=ifd, embeddings=embeddings if r > 0 else None, id=f"selector_round_{r}",
        )
        continues = config.training.mode == "continue" and r > 0
        model_folder, training_metrics = _in_round(_with_settings(accelerate_finetuner, config), r)(
            base_model=config.model, pool=pool, training_tasks=training_tasks, selection=selection,
            training=config.training, round_index=r, previous_model_folder=model_folder if continues else None,
            id=f"accelerate_finetuner_round_{r}",
        )
        report = _in_round(_with_settings(rouge_evaluator, config), r)(
            model_folder=model_folder, pool=pool, evaluation=config.evaluation, id=f"rouge_evaluator_round_{r}"
        )
        if track is not None:
            _in_round(track, r)(
                config=config, round_index=r, selection=selection, training_tasks=training_tasks,
                report=report, training_metrics=training_metrics, model=model_folder, scores=scores,
                scoring_time_s=scoring_time, base_report=base_report if r == 0 else None, id=f"tracker_round_{r}",
            )


def configured(config: ExperimentConfig, name: str | None = None) -> Any:
    """The pipeline run ``name`` (else :func:`~tracking.policy.run_name` with ZenML's date and
    time: a schedule's runs), with the config's cache switch, ZenML settings and schedule."""
    options: dict[str, Any] = {
        "run_name": name or run_name(config),
        "enable_cache": config.zenml.enable_cache,
    }
    if config.zenml.settings:
        options["settings"] = config.zenml.settings
    if config.schedule:
        options["schedule"] = Schedule(cron_expression=config.schedule)
    return active_tuning.with_options(**options)

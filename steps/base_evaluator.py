"""Step: ROUGE-L and exact match of the untuned base model: the zero-task reference."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.models.devices import place_model
from activeit.evaluation import EvalReport, evaluate_model, evaluation_tasks
from activeit.models.loading import load_model
from activeit.config.settings import EvaluationSettings
from activeit.data.tasks import TaskPool
from steps.common import fail_if_requested


@step
def base_evaluator(
    base_model: str, pool: TaskPool, evaluation: EvaluationSettings
) -> Annotated[EvalReport, "eval_base_model"]:
    """Evaluate the base model, as it is, on the evaluation's split (cached: once per pool)."""
    fail_if_requested()
    return evaluate_model(place_model(load_model(base_model)), evaluation_tasks(pool, evaluation), evaluation)

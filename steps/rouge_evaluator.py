"""Step: ROUGE-L and exact match of a round's model on the held-out test tasks."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.models.devices import place_model
from activeit.evaluation import EvalReport, evaluate_model, evaluation_tasks
from activeit.models.loading import load_model
from activeit.config.settings import EvaluationSettings
from activeit.data.tasks import TaskPool
from materializers.artifacts import ModelFolder
from steps.common import fail_if_requested


@step
def rouge_evaluator(
    model_folder: ModelFolder, pool: TaskPool, evaluation: EvaluationSettings
) -> Annotated[EvalReport, "eval_round_{round}"]:
    """Evaluate the model in ``model_folder`` on the evaluation's split (the test tasks: unseen tasks)."""
    fail_if_requested()
    return evaluate_model(place_model(load_model(model_folder.path)), evaluation_tasks(pool, evaluation), evaluation)

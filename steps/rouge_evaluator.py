"""Step: ROUGE-L and exact match of a round's model on the held-out test tasks."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.config import EvaluationSection, to_dataclass
from activeit.devices import place_model
from activeit.evaluation import EvalConfig, EvalReport, evaluate_model
from activeit.models import load_model
from activeit.tasks import TaskPool
from materializers.artifacts import ModelFolder
from steps.common import fail_if_requested


@step
def rouge_evaluator(
    model: ModelFolder, pool: TaskPool, evaluation: EvaluationSection, seed: int, chat: bool | None
) -> Annotated[EvalReport, "eval_round_{round}"]:
    """Evaluate on the pool's test split (unseen tasks)."""
    fail_if_requested()
    config: EvalConfig = to_dataclass(EvalConfig, evaluation, seed=seed, chat=chat)
    return evaluate_model(place_model(load_model(model.path)), pool.test, config)

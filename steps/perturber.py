"""Step: build the perturbed prompts of every task still in the pool."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.data.perturbations import perturb_tasks
from activeit.config.settings import ScoringSettings
from activeit.data.tasks import TaskPool
from materializers.artifacts import PromptSet
from steps.common import fail_if_requested, remaining_tasks


@step
def perturber(
    pool: TaskPool, training_tasks: list[str], scoring: ScoringSettings, round_index: int
) -> Annotated[PromptSet, "prompts_round_{round}"]:
    """k perturbed prompts per task not yet selected, built once per task (seeded)."""
    fail_if_requested()
    prompts = perturb_tasks(
        remaining_tasks(pool, training_tasks), scoring.perturbation, scoring.k, scoring.seed,
        drop_prob=scoring.drop_prob,
    )
    return PromptSet(round=round_index, prompts=prompts)

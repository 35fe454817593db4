"""Step: build the perturbed prompts of every task still in the pool."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.config import ScoringSection
from activeit.perturb import perturb_tasks
from activeit.tasks import TaskPool
from materializers.artifacts import PromptSet
from steps.common import fail_if_requested, remaining_tasks


@step
def perturber(
    pool: TaskPool, trained: list[str], scoring: ScoringSection, seed: int, round_index: int
) -> Annotated[PromptSet, "prompts_round_{round}"]:
    """k perturbed prompts per remaining task, built once per task (seeded)."""
    fail_if_requested()
    prompts = perturb_tasks(
        remaining_tasks(pool, trained), scoring.perturbation, scoring.k, seed, drop_prob=scoring.drop_prob
    )
    return PromptSet(round=round_index, prompts=prompts)

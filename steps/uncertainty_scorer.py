"""Step: score the remaining tasks (PU, PP, perplexity) with the previous round's model.

With ``scoring.adaptive`` the round's budget (and stratification) says which top b the
scorer must settle; tasks surely in or out of it stop early (:mod:`activeit.scoring.adaptive`).
"""

from __future__ import annotations

import time
from typing import Annotated

from zenml import step

from activeit.scoring.launch import score
from activeit.scoring.scores import ScoreTable
from activeit.config.settings import ScoringSettings
from activeit.data.tasks import TaskPool
from activeit.selection.strategies import stratified_budgets
from materializers.artifacts import ModelFolder, PromptSet
from steps.common import fail_if_requested


@step
def uncertainty_scorer(
    model_folder: ModelFolder, pool: TaskPool, prompts: PromptSet, scoring: ScoringSettings,
    budget: int | None = None, classification_ratio: float | None = None,
) -> tuple[Annotated[ScoreTable, "scores_round_{round}"], Annotated[float, "scoring_time_round_{round}"]]:
    """The score table of the tasks in ``prompts`` under the model in ``model_folder`` (the
    previous round's), and the scoring wall time in seconds
    (``scoring.num_processes > 1``: under ``accelerate launch``, the table gathered).
    ``budget`` and ``classification_ratio`` are the selector's, for adaptive scoring."""
    fail_if_requested()
    started = time.perf_counter()
    tasks = pool.tasks(prompts.prompts)
    top = None
    if scoring.adaptive and budget is not None:
        top = budget if classification_ratio is None else stratified_budgets(tasks, budget, classification_ratio)
    table = score(model_folder.path, tasks, scoring, prompts.prompts, budget=top)
    elapsed = time.perf_counter() - started
    meta = {**table.meta, "round": prompts.round, "scored_with": f"model_round_{model_folder.round}"}
    return ScoreTable(table.rows, table.instances, meta), elapsed

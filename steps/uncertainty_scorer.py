"""Step: score the remaining tasks (PU, PP, perplexity) with the previous round's model."""

from __future__ import annotations

import time
from typing import Annotated

from zenml import step

from activeit.scoring.launch import score
from activeit.scoring.scores import ScoreTable
from activeit.config.settings import ScoringSettings
from activeit.data.tasks import TaskPool
from materializers.artifacts import ModelFolder, PromptSet
from steps.common import fail_if_requested


@step
def uncertainty_scorer(
    model_folder: ModelFolder, pool: TaskPool, prompts: PromptSet, scoring: ScoringSettings
) -> tuple[Annotated[ScoreTable, "scores_round_{round}"], Annotated[float, "scoring_time_round_{round}"]]:
    """The score table of the tasks in ``prompts`` under the model in ``model_folder`` (the
    previous round's), and the scoring wall time in seconds
    (``scoring.num_processes > 1``: under ``accelerate launch``, the table gathered)."""
    fail_if_requested()
    started = time.perf_counter()
    table = score(model_folder.path, pool.tasks(prompts.prompts), scoring, prompts.prompts)
    elapsed = time.perf_counter() - started
    meta = {**table.meta, "round": prompts.round, "scored_with": f"model_round_{model_folder.round}"}
    return ScoreTable(table.rows, table.instances, meta), elapsed

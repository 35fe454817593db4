"""Step: the instruction-following difficulty (IFD) of the remaining tasks under the previous round's model."""

from __future__ import annotations

import time
from typing import Annotated

from zenml import step

from activeit.config.settings import ScoringSettings
from activeit.data.tasks import TaskPool
from activeit.models.devices import place_model
from activeit.models.loading import load_model
from activeit.scoring.ifd import IFDTable, score_ifd
from materializers.artifacts import ModelFolder
from steps.common import fail_if_requested, remaining_tasks


@step
def ifd_scorer(
    model_folder: ModelFolder, pool: TaskPool, training_tasks: list[str], scoring: ScoringSettings, round_index: int,
) -> tuple[Annotated[IFDTable, "ifd_round_{round}"], Annotated[float, "scoring_time_round_{round}"]]:
    """The IFD table of the tasks not trained on yet, in this process (``scoring``: the instances
    sampled, the answer length and the batch budgets), and the scoring wall time in seconds."""
    fail_if_requested()
    started = time.perf_counter()
    table = score_ifd(place_model(load_model(model_folder.path)), remaining_tasks(pool, training_tasks), scoring)
    meta = table.meta | {"round": round_index, "scored_with": f"model_round_{model_folder.round}"}
    return IFDTable(table.rows, table.instances, meta), time.perf_counter() - started

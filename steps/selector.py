"""Step: pick the next tasks from the remaining pool by the strategy."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.config.settings import DiversitySettings
from activeit.data.tasks import TaskPool
from activeit.scoring.ifd import IFDTable
from activeit.scoring.scores import ScoreTable
from activeit.selection.diversity import TaskEmbeddings
from activeit.selection.strategies import Selection, select_tasks
from steps.common import fail_if_requested, remaining_tasks


@step
def selector(
    pool: TaskPool,
    training_tasks: list[str],
    strategy: str,
    budget: int,
    seed: int,
    classification_ratio: float | None,
    round_index: int,
    scores: ScoreTable | None = None,
    ifd: IFDTable | None = None,
    embeddings: TaskEmbeddings | None = None,
    threshold: float = DiversitySettings().threshold,
) -> tuple[Annotated[Selection, "selection_round_{round}"], Annotated[list[str], "train_tasks_round_{round}"]]:
    """This round's selection and the training tasks so far (the earlier ones + the selected).
    The embedding strategies count the earlier training tasks as selected and filter at cosine
    ``threshold``."""
    fail_if_requested()
    selection = select_tasks(
        strategy, remaining_tasks(pool, training_tasks), budget, scores=ifd if ifd is not None else scores,
        seed=seed, classification_ratio=classification_ratio, round_index=round_index,
        embeddings=embeddings, selected=training_tasks, threshold=threshold,
    )
    return selection, [*training_tasks, *selection.tasks]

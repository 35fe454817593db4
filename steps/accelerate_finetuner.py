"""Step: fine-tune with accelerate (in process, or ``accelerate launch`` for several)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from zenml import step

from activeit.training.launch import train
from activeit.config.settings import TrainingSettings
from activeit.selection.strategies import Selection
from activeit.data.tasks import TaskPool
from materializers.artifacts import ModelFolder
from steps.common import fail_if_requested, local_output_dir

MODEL_OUTPUT = "model_round_{round}"


@step
def accelerate_finetuner(
    base_model: str,
    pool: TaskPool,
    training_tasks: list[str],
    selection: Selection,
    training: TrainingSettings,
    round_index: int,
    previous_model_folder: ModelFolder | None = None,
) -> tuple[Annotated[ModelFolder, MODEL_OUTPUT], Annotated[dict[str, Any], "training_metrics_round_{round}"]]:
    """retrain: the base model on every task selected so far; continue (``previous_model_folder``
    given): the previous round's model on this round's selection only."""
    fail_if_requested()
    if previous_model_folder is not None:
        model_name, names = previous_model_folder.path, selection.tasks
    else:
        model_name, names = base_model, training_tasks
    out_dir = Path(local_output_dir(MODEL_OUTPUT.format(round=round_index)) or tempfile.mkdtemp(prefix="activeit-model-"))
    result = train(model_name, pool.tasks(names), out_dir, training, progress=True)
    return ModelFolder(str(result.model_dir), base_model, round_index), result.metrics

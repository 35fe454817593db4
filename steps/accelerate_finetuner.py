"""Step: fine-tune with accelerate (in process, or ``accelerate launch`` for several)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from zenml import step

from activeit.config import TrainingSection, to_dataclass
from activeit.strategies import Selection
from activeit.tasks import TaskPool
from activeit.training import TrainingConfig, finetune, launch_finetune
from materializers.artifacts import ModelFolder
from steps.common import fail_if_requested, local_output_dir

MODEL_OUTPUT = "model_round_{round}"


@step
def accelerate_finetuner(
    base_model: str,
    pool: TaskPool,
    trained: list[str],
    selection: Selection,
    training: TrainingSection,
    seed: int,
    chat: bool | None,
    round_index: int,
    previous: ModelFolder | None = None,
) -> tuple[Annotated[ModelFolder, MODEL_OUTPUT], Annotated[dict[str, Any], "training_metrics_round_{round}"]]:
    """retrain: the base model on every task selected so far; continue (``previous``
    given): the previous round's model on this round's selection only."""
    import torch

    fail_if_requested()
    start, names = (previous.path, selection.tasks) if previous is not None else (base_model, trained)
    config: TrainingConfig = to_dataclass(TrainingConfig, training, seed=seed, chat=chat)
    out_dir = Path(local_output_dir(MODEL_OUTPUT.format(round=round_index)) or tempfile.mkdtemp(prefix="activeit-model-"))
    if training.num_processes > 1:
        result = launch_finetune(
            start, pool.tasks(names), out_dir, config, training.num_processes, cpu=not torch.cuda.is_available()
        )
    else:
        result = finetune(start, pool.tasks(names), out_dir, config)
    return ModelFolder(str(result.model_dir), base_model, round_index), result.metrics

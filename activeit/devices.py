"""Where a model runs: this process's accelerate device, several processes, CPU attention."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch

from activeit.models import LoadedModel

FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"
#: How long a process may wait for the others in a collective (NCCL's default is 10
#: minutes): a process that finishes its share of a pool early waits in the final gather.
PROCESS_GROUP_TIMEOUT = timedelta(hours=6)


def model_device(model: Any) -> torch.device:
    """The device of a model's (first) parameters."""
    return next(model.parameters()).device


def process_state() -> Any:
    """accelerate's ``PartialState`` for this process.

    Several processes on CPU (``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
    --num_processes 2 ...``, or any launch on a machine without CUDA) use gloo.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(
        cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available(), timeout=PROCESS_GROUP_TIMEOUT
    )


def place_model(loaded: LoadedModel) -> LoadedModel:
    """Move the model to this process's accelerate device (its own GPU under ``accelerate launch``)."""
    loaded.model.to(process_state().device)
    return loaded


@contextlib.contextmanager
def grouped_query_attention() -> Iterator[None]:
    """Let SDPA read grouped-query K/V heads as they are, under an attention mask (CPU).

    transformers copies each K/V head once per query head (``repeat_kv``) when a mask is
    given, because CUDA's fused kernels refuse masked GQA; PyTorch's CPU kernel takes it
    (``enable_gqa``), the same result without the copies. Switched on with transformers'
    own ``TRANSFORMERS_SDPA_FORCE_GQA`` for the duration of scoring.
    """
    previous = os.environ.get(FORCE_GQA)
    os.environ[FORCE_GQA] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FORCE_GQA, None)
        else:
            os.environ[FORCE_GQA] = previous

"""Where and how a model runs: this process's accelerate device, several processes, CPU
attention, bf16 autocast with fp32 logits, the mixed precision training resolves to."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch

from activeit.models.loading import LoadedModel

FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"
#: How long a process may wait for the others in a collective (NCCL's default is 10
#: minutes): a process that finishes its share of a pool early waits in the final gather.
PROCESS_GROUP_TIMEOUT = timedelta(hours=6)


def model_device(model: Any) -> torch.device:
    """The device of a model's (first) parameters."""
    return next(model.parameters()).device


def free_memory(device: torch.device) -> int:
    """Bytes free for new tensors on ``device`` now: CUDA's free memory, or the host's
    ``MemAvailable`` (``/proc/meminfo``; elsewhere the free physical pages)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


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


def resolve_mixed_precision(setting: str, cpu: bool = False) -> str:
    """``"auto"`` -> bf16 on a CUDA device with native bf16 (Ampere or newer; not emulated, as
    on V100 or T4) unless ``cpu`` is asked for, else ``"no"``."""
    if setting != "auto":
        return setting
    native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return "bf16" if native and not cpu else "no"


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


@contextlib.contextmanager
def bf16_autocast_fp32_logits(model: Any) -> Iterator[None]:
    """bf16 autocast for an fp32 model, with its output layer (the logits) left in fp32.

    Under autocast the output layer returns bf16 logits, rounded before any softmax
    (logits of 16-32 to steps of 0.125): zero-mean noise in each ``p_ij`` that
    ``|p_ij - p_i0|`` turns into a positive bias of prompt uncertainty. The final hidden
    states are fp32 here (the residual stream of an fp32 model), so the output layer runs
    with autocast off on its own fp32 weights, at the kept positions only.
    """
    head = model.get_output_embeddings()
    if head is None:
        with torch.autocast(model_device(model).type, dtype=torch.bfloat16):
            yield
        return
    own = head.__dict__.get("forward")  # an instance-level forward (e.g. an accelerate hook) is kept
    bf16_forward = head.forward

    def fp32_forward(hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            return bf16_forward(hidden.float(), *args, **kwargs)

    head.forward = fp32_forward
    try:
        with torch.autocast(model_device(model).type, dtype=torch.bfloat16):
            yield
    finally:
        if own is None:
            del head.forward
        else:
            head.forward = own

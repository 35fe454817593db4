"""Fine-tuning on the selected tasks with ``accelerate``.

One plain loop (nanoGPT-style) that ``accelerate`` places on devices, runs in mixed
precision, accumulates gradients for, and shards over several processes when started
with ``accelerate launch`` (see :mod:`activeit.training.launch`):

* the examples and batches come from :mod:`activeit.training.data` (common random numbers:
  an example's draws and order follow ``(seed, task, instance)``; optionally length-grouped;
  the padding share is recorded); the torch seed (LoRA's initial adapter, dropout) is the
  config's seed;
* the loss reads the logits of the answer positions only (:mod:`activeit.training.loss`: the
  output layer never projects a prompt token onto the vocabulary);
* a tied input embedding back-propagates its batch's distinct rows on one CPU process
  (:mod:`activeit.training.embedding_grad`: the dense gradient bit for bit, without two passes over
  the vocabulary matrix a step);
* AdamW (the fused kernel), constant learning rate after a linear warm-up;
* a non-finite loss stops the run with :class:`TrainingError`; the model is written by
  :mod:`activeit.training.saving` to a temporary folder next to ``out_dir`` and renamed at
  the end, so a failed run leaves no half-written model.

``model_name`` is a base model name (retrain from the base every round, the reference
setting) or the previous round's output folder (continue training): both just load.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from activeit.config.settings import TrainingSettings
from activeit.data.prompts import PromptFormatter
from activeit.data.tasks import Task
from activeit.errors import TrainingError
from activeit.models.batching import pad_id
from activeit.models.devices import PROCESS_GROUP_TIMEOUT, grouped_query_attention, resolve_mixed_precision
from activeit.models.loading import load_model
from activeit.models.lora import add_lora
from activeit.outputs import check_output_dir
from activeit.training.data import Collator, EpochBatchSampler, ExampleDataset, build_examples
from activeit.training.embedding_grad import sparse_tied_embedding_grad
from activeit.training.loss import AnswerLoss
from activeit.training.saving import SAVE_DTYPES, save_trained

#: Optimizer steps between two reads of the losses on the host.
LOG_EVERY = 10


@dataclass(frozen=True)
class TrainingResult:
    """Where the fine-tuned model was written, and the run's metrics."""

    model_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


class PendingLoss(NamedTuple):
    """One micro-batch's loss, still on the device, and where it was computed."""

    loss: torch.Tensor
    step: int
    epoch: int
    batch: int


class LossLog:
    """The loss curve (mean loss per optimizer step), read from the device in batches.

    Per-micro-batch losses stay on the device and are read in one transfer every
    ``LOG_EVERY`` optimizer steps (:meth:`read`; a host sync per step stalls a GPU).
    """

    def __init__(self, total_steps: int, learning_rate: float, bar: Any) -> None:
        self.total_steps, self.learning_rate, self.bar = total_steps, learning_rate, bar
        self.curve: list[float] = []
        self.pending: list[PendingLoss] = []

    def add(self, loss: torch.Tensor, step: int, epoch: int, batch: int) -> None:
        self.pending.append(PendingLoss(loss, step, epoch, batch))

    def read(self) -> None:
        """Append the pending steps' mean losses to the curve; a non-finite one stops the run."""
        if not self.pending:
            return
        values = torch.stack([p.loss for p in self.pending]).tolist()
        per_step: dict[int, list[float]] = {}
        for value, pending in zip(values, self.pending):
            if not math.isfinite(value):
                raise TrainingError(
                    f"non-finite loss ({value}) at step {pending.step + 1} of {self.total_steps} (epoch "
                    f"{pending.epoch + 1}, batch {pending.batch + 1}); no model was written. Lower the "
                    f"learning rate (now {self.learning_rate}) or check the data"
                )
            per_step.setdefault(pending.step, []).append(value)
        self.curve.extend(sum(v) / len(v) for _, v in sorted(per_step.items()))
        epoch = self.pending[-1].epoch
        self.pending.clear()
        self.bar.set_postfix(loss=f"{self.curve[-1]:.4f}", epoch=epoch + 1)


def finetune(
    model_name: str,
    tasks: Sequence[Task],
    out_dir: str | Path,
    config: TrainingSettings = TrainingSettings(),
    progress: bool = True,
    overwrite: bool = False,
) -> TrainingResult:
    """Fine-tune ``model_name`` on ``tasks``; write the model to ``out_dir``, which must be
    new, empty, or a folder activeit wrote (``overwrite`` replaces anything).

    Runs in the current process, or as one of several when started by
    ``accelerate launch`` (then every process calls this with the same arguments and the
    main process writes the output). Raises :class:`TrainingError` on a non-finite loss
    or when there is nothing to train on.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs, parse_flag_from_env, set_seed
    from tqdm.auto import tqdm
    from transformers import get_constant_schedule_with_warmup

    started = time.perf_counter()
    out_dir = check_output_dir(out_dir, "output folder", overwrite)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(config.mixed_precision, cpu=not torch.cuda.is_available()
                                                or parse_flag_from_env("ACCELERATE_USE_CPU")),
        gradient_accumulation_steps=config.grad_accum,
        kwargs_handlers=[InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)],
    )
    set_seed(config.seed)

    lora = config.method == "lora"
    # An adapter folder: its base + the adapter, trainable (lora) or merged (full).
    loaded = load_model(model_name, adapter="train" if lora else "merge")
    formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
    examples = build_examples(formatter, tasks, config)
    if not examples:
        raise TrainingError(f"nothing to train on: the {len(tasks)} task(s) given have no instances")

    model = loaded.model
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
        if lora:
            model.enable_input_require_grads()  # frozen embeddings would cut the checkpointed graph
    if lora and loaded.base_model is None:
        model = add_lora(model, config, base=model_name, seq2seq=loaded.is_seq2seq)
    model.train()

    sampler = EpochBatchSampler(examples, config.batch_size, config.seed, config.group_by_length)
    loader = torch.utils.data.DataLoader(
        ExampleDataset(examples),
        batch_sampler=sampler,
        collate_fn=Collator(pad_id(loaded), loaded.is_seq2seq),
    )
    # the fused kernel: one pass over all parameters (on 2 CPU cores ~18x faster than torch's
    # per-tensor default there, equal to within float rounding); sharded runs keep the default
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay,
        fused=not sharded,
    )
    # accelerate steps a prepared scheduler once per process per optimizer step.
    scheduler = get_constant_schedule_with_warmup(
        optimizer, num_warmup_steps=config.warmup_steps * accelerator.num_processes
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    answer_loss = AnswerLoss(model, loaded.is_seq2seq)

    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    bar = tqdm(total=total_steps, desc="train", unit="step",
               disable=not (progress and accelerator.is_local_main_process))
    losses = LossLog(total_steps, config.learning_rate, bar)

    counts = torch.zeros(2, dtype=torch.long, device=accelerator.device)
    step = 0
    loop_started = time.perf_counter()
    cpu = accelerator.device.type == "cpu"
    # on CPU, SDPA reads grouped-query K/V heads as they are (no copy of K and V per query
    # head in the forward and backward passes; the same gradients)
    with (grouped_query_attention() if cpu else contextlib.nullcontext(),
          sparse_tied_embedding_grad(accelerator.unwrap_model(model), cpu and accelerator.num_processes == 1)
          as sparse_embedding):
        for epoch in range(config.epochs):
            if step >= total_steps:
                break
            sampler.set_epoch(epoch)
            for micro, batch in enumerate(loader):
                counts += batch.pop("num_tokens")
                with accelerator.accumulate(model):
                    loss = answer_loss(model, batch)
                    losses.add(accelerator.reduce(loss.detach().float(), "mean"), step, epoch, micro)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and config.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                if accelerator.sync_gradients:
                    step += 1
                    bar.update(1)
                    if step % LOG_EVERY == 0 or step >= total_steps:
                        losses.read()
                    if step >= total_steps:
                        break
    losses.read()
    train_time = time.perf_counter() - loop_started
    bar.close()

    real, total = accelerator.reduce(counts, "sum").tolist()
    loss_curve = losses.curve
    metrics = {
        "loss_curve": loss_curve,
        "final_loss": loss_curve[-1] if loss_curve else None,
        "tokens_seen": int(real),
        "padding_share": (total - real) / total if total else 0.0,
        "train_time_s": train_time,
        "tokens_per_second": real / train_time if train_time > 0 else 0.0,
        "steps": step,
        "epochs": config.epochs,
        "num_tasks": len({e.task for e in examples}),
        "num_examples": len(examples),
        "num_processes": accelerator.num_processes,
        "mixed_precision": accelerator.mixed_precision,
        "method": config.method,
        "loss_path": answer_loss.path,
        "sparse_embedding_grad": sparse_embedding,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "model_name": model_name,
        "base_model": loaded.base_model or model_name,
        "config": config.model_dump(),
    }
    metrics["wall_time_s"] = time.perf_counter() - started  # loading + training, not saving
    accelerator.wait_for_everyone()
    # sharded weights are gathered whole, a collective every process joins
    gathered = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        save_trained(accelerator.unwrap_model(model), loaded.tokenizer, out_dir, metrics, overwrite,
                     SAVE_DTYPES.get(str(accelerator.mixed_precision)), gathered)
    accelerator.wait_for_everyone()
    # no end_training(): it destroys the process group that the wrapped model's reducer still
    # holds, and freeing the reducer then can deadlock with gloo's worker thread; the group
    # lives as long as the process (see activeit.models.processes.exit_without_teardown)
    return TrainingResult(out_dir, metrics)

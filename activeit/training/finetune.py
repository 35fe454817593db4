"""Fine-tuning on the selected tasks with ``accelerate``.

One plain loop (nanoGPT-style) that ``accelerate`` places on devices, runs in mixed
precision, accumulates gradients for, and shards over several processes when started
with ``accelerate launch`` (see :mod:`activeit.launch`):

* every selected task contributes up to ``max_instances_per_task`` seeded instances,
  rendered with the same :class:`~activeit.data.prompts.PromptFormatter` ids as scoring and
  evaluation; one reference output is drawn per instance per epoch (seeded);
* causal models see ``prompt + target`` with the loss on the target only; seq2seq models
  get the target as labels;
* batches are grouped by length (sorted within shuffled mega-batches) so that padding
  stays small; the padding share is recorded;
* AdamW, constant learning rate after a linear warm-up;
* a non-finite loss stops the run with :class:`TrainingError`; the model is written to a
  temporary folder next to ``out_dir`` and renamed at the end, so a failed run leaves no
  half-written model.

``model_name`` is a base model name (retrain from the base every round, the reference
setting) or the previous round's output folder (continue training): both just load.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from activeit.models.batching import length_grouped_batches, pad, pad_id
from activeit.models.devices import PROCESS_GROUP_TIMEOUT
from activeit.errors import ConfigError, TrainingError
from activeit.models.loading import LoadedModel, load_model, lora_target_modules, no_hf_progress_bars
from activeit.outputs import check_output_dir, output_dir
from activeit.data.prompts import PromptFormatter
from activeit.config.settings import TrainingSettings
from activeit.data.tasks import Task

METRICS_FILE = "training_metrics.json"
IGNORE_INDEX = -100
#: Optimizer steps between two reads of the losses on the host.
LOG_EVERY = 10
#: The dtype weights are saved in under each mixed precision: the one they were trained in.
SAVE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainingResult:
    """Where the fine-tuned model was written, and the run's metrics."""

    model_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class TrainingExample:
    """One instance as ids: its prompt and one target per reference output."""

    task: str
    prompt: tuple[int, ...]
    targets: tuple[tuple[int, ...], ...]


def truncate_target(ids: Sequence[int], max_length: int) -> tuple[int, ...]:
    """``ids`` (ending in EOS) cut to ``max_length`` tokens, still ending in EOS.

    This is what a T5 tokenizer does with ``truncation=True`` (the reference collator).
    """
    if len(ids) <= max_length:
        return tuple(ids)
    return (*ids[: max_length - 1], ids[-1])


def build_examples(
    formatter: PromptFormatter, tasks: Sequence[Task], config: TrainingSettings
) -> list[TrainingExample]:
    """The training examples of ``tasks``: a seeded per-task sample of instances."""
    examples = []
    for task in tasks:
        for instance in task.sample_instances(config.max_instances_per_task, config.seed):
            outputs = instance.outputs or ("",)
            examples.append(
                TrainingExample(
                    task=task.name,
                    prompt=tuple(formatter.encode_instance(task, instance).ids),
                    targets=tuple(
                        truncate_target(formatter.encode_target(o), config.max_target_length)
                        for o in outputs
                    ),
                )
            )
    return examples


class ExampleDataset(torch.utils.data.Dataset):
    """``dataset[(i, r)]`` is example ``i`` with its ``r``-th reference as the target."""

    def __init__(self, examples: Sequence[TrainingExample]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, key: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        index, reference = key
        example = self.examples[index]
        return example.prompt, example.targets[reference]


class EpochBatchSampler:
    """Yields batches of ``(example, reference)`` keys, re-drawn for every epoch.

    For each epoch (:meth:`set_epoch`) one reference per example is drawn and the
    examples are grouped by length, both from ``seed`` and the epoch, so every process
    computes the same plan (``accelerate`` then gives each process its share).
    """

    def __init__(self, examples: Sequence[TrainingExample], batch_size: int, seed: int) -> None:
        self.examples = examples
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self) -> list[list[tuple[int, int]]]:
        rng = random.Random(f"activeit-train:{self.seed}:{self.epoch}")
        refs = [rng.randrange(len(e.targets)) for e in self.examples]
        lengths = [len(e.prompt) + len(e.targets[r]) for e, r in zip(self.examples, refs)]
        return [
            [(i, refs[i]) for i in batch]
            for batch in length_grouped_batches(lengths, self.batch_size, rng)
        ]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.plan())

    def __len__(self) -> int:
        return math.ceil(len(self.examples) / self.batch_size)


class Collator:
    """Pads ``(prompt, target)`` pairs into model inputs (right padding).

    Causal: ``input_ids = prompt + target``, labels ``-100`` on the prompt and padding.
    Seq2seq: ``input_ids = prompt``, ``labels = target`` (``-100`` on padding).
    Also returns the real and total token counts of the batch (for the padding share).
    """

    def __init__(self, pad_id: int, seq2seq: bool) -> None:
        self.pad_id = pad_id
        self.seq2seq = seq2seq

    def __call__(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]]) -> dict[str, torch.Tensor]:
        if self.seq2seq:
            inputs = [p for p, _ in pairs]
            labels = [t for _, t in pairs]
        else:
            inputs = [(*p, *t) for p, t in pairs]
            labels = [(*[IGNORE_INDEX] * len(p), *t) for p, t in pairs]
        input_ids, attention_mask = pad(inputs, self.pad_id, left=False)
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": pad(labels, IGNORE_INDEX, left=False)[0],
        }
        real = sum(len(r) for r in inputs) + (sum(len(r) for r in labels) if self.seq2seq else 0)
        total = input_ids.numel() + (batch["labels"].numel() if self.seq2seq else 0)
        batch["num_tokens"] = torch.tensor([real, total], dtype=torch.long)
        return batch


# ----------------------------------------------------------------------------- training


def resolve_mixed_precision(setting: str, cpu: bool = False) -> str:
    """``"auto"`` -> bf16 on a CUDA device with native bf16 (Ampere or newer; not emulated, as
    on V100 or T4) unless ``cpu`` is asked for, else ``"no"``."""
    if setting != "auto":
        return setting
    native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    return "bf16" if native and not cpu else "no"


def add_lora(loaded: LoadedModel, config: TrainingSettings, base: str) -> Any:
    """``loaded.model`` wrapped by peft with a fresh LoRA adapter (only the adapter trains);
    the adapter records ``base`` (a name, folder or hub id) as the model it belongs to."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(lora_target_modules(loaded.model.config.model_type, config.lora_target_modules)),
        task_type="SEQ_2_SEQ_LM" if loaded.is_seq2seq else "CAUSAL_LM",
    )
    try:
        model = get_peft_model(loaded.model, lora)
    except ValueError as exc:  # target modules not in the model
        raise ConfigError(f"training.lora_target_modules: {str(exc).splitlines()[0]}") from None
    model.peft_config["default"].base_model_name_or_path = base
    return model


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """``state`` in ``dtype``; tensors that share storage (tied embeddings) still share it,
    so they are written once."""
    cast: dict[tuple[int, torch.dtype, torch.Size], torch.Tensor] = {}
    for tensor in state.values():
        key = (tensor.data_ptr(), tensor.dtype, tensor.shape)
        if key not in cast:
            cast[key] = tensor.to(dtype)
    return {name: cast[tensor.data_ptr(), tensor.dtype, tensor.shape] for name, tensor in state.items()}


def _save(
    loaded: LoadedModel, model: Any, out_dir: Path, metrics: dict[str, Any], overwrite: bool,
    dtype: torch.dtype | None = None, gathered: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the weights (in ``dtype`` when given), the tokenizer (full models; an adapter
    loads its base's) and the metrics into ``out_dir`` at once (a temporary sibling, renamed
    at the end): a failure leaves whatever was there before untouched.

    The weights are ``model``'s own, cast in place (no second copy in memory), or under
    FSDP / DeepSpeed the ``gathered`` state dict, whole, that every process helped build.
    """
    state = None
    if gathered is not None:
        state = _cast(gathered, dtype) if dtype is not None else gathered
    elif dtype is not None:
        model.to(dtype)
    with output_dir(out_dir, overwrite) as tmp, no_hf_progress_bars():  # no "Writing model shards" bar
        # safetensors only: transformers 5 and peft both write nothing else
        if hasattr(model, "peft_config"):  # a LoRA adapter: its weights and config (no model card)
            model.save_pretrained(tmp, state_dict=state, save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)
        else:
            model.save_pretrained(tmp, state_dict=state)
            loaded.tokenizer.save_pretrained(tmp)
        (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2), encoding="utf-8")


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
        model = add_lora(loaded, config, model_name)
    model.train()

    sampler = EpochBatchSampler(examples, config.batch_size, config.seed)
    loader = torch.utils.data.DataLoader(
        ExampleDataset(examples),
        batch_sampler=sampler,
        collate_fn=Collator(pad_id(loaded), loaded.is_seq2seq),
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate, weight_decay=config.weight_decay
    )
    # accelerate steps a prepared scheduler once per process per optimizer step.
    scheduler = get_constant_schedule_with_warmup(
        optimizer, num_warmup_steps=config.warmup_steps * accelerator.num_processes
    )
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    steps_per_epoch = math.ceil(len(loader) / config.grad_accum)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    bar = tqdm(total=total_steps, desc="train", unit="step",
               disable=not (progress and accelerator.is_local_main_process))

    loss_curve: list[float] = []
    # Per-micro-step losses stay on the device and are read in one transfer every
    # LOG_EVERY optimizer steps (a host sync per step stalls a GPU): (loss, step, epoch, batch).
    pending: list[tuple[torch.Tensor, int, int, int]] = []

    def read_losses() -> None:
        if not pending:
            return
        values = torch.stack([p[0] for p in pending]).tolist()
        per_step: dict[int, list[float]] = {}
        for value, (_, at, epoch_at, micro_at) in zip(values, pending):
            if not math.isfinite(value):
                raise TrainingError(
                    f"non-finite loss ({value}) at step {at + 1} of {total_steps} (epoch {epoch_at + 1}, "
                    f"batch {micro_at + 1}); no model was written. Lower the learning rate (now "
                    f"{config.learning_rate}) or check the data"
                )
            per_step.setdefault(at, []).append(value)
        loss_curve.extend(sum(v) / len(v) for _, v in sorted(per_step.items()))
        pending.clear()
        bar.set_postfix(loss=f"{loss_curve[-1]:.4f}", epoch=epoch + 1)

    counts = torch.zeros(2, dtype=torch.long, device=accelerator.device)
    step = 0
    loop_started = time.perf_counter()
    for epoch in range(config.epochs):
        if step >= total_steps:
            break
        sampler.set_epoch(epoch)
        for micro, batch in enumerate(loader):
            counts += batch.pop("num_tokens")
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                pending.append((accelerator.reduce(loss.detach().float(), "mean"), step, epoch, micro))
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
                    read_losses()
                if step >= total_steps:
                    break
    read_losses()
    train_time = time.perf_counter() - loop_started
    bar.close()

    real, total = accelerator.reduce(counts, "sum").tolist()
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
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "model_name": model_name,
        "base_model": loaded.base_model or model_name,
        "config": config.model_dump(),
    }
    metrics["wall_time_s"] = time.perf_counter() - started  # loading + training, not saving
    accelerator.wait_for_everyone()
    # sharded weights are gathered whole, a collective every process joins
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
    gathered = accelerator.get_state_dict(model) if sharded else None
    if accelerator.is_main_process:
        _save(loaded, accelerator.unwrap_model(model), out_dir, metrics, overwrite,
              SAVE_DTYPES.get(str(accelerator.mixed_precision)), gathered)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainingResult(out_dir, metrics)

"""Training data: selected tasks -> examples of ids -> length-grouped, padded batches.

* every selected task contributes up to ``max_instances_per_task`` seeded instances,
  rendered with the same :class:`~activeit.data.prompts.PromptFormatter` ids as scoring and
  evaluation; one reference output is drawn per instance per epoch (seeded);
* causal models see ``prompt + target`` with the loss on the target only; seq2seq models
  get the target as labels;
* common random numbers: within a seed, whatever else a training set holds, an instance
  gets the same draws (which instances of a task, :meth:`Task.sample_instances` on
  ``(task, seed)``; which reference, from ``(seed, epoch, task, instance id)``) and the
  examples are ordered by a seeded hash of ``(seed, epoch, task, instance id)``, so two
  training sets that share examples see the shared ones in the same relative order (two
  strategies' round-r sets differ only by their picks);
* with ``group_by_length`` the batches are grouped by length (sorted within mega-batches of
  the hashed order, then ordered by their smallest hash) so that padding stays small, at the
  price of that relative order; each batch carries its real and padded token counts.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from activeit.config.settings import TrainingSettings
from activeit.data.prompts import PromptFormatter
from activeit.data.tasks import Task
from activeit.models.batching import MEGA_BATCH_FACTOR, longest_first, pad, plan_batches

#: The label that no loss is computed on (prompt tokens and padding).
IGNORE_INDEX = -100


@dataclass(frozen=True)
class TrainingExample:
    """One instance as ids: its prompt and one target per reference output; ``id`` is the
    instance's (its seeded draws and place in the order follow ``(task, id)``; an example
    without one falls back to its index)."""

    task: str
    prompt: tuple[int, ...]
    targets: tuple[tuple[int, ...], ...]
    id: str = ""


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
                    id=instance.id,
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


def example_key(seed: int, epoch: int, example: TrainingExample, index: int) -> str:
    """The example's name in its seeded draws: ``seed:epoch:task:id`` (the index without an id)."""
    return f"{seed}:{epoch}:{example.task}:{example.id or f'#{index}'}"


def example_rank(key: str) -> int:
    """A seeded hash of :func:`example_key`: the example's place in the order."""
    return int.from_bytes(hashlib.blake2b(f"activeit-train:{key}".encode(), digest_size=8).digest(), "big")


class EpochBatchSampler:
    """Yields batches of ``(example, reference)`` keys, re-drawn for every epoch.

    For each epoch (:meth:`set_epoch`) one reference per example is drawn and the examples
    are ordered, each from ``(seed, epoch, task, instance id)`` alone (common random numbers:
    an example's draws and its order relative to any other example do not depend on what
    else is trained on), then cut into batches of ``batch_size`` consecutive examples, or
    (``group_by_length``) grouped by length. Every process computes the same plan
    (``accelerate`` then gives each process its share).
    """

    def __init__(
        self, examples: Sequence[TrainingExample], batch_size: int, seed: int, group_by_length: bool = True
    ) -> None:
        self.examples = examples
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def plan(self) -> list[list[tuple[int, int]]]:
        keys = [example_key(self.seed, self.epoch, e, i) for i, e in enumerate(self.examples)]
        refs = [random.Random(f"activeit-train-ref:{k}").randrange(len(e.targets)) if len(e.targets) > 1 else 0
                for k, e in zip(keys, self.examples)]
        ranks = [example_rank(k) for k in keys]
        order = sorted(range(len(self.examples)), key=lambda i: (ranks[i], i))
        size = self.batch_size
        if self.group_by_length:
            lengths = [len(e.prompt) + len(e.targets[r]) for e, r in zip(self.examples, refs)]
            mega = MEGA_BATCH_FACTOR * size
            batches: list[list[int]] = []
            for start in range(0, len(order), mega):
                batches += plan_batches(longest_first(lengths, order[start : start + mega]), lengths, max_rows=size)
            batches.sort(key=lambda batch: min(ranks[i] for i in batch))
        else:
            batches = [order[start : start + size] for start in range(0, len(order), size)]
        return [[(i, refs[i]) for i in batch] for batch in batches]

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

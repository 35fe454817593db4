"""Prompt perturbations: k perturbed versions of a task's prompt, built once per task.

A perturbation is any callable ``(variant, rng) -> variant`` with a ``name`` (the
:class:`Perturbation` protocol); :data:`PERTURBATIONS` maps names to factories that take
the perturbation's parameters. The reference perturbation is ``word_drop`` (docs/METHOD.md, "Perturbations"):
every whitespace word of the definition and of the positive examples' *inputs* is dropped
independently with probability 0.2, example outputs stay intact. The others are off by
default and exist to compare against it:

* ``drop_examples``: leave out a random non-empty subset of the demonstrations;
* ``shuffle_words``: shuffle the words of the definition;
* ``paraphrase``: rewrite the definition with a template (a lead-in, optionally the
  sentences reordered).

Perturbed prompts are seeded per ``(perturbation, task name, seed)``: the same task and
seed give the same prompts whatever the pool order, and all ``n`` instances of a task
share them.
"""

from __future__ import annotations

import inspect
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from activeit.errors import ActiveITError
from activeit.data.tasks import Example, Task

DEFAULT_PERTURBATION = "word_drop"
DEFAULT_DROP_PROB = 0.2


@dataclass(frozen=True)
class PromptVariant:
    """The parts of a prompt a perturbation may change: the definition and demonstrations."""

    definition: str
    examples: tuple[Example, ...]

    @classmethod
    def of(cls, task: Task) -> PromptVariant:
        """The task's original (unperturbed) prompt."""
        return cls(task.definition, tuple(task.positive_examples))

    def to_dict(self) -> dict[str, Any]:
        return {
            "definition": self.definition,
            "examples": [{"input": e.input, "output": e.output, "explanation": e.explanation} for e in self.examples],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PromptVariant:
        return cls(data["definition"], tuple(Example(**e) for e in data.get("examples", ())))


@dataclass(frozen=True)
class PerturbedPrompts:
    """A task's original prompt and its k perturbed versions."""

    task: str
    perturbation: str
    original: PromptVariant
    perturbed: tuple[PromptVariant, ...]

    @property
    def variants(self) -> tuple[PromptVariant, ...]:
        """The original (index 0) followed by the perturbed prompts (1..k)."""
        return (self.original, *self.perturbed)

    @property
    def k(self) -> int:
        return len(self.perturbed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "perturbation": self.perturbation,
            "original": self.original.to_dict(),
            "perturbed": [v.to_dict() for v in self.perturbed],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerturbedPrompts:
        return cls(
            task=data["task"],
            perturbation=data["perturbation"],
            original=PromptVariant.from_dict(data["original"]),
            perturbed=tuple(PromptVariant.from_dict(v) for v in data["perturbed"]),
        )


class Perturbation(Protocol):
    """Returns a perturbed copy of a prompt, drawing all randomness from ``rng``."""

    name: str

    def __call__(self, variant: PromptVariant, rng: random.Random) -> PromptVariant: ...


def drop_words(text: str, prob: float, rng: random.Random) -> str:
    """``text`` with each whitespace word dropped independently with probability ``prob``."""
    return " ".join(word for word in text.split() if rng.random() >= prob)


@dataclass(frozen=True)
class WordDrop:
    """The reference perturbation: drop words of the definition and of example inputs."""

    drop_prob: float = DEFAULT_DROP_PROB
    name: str = "word_drop"

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ActiveITError(f"word_drop: drop_prob must be in [0, 1], got {self.drop_prob}")

    def __call__(self, variant: PromptVariant, rng: random.Random) -> PromptVariant:
        definition = drop_words(variant.definition, self.drop_prob, rng)
        examples = tuple(
            replace(e, input=drop_words(e.input, self.drop_prob, rng)) for e in variant.examples
        )
        return PromptVariant(definition, examples)


@dataclass(frozen=True)
class DropExamples:
    """Leave out a random non-empty subset of the demonstrations (the order is kept).

    A prompt without demonstrations has nothing to drop and stays as it is.
    """

    name: str = "drop_examples"

    def __call__(self, variant: PromptVariant, rng: random.Random) -> PromptVariant:
        count = len(variant.examples)
        if count == 0:
            return variant
        mask = rng.randrange(1, 2**count)  # bit i set = demonstration i dropped
        kept = tuple(e for i, e in enumerate(variant.examples) if not mask >> i & 1)
        return PromptVariant(variant.definition, kept)


@dataclass(frozen=True)
class ShuffleWords:
    """Shuffle the whitespace words of the definition (demonstrations intact)."""

    name: str = "shuffle_words"

    def __call__(self, variant: PromptVariant, rng: random.Random) -> PromptVariant:
        words = variant.definition.split()
        rng.shuffle(words)
        return PromptVariant(" ".join(words), variant.examples)


PARAPHRASE_TEMPLATES = (
    "{definition}",
    "Your task: {definition}",
    "Instructions: {definition}",
    "Read the instructions carefully. {definition}",
    "In this task, follow these instructions. {definition}",
    "Here is what you have to do. {definition}",
    "Task description: {definition}",
    "Please do the following. {definition}",
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Paraphrase:
    """A template paraphrase of the definition: a lead-in, sentences possibly reordered.

    Each variant picks one of :data:`PARAPHRASE_TEMPLATES` and, for definitions of
    several sentences, reorders them with probability ``reorder_prob``; the words are kept.
    """

    reorder_prob: float = 0.5
    name: str = "paraphrase"

    def __call__(self, variant: PromptVariant, rng: random.Random) -> PromptVariant:
        sentences = [s for s in _SENTENCE_END.split(variant.definition.strip()) if s]
        if len(sentences) > 1 and rng.random() < self.reorder_prob:
            rng.shuffle(sentences)
        template = rng.choice(PARAPHRASE_TEMPLATES)
        return PromptVariant(template.format(definition=" ".join(sentences)), variant.examples)


PERTURBATIONS: dict[str, Callable[..., Perturbation]] = {
    "word_drop": WordDrop,
    "drop_examples": DropExamples,
    "shuffle_words": ShuffleWords,
    "paraphrase": Paraphrase,
}


def make_perturbation(name: str = DEFAULT_PERTURBATION, **params: Any) -> Perturbation:
    """The perturbation ``name`` with those of ``params`` its factory accepts.

    Parameters a perturbation does not take (``drop_prob`` for ``shuffle_words``) are
    ignored, so one config can name any perturbation.
    """
    try:
        factory = PERTURBATIONS[name]
    except KeyError:
        raise ActiveITError(
            f"unknown perturbation '{name}'; choose one of {', '.join(PERTURBATIONS)}"
        ) from None
    accepted = inspect.signature(factory).parameters
    return factory(**{key: value for key, value in params.items() if key in accepted})


def perturb_task(task: Task, perturbation: Perturbation, k: int = 10, seed: int = 0) -> PerturbedPrompts:
    """The original prompt of ``task`` and ``k`` perturbed ones, seeded by (name, task, seed)."""
    if k < 1:
        raise ActiveITError(f"k (perturbed prompts per task) must be at least 1, got {k}")
    rng = random.Random(f"{perturbation.name}:{task.name}:{seed}")
    original = PromptVariant.of(task)
    return PerturbedPrompts(
        task=task.name,
        perturbation=perturbation.name,
        original=original,
        perturbed=tuple(perturbation(original, rng) for _ in range(k)),
    )


def perturb_tasks(
    tasks: Iterable[Task],
    perturbation: str = DEFAULT_PERTURBATION,
    k: int = 10,
    seed: int = 0,
    **params: Any,
) -> dict[str, PerturbedPrompts]:
    """``k`` perturbed prompts for each task, keyed by task name (see :func:`perturb_task`)."""
    method = make_perturbation(perturbation, **params)
    return {task.name: perturb_task(task, method, k, seed) for task in tasks}

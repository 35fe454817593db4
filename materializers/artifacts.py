"""Artifact types the pipeline passes between steps for which the library has no type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from activeit.data.perturbations import PerturbedPrompts


@dataclass(frozen=True)
class PromptSet:
    """The perturbed prompts of one round's candidate tasks, keyed by task name."""

    round: int
    prompts: Mapping[str, PerturbedPrompts] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class ModelFolder:
    """A round's model saved as a safetensors folder (with its tokenizer, or a LoRA adapter):
    ``path`` is the model name steps pass on (``load_model(path)`` loads it)."""

    path: str
    base_model: str
    round: int

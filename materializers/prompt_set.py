"""PromptSet <-> ``prompts.jsonl`` (one task's original and perturbed prompts per line)."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from zenml.enums import VisualizationType

from activeit.data.perturbations import PerturbedPrompts
from materializers.artifacts import PromptSet
from materializers.base import FileMaterializer

PROMPTS_FILE = "prompts.jsonl"
INFO_FILE = "prompt_set.json"


class PromptSetMaterializer(FileMaterializer):
    """Perturbed prompts as JSON lines; counts as metadata; one example as markdown."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (PromptSet,)

    def load(self, data_type: type[Any]) -> PromptSet:
        info = self.read_json(INFO_FILE)
        prompts = [PerturbedPrompts.from_dict(json.loads(line))
                   for line in self.read_text(PROMPTS_FILE).splitlines() if line]
        return PromptSet(round=info["round"], prompts={p.task: p for p in prompts})

    def save(self, data: PromptSet) -> None:
        self.write_json(INFO_FILE, {"round": data.round, "tasks": len(data)})
        self.write_text(PROMPTS_FILE, "".join(
            json.dumps(p.to_dict(), ensure_ascii=False) + "\n" for p in data.prompts.values()
        ))

    def extract_metadata(self, data: PromptSet) -> dict[str, Any]:
        first = next(iter(data.prompts.values()), None)
        return {
            "round": data.round,
            "tasks": len(data),
            "k": first.k if first else 0,
            "perturbation": first.perturbation if first else "",
        }

    def save_visualizations(self, data: PromptSet) -> dict[str, VisualizationType]:
        first = next(iter(data.prompts.values()), None)
        text = f"# Perturbed prompts, round {data.round}\n\n{len(data)} tasks"
        if first is not None:
            text += (
                f", {first.k} `{first.perturbation}` prompts each.\n\n## `{first.task}`\n\n"
                f"**original:** {first.original.definition}\n\n"
                + "".join(f"**{j}:** {v.definition}\n\n" for j, v in enumerate(first.perturbed[:3], 1))
            )
        return self.markdown(text)

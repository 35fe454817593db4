"""Selection <-> ``selection.json``."""

from __future__ import annotations

from typing import Any, ClassVar

from zenml.enums import VisualizationType

from activeit.selection.strategies import Selection
from materializers.base import FileMaterializer, markdown_table

SELECTION_FILE = "selection.json"


class SelectionMaterializer(FileMaterializer):
    """A round's selected tasks (with their scores and task-map categories) as JSON; strategy,
    round and count as metadata."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (Selection,)

    def load(self, data_type: type[Any]) -> Selection:
        return Selection.from_dict(self.read_json(SELECTION_FILE))

    def save(self, data: Selection) -> None:
        self.write_json(SELECTION_FILE, data.to_dict())

    def extract_metadata(self, data: Selection) -> dict[str, Any]:
        return {"strategy": data.strategy, "round": data.round, "seed": data.seed, "tasks": len(data.tasks)}

    def save_visualizations(self, data: Selection) -> dict[str, VisualizationType]:
        rows = [[i, task, data.scores.get(task, ""), data.categories.get(task, "")]
                for i, task in enumerate(data.tasks, 1)]
        return self.markdown(
            f"# Round {data.round}: {len(data.tasks)} tasks selected by `{data.strategy}` "
            f"(seed {data.seed})\n\n" + markdown_table(["#", "task", "score", "task-map category"], rows) + "\n"
        )

"""TaskPool <-> ``pool.json`` (the library's own JSON form)."""

from __future__ import annotations

from typing import Any, ClassVar

from zenml.enums import VisualizationType

from activeit.data.tasks import TaskPool
from materializers.base import FileMaterializer, markdown_table

POOL_FILE = "pool.json"


class TaskPoolMaterializer(FileMaterializer):
    """A task pool as one JSON file; counts as metadata; a markdown summary."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (TaskPool,)

    def load(self, data_type: type[Any]) -> TaskPool:
        return TaskPool.from_dict(self.read_json(POOL_FILE))

    def save(self, data: TaskPool) -> None:
        self.write_json(POOL_FILE, data.to_dict())

    def extract_metadata(self, data: TaskPool) -> dict[str, Any]:
        summary = data.summary()
        return {
            "name": summary["name"],
            "splits": summary["splits"],
            "train_tasks": summary["train_tasks"],
            "test_tasks": summary["test_tasks"],
            "classification_tasks": summary["classification_tasks"],
            "generation_tasks": summary["generation_tasks"],
            "instances": summary["instances"],
        }

    def save_visualizations(self, data: TaskPool) -> dict[str, VisualizationType]:
        summary = data.summary()
        splits = markdown_table(["split", "tasks"], [[s, n] for s, n in summary["splits"].items()])
        categories = markdown_table(["category", "tasks"], [[c, n] for c, n in summary["categories"].items()])
        return self.markdown(
            f"# Task pool `{data.name}`\n\n{splits}\n\n"
            f"{summary['classification_tasks']} classification and {summary['generation_tasks']} "
            f"generation tasks, {summary['instances']} instances.\n\n## Categories\n\n{categories}\n"
        )

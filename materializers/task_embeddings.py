"""TaskEmbeddings <-> ``embeddings.npy`` + ``tasks.json``, shown as a 2-D projection PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import VisualizationType

from activeit.selection.diversity import EMBEDDINGS_FILE, NAMES_FILE, TaskEmbeddings, plot_embeddings
from materializers.base import FileMaterializer

PROJECTION_FILE = "projection.png"


class TaskEmbeddingsMaterializer(FileMaterializer):
    """The task embeddings as a NumPy array and their names; the encoder and size as metadata."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (TaskEmbeddings,)

    def load(self, data_type: type[Any]) -> TaskEmbeddings:
        return TaskEmbeddings.load(self.local_copy([EMBEDDINGS_FILE, NAMES_FILE]))

    def save(self, data: TaskEmbeddings) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            folder = data.save(tmp)
            for name in (EMBEDDINGS_FILE, NAMES_FILE):
                self.upload(folder / name)

    def extract_metadata(self, data: TaskEmbeddings) -> dict[str, Any]:
        return {"tasks": len(data), "dimension": int(data.vectors.shape[1]), "encoder": data.meta.get("encoder", "")}

    def save_visualizations(self, data: TaskEmbeddings) -> dict[str, VisualizationType]:
        if len(data) < 2:
            return {}
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            title = f"Task embeddings ({data.meta.get('encoder', 'encoder')}), first two principal components"
            png = plot_embeddings(data, Path(tmp) / PROJECTION_FILE, title, data.meta.get("split"))
            return {self.upload(png, PROJECTION_FILE): VisualizationType.IMAGE}

"""IFDTable <-> ``ifd.json``, with the tasks of highest IFD as a markdown summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import VisualizationType

from activeit.scoring.ifd import TABLE_FILE, IFDTable
from materializers.base import FileMaterializer, markdown_table

SUMMARY_ROWS = 20


class IFDTableMaterializer(FileMaterializer):
    """Task and instance IFDs as JSON; their mean and range as metadata."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (IFDTable,)

    def load(self, data_type: type[Any]) -> IFDTable:
        return IFDTable.load(self.local_copy([TABLE_FILE]) / TABLE_FILE)

    def save(self, data: IFDTable) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            self.upload(data.save(Path(tmp) / TABLE_FILE))

    def extract_metadata(self, data: IFDTable) -> dict[str, Any]:
        values = [row.ifd for row in data.rows]
        metadata: dict[str, Any] = {"tasks": len(data), "ifd_mean": sum(values) / len(values) if values else 0.0,
                                    "ifd_max": max(values, default=0.0), "ifd_min": min(values, default=0.0)}
        if "round" in data.meta:
            metadata["round"] = data.meta["round"]
        return metadata

    def save_visualizations(self, data: IFDTable) -> dict[str, VisualizationType]:
        top = sorted(data.rows, key=lambda row: (-row.ifd, row.task))[:SUMMARY_ROWS]
        rows = [[r.task, r.ifd, r.n, r.category, r.is_classification] for r in top]
        round_text = f", round {data.meta['round']}" if "round" in data.meta else ""
        return self.markdown(
            f"# Instruction-following difficulty{round_text}: {len(data)} tasks\n\n"
            "IFD = loss of the answer given the prompt / loss of the answer alone (Cherry LLM), mean over "
            f"each task's instances. Top {len(top)}:\n\n"
            + markdown_table(["task", "IFD", "instances", "category", "classification"], rows) + "\n"
        )

"""ScoreTable <-> ``scores.parquet`` + ``scores.instances.parquet`` + ``meta.json``.

Adaptive tables carry each task's pairs, PU interval and decision as columns (older
artifacts, without them, load as exact tables) and the work saved in ``meta.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import VisualizationType

from activeit.scoring.scores import ScoreTable
from materializers.base import FileMaterializer, markdown_table

TABLE_FILE = "scores.parquet"
META_FILE = "meta.json"
TASK_MAP_FILE = "task_map.png"
SUMMARY_ROWS = 20


class ScoreTableMaterializer(FileMaterializer):
    """Task scores as Parquet; PU statistics as metadata; top tasks and the task map."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (ScoreTable,)

    def load(self, data_type: type[Any]) -> ScoreTable:
        instances = ScoreTable.instances_path(TABLE_FILE).name
        folder = self.local_copy([TABLE_FILE, instances, META_FILE])
        table = ScoreTable.load(folder / TABLE_FILE)
        return ScoreTable(table.rows, table.instances, self.read_json(META_FILE))

    def save(self, data: ScoreTable) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            written = data.save(Path(tmp) / TABLE_FILE)
            self.upload(written)
            self.upload(ScoreTable.instances_path(written))
        self.write_json(META_FILE, data.meta)

    def extract_metadata(self, data: ScoreTable) -> dict[str, Any]:
        pu = [row.pu for row in data.rows]
        metadata: dict[str, Any] = {
            "tasks": len(data),
            "classification_tasks": sum(row.is_classification for row in data.rows),
            "pu_mean": sum(pu) / len(pu) if pu else 0.0,
            "pu_max": max(pu, default=0.0),
        }
        if "round" in data.meta:
            metadata["round"] = data.meta["round"]
        if "adaptive" in data.meta:
            adaptive = data.meta["adaptive"]
            metadata |= {"stopped_early": adaptive["stopped_in"] + adaptive["stopped_out"],
                         "work_saved": adaptive["work_saved"]}
        return metadata

    def save_visualizations(self, data: ScoreTable) -> dict[str, VisualizationType]:
        from activeit.selection.taskmap import plot_task_map

        top = sorted(data.rows, key=lambda row: -row.pu)[:SUMMARY_ROWS]
        header = ["task", "PU", "PP", "perplexity", "category", "classification"]
        rows = [[r.task, r.pu, r.pp, r.perplexity, r.category, r.is_classification] for r in top]
        round_text = f", round {data.meta['round']}" if "round" in data.meta else ""
        adaptive = ""
        if "adaptive" in data.meta:  # the interval and the pairs behind each PU
            header += ["PU interval", "pairs", "stopped"]
            rows = [row + [f"{r.pu_low:.4f} .. {r.pu_high:.4f}", r.pairs, r.decided or "no"] for row, r in zip(rows, top)]
            meta = data.meta["adaptive"]
            adaptive = (f"Adaptive scoring (top {meta['budget']}, delta {meta['delta']}): {meta['stopped_in']} tasks "
                        f"stopped surely in, {meta['stopped_out']} surely out; {meta['work_saved']:.0%} of the work "
                        "saved.\n\n")
        visuals = self.markdown(
            f"# Prompt uncertainty{round_text}: {len(data)} tasks\n\n{adaptive}Top {len(top)} by PU:\n\n"
            + markdown_table(header, rows)
            + "\n"
        )
        if len(data):
            with self.get_temporary_directory(delete_at_exit=True) as tmp:
                png = plot_task_map(data, Path(tmp) / TASK_MAP_FILE, title=f"Task map{round_text}")
                visuals[self.upload(Path(png), TASK_MAP_FILE)] = VisualizationType.IMAGE
        return visuals

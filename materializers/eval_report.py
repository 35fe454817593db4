"""EvalReport <-> ``metrics.json`` + ``predictions.jsonl`` (the library's own layout)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import VisualizationType

from activeit.evaluation import METRICS_FILE, PREDICTIONS_FILE, EvalReport
from materializers.base import FileMaterializer


class EvalReportMaterializer(FileMaterializer):
    """An evaluation report as JSON files; headline scores as metadata; its summary."""

    ASSOCIATED_TYPES: ClassVar[tuple[type, ...]] = (EvalReport,)

    def load(self, data_type: type[Any]) -> EvalReport:
        return EvalReport.load(self.local_copy([METRICS_FILE, PREDICTIONS_FILE]))

    def save(self, data: EvalReport) -> None:
        with self.get_temporary_directory(delete_at_exit=True) as tmp:
            folder = data.save(Path(tmp))
            for name in (METRICS_FILE, PREDICTIONS_FILE):
                self.upload(folder / name)

    def extract_metadata(self, data: EvalReport) -> dict[str, Any]:
        metadata: dict[str, Any] = {"test_tasks": len(data.per_task), "instances": data.overall["instances"]}
        for group in ("overall", "classification", "generation"):
            scores = getattr(data, group)
            for metric in ("rougeL", "exact_match"):
                if scores.get(metric) is not None:
                    metadata[f"{group}_{metric}"] = float(scores[metric])
        return metadata

    def save_visualizations(self, data: EvalReport) -> dict[str, VisualizationType]:
        return self.markdown(f"# Evaluation on the test tasks\n\n```\n{data.summary()}\n```\n")

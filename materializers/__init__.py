"""ZenML materializers for the project's types: readable files, metadata, visualizations.

Importing this package registers every materializer with ZenML, so steps returning these
types never fall back to pickling.
"""

from materializers.artifacts import ModelFolder, PromptSet
from materializers.eval_report import EvalReportMaterializer
from materializers.ifd_table import IFDTableMaterializer
from materializers.model_folder import ModelFolderMaterializer
from materializers.prompt_set import PromptSetMaterializer
from materializers.score_table import ScoreTableMaterializer
from materializers.selection import SelectionMaterializer
from materializers.task_embeddings import TaskEmbeddingsMaterializer
from materializers.task_pool import TaskPoolMaterializer

__all__ = [
    "EvalReportMaterializer",
    "IFDTableMaterializer",
    "ModelFolder",
    "ModelFolderMaterializer",
    "PromptSet",
    "PromptSetMaterializer",
    "ScoreTableMaterializer",
    "SelectionMaterializer",
    "TaskEmbeddingsMaterializer",
    "TaskPoolMaterializer",
]

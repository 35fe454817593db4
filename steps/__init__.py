"""ZenML steps: thin, typed adapters over the library, one per file.

Importing this package registers the project's materializers (no pickled artifacts).
"""

import materializers  # noqa: F401  (registers the materializers)
from steps.accelerate_finetuner import accelerate_finetuner
from steps.base_evaluator import base_evaluator
from steps.ifd_scorer import ifd_scorer
from steps.perturber import perturber
from steps.pool_loader import pool_loader
from steps.rouge_evaluator import rouge_evaluator
from steps.selector import selector
from steps.task_embedder import task_embedder
from steps.tracker import tracker
from steps.uncertainty_scorer import uncertainty_scorer

__all__ = [
    "accelerate_finetuner",
    "base_evaluator",
    "ifd_scorer",
    "perturber",
    "pool_loader",
    "rouge_evaluator",
    "selector",
    "task_embedder",
    "tracker",
    "uncertainty_scorer",
]

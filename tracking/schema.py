"""What an active-tuning run leaves in MLflow: tag names, metric names and prefixes, the
files of a round, and the constants of MLflow's views. The writer, the registry and the
reader share these names; a study reads runs back by them."""

from __future__ import annotations

from activeit.evaluation import HEADLINE_METRICS
from activeit.evaluation import PREDICTIONS_FILE as PREDICTIONS_FILE  # a round's per-instance file
from activeit.study.statistics import SCORING_TIME, SCORING_TOKENS

#: Metrics logged once per round with ``step=round``: the evaluation's headline metrics and
#: the round's training set size, loss and times, and (adaptive scoring) the share of the
#: scoring work saved against exact scoring.
SCORING_WORK_SAVED = "scoring_work_saved"
#: What a round's selection cost: the scoring step's wall time and the token slots its forward
#: passes ran (decoding and teacher forcing, padding included); a study charges each strategy
#: with them (the names are the study's).
ROUND_METRICS = (*HEADLINE_METRICS, "num_training_tasks", "train_loss", "training_time_s", SCORING_TIME,
                 SCORING_TOKENS, SCORING_WORK_SAVED)
#: The untuned base model's test metrics are logged once (step 0) as ``base_<metric>``.
BASE_PREFIX = "base_"
#: The evaluation metrics again with ``step`` = training tasks (the base model at 0), so
#: that the UI charts them against the budget as well as against the round.
BY_TASKS_PREFIX = "by_training_tasks/"

#: Run tags: what a study's runs share (:meth:`ExperimentConfig.study_key`), and that every
#: round of the run has been logged.
STUDY_KEY_TAG = "study_key"
COMPLETE_TAG = "complete"
#: MLflow's tag for a run's description (shown on the run page and in the runs table).
DESCRIPTION_TAG = "mlflow.note.content"
#: Tag on model versions: the ZenML artifact they were logged from (no duplicates on resume).
SOURCE_TAG = "zenml_artifact_id"
#: Tag on model versions: what the model was trained from (the shared config, strategy, seed,
#: round and training tasks), so that an identical run does not register a second copy.
TRAINING_KEY_TAG = "training_key"

#: MLflow 3 opens an experiment in its model-training view (runs table, charts) instead of
#: the GenAI view (traces) when this experiment tag says so.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
#: The MLflow UI's query for its model-training view (MLflow 3 opens the GenAI view unless told).
MODEL_TRAINING_VIEW = "workflowType=machine_learning"

#: A round's files: its selection (with the training set so far and the task-map category of
#: each pick, under these keys), evaluation (grouped metrics; per test task under
#: ``per_task``, which a study reads back), the per-instance predictions and scores (JSON
#: lines, :class:`~activeit.evaluation.EvalReport`'s format), training metrics, score table
#: and task map.
SELECTION_FILE = "selected_tasks.json"
TRAINING_TASKS_KEY = "training_tasks"
PICKED_CATEGORIES_KEY = "picked_categories"
EVALUATION_FILE = "evaluation.json"
PER_TASK_KEY = "per_task"
TRAINING_FILE = "training.json"
SCORES_FILE = "score_table.csv"
TASK_MAP_FILE = "task_map.png"


def round_folder(round_index: int) -> str:
    """The artifact folder of a round's files (and, under a tracking server, its model)."""
    return f"round_{round_index}"


def model_tag(round_index: int) -> str:
    """The run tag naming the registered model version (``name/version``) of a round."""
    return f"model_round_{round_index}"

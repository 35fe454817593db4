"""Every round's model as a version of a registered MLflow model, pointing at the stored
ZenML artifact rather than copying it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from activeit.evaluation import ROUGE_L, EvalReport
from experiment.config import ExperimentConfig
from tracking.policy import is_server_uri, registered_model_name
from tracking.schema import SOURCE_TAG, TRAINING_KEY_TAG, model_tag, round_folder


def training_key(config: ExperimentConfig, round_index: int, training_tasks: Sequence[str]) -> str:
    """A short hash of what round ``round_index``'s model was trained from: the config that a
    study's runs share, the strategy, the seed, the round and its training tasks."""
    what = [config.study_key(), config.strategy, config.seed, round_index, list(training_tasks)]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()[:12]


def register_model(
    config: ExperimentConfig, source_uri: str, source_id: str, round_index: int, training_tasks: Sequence[str],
    report: EvalReport,
) -> int:
    """Register the stored ZenML model artifact at ``source_uri`` as a new version of the
    config's registered model, described in words and tagged (round, strategy, seed,
    training tasks, the round's metrics); returns the version.

    Nothing is copied: the version's source is the artifact's own location (its folder in
    the artifact store), so each round's weights exist once. Only a local artifact store
    under a remote tracking server is uploaded, since the server cannot read this disk. The
    artifact store is the copy the pipeline itself loads, caches and resumes from; MLflow's
    registry is the catalogue that points at it. A model already registered from the same
    ZenML artifact (a resumed or cached round), or trained from the same config, round and
    tasks (an identical run, e.g. with ``--no-cache``), is not registered twice: its version
    is returned.
    """
    client = MlflowClient()
    name = registered_model_name(config)
    try:
        client.create_registered_model(name, description=(
            f"One version per round of active instruction tuning with the {config.strategy} strategy "
            f"(experiment {config.tracking.experiment}): `{config.model}` fine-tuned on the tasks selected so far "
            f"from the {config.pool.source} pool. Version tags: round, seed, training tasks, ROUGE-L."
        ))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    key = training_key(config, round_index, training_tasks)
    for version in client.search_model_versions(f"name='{name}'"):
        if version.tags.get(SOURCE_TAG) == source_id or version.tags.get(TRAINING_KEY_TAG) == key:
            mlflow.set_tag(model_tag(round_index), f"{name}/{version.version}")
            return int(version.version)
    source = source_uri
    if "://" not in source_uri and is_server_uri(mlflow.get_tracking_uri()):
        # A tracking server cannot point at this machine's disk (it refuses a local source):
        # the model goes to the server's artifact store once, the only copy the server can serve.
        artifact_path = f"{round_folder(round_index)}/model"
        mlflow.log_artifacts(source_uri, artifact_path)
        source = mlflow.get_artifact_uri(artifact_path)
    metrics = report.headline()
    rouge = f", ROUGE-L {metrics[ROUGE_L]:.2f} on the test tasks" if ROUGE_L in metrics else ""
    tags = {"round": round_index, "strategy": config.strategy, "seed": config.seed,
            "num_training_tasks": len(training_tasks), **{k: f"{v:.4f}" for k, v in metrics.items()}}
    version = client.create_model_version(
        name,
        source=source,
        run_id=mlflow.active_run().info.run_id,
        tags={SOURCE_TAG: source_id, TRAINING_KEY_TAG: key, **{k: str(value) for k, value in tags.items()}},
        description=f"Round {round_index} of {config.strategy}, seed {config.seed}: fine-tuned on "
        f"{len(training_tasks)} tasks{rouge}.",
    )
    mlflow.set_tag(model_tag(round_index), f"{name}/{version.version}")
    return int(version.version)

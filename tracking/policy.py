"""What an experiment config means for MLflow: a server or a local store, the name of a run,
the registered model of a strategy, and which rounds register a model version
(``tracking.log_models``)."""

from __future__ import annotations

from datetime import datetime

from experiment.config import ExperimentConfig


def is_server_uri(tracking_uri: str) -> bool:
    """Whether an MLflow tracking URI names a tracking server (rather than a local store)."""
    return tracking_uri.startswith(("http://", "https://"))


def run_name(config: ExperimentConfig, started: datetime | None = None) -> str:
    """The name of a pipeline run and of its MLflow run (ZenML's tracker names it after the
    pipeline run): experiment, strategy, seed and when it ``started`` (ZenML's ``{date}-{time}``,
    the same format, for the runs it starts itself, e.g. those of a schedule)."""
    when = f"{started:%Y_%m_%d-%H_%M_%S_%f}" if started else "{date}-{time}"
    return f"{config.tracking.experiment}-{config.strategy}-seed{config.seed}-{when}"


def registered_model_name(config: ExperimentConfig) -> str:
    """The MLflow registered model holding every round's model of the config's strategy."""
    return f"{config.tracking.experiment}-{config.strategy}"


def registers_model(config: ExperimentConfig, round_index: int) -> bool:
    """Whether round ``round_index``'s model gets a registered version: every round, the
    last one or none (``tracking.log_models``)."""
    last = round_index == config.selection_rounds
    return config.tracking.log_models == "all" or (config.tracking.log_models == "last" and last)

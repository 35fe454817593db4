"""The ZenML side of a run: source root, a stack with an MLflow tracker, schedule support.

Nothing here runs at import time: the stack is resolved when a run is prepared, so that
importing steps or pipelines never needs a configured stack.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from activeit.errors import ConfigError
from experiment.config import REPO_ROOT, ExperimentConfig
from tracking.policy import is_server_uri

if TYPE_CHECKING:
    from zenml.stack import Stack

LOCAL_STACK = "activeit-local"
LOCAL_TRACKER = "activeit-mlflow"
LOCAL_FLAVORS = ("local", "local_docker")
#: Orchestrator flavors whose ZenML integration runs schedules.
SCHEDULING_ORCHESTRATORS = (
    "kubernetes", "kubeflow", "vertex", "sagemaker", "azureml", "airflow", "databricks",
)


@dataclass(frozen=True)
class StackInfo:
    """What a run will use: the stack, its MLflow tracker and where it logs."""

    stack: str
    tracker: str
    tracking_uri: str
    orchestrator_flavor: str
    created: bool


def use_repo_source_root() -> None:
    """Resolve steps and materializers against the repository root, however Python was
    started (``python -c``, pytest, a notebook) and without ``zenml init``."""
    from zenml.utils.source_utils import set_custom_source_root

    set_custom_source_root(str(REPO_ROOT))


def _is_local(stack: Stack) -> bool:
    return stack.orchestrator.flavor in LOCAL_FLAVORS and stack.artifact_store.flavor == "local"


def _tracker_name(tracking_uri: str | None) -> str:
    if not tracking_uri:
        return LOCAL_TRACKER
    return f"{LOCAL_TRACKER}-{hashlib.sha256(tracking_uri.encode()).hexdigest()[:8]}"


def _tracker_configuration(tracking_uri: str | None) -> dict[str, str]:
    """The MLflow tracker component's configuration for a tracking URI. ZenML wants exactly
    one way to authenticate with a server (http/https): MLflow's own variables give it."""
    if not tracking_uri:
        return {}
    if not is_server_uri(tracking_uri):
        return {"tracking_uri": tracking_uri}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    username, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if token:
        return {"tracking_uri": tracking_uri, "tracking_token": token}
    if username and password:
        return {"tracking_uri": tracking_uri, "tracking_username": username, "tracking_password": password}
    raise ConfigError(
        f"logging to the MLflow server {tracking_uri} needs credentials: set MLFLOW_TRACKING_TOKEN, or "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (a server without authentication takes "
        "any token, e.g. MLFLOW_TRACKING_TOKEN=none)"
    )


def _ensure_tracker(client: Any, tracking_uri: str | None) -> str:
    """The name of activeit's MLflow tracker component for ``tracking_uri``: created, or
    updated when the credentials in the environment changed since (a new token is used,
    not the one the component was first made with)."""
    from zenml.enums import StackComponentType

    kind = StackComponentType.EXPERIMENT_TRACKER
    name, configuration = _tracker_name(tracking_uri), _tracker_configuration(tracking_uri)
    if not client.list_stack_components(type=kind, name=name).items:
        client.create_stack_component(name=name, flavor="mlflow", component_type=kind, configuration=configuration)
    elif any(client.get_stack_component(kind, name).configuration.get(key) != value
             for key, value in configuration.items()):
        client.update_stack_component(name, kind, configuration=configuration)
    return name


def _setup_lock() -> Any:
    """A lock held while a run sets up ZenML and MLflow stores, so that two runs started at
    once on a fresh machine do not both create the same SQLite tables."""
    import filelock
    from zenml.config.global_config import GlobalConfiguration

    folder = Path(GlobalConfiguration().config_directory)
    folder.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(folder / "activeit-setup.lock"), timeout=600)


def prepare_stack(config: ExperimentConfig) -> StackInfo:
    """:func:`_prepare_stack` under the set-up lock; the MLflow store is created there too."""
    with _setup_lock():
        info = _prepare_stack(config)
        from tracking.reader import open_store

        open_store(info.tracking_uri)
    return info


def _prepare_stack(config: ExperimentConfig) -> StackInfo:
    """Activate the config's stack if it names one, and make sure it has an MLflow tracker.

    A local stack without an experiment tracker gets one: a stack ``activeit-local`` (the
    active stack's components plus an MLflow tracker, SQLite in the artifact store unless
    the config gives a tracking URI) is registered and activated. A remote stack is never
    changed: without an MLflow tracker it is an error.
    """
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    if config.zenml.stack:
        try:
            client.activate_stack(config.zenml.stack)
        except KeyError:
            raise ConfigError(f"ZenML stack '{config.zenml.stack}' is not registered (zenml stack list)") from None
    stack = client.active_stack
    created = False
    if stack.experiment_tracker is not None and stack.experiment_tracker.name == _tracker_name(config.tracking.tracking_uri):
        _ensure_tracker(client, config.tracking.tracking_uri)  # ours: today's credentials
    if stack.experiment_tracker is None:
        if not _is_local(stack):
            raise ConfigError(
                f"ZenML stack '{stack.name}' has no experiment tracker; register an MLflow tracker "
                f"and add it to the stack (zenml experiment-tracker register ... --flavor=mlflow)"
            )
        tracker = _ensure_tracker(client, config.tracking.tracking_uri)
        name = LOCAL_STACK if tracker == LOCAL_TRACKER else f"{LOCAL_STACK}-{tracker[-8:]}"
        if not client.list_stacks(name=name).items:
            components = {kind: [c.id for c in found][0] for kind, found in client.active_stack_model.components.items()}
            components[StackComponentType.EXPERIMENT_TRACKER] = client.get_stack_component(
                StackComponentType.EXPERIMENT_TRACKER, tracker
            ).id
            client.create_stack(name, components=components)
        client.activate_stack(name)
        stack = client.active_stack
        created = True
    if stack.experiment_tracker.flavor != "mlflow":
        raise ConfigError(
            f"ZenML stack '{stack.name}' tracks experiments with '{stack.experiment_tracker.flavor}'; "
            f"activeit logs to MLflow: use a stack with an MLflow experiment tracker"
        )
    return StackInfo(
        stack=stack.name,
        tracker=stack.experiment_tracker.name,
        tracking_uri=stack.experiment_tracker.get_tracking_uri(),
        orchestrator_flavor=stack.orchestrator.flavor,
        created=created,
    )


def check_schedule_support(info: StackInfo) -> None:
    """A schedule needs an orchestrator that runs them: a clear error otherwise."""
    if info.orchestrator_flavor not in SCHEDULING_ORCHESTRATORS:
        raise ConfigError(
            f"the '{info.orchestrator_flavor}' orchestrator of stack '{info.stack}' does not support "
            f"schedules; use a stack whose orchestrator does ({', '.join(SCHEDULING_ORCHESTRATORS)})"
        )

"""A real ZenML orchestrator that stands in for a cluster: each submitted pipeline run goes
to a detached background process (its own session, as a pod outlives ``run.py``), which
runs the steps one after the other with ZenML's own step entrypoint, as a Kubernetes pod
would. Like the Kubernetes orchestrator it has ``synchronous`` and ``max_parallelism``
settings; every submission's settings are appended to ``submissions.jsonl`` and every
background process's pid to ``pids.txt`` in the folder named by ``ACTIVEIT_TEST_CLUSTER``
(so that a test can check them and end what is left)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional
from uuid import uuid4

from pydantic import PositiveInt
from zenml.config.base_settings import BaseSettings
from zenml.entrypoints import StepEntrypointConfiguration
from zenml.orchestrators import BaseOrchestrator, BaseOrchestratorConfig, BaseOrchestratorFlavor
from zenml.orchestrators.base_orchestrator import SubmissionResult

if TYPE_CHECKING:
    from zenml.models import PipelineRunResponse, PipelineSnapshotResponse
    from zenml.stack import Stack

FLAVOR = "activeit_test_cluster"
FOLDER_ENV = "ACTIVEIT_TEST_CLUSTER"
RUN_ID_ENV = "ACTIVEIT_TEST_CLUSTER_RUN_ID"
ROOT = Path(__file__).resolve().parents[1]

#: What the background process runs: each step's command in order, stopping at the first failure.
RUNNER = """
import json, os, subprocess, sys
for command, env in json.load(open(sys.argv[1])):
    if subprocess.call(command, env=os.environ | env) != 0:
        sys.exit(1)
"""


class ClusterOrchestratorSettings(BaseSettings):
    synchronous: bool = True
    max_parallelism: Optional[PositiveInt] = None


class ClusterOrchestratorConfig(BaseOrchestratorConfig, ClusterOrchestratorSettings):
    @property
    def is_synchronous(self) -> bool:
        return self.synchronous


class ClusterOrchestrator(BaseOrchestrator):
    @property
    def settings_class(self) -> Optional[type[BaseSettings]]:
        return ClusterOrchestratorSettings

    def get_orchestrator_run_id(self) -> str:
        return os.environ[RUN_ID_ENV]

    def submit_pipeline(
        self, snapshot: PipelineSnapshotResponse, stack: Stack, base_environment: dict[str, str],
        step_environments: dict[str, dict[str, str]], placeholder_run: PipelineRunResponse | None = None,
    ) -> SubmissionResult | None:
        settings = self.get_settings(snapshot)
        folder = Path(os.environ[FOLDER_ENV])
        folder.mkdir(parents=True, exist_ok=True)
        run_id = str(uuid4())
        with (folder / "submissions.jsonl").open("a") as out:
            out.write(json.dumps({"run": placeholder_run.name if placeholder_run else None, "time": time.time(),
                                  "synchronous": settings.synchronous,
                                  "max_parallelism": settings.max_parallelism}) + "\n")
        command = StepEntrypointConfiguration.get_entrypoint_command()
        command[0] = sys.executable  # ("python" on the PATH may be another interpreter, as an image's is its own)
        plan = [
            [command + StepEntrypointConfiguration.get_entrypoint_arguments(step_name=name, snapshot_id=snapshot.id),
             base_environment | step_environments[name] | {RUN_ID_ENV: run_id, "ZENML_CUSTOM_SOURCE_ROOT": str(ROOT),
                                                           "PYTHONPATH": str(ROOT)}]
            for name in snapshot.step_configurations
        ]
        plan_file = folder / f"{run_id}.json"
        plan_file.write_text(json.dumps(plan))
        with (folder / f"{run_id}.log").open("w") as log:
            process = subprocess.Popen([sys.executable, "-c", RUNNER, str(plan_file)], stdout=log,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT,
                                       start_new_session=True)
        with (folder / "pids.txt").open("a") as out:
            out.write(f"{process.pid}\n")
        if not settings.synchronous:
            return None

        def wait() -> None:
            if process.wait() != 0:
                raise RuntimeError(f"Pipeline run has failed (log {folder / f'{run_id}.log'})")

        return SubmissionResult(wait_for_completion=wait)


class ClusterOrchestratorFlavor(BaseOrchestratorFlavor):
    @property
    def name(self) -> str:
        return FLAVOR

    @property
    def config_class(self) -> type[BaseOrchestratorConfig]:
        return ClusterOrchestratorConfig

    @property
    def implementation_class(self) -> type[ClusterOrchestrator]:
        return ClusterOrchestrator


def register(client: Any, stack_name: str, tracker: str) -> None:
    """Register the flavor, an orchestrator of it and a stack of it with the local artifact
    store and ``tracker``; the stack is activated."""
    from zenml.enums import StackComponentType

    kind = StackComponentType.ORCHESTRATOR
    if not client.get_flavors_by_type(kind) or FLAVOR not in {f.name for f in client.get_flavors_by_type(kind)}:
        client.create_flavor(source="tests.cluster_orchestrator.ClusterOrchestratorFlavor", component_type=kind)
    if not client.list_stack_components(type=kind, name="test-cluster").items:
        client.create_stack_component(name="test-cluster", flavor=FLAVOR, component_type=kind, configuration={})
    if not client.list_stacks(name=stack_name).items:
        client.create_stack(stack_name, components={
            kind: "test-cluster",
            StackComponentType.ARTIFACT_STORE: client.active_stack_model.components[StackComponentType.ARTIFACT_STORE][0].id,
            StackComponentType.EXPERIMENT_TRACKER: tracker,
        })
    client.activate_stack(stack_name)

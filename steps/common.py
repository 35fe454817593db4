"""Small helpers shared by the steps."""

from __future__ import annotations

import os
from collections.abc import Iterable

from zenml import get_step_context
from zenml.steps.step_context import StepContext

from activeit.errors import ActiveITError
from activeit.data.tasks import Task, TaskPool

#: Set to a step id (``accelerate_finetuner_round_2``) to make that step fail on purpose:
#: how the tests interrupt a run to check that a re-run resumes from the cache.
FAIL_STEP_ENV = "ACTIVEIT_FAIL_STEP"


class InjectedFailure(ActiveITError):
    """Raised by a step named in ``$ACTIVEIT_FAIL_STEP``."""


def _step_context() -> StepContext | None:
    """The running step's context; None when a step function is called directly."""
    try:
        return get_step_context()
    except RuntimeError:
        return None


def fail_if_requested() -> None:
    """Raise :class:`InjectedFailure` when this step's id is in ``$ACTIVEIT_FAIL_STEP``."""
    wanted = os.environ.get(FAIL_STEP_ENV)
    context = _step_context() if wanted else None
    if context is not None and context.step_run.name in wanted.split(","):
        raise InjectedFailure(f"step '{context.step_run.name}' failed on purpose ({FAIL_STEP_ENV})")


def remaining_tasks(pool: TaskPool, training_tasks: Iterable[str]) -> tuple[Task, ...]:
    """The pool's train tasks not selected yet, in pool order."""
    taken = set(training_tasks)
    return tuple(task for task in pool.train if task.name not in taken)


def local_output_dir(output_name: str) -> str | None:
    """The folder of a step output when the artifact store is local (write there directly,
    no copy); None for a remote store or outside a running step."""
    context = _step_context()
    if context is None:
        return None
    uri = context.get_output_artifact_uri(output_name)
    return uri if os.path.isabs(uri) else None

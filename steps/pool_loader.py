"""Step: load the task pool described by the config."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.config.settings import PoolSettings
from activeit.data.sources import load_pool_from
from activeit.data.tasks import TaskPool


@step
def pool_loader(pool: PoolSettings) -> Annotated[TaskPool, "task_pool"]:
    """Load the pool (seeded held-out splits); it must have test tasks to evaluate on."""
    return load_pool_from(pool, need_test_tasks=True)

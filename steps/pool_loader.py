"""Step: load the task pool described by the config."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.config import PoolSection
from activeit.errors import ConfigError
from activeit.sources import load_pool
from activeit.tasks import TaskPool


@step
def pool_loader(pool: PoolSection, seed: int) -> Annotated[TaskPool, "task_pool"]:
    """Load the pool (seeded held-out splits); it must have test tasks to evaluate on."""
    loaded = load_pool(
        pool.source,
        pool.path,
        split_dir=pool.split_dir,
        english_only=pool.english_only,
        max_instances_per_task=pool.max_instances,
        validation_tasks=pool.validation_tasks,
        test_tasks=pool.test_tasks,
        seed=seed,
        skip_invalid=pool.skip_invalid,
    )
    if not loaded.test:
        raise ConfigError(f"pool '{loaded.name}' has no test tasks to evaluate on (set pool.test_tasks)")
    return loaded

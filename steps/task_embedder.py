"""Step: embed every task of the pool once (the diversity strategies' input, cached per pool)."""

from __future__ import annotations

from typing import Annotated

from zenml import step

from activeit.config.settings import DiversitySettings
from activeit.data.tasks import TaskPool
from activeit.models.encoder import load_encoder
from activeit.selection.diversity import TaskEmbeddings, embed_tasks
from steps.common import fail_if_requested


@step
def task_embedder(pool: TaskPool, diversity: DiversitySettings) -> Annotated[TaskEmbeddings, "task_embeddings"]:
    """The unit embeddings of the pool's train and test tasks by ``diversity.encoder`` (the
    test tasks only for the dashboard's projection: no strategy picks them)."""
    fail_if_requested()
    tasks = [*pool.train, *pool.test]
    embeddings = embed_tasks(load_encoder(diversity.encoder), tasks, diversity.batch_size, name=diversity.encoder)
    split = {t.name: "train" for t in pool.train} | {t.name: "test" for t in pool.test}
    return TaskEmbeddings(embeddings.names, embeddings.vectors, embeddings.meta | {"split": split})

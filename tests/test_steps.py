"""Each step's function called directly (no stack, no pipeline) on tiny inputs."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

from pathlib import Path

import pytest

from activeit.settings import EvaluationSettings, PoolSettings, ScoringSettings, TrainingSettings
from activeit.models import tiny_model_folder
from activeit.tasks import TaskPool
from materializers import ModelFolder, PromptSet
from steps import accelerate_finetuner, perturber, pool_loader, rouge_evaluator, selector, uncertainty_scorer
from steps.common import FAIL_STEP_ENV, fail_if_requested, remaining_tasks


@pytest.fixture(scope="module")
def pool() -> TaskPool:
    return pool_loader.entrypoint(PoolSettings(source="builtin", max_instances=3, seed=0))


@pytest.fixture(scope="module")
def tiny() -> ModelFolder:
    return ModelFolder(str(tiny_model_folder("tiny-llama")), base_model="tiny-llama", round=0)


def test_pool_loader(pool: TaskPool) -> None:
    assert pool.train and pool.test
    assert all(len(t.instances) <= 3 for t in pool)


def test_selector_rounds_are_disjoint_and_cumulative(pool: TaskPool) -> None:
    first, trained = selector.entrypoint(pool, [], "random", 4, 0, None, 0)
    assert first.strategy == "random" and len(first.tasks) == 4 and trained == list(first.tasks)
    again, _ = selector.entrypoint(pool, [], "random", 4, 0, None, 0)
    assert again.tasks == first.tasks
    second, trained2 = selector.entrypoint(pool, trained, "random", 3, 0, None, 1)
    assert not set(second.tasks) & set(first.tasks)
    assert trained2 == [*trained, *second.tasks]


def test_perturber_covers_the_remaining_pool(pool: TaskPool) -> None:
    trained = [t.name for t in pool.train[:5]]
    prompts = perturber.entrypoint(pool, trained, ScoringSettings(k=3, seed=0), 1)
    assert prompts.round == 1
    assert list(prompts.prompts) == [t.name for t in remaining_tasks(pool, trained)]
    assert all(p.k == 3 for p in prompts.prompts.values())


def test_scorer_then_uncertainty_selection(pool: TaskPool, tiny: ModelFolder) -> None:
    candidates = pool.train[:3]
    prompts = PromptSet(1, perturber.entrypoint(pool, [t.name for t in pool.train[3:]], ScoringSettings(k=2, seed=0), 1).prompts)
    scoring = ScoringSettings(n=1, k=2, max_new_tokens=2, max_source_length=192, seed=0, chat=None)
    table, seconds = uncertainty_scorer.entrypoint(tiny, pool, prompts, scoring)
    assert table.tasks == tuple(t.name for t in candidates)
    assert table.meta["round"] == 1 and seconds > 0
    chosen, _ = selector.entrypoint(pool, [t.name for t in pool.train[3:]], "uncertainty", 1, 0, None, 1, scores=table)
    assert chosen.tasks == (sorted(table.rows, key=lambda r: (-r.pu, r.task))[0].task,)


def test_finetuner_and_evaluator(pool: TaskPool, tmp_path: Path) -> None:
    training = TrainingSettings(epochs=1, max_steps=1, batch_size=2, max_instances_per_task=1,
                               max_source_length=128, max_target_length=4, warmup_steps=0)
    selection, trained = selector.entrypoint(pool, [], "random", 2, 0, None, 0)
    model, metrics = accelerate_finetuner.entrypoint("tiny-llama", pool, trained, selection, training, 0)
    assert (Path(model.path) / "model.safetensors").exists()
    assert model.round == 0 and model.base_model == "tiny-llama"
    assert metrics["steps"] == 1 and metrics["num_tasks"] == 2
    small = TaskPool({"train": pool.train[:1], "test": pool.test[:2]}, name="small")
    report = rouge_evaluator.entrypoint(model, small, EvaluationSettings(max_instances_per_task=1, max_new_tokens=2))
    assert set(report.per_task) == {t.name for t in pool.test[:2]}
    assert 0.0 <= report.overall["rougeL"] <= 100.0


def test_injected_failure_needs_a_running_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_STEP_ENV, "selector_round_0")
    fail_if_requested()  # called outside a pipeline: nothing to match, no error


def test_finetuner_launches_several_processes(pool: TaskPool) -> None:
    training = TrainingSettings(epochs=1, max_steps=1, batch_size=1, max_instances_per_task=1,
                               max_source_length=128, max_target_length=4, warmup_steps=0, num_processes=2)
    selection, trained = selector.entrypoint(pool, [], "random", 2, 0, None, 0)
    model, metrics = accelerate_finetuner.entrypoint("tiny-llama", pool, trained, selection, training, 0)
    assert metrics["num_processes"] == 2
    assert (Path(model.path) / "model.safetensors").exists()


def test_finetuner_continue_mode_trains_the_previous_model_on_new_tasks(pool: TaskPool, tiny: ModelFolder) -> None:
    training = TrainingSettings(epochs=1, max_steps=1, batch_size=2, max_instances_per_task=1,
                               max_source_length=128, max_target_length=4, warmup_steps=0, mode="continue")
    selection, trained = selector.entrypoint(pool, [t.name for t in pool.train[:3]], "random", 1, 0, None, 1)
    model, metrics = accelerate_finetuner.entrypoint(
        "tiny-llama", pool, trained, selection, training, 1, previous_model=tiny
    )
    assert metrics["num_tasks"] == 1 and metrics["model_name"] == tiny.path
    assert model.round == 1

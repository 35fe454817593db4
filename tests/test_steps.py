"""Each step's function called directly (no stack, no pipeline) on tiny inputs."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

from pathlib import Path

import pytest
from tiny_tasks import constant_task

from activeit.config.settings import EvaluationSettings, PoolSettings, ScoringSettings, TrainingSettings
from activeit.models.loading import load_model
from activeit.models.tiny import tiny_model_folder
from activeit.scoring.scorer import score_tasks
from activeit.selection.strategies import Selection
from activeit.data.tasks import TaskPool
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
    prompts = PromptSet(1, perturber.entrypoint(pool, [t.name for t in pool.train[3:]], ScoringSettings(k=2, seed=3), 1).prompts)
    scoring = ScoringSettings(n=1, k=2, max_new_tokens=2, max_source_length=192, seed=0, chat=None)
    table, seconds = uncertainty_scorer.entrypoint(tiny, pool, prompts, scoring)
    assert table.tasks == tuple(t.name for t in candidates)
    assert table.meta["round"] == 1 and isinstance(seconds, float)
    # the step scores with the model it is given and the round's prompts, nothing else
    direct = score_tasks(load_model(tiny.path), candidates, scoring, prompts=prompts.prompts, progress=False)
    assert [(r.task, r.pu, r.pp) for r in table] == [(r.task, r.pu, r.pp) for r in direct]
    assert len({r.pu for r in table}) == len(candidates)
    chosen, _ = selector.entrypoint(pool, [t.name for t in pool.train[3:]], "uncertainty", 1, 0, None, 1, scores=table)
    assert chosen.tasks == (sorted(table.rows, key=lambda r: (-r.pu, r.task))[0].task,)


def test_adaptive_scorer_takes_the_selectors_budget(pool: TaskPool, tiny: ModelFolder) -> None:
    """With scoring.adaptive the step settles the selector's top b (per group when stratified)."""
    trained = [t.name for t in pool.train[6:]]
    prompts = PromptSet(1, perturber.entrypoint(pool, trained, ScoringSettings(k=2, seed=3), 1).prompts)
    scoring = ScoringSettings(n=2, k=2, max_new_tokens=2, max_source_length=192, seed=0, adaptive=True, first_stage=2)
    table, _ = uncertainty_scorer.entrypoint(tiny, pool, prompts, scoring, budget=6, classification_ratio=0.5)
    groups = [t.is_classification for t in pool.train[:6]]
    assert table.meta["adaptive"]["budget"] == {"True": min(3, sum(groups)), "False": 6 - min(3, sum(groups))}
    assert all(r.decided == "in" for r in table)  # 6 of 6: all in after the first stage
    chosen, _ = selector.entrypoint(pool, trained, "uncertainty", 6, 0, 0.5, 1, scores=table)
    assert set(chosen.tasks) == set(table.tasks)


def test_finetuner_and_evaluator(tmp_path: Path) -> None:
    """The finetuner trains on the named tasks (a constant answer, learnt), and the
    evaluator scores the pool's test split with that model (ROUGE-L 100 after, ~0 before)."""
    pool = TaskPool({"train": (constant_task("say_yes", "yes", n=8), constant_task(n=8, seed=2)),
                     "test": (constant_task("answer_yes", "yes", n=4, seed=1),)}, name="yes")
    training = TrainingSettings(epochs=8, batch_size=4, learning_rate=1e-2, warmup_steps=0, max_instances_per_task=8,
                               max_source_length=64, max_target_length=4, group_by_length=True, chat=False)
    selection = Selection("random", 0, 0, ("say_yes",))
    model, metrics = accelerate_finetuner.entrypoint("tiny-llama", pool, ["say_yes"], selection, training, 0)
    assert (Path(model.path) / "model.safetensors").exists()
    assert model.round == 0 and model.base_model == "tiny-llama"
    assert metrics["steps"] == 16 and metrics["num_tasks"] == 1 and metrics["num_examples"] == 8
    assert metrics["final_loss"] < metrics["loss_curve"][0] / 10
    evaluation = EvaluationSettings(max_instances_per_task=4, max_new_tokens=3, chat=False)
    report = rouge_evaluator.entrypoint(model, pool, evaluation)
    assert set(report.per_task) == {"answer_yes"}
    assert report.overall["rougeL"] == 100.0 and {p["prediction"] for p in report.predictions} == {"yes"}
    base = rouge_evaluator.entrypoint(ModelFolder(str(tiny_model_folder("tiny-llama")), "tiny-llama", 0), pool, evaluation)
    assert base.overall["rougeL"] < 50


def test_injected_failure_needs_a_running_step(pool: TaskPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step function called directly (tests, notebooks) is not a pipeline step: the
    failure switch (tests/test_pipeline.py makes real steps fail) leaves it alone."""
    expected = selector.entrypoint(pool, [], "random", 2, 0, None, 0)
    monkeypatch.setenv(FAIL_STEP_ENV, "pool_loader,selector_round_0")
    assert fail_if_requested() is None
    assert selector.entrypoint(pool, [], "random", 2, 0, None, 0) == expected


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
        "tiny-llama", pool, trained, selection, training, 1, previous_model_folder=tiny
    )
    assert metrics["num_tasks"] == 1 and metrics["model_name"] == tiny.path
    assert model.round == 1

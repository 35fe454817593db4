"""The fine-tuning loop: data, batching, learning, failure modes, determinism, processes."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file
from tiny_tasks import constant_task

from activeit.errors import TrainingError
from activeit.evaluation import evaluate_model
from activeit.config.settings import EvaluationSettings
from activeit.scoring.engine.generation import greedy_generate
from activeit.models.loading import load_model
from activeit.data.prompts import PromptFormatter
from activeit.models.batching import length_grouped_batches
from activeit.config.settings import TrainingSettings
from activeit.data.tasks import Instance, Task
from activeit.training.data import IGNORE_INDEX, Collator, EpochBatchSampler, TrainingExample, truncate_target
from activeit.training.finetune import TrainingResult, finetune
from activeit.training.saving import METRICS_FILE

#: Raw prompts (no chat template) keep the sequences of the tiny models short.
FAST = TrainingSettings(epochs=6, learning_rate=1e-2, warmup_steps=0, batch_size=4, max_instances_per_task=16,
                        chat=False)
EVAL = EvaluationSettings(max_new_tokens=4, chat=False)
METRIC_KEYS = {"loss_curve", "final_loss", "tokens_seen", "padding_share", "wall_time_s",
               "steps", "num_tasks", "num_examples"}


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


# ----------------------------------------------------------------------------- data


def test_truncate_target_keeps_eos() -> None:
    assert truncate_target([1, 2, 3, 9], 8) == (1, 2, 3, 9)
    assert truncate_target([1, 2, 3, 4, 5, 9], 4) == (1, 2, 3, 9)


def test_length_grouped_batches_cover_everything_with_little_padding() -> None:
    lengths = [random.Random(i).randint(5, 500) for i in range(1000)]
    batches = length_grouped_batches(lengths, 8, random.Random(0), mega_batch_factor=50)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert len(batches) == 125 and all(len(b) == 8 for b in batches)
    assert batches == length_grouped_batches(lengths, 8, random.Random(0), mega_batch_factor=50)

    def padding(plan: list[list[int]]) -> float:
        total = sum(len(b) * max(lengths[i] for i in b) for b in plan)
        return 1 - sum(lengths) / total

    order = list(range(1000))
    random.Random(0).shuffle(order)
    plain = [order[i : i + 8] for i in range(0, 1000, 8)]
    assert padding(batches) < 0.05 < 0.3 < padding(plain)


def test_sampler_draws_one_reference_per_epoch_deterministically() -> None:
    examples = [TrainingExample("t", (1,) * (i + 1), ((7,), (8, 8))) for i in range(40)]
    sampler = EpochBatchSampler(examples, batch_size=4, seed=3)
    plans = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        plans.append(list(sampler))
        assert len(plans[-1]) == len(sampler) == 10
        assert sorted(i for batch in plans[-1] for i, _ in batch) == list(range(40))
    refs = [{i: r for batch in plan for i, r in batch} for plan in plans]
    assert refs[0] != refs[1] and set(refs[0].values()) == {0, 1}
    sampler.set_epoch(1)
    assert list(sampler) == plans[1]


def _examples(task: str, n: int) -> list[TrainingExample]:
    return [TrainingExample(task, (1,) * (k % 5 + 1), ((7,), (8, 8), (9,)), id=f"{task}-{k}") for k in range(n)]


def _flat(sampler: EpochBatchSampler, task: str) -> list[tuple[str, int]]:
    """The plan of ``sampler`` as (instance id, reference) in training order, ``task``'s only."""
    return [(sampler.examples[i].id, r) for batch in sampler for i, r in batch if sampler.examples[i].task == task]


@pytest.mark.parametrize("group_by_length", [False, True])
def test_shared_examples_get_the_same_references_and_order_whatever_else_is_trained(group_by_length: bool) -> None:
    """Common random numbers: two strategies' round-1 sets share round 0's tasks; under one seed
    those examples get the same reference draws and (without length grouping) the same
    relative order, wherever they sit in the list and whatever else is trained."""
    shared = _examples("round0", 16)
    first = EpochBatchSampler([*shared, *_examples("picked_by_a", 16)], 4, seed=3, group_by_length=group_by_length)
    second = EpochBatchSampler([*_examples("picked_by_b", 24), *shared[::-1]], 4, seed=3,
                               group_by_length=group_by_length)
    alone = EpochBatchSampler(shared, 4, seed=3, group_by_length=group_by_length)
    for epoch in range(2):
        for sampler in (first, second, alone):
            sampler.set_epoch(epoch)
        a, b, c = _flat(first, "round0"), _flat(second, "round0"), _flat(alone, "round0")
        assert len(a) == len(b) == 16
        if group_by_length:
            assert sorted(a) == sorted(b) == sorted(c)  # the same references; the order follows the lengths
        else:
            assert a == b == c
            assert [i for i, _ in a] != sorted(i for i, _ in a)  # shuffled, not in list order
    # another seed draws another order
    other = EpochBatchSampler(shared, 4, seed=4, group_by_length=False)
    alone.group_by_length = False
    alone.set_epoch(0)
    assert _flat(other, "round0") != _flat(alone, "round0")


def test_instance_draws_depend_on_the_seed_and_task_only() -> None:
    """A task's training instances are the same whatever else is in the training set."""
    from activeit.training.data import build_examples

    loaded = load_model("tiny-llama")
    formatter = PromptFormatter.for_model(loaded, 256, chat=False)
    config = TrainingSettings(max_instances_per_task=4, seed=5, chat=False)
    tasks = [constant_task(name, name.split("_")[1], n=12, seed=k) for k, name in enumerate(("say_a", "say_b", "say_c"))]
    with_b = [e for e in build_examples(formatter, [tasks[0], tasks[1]], config) if e.task == "say_b"]
    with_c = [e for e in build_examples(formatter, [tasks[2], tasks[1]], config) if e.task == "say_b"]
    assert with_b == with_c and len(with_b) == 4
    assert [e.id for e in with_b] != [e.id for e in build_examples(formatter, [tasks[1]], config.replace(seed=6))]


def test_collator_masks_prompt_and_padding_for_causal_models() -> None:
    batch = Collator(pad_id=0, seq2seq=False)([((5, 6, 7), (8, 9)), ((5,), (8, 9))])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9], [5, 8, 9, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    m = IGNORE_INDEX
    assert batch["labels"].tolist() == [[m, m, m, 8, 9], [m, 8, 9, m, m]]
    assert batch["num_tokens"].tolist() == [8, 10]


def test_collator_uses_targets_as_labels_for_seq2seq() -> None:
    batch = Collator(pad_id=0, seq2seq=True)([((5, 6, 7), (8, 9)), ((5,), (8,))])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[8, 9], [8, IGNORE_INDEX]]
    assert batch["num_tokens"].tolist() == [4 + 3, 6 + 4]


def test_config_is_validated() -> None:
    with pytest.raises(ValidationError, match="batch_size"):
        TrainingSettings(batch_size=0)
    with pytest.raises(ValidationError, match="mixed_precision"):
        TrainingSettings(mixed_precision="fp64")
    assert TrainingSettings.model_validate(FAST.model_dump()) == FAST


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def yes_task() -> Task:
    return constant_task("say_yes", "yes", n=16)


@pytest.fixture(scope="module")
def trained(yes_task: Task, tmp_path_factory: pytest.TempPathFactory) -> TrainingResult:
    """tiny-llama fine-tuned to answer "yes" (24 steps, a few seconds)."""
    out = tmp_path_factory.mktemp("trained") / "model"
    return finetune("tiny-llama", [yes_task], out, FAST, progress=False)


def test_tiny_model_learns_a_trivial_task_and_its_rouge_rises(
    yes_task: Task, trained: TrainingResult
) -> None:
    metrics = trained.metrics
    assert METRIC_KEYS <= set(metrics)
    assert metrics["steps"] == len(metrics["loss_curve"]) == 6 * 4
    assert metrics["loss_curve"][0] > 5 and metrics["final_loss"] < 0.1
    assert (metrics["num_tasks"], metrics["num_examples"]) == (1, 16)
    assert 0 <= metrics["padding_share"] < 0.2 and metrics["tokens_seen"] > 0
    files = {p.name for p in trained.model_dir.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", METRICS_FILE} <= files

    before = evaluate_model(load_model("tiny-llama"), [yes_task], EVAL, progress=False)
    after = evaluate_model(load_model(str(trained.model_dir)), [yes_task], EVAL, progress=False)
    assert before.overall["rougeL"] < 10
    assert after.overall["rougeL"] == 100.0


def test_full_fine_tuning_on_one_cpu_process_back_propagates_the_tied_embeddings_distinct_rows(
    trained: TrainingResult,
) -> None:
    """tiny-llama ties its embedding to its output layer: the loop applies
    :mod:`activeit.training.embedding_grad` (and says so in its metrics)."""
    assert trained.metrics["sparse_embedding_grad"] is True


def test_seq2seq_model_trains_and_generates(tmp_path: Path) -> None:
    config = TrainingSettings(epochs=4, learning_rate=1e-2, warmup_steps=0, batch_size=8, max_instances_per_task=16)
    result = finetune("tiny-t5", [constant_task(n=16)], tmp_path / "t5", config, progress=False)
    assert result.metrics["steps"] == 8 and result.metrics["loss_curve"][0] > 10
    loaded = load_model(str(result.model_dir))
    assert loaded.is_seq2seq
    prompt = PromptFormatter.for_model(loaded).encode_instance(constant_task(), constant_task().instances[5])
    (ids,) = greedy_generate(loaded, [prompt.ids], max_new_tokens=3)
    assert loaded.tokenizer.decode(ids, skip_special_tokens=True).strip() == "banana"


def test_non_finite_loss_stops_the_step(tmp_path: Path) -> None:
    """The pipeline's fine-tuning step stops on a non-finite loss (the run fails there)."""
    import zenml_isolation  # noqa: F401  (must precede zenml)
    from steps import accelerate_finetuner
    from activeit.selection.strategies import Selection
    from activeit.data.tasks import TaskPool

    pool = TaskPool({"train": (constant_task(n=16),), "test": (constant_task("say_kiwi", "kiwi", n=2),)})
    config = TrainingSettings(epochs=2, learning_rate=float("inf"), warmup_steps=0, batch_size=8, chat=False)
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step 2 "):
        accelerate_finetuner.entrypoint("tiny-llama", pool, ["say_banana"], Selection("random", 0, 0, ("say_banana",)),
                                        config, 0)


def test_non_finite_loss_stops_the_run_and_writes_nothing(tmp_path: Path) -> None:
    config = TrainingSettings(epochs=2, learning_rate=float("inf"), warmup_steps=0, batch_size=8, chat=False)
    with pytest.raises(TrainingError, match=r"non-finite loss .* at step 2 "):
        finetune("tiny-llama", [constant_task(n=16)], tmp_path / "model", config, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_training_is_deterministic_under_a_seed(tmp_path: Path) -> None:
    # tiny-gpt2 has dropout, so the seed matters beyond the data order
    config = TrainingSettings(epochs=1, learning_rate=1e-3, warmup_steps=2, batch_size=4, max_steps=3, chat=False)
    tasks = [constant_task(n=12), constant_task("say_kiwi", "kiwi", n=12, seed=1)]
    first = finetune("tiny-gpt2", tasks, tmp_path / "a", config, progress=False)
    second = finetune("tiny-gpt2", tasks, tmp_path / "b", config, progress=False)
    other = finetune("tiny-gpt2", tasks, tmp_path / "c", TrainingSettings(**{**config.model_dump(), "seed": 1}),
                     progress=False)
    assert first.metrics["steps"] == 3  # max_steps cuts the 6-batch epoch
    assert first.metrics["loss_curve"] == second.metrics["loss_curve"]
    a, b, c = weights(first.model_dir), weights(second.model_dir), weights(other.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_continue_from_a_previous_model_with_accumulation_and_checkpointing(
    yes_task: Task, trained: TrainingResult, tmp_path: Path
) -> None:
    config = TrainingSettings(epochs=1, learning_rate=1e-3, warmup_steps=0, batch_size=4, grad_accum=2,
                            max_instances_per_task=16, gradient_checkpointing=True, chat=False)
    # the previous round's folder is just another model name; an existing output is replaced
    for _ in range(2):
        result = finetune(str(trained.model_dir), [yes_task], tmp_path / "round1", config, progress=False)
    # 16 examples: 4 micro-batches of 4, accumulated in pairs -> 2 optimizer steps
    assert result.metrics["steps"] == len(result.metrics["loss_curve"]) == 2
    assert result.metrics["loss_curve"][0] < 0.5  # it started from the trained model (not ~10.8)
    assert [p.name for p in tmp_path.iterdir()] == ["round1"]


def test_a_task_without_instances_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="nothing to train on"):
        finetune("tiny-llama", [constant_task().with_instances([])], tmp_path / "m", FAST, progress=False)


def test_one_reference_is_drawn_among_several(tmp_path: Path) -> None:
    task = constant_task(n=8)
    task = task.with_instances([Instance(i.id, i.input, ("banana", "kiwi")) for i in task.instances])
    config = TrainingSettings(epochs=2, learning_rate=1e-3, warmup_steps=0, batch_size=8, max_instances_per_task=8,
                              chat=False)
    result = finetune("tiny-llama", [task], tmp_path / "m", config, progress=False)
    assert result.metrics["steps"] == 2 and result.metrics["num_examples"] == 8


def test_casting_a_gathered_state_keeps_tied_weights_shared() -> None:
    """Under FSDP the gathered weights are cast before saving; tied embeddings must stay one
    tensor (else the file holds the output layer twice)."""
    from activeit.training.saving import cast_state

    embeddings, norm = torch.randn(8, 4), torch.randn(4)
    state = {"model.embed_tokens.weight": embeddings, "lm_head.weight": embeddings, "model.norm.weight": norm}
    cast = cast_state(state, torch.bfloat16)
    assert {tensor.dtype for tensor in cast.values()} == {torch.bfloat16}
    assert cast["lm_head.weight"] is cast["model.embed_tokens.weight"]
    assert cast["model.norm.weight"] is not cast["lm_head.weight"]
    assert torch.equal(cast["model.norm.weight"], norm.to(torch.bfloat16))

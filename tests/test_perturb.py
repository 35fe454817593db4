"""Perturbations: the reference word drop, the others, seeding and serialisation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from activeit.errors import ActiveITError
from activeit.data.perturbations import (
    PARAPHRASE_TEMPLATES,
    PERTURBATIONS,
    PerturbedPrompts,
    PromptVariant,
    WordDrop,
    drop_words,
    make_perturbation,
    perturb_task,
    perturb_tasks,
)
from activeit.data.tasks import Example, Instance, Task


def make_task(name: str = "t", words: int = 40) -> Task:
    return Task(
        name=name,
        definition=" ".join(f"d{i}" for i in range(words)) + ".",
        positive_examples=(
            Example(" ".join(f"a{i}" for i in range(words)), "out one two", "why"),
            Example(" ".join(f"b{i}" for i in range(words)), "out three", ""),
        ),
        instances=(Instance("1", "x", ("y",)),),
    )


def test_word_drop_rate_and_what_it_touches() -> None:
    task = make_task(words=500)
    prompts = perturb_task(task, WordDrop(), k=10, seed=0)
    assert prompts.k == 10 and prompts.perturbation == "word_drop"
    assert prompts.original == PromptVariant.of(task)
    kept = dropped = 0
    for variant in prompts.perturbed:
        for original, perturbed in [(task.definition, variant.definition)] + [
            (e.input, p.input) for e, p in zip(task.positive_examples, variant.examples)
        ]:
            words = perturbed.split()
            assert words == [w for w in original.split() if w in set(words)]  # order kept, only drops
            kept += len(words)
            dropped += len(original.split()) - len(words)
        # outputs and explanations intact
        assert [(e.output, e.explanation) for e in variant.examples] == [
            (e.output, e.explanation) for e in task.positive_examples
        ]
    assert dropped / (kept + dropped) == pytest.approx(0.2, abs=0.02)


def test_drop_words_extremes() -> None:
    rng = random.Random(0)
    assert drop_words("a  b\tc\nd", 0.0, rng) == "a b c d"
    assert drop_words("a b c", 1.0, rng) == ""
    with pytest.raises(ActiveITError, match="drop_prob"):
        WordDrop(drop_prob=1.5)


def test_seeded_and_independent_of_pool_order() -> None:
    tasks = [make_task(f"t{i}") for i in range(4)]
    forward = perturb_tasks(tasks, k=3, seed=7)
    backward = perturb_tasks(list(reversed(tasks)), k=3, seed=7)
    alone = perturb_tasks(tasks[2:3], k=3, seed=7)
    assert forward == backward
    assert forward["t2"] == alone["t2"]
    assert perturb_tasks(tasks, k=3, seed=8)["t2"] != forward["t2"]
    assert forward["t1"].perturbed != forward["t2"].perturbed  # different tasks, different drops
    # the k prompts differ from one another
    assert len({v.definition for v in forward["t0"].perturbed}) == 3


def test_drop_examples_drops_a_non_empty_subset() -> None:
    task = make_task()
    prompts = perturb_tasks([task], "drop_examples", k=30, seed=0)[task.name]
    subsets = {tuple(e.input for e in v.examples) for v in prompts.perturbed}
    full = tuple(e.input for e in task.positive_examples)
    assert full not in subsets
    assert subsets == {(), full[:1], full[1:]}  # all three non-empty drops occur
    assert all(v.definition == task.definition for v in prompts.perturbed)
    no_demos = Task("n", "Define.", (), (Instance("1", "x", ("y",)),))
    assert perturb_tasks([no_demos], "drop_examples", k=2)["n"].perturbed[0].examples == ()


def test_shuffle_words_keeps_the_words() -> None:
    task = make_task()
    for variant in perturb_tasks([task], "shuffle_words", k=5)[task.name].perturbed:
        assert Counter(variant.definition.split()) == Counter(task.definition.split())
        assert variant.definition != task.definition
        assert variant.examples == task.positive_examples


def test_paraphrase_uses_templates_and_keeps_words() -> None:
    task = Task("p", "First sentence here. Second one! Third?", (), (Instance("1", "x", ("y",)),))
    variants = perturb_tasks([task], "paraphrase", k=20, seed=3)["p"].perturbed
    leads = {t.split("{definition}")[0] for t in PARAPHRASE_TEMPLATES}
    for variant in variants:
        assert any(variant.definition.startswith(lead) for lead in leads)
        assert set(task.definition.split()) <= set(variant.definition.split())
    assert len({v.definition for v in variants}) > 3


def test_registry_and_parameters() -> None:
    assert set(PERTURBATIONS) >= {"word_drop", "drop_examples", "shuffle_words", "paraphrase"}
    assert make_perturbation("word_drop", drop_prob=0.5).drop_prob == 0.5
    assert make_perturbation("shuffle_words", drop_prob=0.5).name == "shuffle_words"  # ignored param
    with pytest.raises(ActiveITError, match="unknown perturbation"):
        make_perturbation("nope")
    with pytest.raises(ActiveITError, match="at least 1"):
        perturb_tasks([make_task()], k=0)


def test_round_trip() -> None:
    prompts = perturb_tasks([make_task()], k=2)["t"]
    assert PerturbedPrompts.from_dict(prompts.to_dict()) == prompts
    assert prompts.variants[0] == prompts.original and prompts.variants[1:] == prompts.perturbed

"""Pool sources on the real data (NIV2 subset, Self-Instruct seed tasks), the hub grouping,
the builtin suite, and the options load_pool shares."""

from __future__ import annotations

import json
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

import pytest

from activeit.errors import PoolError
from activeit.data.sources import SOURCES, SkippedTaskWarning, load_pool
from activeit.data.sources.builtin import load_builtin
from activeit.data.sources.hub import load_hub, tasks_from_rows
from activeit.data.sources.niv2 import definition_names_labels, niv2_is_classification
from activeit.data.tasks import Example, Instance, TaskPool, looks_like_classification


# ---------------------------------------------------------------- NIV2 (real subset)

@pytest.fixture(scope="module")
def niv2_pool(niv2_root: Path) -> TaskPool:
    return load_pool("niv2", niv2_root, split_dir="available")


def test_niv2_available_split_is_read_unchanged(niv2_root: Path, niv2_pool: TaskPool) -> None:
    assert (len(niv2_pool.train), len(niv2_pool.test)) == (147, 16)
    listed = (niv2_root / "splits" / "available" / "train_tasks.txt").read_text().split()
    assert [t.name for t in niv2_pool.train] == listed  # official order
    raw = json.loads((niv2_root / "tasks" / f"{listed[0]}.json").read_text())
    task = niv2_pool.task(listed[0])
    assert task.definition == raw["Definition"][0].strip()
    assert [e.input for e in task.positive_examples] == [e["input"] for e in raw["Positive Examples"]]
    assert [e.output for e in task.negative_examples] == [e["output"] for e in raw["Negative Examples"]]
    assert [(i.id, i.input, list(i.outputs)) for i in task.instances] == [
        (i["id"], i["input"], i["output"]) for i in raw["Instances"]
    ]
    assert task.categories == tuple(raw["Categories"]) and task.domains == tuple(raw["Domains"])


def test_niv2_reads_only_the_tasks_its_split_lists(tmp_path: Path, write_niv2: Any, niv2_task: Any) -> None:
    """A full checkout holds ~1600 task files; a split reads its own (an unlisted file,
    even a broken one, is never opened)."""
    root = write_niv2(tmp_path, {"a": niv2_task(), "b": niv2_task(), "unlisted": '{"Definition": ['}, ["a"], ["b"])
    pool = load_pool("niv2", root)
    assert [t.name for t in pool.train] == ["a"] and [t.name for t in pool.test] == ["b"]


def test_niv2_classification_on_the_subset(niv2_pool: TaskPool) -> None:
    flagged = sorted(t.name for t in niv2_pool if t.is_classification)
    assert flagged == ["task1289_trec_classification", "task227_clariq_classification"]


def test_classification_heuristic_edge_cases() -> None:
    """At most 10 distinct outputs of at most 3 words, some repeating, and the definition
    names at least two of them (or the only one)."""
    def labels(count: int) -> list[str]:
        return [f"label{k}" for k in range(count)] * 2  # every label twice

    named = lambda outputs: "Answer with one of: " + ", ".join(sorted(set(outputs))) + "."  # noqa: E731
    assert niv2_is_classification(named(labels(10)), labels(10))
    assert not looks_like_classification(labels(11)) and not niv2_is_classification(named(labels(11)), labels(11))
    never_repeat = ["red", "green", "blue", "white"]  # short, but free-form: no label set
    assert not looks_like_classification(never_repeat)
    assert not niv2_is_classification(named(never_repeat), never_repeat)
    assert looks_like_classification(never_repeat + ["red"])
    two = ["positive", "negative", "negative"]
    assert not niv2_is_classification("Say positive if the review is good.", two)  # one of two named
    assert niv2_is_classification("Say positive or negative.", two)
    long_labels = ["it is a cat", "it is a dog"] * 2  # 4 words each
    assert not looks_like_classification(long_labels)
    assert looks_like_classification(["a cat", "it is dog"] * 2)
    assert not looks_like_classification([])


def test_classification_heuristic_needs_the_labels_named() -> None:
    outputs = ["yes", "no", "no", "yes"]
    assert niv2_is_classification("Answer with 'Yes' or 'No'.", outputs)
    assert niv2_is_classification("Classify it: positive/negative.", ["Positive.", "negative"] * 2)
    assert not niv2_is_classification("Decide whether the claim holds.", outputs)  # labels not named
    assert not niv2_is_classification("Answer 'yes' or 'no'.", [f"answer {k} here now" for k in range(4)])
    assert definition_names_labels("Write 'true' if it holds.", ["true", "true"])  # the only label
    assert not definition_names_labels("Say yesterday or nothing.", ["yes", "no"])  # whole words only


def test_niv2_default_split_names_missing_files(niv2_root: Path) -> None:
    with pytest.raises(PoolError) as caught:
        load_pool("niv2", niv2_root, split_dir="default")
    message = str(caught.value)
    assert "splits/default/train_tasks.txt" in message and "tasks/" in message and ".json" in message
    assert "--split-dir available" in message and "\n" not in message


def test_niv2_default_split_with_skip_invalid_loads_the_rest(niv2_root: Path) -> None:
    with pytest.warns(SkippedTaskWarning) as caught:
        pool = load_pool("niv2", niv2_root, split_dir="default", skip_invalid=True)
    assert (len(pool.train), len(pool.test)) == (147, 16)
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedTaskWarning)]
    assert len(messages) == 2 and "609 task(s)" in messages[0] and "103 task(s)" in messages[1]


def test_niv2_english_only_filter(tmp_path: Path, write_niv2: Any, niv2_task: Any) -> None:
    root = write_niv2(tmp_path, {"en": niv2_task(), "de": niv2_task(Input_language=["German"]), "x": niv2_task()}, ["en", "de"], ["x"])
    assert [t.name for t in load_pool("niv2", root).train] == ["en"]
    assert [t.name for t in load_pool("niv2", root, english_only=False).train] == ["en", "de"]


def test_test_tasks_is_refused_when_the_source_has_a_test_split(niv2_root: Path) -> None:
    with pytest.raises(PoolError, match="own test split"):
        load_pool("niv2", niv2_root, split_dir="available", test_tasks=5)


# ---------------------------------------------------------------- options of load_pool

def test_max_instances_is_seeded_and_deterministic(niv2_root: Path) -> None:
    a = load_pool("niv2", niv2_root, split_dir="available", max_instances_per_task=7, seed=3)
    b = load_pool("niv2", niv2_root, split_dir="available", max_instances_per_task=7, seed=3)
    c = load_pool("niv2", niv2_root, split_dir="available", max_instances_per_task=7, seed=4)
    assert all(len(t.instances) == 7 for t in a)
    assert a.to_dict() == b.to_dict() and a.to_dict() != c.to_dict()
    full = load_pool("niv2", niv2_root, split_dir="available")
    task = a.train[0]
    assert set(task.instances) <= set(full.task(task.name).instances)


def test_validation_tasks_are_held_out_from_train(niv2_pool: TaskPool, niv2_root: Path) -> None:
    pool = load_pool("niv2", niv2_root, split_dir="available", validation_tasks=20, seed=1)
    assert (len(pool.train), len(pool.split("validation")), len(pool.test)) == (127, 20, 16)
    assert {t.name for t in pool.train} | {t.name for t in pool.split("validation")} == {t.name for t in niv2_pool.train}
    again = load_pool("niv2", niv2_root, split_dir="available", validation_tasks=20, seed=1)
    other = load_pool("niv2", niv2_root, split_dir="available", validation_tasks=20, seed=2)
    names = lambda p: [t.name for t in p.split("validation")]  # noqa: E731
    assert names(pool) == names(again) != names(other)


def test_bad_options_are_refused() -> None:
    with pytest.raises(PoolError, match="unknown pool source"):
        load_pool("csv")
    with pytest.raises(PoolError, match="validation_tasks"):
        load_pool("builtin", validation_tasks=-1)
    with pytest.raises(PoolError, match="cannot hold out 34"):
        load_pool("builtin", validation_tasks=34)
    with pytest.raises(PoolError, match="max_instances_per_task"):
        load_pool("builtin", max_instances_per_task=0)
    assert SOURCES == ("niv2", "self-instruct", "hub", "builtin", "alpaca", "sharegpt", "messages", "hf-disk")


# ---------------------------------------------------------------- Self-Instruct

def test_self_instruct_seed_tasks(shared_data: Path) -> None:
    pool = load_pool("self-instruct", shared_data / "self_instruct" / "seed_tasks.jsonl")
    assert len(pool.train) == 175 and not pool.test
    assert sum(t.is_classification for t in pool) == 26
    first = pool.train[0]
    assert first.name == "breakfast_suggestion" and first.definition.startswith("Is there anything I can eat")
    assert len(first.instances) == 1 and first.positive_examples == ()  # one instance: no self-demonstration
    assert "fact_verification" in pool and "fact_verification_seed_task_160" in pool  # repeated name


def test_self_instruct_test_tasks_are_seeded(shared_data: Path) -> None:
    path = shared_data / "self_instruct" / "seed_tasks.jsonl"
    pool = load_pool("self-instruct", path, test_tasks=25, validation_tasks=10, seed=7)
    assert (len(pool.train), len(pool.test), len(pool.split("validation"))) == (140, 25, 10)
    again = load_pool("self-instruct", path, test_tasks=25, validation_tasks=10, seed=7)
    assert [t.name for t in pool.test] == [t.name for t in again.test]


def test_self_instruct_demonstrations_and_flat_records(tmp_path: Path) -> None:
    path = tmp_path / "tasks.jsonl"
    records = [
        {"id": "a", "instruction": "Add one.", "instances": [{"input": str(k), "output": str(k + 1)} for k in range(4)]},
        {"instruction": "Negate.", "input": "yes", "output": "no"},
        {"instruction": "Negate.", "input": "no", "output": "yes"},
        {"instruction": "Negate.", "input": "maybe", "output": "maybe not"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    pool = load_pool("self-instruct", path)
    add = pool.task("a")
    assert add.positive_examples == (Example("0", "1"), Example("1", "2"))
    assert [i.input for i in add.instances] == ["2", "3"]  # demonstrations are not instances
    negate = pool.task("tasks_2")
    assert negate.definition == "Negate." and len(negate.positive_examples) + len(negate.instances) == 3


# ---------------------------------------------------------------- hub

def test_hub_rows_are_grouped_into_tasks() -> None:
    import datasets

    rows = {
        "task_name": ["t1", "t1", "t1", "t1", "t2", "t2"],
        "id": ["a", "b", "b", "c", "x", "y"],
        "definition": ["Answer 'yes' or 'no'."] * 4 + ["Copy the input."] * 2,
        "inputs": ["q1", "q2", "q2", "q3", "hello", "world"],
        "targets": ["yes", "no", "nope", "yes", "hello", "world"],
    }
    t1, t2 = tasks_from_rows(datasets.Dataset.from_dict(rows), source="unit/hub")
    assert (t1.name, t2.name) == ("t1", "t2")
    assert t1.positive_examples == (Example("q1", "yes"), Example("q2", "no"))
    assert t1.instances == (Instance("c", "q3", ("yes",)),)
    assert t1.source == "unit/hub" and t1.is_classification and not t2.is_classification
    assert t2.positive_examples == (Example("hello", "hello"),) and len(t2.instances) == 1
    aliased = tasks_from_rows([{"task": "t", "instruction": "Do.", "input": "i", "output": ["o", "p"]}])
    assert aliased[0].instances[0].outputs == ("o", "p")
    with pytest.raises(PoolError, match="no task column"):
        tasks_from_rows(datasets.Dataset.from_dict({"text": ["x"]}))


@pytest.mark.usefixtures("offline")
def test_hub_offline_fails_with_one_line(monkeypatch: pytest.MonkeyPatch, network_calls: list) -> None:
    """Offline mode (which datasets fixes when imported): no network call at all."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    with pytest.raises(PoolError) as caught:
        load_hub("Muennighoff/natural-instructions")
    message = str(caught.value)
    assert message.startswith("cannot reach the Hugging Face hub to load 'Muennighoff/natural-instructions'")
    assert "--source niv2 --path" in message and "\n" not in message
    assert network_calls == []


def test_hub_without_a_network_is_one_lookup(monkeypatch: pytest.MonkeyPatch, network_calls: list) -> None:
    """Not offline and no network: one DNS lookup, no download attempted, no retry."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with pytest.raises(PoolError, match="no network") as caught:
        load_hub("Muennighoff/natural-instructions")
    assert "HF_HUB_OFFLINE=1" in str(caught.value)
    assert [kind for kind, _ in network_calls] == ["getaddrinfo"]
    with pytest.raises(PoolError, match="needs a dataset id"):
        load_pool("hub")


# ---------------------------------------------------------------- builtin

@pytest.fixture(scope="module")
def builtin() -> TaskPool:
    return load_pool("builtin")


def test_builtin_shape(builtin: TaskPool) -> None:
    tasks = list(builtin)
    families = {t.category for t in tasks}
    assert len(tasks) >= 40 and len(families) >= 8
    assert 0.2 <= len(builtin.test) / len(tasks) <= 0.25
    assert len({t.category for t in builtin.test}) >= 5
    assert {t.is_classification for t in builtin.test} == {True, False}
    assert 0.25 <= sum(t.is_classification for t in tasks) / len(tasks) <= 0.45
    for task in tasks:
        assert 40 <= len(task.instances) <= 60, task.name
        assert len(task.positive_examples) == 2 and len(task.negative_examples) == 1
        assert task.positive_examples[0].output != task.positive_examples[1].output
        assert task.categories == (task.category,) and task.name.startswith(task.category + "_")
        assert all(len(o.split()) <= 6 for i in task.instances for o in i.outputs)
        demo_inputs = {e.input for e in task.positive_examples}
        assert not demo_inputs & {i.input for i in task.instances}, task.name
        if task.is_classification:
            labels = {o for i in task.instances for o in i.outputs}
            assert len(labels) >= 2 and definition_names_labels(task.definition, labels), task.name


def test_builtin_tasks_differ_only_by_instruction(builtin: TaskPool) -> None:
    by_family: dict[str, list[Any]] = defaultdict(list)
    for task in builtin:
        by_family[task.category].append(task)
    for family, tasks in by_family.items():
        assert len(tasks) >= 4, family
        inputs = [i.input for i in tasks[0].instances]
        for a, b in combinations(tasks, 2):
            assert [i.input for i in b.instances] == inputs  # the same input distribution
            differ = sum(x.outputs != y.outputs for x, y in zip(a.instances, b.instances))
            assert differ >= len(inputs) // 2, (a.name, b.name)  # ... and the instruction decides


def test_builtin_is_deterministic(builtin: TaskPool) -> None:
    load_builtin.cache_clear()
    assert load_pool("builtin").to_dict() == builtin.to_dict()
    assert builtin.task("numbers_add").instances[0].outputs == (str(sum(map(int, builtin.task("numbers_add").instances[0].input.split(", ")))),)

"""Task embeddings and the diversity strategies: k-center greedy and the representation filter on
sets whose answers are known by hand, the strategies within quotas, and the real encoder."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from activeit.data.tasks import Example, Instance, Task
from activeit.errors import ModelLoadError
from activeit.models.encoder import DEFAULT_ENCODER, check_encoder, load_encoder
from activeit.scoring.ifd import IFDTable, TaskIFD
from activeit.scoring.scores import ScoreTable, TaskScore
from activeit.selection.diversity import (
    TaskEmbeddings,
    embed_tasks,
    farthest_candidate,
    first_dissimilar,
    plot_embeddings,
    task_text,
)
from activeit.selection.strategies import SelectionError, select_tasks


def task(name: str, classification: bool = False, definition: str = "") -> Task:
    return Task(name=name, definition=definition or f"Do {name}.", positive_examples=(Example("in", "out"),),
                instances=(Instance(f"{name}-0", "x", ("y",)),), categories=("C",), is_classification=classification)


def on_circle(degrees: dict[str, float]) -> TaskEmbeddings:
    """Unit vectors at the given angles: cosine distance 1 - cos(angle between them)."""
    names = tuple(degrees)
    return TaskEmbeddings(names, np.array([[math.cos(math.radians(d)), math.sin(math.radians(d))]
                                           for d in degrees.values()]))


# A at 0 deg, B at 10, C at 90, D at 180, E at 100: worked by hand below.
CIRCLE = on_circle({"a": 0.0, "b": 10.0, "c": 90.0, "d": 180.0, "e": 100.0})


def test_k_center_greedy_by_hand() -> None:
    # from center a: distances 1 - cos(10), 1 - cos(90) = 1, 1 - cos(180) = 2, 1 - cos(100): d is farthest
    assert farthest_candidate(CIRCLE, ["b", "c", "d", "e"], ["a"]) == ("d", pytest.approx(2.0))
    # centers a and d: c and e are both 90 / 80 deg from their nearest center -> c (1.0) beats e (1 - cos 80)
    name, distance = farthest_candidate(CIRCLE, ["b", "c", "e"], ["a", "d"])
    assert (name, distance) == ("c", pytest.approx(1.0))
    # no center: the task nearest the mean direction of b, c, d, e (about 95 deg): e at 100
    assert farthest_candidate(CIRCLE, ["b", "c", "d", "e"], [])[0] == "e"


def test_diverse_strategy_covers_the_circle() -> None:
    tasks = [task(n) for n in ("b", "c", "d", "e")]
    picked = select_tasks("diverse", tasks, 2, embeddings=CIRCLE, selected=("a",))
    assert picked.tasks == ("d", "c")
    assert picked.scores == {"d": pytest.approx(2.0), "c": pytest.approx(1.0)}
    with pytest.raises(SelectionError, match="embeddings"):
        select_tasks("diverse", tasks, 2)


def test_the_filter_refuses_a_near_duplicate() -> None:
    # b is 10 deg from a (cosine 0.985): within threshold 0.9 of a, so skipped; c (cosine 0) passes
    assert first_dissimilar(CIRCLE, ["b", "c"], ["a"], threshold=0.9) == "c"
    assert first_dissimilar(CIRCLE, ["b", "c"], ["a"], threshold=0.99) == "b"
    assert first_dissimilar(CIRCLE, ["b"], ["a"], threshold=0.9) is None
    assert first_dissimilar(CIRCLE, ["b", "c"], [], threshold=0.9) == "b"


def pu_table(pu: dict[str, float], classification: set[str] = frozenset()) -> ScoreTable:
    return ScoreTable(tuple(TaskScore(n, p, 0.5, 2.0, 1, 1, n in classification, "C") for n, p in pu.items()))


def test_uncertainty_diverse_skips_near_duplicates_of_the_selected_and_of_its_own_picks() -> None:
    tasks = [task(n) for n in ("a", "b", "c", "d", "e")]
    scores = pu_table({"a": 0.9, "b": 0.8, "c": 0.7, "e": 0.6, "d": 0.1})
    plain = select_tasks("uncertainty", tasks, 3, scores=scores)
    assert plain.tasks == ("a", "b", "c")
    # b is a near-duplicate of a (picked first), e of c (cosine 0.985): then d
    filtered = select_tasks("uncertainty-diverse", tasks, 3, scores=scores, embeddings=CIRCLE, threshold=0.9)
    assert filtered.tasks == ("a", "c", "d")
    assert filtered.scores == {"a": 0.9, "c": 0.7, "d": 0.1}
    assert set(filtered.categories) == {"a", "c", "d"}  # task-map categories as for uncertainty
    # a already trained on: b is skipped as its near-duplicate
    after = select_tasks("uncertainty-diverse", tasks[1:], 2, scores=scores, embeddings=CIRCLE, selected=("a",))
    assert after.tasks == ("c", "d")
    # every candidate too similar: the batch is still filled, in PU order
    full = select_tasks("uncertainty-diverse", tasks[:2], 2, scores=scores, embeddings=CIRCLE)
    assert full.tasks == ("a", "b")


def test_diversity_strategies_keep_the_quotas() -> None:
    classification = {"a", "b", "e"}
    tasks = [task(n, n in classification) for n in ("a", "b", "c", "d", "e")]
    scores = pu_table({"a": 0.9, "b": 0.8, "c": 0.7, "e": 0.6, "d": 0.1}, classification)
    picked = select_tasks("uncertainty-diverse", tasks, 3, scores=scores, embeddings=CIRCLE,
                          classification_ratio=2 / 3)
    assert sum(t in classification for t in picked.tasks) == 2
    # a; then b is near a, so the generation task c; the last pick must be a classification task, but b is
    # near a and e near c (10 deg): none passes, so the first one in PU order, b, fills the quota
    assert picked.tasks == ("a", "c", "b")
    # from d (180 deg), classification tasks only: a (distance 2), then e (80 deg from d) over b (10 from a)
    candidates = [t for t in tasks if t.name != "d"]
    diverse = select_tasks("diverse", candidates, 2, embeddings=CIRCLE, selected=("d",), classification_ratio=1.0)
    assert diverse.tasks == ("a", "e")


def test_ifd_strategy_orders_by_mean_ifd() -> None:
    tasks = [task(n) for n in ("a", "b", "c")]
    table = IFDTable(tuple(TaskIFD(n, v, 2, False, "C") for n, v in {"a": 0.4, "b": 0.95, "c": 0.7}.items()))
    picked = select_tasks("ifd", tasks, 2, scores=table)
    assert picked.tasks == ("b", "c") and picked.scores == {"b": 0.95, "c": 0.7}
    assert picked.categories == {}
    with pytest.raises(SelectionError, match="needs an IFD table"):
        select_tasks("ifd", tasks, 2, scores=pu_table({"a": 1.0, "b": 1.0, "c": 1.0}))
    with pytest.raises(SelectionError, match="needs a score table"):
        select_tasks("uncertainty", tasks, 2, scores=table)


def test_embeddings_round_trip_and_plot(tmp_path: Path) -> None:
    loaded = TaskEmbeddings.load(CIRCLE.save(tmp_path / "emb"))
    assert loaded.names == CIRCLE.names and np.allclose(loaded.vectors, CIRCLE.vectors)
    png = plot_embeddings(CIRCLE, tmp_path / "e.png", "tasks", {"a": "train", "d": "test"})
    assert png.stat().st_size > 1000


def test_the_real_encoder_finds_the_near_duplicate_task() -> None:
    check_encoder(DEFAULT_ENCODER)
    encoder = load_encoder()
    tasks = [
        task("sentiment", definition="Classify the sentiment of the movie review as positive or negative."),
        task("sentiment_copy", definition="Classify the sentiment of this film review as positive or negative."),
        task("translate", definition="Translate the given English sentence into French."),
    ]
    assert "Input: in\nOutput: out" in task_text(tasks[0])
    embeddings = embed_tasks(encoder, tasks, name=DEFAULT_ENCODER)
    assert embeddings.vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(embeddings.vectors, axis=1), 1.0, atol=1e-5)
    similarity = embeddings.vectors @ embeddings.vectors.T
    assert similarity[0, 1] > 0.9 > similarity[0, 2]
    picked = select_tasks("uncertainty-diverse", tasks[1:], 1, scores=pu_table({"sentiment_copy": 0.9, "translate": 0.1}),
                          embeddings=embeddings, selected=("sentiment",))
    assert picked.tasks == ("translate",)


def test_encoder_checks_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        check_encoder(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json, modules.json"):
        check_encoder(str(tmp_path / "empty"))

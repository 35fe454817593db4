"""ROUGE-L / exact match pinned on hand-made predictions, grouping, and the model path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from score_worker import handmade_tasks
from tiny_tasks import constant_task

from activeit.evaluation import (
    EvalReport,
    evaluate_model,
    exact_match,
    normalize_answer,
    rouge_l,
    score_predictions,
)
from activeit.scoring.engine.generation import greedy_generate
from activeit.models.loading import load_model
from activeit.scoring.engine.prefix_cache import supports_prefix_reuse
from activeit.scoring.engine.decoding import greedy_decode
from activeit.data.prompts import PromptFormatter
from activeit.config.settings import EvaluationSettings
from activeit.data.tasks import Instance, Task


def test_rouge_l_uses_the_stemmer_and_the_default_tokenizer() -> None:
    # LCS("the cat sat" | "the cat sat on the mat") = 3: P = 3/3, R = 3/6, F = 2/3
    assert rouge_l("the cats sat", ["the cat sat on the mat"]) == pytest.approx(2 / 3)
    # punctuation and case do not count
    assert rouge_l("Yes.", ["yes"]) == 1.0
    # LCS("a x c" | "a b c d") = 2: P = 2/3, R = 2/4, F = 4/7
    assert rouge_l("a x c", ["a b c d"]) == pytest.approx(4 / 7)
    assert rouge_l("", ["anything"]) == 0.0


def test_scores_take_the_max_over_references() -> None:
    # "paris is the capital" vs "Paris": P = 1/4, R = 1, F = 0.4
    assert rouge_l("paris is the capital", ["Paris"]) == pytest.approx(0.4)
    assert rouge_l("paris is the capital", ["London", "Paris", "the capital is paris"]) == pytest.approx(0.5)
    assert exact_match("Paris", ["London", "paris"]) == 1.0
    assert exact_match("Paris is", ["London", "paris"]) == 0.0


def test_exact_match_normalizes_like_niv2() -> None:
    assert normalize_answer("  The  Answer, is: (B)!  ") == "the answer is b"
    assert exact_match("The answer!", ["the   answer"]) == 1.0
    assert exact_match("an answer", ["answer"]) == 0.0  # articles are kept


def make_task(name: str, category: str, classification: bool, outputs: list[tuple[str, ...]]) -> Task:
    instances = tuple(Instance(f"{name}-{i}", f"input {i}", refs) for i, refs in enumerate(outputs))
    return Task(name, "Do it.", (), instances, categories=(category,), is_classification=classification)


def test_report_groups_overall_by_kind_category_and_task(tmp_path: Path) -> None:
    sentiment = make_task("sentiment", "Sentiment", True, [("positive",), ("negative",)])
    titles = make_task("titles", "Title Generation", False, [("the cat sat on the mat",), ("Paris", "France")])
    answers = make_task("answers", "Title Generation", False, [("yes",)])
    report = score_predictions([
        (sentiment, sentiment.instances[0], "Positive."),    # rougeL 1, EM 1
        (sentiment, sentiment.instances[1], "positive"),     # 0, 0
        (titles, titles.instances[0], "the cats sat"),       # 2/3, 0
        (titles, titles.instances[1], "France"),             # 1, 1 (second reference)
        (answers, answers.instances[0], "no"),               # 0, 0
    ])
    assert report.overall == pytest.approx({"rougeL": 100 * (1 + 2 / 3 + 1) / 5, "exact_match": 40.0,
                                            "instances": 5})
    assert report.classification == {"rougeL": 50.0, "exact_match": 50.0, "instances": 2}
    assert report.generation == pytest.approx({"rougeL": 100 * (5 / 3) / 3, "exact_match": 100 / 3,
                                               "instances": 3})
    assert report.per_category["Sentiment"] == report.classification
    assert report.per_category["Title Generation"] == report.generation
    assert report.per_task["titles"] == pytest.approx({"rougeL": 100 * (5 / 3) / 2, "exact_match": 50.0,
                                                       "instances": 2, "category": "Title Generation",
                                                       "is_classification": False})
    assert report.per_task["answers"]["rougeL"] == 0.0
    first = report.predictions[0]
    assert first == {"task": "sentiment", "id": "sentiment-0", "category": "Sentiment",
                     "is_classification": True, "prediction": "Positive.", "references": ["positive"],
                     "rougeL": 1.0, "exact_match": 1.0}

    folder = report.save(tmp_path / "eval")
    assert {p.name for p in folder.iterdir()} == {"metrics.json", "predictions.jsonl"}
    assert EvalReport.load(folder) == report
    assert EvalReport.from_dict(report.to_dict()) == report
    assert "overall" in report.summary() and "titles" in report.summary()


def test_an_empty_group_has_no_score() -> None:
    task = make_task("gen", "Misc.", False, [("a",)])
    report = score_predictions([(task, task.instances[0], "a")])
    assert report.classification == {"rougeL": None, "exact_match": None, "instances": 0}
    assert "classification" in report.summary()


def test_evaluate_model_caps_instances_and_keeps_predictions() -> None:
    tasks = [constant_task(n=10), constant_task("say_kiwi", "kiwi", n=3, seed=1)]
    loaded = load_model("tiny-llama")
    config = EvaluationSettings(max_instances_per_task=4, max_new_tokens=3, chat=False)
    report = evaluate_model(loaded, tasks, config, progress=False)
    assert report.per_task["say_banana"]["instances"] == 4 and report.per_task["say_kiwi"]["instances"] == 3
    expected_ids = [i.id for i in tasks[0].sample_instances(4, 0)] + [i.id for i in tasks[1].instances]
    assert [p["id"] for p in report.predictions] == expected_ids
    assert all(isinstance(p["prediction"], str) for p in report.predictions)
    assert not loaded.model.training


@pytest.mark.parametrize(("name", "early_stops"), [("tiny-llama", False), ("tiny-gpt2", True)])
def test_evaluation_decodes_the_same_tokens_as_generate(name: str, early_stops: bool) -> None:
    """Evaluation's shared-prefix decoding (each task's prefix once per batch) against ``generate``.

    Several tasks of varied prompt lengths share small batches; with ``early_stops`` a few
    tokens the rows choose after their first step become stop tokens, so rows end at
    different steps.
    """
    loaded = copy.copy(load_model(name))
    assert supports_prefix_reuse(loaded)
    tasks = [*handmade_tasks(4), constant_task(n=6)]
    config = EvaluationSettings(max_instances_per_task=5, max_new_tokens=7, token_budget=400)
    formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
    encoded = [formatter.encode_instance(t, i) for t in tasks for i in t.sample_instances(5, config.seed)]
    full = [prompt.ids for prompt in encoded]
    if early_stops:
        free_run = greedy_generate(loaded, full, config.max_new_tokens)
        first = {tokens[0] for tokens in free_run}
        stops = sorted({token for tokens in free_run for token in tokens[1:4]} - first)[:2]
        loaded.model = copy.deepcopy(loaded.model)
        loaded.model.generation_config.eos_token_id = [loaded.tokenizer.eos_token_id, *stops]

    expected = greedy_generate(loaded, full, config.max_new_tokens)
    shared = greedy_decode(loaded, [formatter.shared_split(p) for p in encoded], config.max_new_tokens, 400)
    assert shared == expected
    assert (len({len(tokens) for tokens in shared}) > 1) == early_stops
    report = evaluate_model(loaded, tasks, config, progress=False)
    texts = [loaded.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in expected]
    assert [p["prediction"] for p in report.predictions] == texts


def test_evaluation_targets_the_split_it_names() -> None:
    """``evaluation.split: validation`` evaluates on the held-out train tasks, never the test tasks."""
    from activeit.data.tasks import TaskPool
    from activeit.errors import ConfigError
    from activeit.evaluation import evaluation_tasks

    a, b, c = constant_task("say_a", "a", n=2), constant_task("say_b", "b", n=2), constant_task("say_c", "c", n=2)
    pool = TaskPool({"train": (a,), "validation": (b,), "test": (c,)})
    assert evaluation_tasks(pool, EvaluationSettings()) == (c,)
    assert evaluation_tasks(pool, EvaluationSettings(split="validation")) == (b,)
    with pytest.raises(ConfigError, match="no validation tasks.*pool.validation_tasks"):
        evaluation_tasks(TaskPool({"train": (a,), "test": (c,)}), EvaluationSettings(split="validation"))


def _plain_loglik(loaded: object, prompt: list[int], target: tuple[int, ...]) -> float:
    """The mean per-token log-probability of ``target`` after ``prompt``, one unbatched pass."""
    import torch

    model = loaded.model  # type: ignore[attr-defined]
    with torch.no_grad():
        if loaded.is_seq2seq:  # type: ignore[attr-defined]
            labels = torch.tensor([list(target)])
            logits = model(input_ids=torch.tensor([prompt]), labels=labels).logits[0]
            rows = logits
        else:
            ids = torch.tensor([prompt + list(target)])
            rows = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        logp = torch.log_softmax(rows.double(), dim=-1)
        return float(logp[torch.arange(len(target)), torch.tensor(target)].mean())


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-t5"])
def test_reference_loglik_matches_a_plain_unbatched_computation(name: str) -> None:
    """The evaluation's ``loglik`` (batched, shared prefixes, max over references) against one
    plain forward pass per (instance, reference): references cut at ``max_new_tokens`` lose their
    EOS, those that fit keep it; the report's means are those of the instances."""
    loaded = load_model(name)
    tasks = handmade_tasks(3)
    long_answer = Instance("long", "a b c", ("one two three four five six seven eight nine ten", "yes"))
    tasks[0] = Task(tasks[0].name, tasks[0].definition, tasks[0].positive_examples,
                    (*tasks[0].instances[:3], long_answer), categories=tasks[0].categories)
    config = EvaluationSettings(max_instances_per_task=4, max_new_tokens=4, token_budget=300)
    report = evaluate_model(loaded, tasks, config, progress=False)
    formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
    by_id = {i.id: (t, i) for t in tasks for i in t.instances}
    for record in report.predictions:
        task, instance = by_id[record["id"]]
        prompt = formatter.encode_instance(task, instance).ids
        expected = []
        for reference in instance.outputs:
            ids = formatter.encode_target(reference)
            target = tuple(ids) if len(ids) <= config.max_new_tokens + 1 else tuple(ids[: config.max_new_tokens])
            expected.append(_plain_loglik(loaded, list(prompt), target))
        assert record["loglik"] == pytest.approx(max(expected), abs=1e-4)
    assert any(len(formatter.encode_target(r)) > config.max_new_tokens + 1 for r in long_answer.outputs)
    first = [p["loglik"] for p in report.predictions if p["task"] == tasks[0].name]
    assert report.per_task[tasks[0].name]["loglik"] == pytest.approx(sum(first) / len(first))
    assert report.headline()["loglik"] == pytest.approx(sum(p["loglik"] for p in report.predictions) / len(report.predictions))


def test_references_forced_on_the_decoder_cache_match_a_separate_forcing() -> None:
    """The evaluation forces the references on the decoder's own prompt caches: the same
    predictions as decoding alone and the same log-likelihoods as the separate teacher-forcing
    pass (several references, one cut at ``max_new_tokens``, batches split by a small budget)."""
    from activeit.evaluation import reference_logliks

    loaded = load_model("tiny-llama")
    tasks = handmade_tasks(3)
    several = Instance("several", "a b c", ("one two three four five six seven eight nine ten", "yes", "no"))
    tasks[1] = Task(tasks[1].name, tasks[1].definition, tasks[1].positive_examples,
                    (several, *tasks[1].instances[:3]), categories=tasks[1].categories)
    config = EvaluationSettings(max_instances_per_task=4, max_new_tokens=4, token_budget=200)
    report = evaluate_model(loaded, tasks, config, progress=False)
    formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
    pairs = [(t, i) for t in tasks for i in t.sample_instances(config.max_instances_per_task, config.seed)]
    prompts = [formatter.shared_split(formatter.encode_instance(t, i)) for t, i in pairs]
    loaded.model.eval()
    decoded = greedy_decode(loaded, prompts, max_new_tokens=config.max_new_tokens, token_budget=config.token_budget)
    separate = reference_logliks(loaded, formatter, pairs, prompts, config)
    assert [p["prediction"] for p in report.predictions] == [
        loaded.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in decoded]
    assert [p["loglik"] for p in report.predictions] == pytest.approx(separate, abs=1e-5)
    assert any(p["id"] == "several" for p in report.predictions)

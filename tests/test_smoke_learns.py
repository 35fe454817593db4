"""The smoke model learns in every round, under both the reference strategy and uncertainty.

configs/smoke.yaml's rounds 0-2 (seed 0) for ``random`` and ``uncertainty``, through the steps'
own entrypoints wired as pipelines/active_tuning.py wires them (no ZenML store, no MLflow),
round 0 shared: ROUGE-L on the held-out test tasks is above 0 in every round for both, and
their round-2 scores differ, so that the pipeline and study tests that compare rounds and
strategies compare something. The model and the suite it learns: configs/smoke_tasks.jsonl.
"""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

from typing import Any

import pytest

from experiment.config import CONFIG_DIR, load_config

pytestmark = pytest.mark.slow
STRATEGIES = ("random", "uncertainty")


@pytest.fixture(scope="module")
def rounds(one_thread: None) -> dict[str, list[Any]]:
    """Per strategy, each round's evaluation report (round 0 shared, as a study shares it)."""
    from steps import accelerate_finetuner, perturber, pool_loader, rouge_evaluator, selector, uncertainty_scorer

    config = load_config(CONFIG_DIR / "smoke.yaml")
    pool = pool_loader.entrypoint(config.pool)
    ratio = config.classification_ratio
    first, trained_0 = selector.entrypoint(pool, [], "random", config.initial_tasks, config.seed, ratio, 0)
    model_0, _ = accelerate_finetuner.entrypoint(config.model, pool, trained_0, first, config.training, 0)
    report_0 = rouge_evaluator.entrypoint(model_0, pool, config.evaluation)
    reports: dict[str, list[Any]] = {}
    for strategy in STRATEGIES:
        model, trained, reports[strategy] = model_0, trained_0, [report_0]
        for r in range(1, config.rounds + 1):
            table = None
            if strategy == "uncertainty":
                prompts = perturber.entrypoint(pool, trained, config.scoring, r)
                table, _ = uncertainty_scorer.entrypoint(model, pool, prompts, config.scoring)
            selection, trained = selector.entrypoint(pool, trained, strategy, config.tasks_per_round, config.seed,
                                                     ratio, r, table)
            model, _ = accelerate_finetuner.entrypoint(config.model, pool, trained, selection, config.training, r)
            reports[strategy].append(rouge_evaluator.entrypoint(model, pool, config.evaluation))
    return reports


def test_rouge_is_above_zero_in_every_round_for_both_strategies(rounds: dict[str, list[Any]]) -> None:
    for strategy, reports in rounds.items():
        scores = [report.overall["rougeL"] for report in reports]
        assert len(scores) == 3 and min(scores) > 0, (strategy, scores, [p["prediction"] for p in reports[-1].predictions])


def test_the_strategies_round_2_scores_differ(rounds: dict[str, list[Any]]) -> None:
    assert rounds["random"][2].overall["rougeL"] != rounds["uncertainty"][2].overall["rougeL"]

"""Evaluation speed: shared-prefix decoding against ``generate`` on full prompts, same model and tasks.

The old path is what ``evaluate_model`` did before it decoded through the shared-prefix
decoder: every instance's full prompt (chat head, definition, demonstrations, instance)
through transformers' ``generate``, batched by length. The new path is
:func:`activeit.evaluation.evaluate_model` as it is. The model is loaded once; the two
paths alternate ``--repeats`` times after one warm-up each; their reports must be
identical. Printed: the seconds of every run, the medians, and last ``speedup=<old/new>``.

    python benchmarks/evaluation.py                          # configs/default.yaml, test split
    python benchmarks/evaluation.py --config configs/smoke.yaml --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.evaluation import EvalReport, evaluate_model, score_predictions
from activeit.scoring.engine.generation import greedy_generate
from activeit.models.loading import LoadedModel, load_model
from activeit.data.prompts import PromptFormatter
from activeit.config.settings import EvaluationSettings
from activeit.data.sources import load_pool_from
from activeit.data.tasks import Task
from experiment.config import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each path, alternating")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return parser.parse_args(argv)


@torch.inference_mode()
def generate_on_full_prompts(loaded: LoadedModel, tasks: Sequence[Task], config: EvaluationSettings) -> EvalReport:
    """The old evaluation: ``generate`` on each instance's whole prompt, then the same metrics."""
    formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
    pairs = [(t, i) for t in tasks for i in t.sample_instances(config.max_instances_per_task, config.seed)]
    prompts = [formatter.encode_instance(task, instance).ids for task, instance in pairs]
    generated = greedy_generate(loaded, prompts, config.max_new_tokens, config.token_budget)
    texts = [loaded.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
    return score_predictions((task, inst, text) for (task, inst), text in zip(pairs, texts))


def timed(run: Callable[[], EvalReport]) -> tuple[EvalReport, float]:
    started = time.perf_counter()
    report = run()
    return report, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    experiment = load_config(args.config)
    config = experiment.evaluation
    tasks = list(load_pool_from(experiment.pool, need_test_tasks=True).test)
    loaded = load_model(experiment.model)
    loaded.model.eval()
    instances = sum(len(t.sample_instances(config.max_instances_per_task, config.seed)) for t in tasks)
    print(f"model {experiment.model} ({next(loaded.model.parameters()).dtype}, {torch.get_num_threads()} threads); "
          f"{len(tasks)} test tasks of {args.config.name}, {instances} instances, "
          f"max_new_tokens={config.max_new_tokens}, max_source_length={config.max_source_length}, "
          f"token_budget={config.token_budget}", flush=True)

    paths = {
        "old (generate on full prompts)": lambda: generate_on_full_prompts(loaded, tasks, config),
        "new (shared-prefix decoder)": lambda: evaluate_model(loaded, tasks, config, progress=False),
    }
    reports = {name: run() for name, run in paths.items()}  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in paths}
    for repeat in range(args.repeats):
        for name, run in paths.items():
            reports[name], elapsed = timed(run)
            seconds[name].append(elapsed)
            print(f"repeat {repeat + 1}: {name:32} {elapsed:7.2f} s", flush=True)

    old, new = reports.values()
    same = old.predictions == new.predictions
    differing = sum(a["prediction"] != b["prediction"] for a, b in zip(old.predictions, new.predictions))
    print(f"predictions identical: {same} ({differing} of {len(old.predictions)} differ); "
          f"ROUGE-L old {old.overall['rougeL']:.2f}, new {new.overall['rougeL']:.2f}")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in medians.items():
        print(f"median {name:32} {value:7.2f} s")
    old_s, new_s = medians.values()
    print(f"speedup={old_s / new_s:.2f}")
    if not same:
        raise SystemExit("the two paths disagree")


if __name__ == "__main__":
    main()

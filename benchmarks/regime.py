"""Does the training regime learn? random's learning curve on held-out validation tasks.

For a config (``--config``, changed by ``--set key=value``), every seed of ``--seeds``:
load the pool with ``--validation-tasks`` seeded train tasks held out as the validation
split, pick random's round 0..R training sets exactly as the pipeline does
(:func:`activeit.selection.strategies.select_tasks` with ``random``: the initial set, then
``tasks_per_round`` more per round from the remaining pool), fine-tune each through
:func:`activeit.training.finetune.finetune` (retrain: from the base model on every task so
far; continue: from the last round's model on the new ones) and evaluate it on the split
``--split`` (``validation`` by default; ``test`` only to confirm a final choice, never to
tune). The base model is evaluated too. Faster than the pipeline: no ZenML, no MLflow, no
scoring (random needs none).

The last lines are the ROUGE-L curve per seed, the mean over seeds, each step of the mean
and ``rises=<yes|no>`` (base < round 0 < round 1 < ... with each step at least ``--min-step``).
``--json FILE`` appends one record per run (config changes, curves, times).

    python benchmarks/regime.py --seeds 0,1,2
    python benchmarks/regime.py --set training.method=lora --set training.learning_rate=1e-3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.data.sources import load_pool_from  # noqa: E402
from activeit.data.tasks import Task, TaskPool  # noqa: E402
from activeit.evaluation import evaluate_model  # noqa: E402
from activeit.models.devices import place_model  # noqa: E402
from activeit.models.loading import load_model  # noqa: E402
from activeit.selection.strategies import select_tasks  # noqa: E402
from activeit.training.finetune import finetune  # noqa: E402
from experiment.config import ExperimentConfig, load_config  # noqa: E402


def parse_sets(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` pairs as dotted overrides, each value read as YAML (``1e-4``, ``lora``, ``null``)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals:
            raise SystemExit(f"--set wants KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def eval_tasks(pool: TaskPool, split: str) -> tuple[Task, ...]:
    tasks = pool.splits.get(split, ())
    if not tasks:
        raise SystemExit(f"the pool has no '{split}' tasks (set --validation-tasks)")
    return tasks


def random_rounds(config: ExperimentConfig, pool: TaskPool, rounds: int) -> list[list[Task]]:
    """random's training set of every round 0..rounds (the pipeline's selector, in pool order)."""
    by_name = {t.name: t for t in pool.train}
    chosen: list[str] = []
    sets = []
    for r in range(rounds + 1):
        budget = config.initial_tasks if r == 0 else config.tasks_per_round
        remaining = [t for t in pool.train if t.name not in set(chosen)]
        selection = select_tasks("random", remaining, budget, seed=config.seed,
                                 classification_ratio=config.classification_ratio, round_index=r)
        chosen += selection.tasks
        sets.append([by_name[n] for n in chosen])
    return sets


def evaluate(model: str, tasks: Sequence[Task], config: ExperimentConfig) -> tuple[float, float, dict[str, float]]:
    """Overall ROUGE-L, seconds (loading included) and ROUGE-L per task."""
    started = time.perf_counter()
    report = evaluate_model(place_model(load_model(model)), tasks, config.evaluation, progress=False)
    per_task = {name: m["rougeL"] for name, m in report.per_task.items()}
    return report.overall["rougeL"], time.perf_counter() - started, per_task


def run_seed(config: ExperimentConfig, split: str, rounds: int, base: bool, work: Path) -> dict[str, Any]:
    pool = load_pool_from(config.pool)
    tasks = eval_tasks(pool, split)
    record: dict[str, Any] = {"seed": config.seed, "eval_tasks": [t.name for t in tasks], "rounds": []}
    if base:
        record["base"], record["base_eval_s"], record["base_per_task"] = evaluate(config.model, tasks, config)
        print(f"seed {config.seed}: base {record['base']:.2f} ({record['base_eval_s']:.0f} s)", flush=True)
    previous: str | None = None
    for r, train_set in enumerate(random_rounds(config, pool, rounds)):
        out = work / f"seed{config.seed}_round{r}"
        if config.training.mode == "continue" and previous is not None:
            start, train_on = previous, train_set[len(train_set) - config.tasks_per_round:]
        else:
            start, train_on = config.model, train_set
        started = time.perf_counter()
        metrics = finetune(start, train_on, out, config.training, progress=False, overwrite=True).metrics
        train_s = time.perf_counter() - started
        rouge, eval_s, per_task = evaluate(str(out), tasks, config)
        row = {"round": r, "tasks": len(train_set), "rougeL": rouge, "steps": metrics["steps"],
               "final_loss": metrics["final_loss"], "tokens": metrics["tokens_seen"],
               "padding_share": metrics["padding_share"], "train_s": train_s, "train_loop_s": metrics["train_time_s"],
               "eval_s": eval_s, "per_task": per_task}
        record["rounds"].append(row)
        print(f"seed {config.seed} round {r}: {len(train_set)} tasks, {metrics['steps']} steps, loss "
              f"{metrics['loss_curve'][0]:.3f} -> {metrics['final_loss']:.3f}, ROUGE-L {rouge:.2f} "
              f"(train {train_s:.0f} s, eval {eval_s:.0f} s)", flush=True)
        if previous is not None and previous != config.model:
            _remove(Path(previous))
        previous = str(out)
    if previous:
        _remove(Path(previous))
    return record


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "default.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config key (dotted, value read as YAML); repeatable")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=None, help="selection rounds (default: the config's)")
    parser.add_argument("--validation-tasks", type=int, default=10,
                        help="train tasks held out as the validation split (pool.validation_tasks)")
    parser.add_argument("--split", default="validation", choices=("validation", "test"))
    parser.add_argument("--no-base", action="store_true", help="skip the base model's evaluation")
    parser.add_argument("--min-step", type=float, default=1.0)
    parser.add_argument("--json", type=Path, default=None, help="append the run's record to this JSONL file")
    parser.add_argument("--label", default="", help="a name for the record")
    args = parser.parse_args(argv)

    sets = parse_sets(args.sets)
    overrides = {**sets, "pool.validation_tasks": args.validation_tasks}
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="regime-") as tmp:
        for seed in seeds:
            config = load_config(args.config, overrides={**overrides, "seed": seed})
            rounds = config.rounds if args.rounds is None else args.rounds
            records.append(run_seed(config, args.split, rounds, not args.no_base, Path(tmp)))
    wall = time.perf_counter() - started

    print(f"\nconfig {args.config.name} {' '.join(args.sets)}; split {args.split} "
          f"({args.validation_tasks} held-out tasks); seeds {args.seeds}; wall {wall:.0f} s")
    curves = []
    for rec in records:
        curve = ([rec["base"]] if "base" in rec else []) + [row["rougeL"] for row in rec["rounds"]]
        curves.append(curve)
        print(f"  seed {rec['seed']}: " + "  ".join(f"{v:6.2f}" for v in curve))
    mean = [statistics.fmean(c[i] for c in curves) for i in range(len(curves[0]))]
    steps = [b - a for a, b in zip(mean, mean[1:])]
    print("  mean:   " + "  ".join(f"{v:6.2f}" for v in mean))
    print("  steps:  " + "  ".join(f"{v:+6.2f}" for v in steps))
    rises = all(s >= args.min_step for s in steps)
    print(f"rises={'yes' if rises else 'no'}")
    if args.json:
        with args.json.open("a", encoding="utf-8") as out:
            out.write(json.dumps({"label": args.label, "config": str(args.config), "sets": sets,
                                  "split": args.split, "validation_tasks": args.validation_tasks,
                                  "seeds": seeds, "mean": mean, "steps": steps, "rises": rises,
                                  "wall_s": wall, "records": records}) + "\n")


if __name__ == "__main__":
    main()

"""Does fine-tuning help? ROUGE-L on held-out instances of the training tasks, before/after.

A seeded sample of ``--tasks`` NIV2-subset train tasks with short outputs (median
reference at most ``--max-output-words`` words, so that CPU generation stays quick);
per task ``--train-instances`` instances to train on and ``--eval-instances`` *other*
instances to evaluate on. The model is evaluated, fine-tuned with
:func:`activeit.training.finetune.finetune`, and evaluated again. The last line is
``gain=<ROUGE-L after - before>``.

    python benchmarks/finetune_gain.py --tasks 3 --train-instances 32 --eval-instances 20 --epochs 2
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path

from activeit.evaluation import EvalReport, evaluate_model
from activeit.models.devices import place_model
from activeit.models.builtin import DEFAULT_MODEL
from activeit.models.loading import load_model
from activeit.data.sources import load_pool
from activeit.data.tasks import Task
from activeit.config.settings import EvaluationSettings, TrainingSettings
from activeit.training.finetune import finetune

ROOT = Path(__file__).resolve().parents[1]
NIV2 = ROOT.parent / "shared" / "data" / "niv2"


def split_tasks(
    path: Path, num_tasks: int, train: int, held_out: int, max_words: int, seed: int
) -> tuple[list[Task], list[Task]]:
    """(train tasks, the same tasks with disjoint held-out instances)."""
    pool = load_pool("niv2", path, split_dir="available")

    def short(task: Task) -> bool:
        words = [len(o.split()) for i in task.instances for o in i.outputs[:1]]
        return len(task.instances) >= train + held_out and statistics.median(words) <= max_words

    candidates = sorted((t for t in pool.train if short(t)), key=lambda t: t.name)
    chosen = random.Random(seed).sample(candidates, min(num_tasks, len(candidates)))
    train_tasks, eval_tasks = [], []
    for task in chosen:
        order = list(task.instances)
        random.Random(f"{seed}:{task.name}").shuffle(order)
        train_tasks.append(task.with_instances(order[:train]))
        eval_tasks.append(task.with_instances(order[train : train + held_out]))
    return train_tasks, eval_tasks


def show(before: EvalReport, after: EvalReport) -> None:
    print(f"  {'task':<58} {'before':>7} {'after':>7}")
    for name, metrics in before.per_task.items():
        print(f"  {name:<58} {metrics['rougeL']:7.2f} {after.per_task[name]['rougeL']:7.2f}")
    print(f"  {'overall ROUGE-L':<58} {before.overall['rougeL']:7.2f} {after.overall['rougeL']:7.2f}")
    print(f"  {'overall exact match':<58} {before.overall['exact_match']:7.2f} "
          f"{after.overall['exact_match']:7.2f}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=NIV2, help=f"NIV2 root (default: {NIV2})")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--train-instances", type=int, default=32)
    parser.add_argument("--eval-instances", type=int, default=20)
    parser.add_argument("--max-output-words", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, default=None, help="save the fine-tuned model here")
    args = parser.parse_args(argv)

    train_tasks, eval_tasks = split_tasks(args.path, args.tasks, args.train_instances,
                                          args.eval_instances, args.max_output_words, args.seed)
    print(f"tasks: {', '.join(t.name for t in train_tasks)}")
    print(f"{args.train_instances} train / {args.eval_instances} held-out instances per task; "
          f"model {args.model}, {args.epochs} epochs, lr {args.lr}, batch size {args.batch_size}")
    eval_config = EvaluationSettings(max_new_tokens=args.max_new_tokens, seed=args.seed)
    before = evaluate_model(place_model(load_model(args.model)), eval_tasks, eval_config)

    config = TrainingSettings(epochs=args.epochs, learning_rate=args.lr, warmup_steps=args.warmup_steps,
                            batch_size=args.batch_size, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "model"
        result = finetune(args.model, train_tasks, out, config)
        after = evaluate_model(place_model(load_model(str(out))), eval_tasks, eval_config)
    m = result.metrics
    print(f"trained: {m['steps']} steps, loss {m['loss_curve'][0]:.3f} -> {m['final_loss']:.3f}, "
          f"{m['tokens_seen']} tokens, padding {100 * m['padding_share']:.1f}%, {m['train_time_s']:.0f} s")
    show(before, after)
    print(f"gain={after.overall['rougeL'] - before.overall['rougeL']:.2f}")


if __name__ == "__main__":
    main()

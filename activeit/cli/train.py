"""``python -m activeit train``: fine-tune a model on named tasks of a pool."""

from __future__ import annotations

import argparse
import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activeit.cli.common import add_pool_arguments, pool_from_args
from activeit.errors import ConfigError, PoolError
from activeit.models import DEFAULT_MODEL
from activeit.tasks import Task, TaskPool
from activeit.training import TrainingConfig, TrainingResult, finetune, launch_finetune

DEFAULTS = TrainingConfig()


def read_task_names(value: str) -> list[str]:
    """Task names from comma-separated names or a file.

    A file holds one name per line (blank lines and ``#`` comments skipped), a JSON list,
    or a JSON object with a ``"tasks"`` list (a saved ``Selection``).
    """
    path = Path(value)
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith(("[", "{")):
            try:
                data: Any = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PoolError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
            names = data.get("tasks") if isinstance(data, dict) else data
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise PoolError(f"{path}: expected a JSON list of task names or an object with a 'tasks' list")
        else:
            names = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    else:
        names = value.split(",")
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise PoolError(f"no task names in '{value}'")
    return names


def select_tasks(pool: TaskPool, names: Sequence[str]) -> tuple[Task, ...]:
    """The named tasks; one error naming every unknown name (with close matches)."""
    unknown = [n for n in names if n not in pool]
    if unknown:
        known = [t.name for t in pool]
        described = [
            name + "".join(f" (did you mean {m}?)" for m in difflib.get_close_matches(name, known, 1))
            for name in unknown[:10]
        ]
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise PoolError(
            f"pool '{pool.name}' ({len(known)} tasks) has no task named {', '.join(described)}{more}"
        )
    return pool.tasks(names)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model on tasks of a pool",
        description="Fine-tune a model on the named tasks of a pool (instances rendered as "
        "Tk-Instruct prompts, loss on the outputs) and save it with its tokenizer and "
        "training_metrics.json. --max-instances caps the instances per task (default "
        f"{DEFAULTS.max_instances_per_task}).",
    )
    add_pool_arguments(parser)
    parser.add_argument("--tasks", required=True, metavar="NAMES|FILE",
                        help="comma-separated task names, or a file: one name per line, a JSON "
                        "list, or a selection JSON with a 'tasks' key")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"base model name or a model folder to continue from (default: {DEFAULT_MODEL})")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output model folder")
    parser.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    parser.add_argument("--lr", type=float, default=DEFAULTS.learning_rate, help="peak learning rate")
    parser.add_argument("--warmup-steps", type=int, default=DEFAULTS.warmup_steps)
    parser.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="per process")
    parser.add_argument("--grad-accum", type=int, default=DEFAULTS.grad_accum)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    parser.add_argument("--max-source-length", type=int, default=DEFAULTS.max_source_length)
    parser.add_argument("--max-target-length", type=int, default=DEFAULTS.max_target_length)
    parser.add_argument("--mixed-precision", choices=("auto", "no", "bf16", "fp16"),
                        default=DEFAULTS.mixed_precision)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap prompts in the chat template (default: when the model has one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-processes", type=int, default=1,
                        help=">1 runs `accelerate launch` with this many processes")
    parser.add_argument("--cpu", action="store_true", help="run on CPU processes (gloo between them) even when a GPU is there")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def config_from_args(args: argparse.Namespace) -> TrainingConfig:
    return TrainingConfig(
        epochs=args.epochs,
        learning_rate=args.lr,
        warmup_steps=args.warmup_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_instances_per_task=args.max_instances or DEFAULTS.max_instances_per_task,
        max_source_length=args.max_source_length,
        max_target_length=args.max_target_length,
        seed=args.seed,
        gradient_checkpointing=args.gradient_checkpointing,
        mixed_precision=args.mixed_precision,
        max_steps=args.max_steps,
        chat=args.chat,
    )


def format_result(result: TrainingResult) -> str:
    m = result.metrics
    final = f"{m['final_loss']:.4f}" if m["final_loss"] is not None else "-"
    return (
        f"saved {result.model_dir}\n"
        f"  tasks {m['num_tasks']}, examples {m['num_examples']}, steps {m['steps']}, "
        f"processes {m['num_processes']}\n"
        f"  loss {m['loss_curve'][0] if m['loss_curve'] else float('nan'):.4f} -> {final}, "
        f"tokens {m['tokens_seen']}, padding {100 * m['padding_share']:.1f}%, "
        f"{m['wall_time_s']:.1f} s"
    )


def run(args: argparse.Namespace) -> int:
    if args.num_processes < 1:
        raise ConfigError(f"--num-processes must be >= 1, got {args.num_processes}")
    config = config_from_args(args)
    tasks = select_tasks(pool_from_args(args), read_task_names(args.tasks))
    progress = not args.no_progress
    if args.num_processes > 1 or args.cpu:
        result = launch_finetune(args.model, tasks, args.out, config, args.num_processes,
                                 cpu=args.cpu, progress=progress)
    else:
        result = finetune(args.model, tasks, args.out, config, progress=progress)
    print(format_result(result))
    return 0

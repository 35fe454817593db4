"""``python -m activeit train``: fine-tune a model on named tasks of a pool."""

from __future__ import annotations

import argparse
from typing import Any

from activeit.cli.common import (
    add_output_arguments,
    add_pool_arguments,
    named_tasks,
    pool_from_args,
    protected_paths,
    read_task_names,
)
from activeit.config.flags import add_settings_arguments, flag_of, settings_from_args
from activeit.training.launch import train
from activeit.models.builtin import DEFAULT_MODEL
from activeit.models.checks import check_lora, check_model
from activeit.models.processes import check_processes
from activeit.outputs import check_output_dir
from activeit.config.settings import TrainingSettings
from activeit.errors import ConfigError
from activeit.training.finetune import TrainingResult


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="fine-tune a model on tasks of a pool",
        description="Fine-tune a model on the named tasks of a pool (instances rendered as "
        "Tk-Instruct prompts, loss on the outputs) and save it with its tokenizer and "
        "training_metrics.json. --max-instances caps the instances per task (default "
        f"{TrainingSettings.model_fields['max_instances_per_task'].default}).",
    )
    add_pool_arguments(parser)
    parser.add_argument("--tasks", required=True, metavar="NAMES|FILE",
                        help="comma-separated task names, or a file: one name per line, a JSON "
                        "list, or a selection JSON with a 'tasks' key")
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"base model name or a model folder to continue from (default: {DEFAULT_MODEL})")
    add_output_arguments(parser, "output model folder (created; written all at once at the end)")
    add_settings_arguments(parser.add_argument_group("training"), TrainingSettings, skip=("max_instances_per_task",))
    parser.add_argument("--cpu", action="store_true", help="run on CPU processes (gloo between them) even when a GPU is there")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


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


def check_lora_flags(args: argparse.Namespace, config: TrainingSettings) -> None:
    """Refuse ``--lora-*`` flags unless the method is LoRA (they would be ignored)."""
    given = [flag_of(TrainingSettings, key) for key in TrainingSettings.model_fields
             if key.startswith("lora_") and getattr(args, key, None) is not None]
    if given and config.method != "lora":
        flags = " ".join(given)
        raise ConfigError(f"{flags} only {'applies' if len(given) == 1 else 'apply'} to LoRA, but the method is "
                          f"'{config.method}'; add --method lora, or drop {flags}")


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, "--out", args.overwrite, protect=protected_paths(args))  # a model folder
    check_model(args.model, args.chat)
    config = settings_from_args(args, TrainingSettings, max_instances_per_task=args.max_instances)
    check_lora_flags(args, config)
    check_lora(args.model, config.method, config.lora_target_modules)
    check_processes(config.num_processes, flag_of(TrainingSettings, "num_processes"), args.cpu)
    tasks = named_tasks(pool_from_args(args), read_task_names(args.tasks))
    result = train(args.model, tasks, args.out, config, cpu=args.cpu, progress=not args.no_progress,
                   overwrite=args.overwrite)
    print(format_result(result))
    return 0

"""Training throughput: the project's loop against a naive loop on the same data.

Both loops fine-tune the same model with the same batch size, optimizer and learning
rate for one pass over the same examples: NIV2-subset train tasks (a seeded sample of
``--tasks`` tasks, ``--instances`` instances each, first reference only so both loops see
identical targets), rendered with the project's prompt format.

* ours: :func:`activeit.training.finetune.finetune` (length-grouped batches: padding to the batch
  maximum of similar-length examples);
* naive, written below: plain shuffled order, every batch padded to the longest example
  of the whole dataset, no grouping.

Tokens per second counts real (non-padding) tokens. The ceiling is measured, not quoted:
:mod:`benchmarks.ceiling` times this machine's matmuls at the model's own shapes (fp32 on a
CPU, with the same threads; bf16 on a GPU) and counts the useful FLOPs of the pass (6 per
weight and trained token, the output layer at the answer tokens only); both loops are
given as a share of that peak. On a shared machine use
``--repeats 2`` or more: the loops alternate and each keeps its fastest run. ``--steps`` cuts both loops to that
many optimizer steps (then the two see slightly different examples and the speedup is
the ratio of tokens per second; over a whole pass it is exactly naive time / our time).
The last lines are ``peak_share=<ours>`` and ``speedup=<naive time / our time>``.

    python benchmarks/training.py --tasks 8 --instances 8 --batch-size 4
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.models.devices import model_device, place_model, process_state, resolve_mixed_precision  # noqa: E402
from activeit.models.builtin import DEFAULT_MODEL
from activeit.models.loading import load_model
from activeit.data.prompts import PromptFormatter
from activeit.data.sources import load_pool
from activeit.data.tasks import Instance, Task
from activeit.config.settings import TrainingSettings
from activeit.training.data import TrainingExample, build_examples
from activeit.training.finetune import finetune
from activeit.training.saving import SAVE_DTYPES
from benchmarks.ceiling import linear_shapes, measured_peak, training_flops

NIV2 = ROOT.parent / "shared" / "data" / "niv2"


def benchmark_tasks(path: Path, num_tasks: int, instances: int, seed: int) -> list[Task]:
    """A seeded sample of NIV2-subset train tasks, capped instances, first reference only."""
    pool = load_pool("niv2", path, split_dir="available", max_instances_per_task=instances, seed=seed)
    tasks = random.Random(seed).sample(list(pool.train), min(num_tasks, len(pool.train)))
    return [
        t.with_instances([Instance(i.id, i.input, i.outputs[:1]) for i in t.instances]) for t in tasks
    ]


def our_loop(model_name: str, tasks: Sequence[Task], config: TrainingSettings, steps: int) -> dict[str, float]:
    """The project's loop (:func:`finetune`), timed by its own training-loop clock."""
    with tempfile.TemporaryDirectory() as tmp:
        config = config.replace(max_steps=steps)
        metrics = finetune(model_name, tasks, Path(tmp) / "model", config, progress=False).metrics
    elapsed, real = metrics["train_time_s"], metrics["tokens_seen"]
    return {"time_s": elapsed, "tokens": real, "padding_share": metrics["padding_share"],
            "tokens_per_s": real / elapsed}


def naive_loop(
    model_name: str, examples: Sequence[TrainingExample], config: TrainingSettings, steps: int
) -> dict[str, float]:
    """The baseline: shuffled order, every batch padded to the dataset's longest example; on
    the same device and in the same mixed precision as ours."""
    loaded = place_model(load_model(model_name))
    device = model_device(loaded.model)
    precision = SAVE_DTYPES.get(resolve_mixed_precision(config.mixed_precision, cpu=device.type == "cpu"))
    autocast = (lambda: torch.autocast(device.type, dtype=precision)) if precision else contextlib.nullcontext
    model, pad_id, seq2seq = loaded.model, loaded.tokenizer.pad_token_id, loaded.is_seq2seq
    model.train()
    torch.manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    if seq2seq:
        pairs = [(list(e.prompt), list(e.targets[0])) for e in examples]
    else:
        pairs = [([*e.prompt, *e.targets[0]], [-100] * len(e.prompt) + [*e.targets[0]]) for e in examples]
    width = max(len(x) for x, _ in pairs)
    label_width = max(len(y) for _, y in pairs) if seq2seq else width
    order = list(range(len(pairs)))
    random.Random(config.seed).shuffle(order)

    real = total = 0
    started = time.perf_counter()
    for step in range(steps):
        batch = [pairs[i] for i in order[step * config.batch_size : (step + 1) * config.batch_size]]
        input_ids = torch.tensor([x + [pad_id] * (width - len(x)) for x, _ in batch], device=device)
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in batch], device=device)
        labels = torch.tensor([y + [-100] * (label_width - len(y)) for _, y in batch], device=device)
        with autocast():
            loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        real += sum(len(x) for x, _ in batch) + (sum(len(y) for _, y in batch) if seq2seq else 0)
        total += input_ids.numel() + (labels.numel() if seq2seq else 0)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - started
    return {"time_s": elapsed, "tokens": real, "padding_share": 1 - real / total, "tokens_per_s": real / elapsed}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=NIV2, help=f"NIV2 root (default: {NIV2})")
    parser.add_argument("--tasks", type=int, default=8, help="number of train tasks (seeded sample)")
    parser.add_argument("--instances", type=int, default=8, help="instances per task")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=None, help="cut both loops to this many steps")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--max-source-length", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-precision", default="no", choices=("no", "bf16", "fp16", "auto"),
                        help="both loops (auto: bf16 on a GPU with native bf16)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run each loop this many times (alternating order) and keep the fastest")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    tasks = benchmark_tasks(args.path, args.tasks, args.instances, args.seed)
    config = TrainingSettings(
        epochs=1, learning_rate=5e-5, warmup_steps=0, batch_size=args.batch_size,
        max_instances_per_task=args.instances, max_source_length=args.max_source_length,
        seed=args.seed, mixed_precision=args.mixed_precision, group_by_length=True,
    )
    examples = build_examples(PromptFormatter.for_model(load_model(args.model), config.max_source_length),
                              tasks, config)
    full_pass = -(-len(examples) // args.batch_size)
    steps = min(args.steps or full_pass, full_pass)
    lengths = [len(e.prompt) + len(e.targets[0]) for e in examples]
    print(f"data: {len(tasks)} NIV2-subset train tasks, {len(examples)} examples, "
          f"lengths {min(lengths)}-{max(lengths)} (mean {sum(lengths) / len(lengths):.0f}); "
          f"model {args.model}, batch size {args.batch_size}, {steps} steps, "
          f"{torch.get_num_threads()} threads, device {process_state().device}, mixed precision "
          f"{resolve_mixed_precision(args.mixed_precision)}")

    ours_runs, naive_runs = [], []
    for repeat in range(args.repeats):  # alternate the order; keep each loop's best run
        for which in ("ours", "naive") if repeat % 2 == 0 else ("naive", "ours"):
            if which == "ours":
                ours_runs.append(our_loop(args.model, tasks, config, steps))
            else:
                naive_runs.append(naive_loop(args.model, examples, config, steps))
    for name, runs in (("ours", ours_runs), ("naive", naive_runs)):
        best = min(runs, key=lambda r: r["time_s"])
        times = ", ".join(f"{r['time_s']:.1f}" for r in runs)
        print(f"{name:<5}: {best['time_s']:8.1f} s  {best['tokens']:7d} tokens  "
              f"{best['tokens_per_s']:7.1f} tokens/s  padding {100 * best['padding_share']:5.1f}%"
              + (f"  (runs: {times} s)" if len(runs) > 1 else ""))
    ours = min(ours_runs, key=lambda r: r["time_s"])
    naive = min(naive_runs, key=lambda r: r["time_s"])

    loaded = load_model(args.model)
    shapes = linear_shapes(loaded.model)
    answers = sum(len(e.targets[0]) for e in examples)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rows = args.batch_size * round(sum(lengths) / len(lengths))
    peak = measured_peak(shapes, rows, dtype, device, head_rows=max(1, args.batch_size * answers // len(examples)))
    # useful FLOPs per real token of the pass (both loops train on the same tokens)
    per_token = training_flops(shapes, sum(lengths), answers) / sum(lengths)
    shares = {name: per_token * run["tokens_per_s"] / peak for name, run in (("ours", ours), ("naive", naive))}
    print(f"ceiling: {peak / 1e12:.3f} TFLOP/s measured ({str(dtype).removeprefix('torch.')} linear at the "
          f"model's {len(shapes.body) + 1} shapes, {rows} rows, {torch.get_num_threads()} threads, {device.type}); "
          f"useful work {per_token / 1e9:.2f} GFLOP per token")
    print(f"share of peak: ours {shares['ours']:.1%} ({per_token * ours['tokens_per_s'] / 1e12:.3f} TFLOP/s), "
          f"naive {shares['naive']:.1%}")
    print(f"peak_share={shares['ours']:.3f}")
    print(f"speedup={ours['tokens_per_s'] / naive['tokens_per_s']:.2f}")


if __name__ == "__main__":
    main()

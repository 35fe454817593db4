"""Scoring speed: the project's scorer against a naive reference-style loop, same tasks and model.

The naive loop (:mod:`activeit.scoring.reference`, the plain PU computation) is what the
reference implementation does per task: one instance at a time, generate its prediction,
then one separate forward pass per prompt (original and k perturbed), no batching and no
prefix reuse. Both must give the same PU per task (within 1e-3). Printed: tasks/minute of
both, the phases of ours, the peak memory of ours on two pool sizes (each in a fresh
subprocess; it must stay flat as the pool grows), the share of the device's peak FLOP rate
(measured at the model's shapes, :mod:`benchmarks.ceiling`) our scorer reaches, and last ``speedup=<naive/ours>``.

    python benchmarks/scoring.py                                   # full: 20 tasks, n=k=10, 128 tokens
    python benchmarks/scoring.py --tasks 4 --max-new-tokens 32 --memory-sizes 2,8   # small
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.models.builtin import DEFAULT_MODEL
from activeit.models.loading import LoadedModel, load_model
from activeit.scoring.scorer import score_tasks
from activeit.scoring.reference import ReferenceTask, reference_scores
from activeit.config.settings import TOKEN_BUDGET, ScoringSettings
from activeit.data.sources import load_pool
from activeit.data.tasks import Task
from benchmarks.ceiling import linear_shapes, measured_peak

NIV2 = ROOT.parent / "shared" / "data" / "niv2"
PU_TOLERANCE = 1e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--niv2", type=Path, default=NIV2, help="NIV2 root (default: ../shared/data/niv2)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks timed with both scorers")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--token-budget", type=int, default=TOKEN_BUDGET)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--bf16", action="store_true",
                        help="on CUDA, load the model in bf16 for both scorers (default fp32: exact comparison)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--memory-sizes", default="20,80", help="pool sizes for the peak-memory probes ('' = skip)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak (default: measured, benchmarks/ceiling.py)")
    parser.add_argument("--memory-probe", type=int, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def setup(args: argparse.Namespace) -> tuple[LoadedModel, list[Task], torch.device]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    dtype = torch.bfloat16 if args.bf16 and device.type == "cuda" else torch.float32
    loaded = load_model(args.model, dtype=dtype)
    loaded.model.to(device)
    count = args.memory_probe or args.tasks
    tasks = list(load_pool("niv2", args.niv2, split_dir="available").train)
    if len(tasks) < count:
        raise SystemExit(f"the NIV2 pool at {args.niv2} has {len(tasks)} train tasks, fewer than {count}")
    return loaded, tasks[:count], device


def config_of(args: argparse.Namespace) -> ScoringSettings:
    # bf16 comes from the weights (--bf16), for both scorers alike; never from autocast
    return ScoringSettings(n=args.n, k=args.k, max_new_tokens=args.max_new_tokens, token_budget=args.token_budget,
                           bf16_on_cuda=False)


@dataclass
class NaiveWork:
    """What the naive loop computes: prompt tokens it generates from, tokens it decodes one
    at a time, and teacher-forced tokens (each with vocabulary logits)."""

    prompt_tokens: int = 0
    generated_tokens: int = 0
    forced_tokens: int = 0


def naive_scores(
    loaded: LoadedModel, tasks: list[Task], config: ScoringSettings
) -> tuple[dict[str, float], NaiveWork]:
    """PU per task by the plain scorer, and the work it did (per instance one generate, then
    one forward per prompt)."""
    scored: list[ReferenceTask] = reference_scores(loaded, tasks, config)
    work = NaiveWork()
    for instance in (instance for task in scored for instance in task.instances):
        work.prompt_tokens += len(instance.prompts[0])
        # generate's new tokens: the prediction and its EOS, or max_new_tokens when it ran out
        work.generated_tokens += min(len(instance.target), config.max_new_tokens)
        work.forced_tokens += sum(len(prompt) + len(instance.target) - 1 for prompt in instance.prompts)
    return {task.task: task.pu for task in scored}, work


def timed(fn: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return value, time.perf_counter() - started


def param_split(loaded: LoadedModel) -> tuple[int, int]:
    """(body, output head) parameter counts; the head is counted apart even when tied."""
    head = loaded.model.get_output_embeddings().weight.numel()
    return sum(p.numel() for p in loaded.model.parameters()) - head, head


def useful_flops(loaded: LoadedModel, stats: dict[str, Any]) -> float:
    """2 x body params x tokens processed (unpadded), plus 2 x head params x logit positions.

    Attention's own FLOPs are left out (small at these lengths); positions whose logits
    are never needed do not count the output head.
    """
    body, head = param_split(loaded)
    tokens = sum(stats[f"{phase}_{kind}"] for phase in ("decoding", "forcing") for kind in ("prefix_tokens", "suffix_tokens"))
    tokens += stats["decoding_decoded_tokens"]
    logit_positions = stats["forcing_logit_positions"] + (stats["decoding_logit_positions"] or stats["decoding_decoded_tokens"])
    return 2.0 * body * tokens + 2.0 * head * logit_positions


def naive_flops(loaded: LoadedModel, work: NaiveWork) -> float:
    """The same count for the naive loop: it computes logits at every teacher-forced position."""
    body, head = param_split(loaded)
    tokens = work.prompt_tokens + work.generated_tokens + work.forced_tokens
    return 2.0 * body * tokens + 2.0 * head * (work.generated_tokens + work.forced_tokens)


def memory_probe(args: argparse.Namespace) -> None:
    """Run in a fresh process: score ``--memory-probe`` tasks, print the peak memory as JSON."""
    loaded, tasks, device = setup(args)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _, seconds = timed(lambda: score_tasks(loaded, tasks, config_of(args), progress=False))
    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(json.dumps({"tasks": len(tasks), "base": base, "peak": peak, "seconds": seconds, "device": device.type}))


def run_probe(args: argparse.Namespace, size: int) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--memory-probe", str(size), "--model", args.model, "--niv2", str(args.niv2),
            "--n", str(args.n), "--k", str(args.k), "--max-new-tokens", str(args.max_new_tokens),
            "--token-budget", str(args.token_budget), "--device", args.device, "--memory-sizes", ""]
    argv += ["--bf16"] * args.bf16 + (["--threads", str(args.threads)] if args.threads else [])
    done = subprocess.run(argv, check=False, capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
    if done.returncode != 0:
        raise SystemExit(f"memory probe on {size} tasks failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.memory_probe:
        memory_probe(args)
        return
    loaded, tasks, device = setup(args)
    config = config_of(args)
    dtype = next(loaded.model.parameters()).dtype
    print(f"model {args.model} on {device} ({dtype}, {torch.get_num_threads()} threads); {len(tasks)} NIV2 tasks, "
          f"n={args.n}, k={args.k}, max_new_tokens={args.max_new_tokens}, token_budget={args.token_budget}",
          flush=True)

    warm = [tasks[0].with_instances(tasks[0].instances[:2])]
    score_tasks(loaded, warm, ScoringSettings(n=2, k=1, max_new_tokens=4), progress=False)
    naive_scores(loaded, warm, ScoringSettings(n=2, k=1, max_new_tokens=4))

    table, ours = timed(lambda: score_tasks(loaded, tasks, config, progress=False))
    stats = table.meta["stats"]
    real = sum(stats[f"{phase}_{kind}"] for phase in ("decoding", "forcing") for kind in ("prefix_tokens", "suffix_tokens"))
    real += stats["decoding_decoded_tokens"]
    padded = stats["decoding_padded_tokens"] + stats["forcing_padded_tokens"]
    print(f"ours:  {ours:8.1f} s  {60 * len(tasks) / ours:8.2f} tasks/min  (decoding {stats['generation_s']:.1f} s "
          f"in {stats['decoding_forward_passes']} passes, teacher forcing {stats['teacher_forcing_s']:.1f} s "
          f"in {stats['forcing_forward_passes']} passes, padding {1 - real / max(padded, 1):.1%})", flush=True)
    (naive, work), reference = timed(lambda: naive_scores(loaded, tasks, config))
    print(f"naive: {reference:8.1f} s  {60 * len(tasks) / reference:8.2f} tasks/min", flush=True)
    ours_flops, their_flops = useful_flops(loaded, stats), naive_flops(loaded, work)
    print(f"tokens through the model: naive {work.prompt_tokens + work.generated_tokens + work.forced_tokens}, "
          f"ours {real}; useful GFLOP: naive {their_flops / 1e9:.0f}, ours {ours_flops / 1e9:.0f} "
          f"(work ratio {their_flops / ours_flops:.2f}: the speedup at equal FLOP rates)")
    diffs = {name: abs(table[name].pu - pu) for name, pu in naive.items()}
    worst = max(diffs, key=diffs.get)
    same = diffs[worst] <= PU_TOLERANCE
    print(f"PU agreement: max |PU_ours - PU_naive| = {diffs[worst]:.2e} ({worst}); "
          f"{'OK' if same else 'MISMATCH'} (tolerance {PU_TOLERANCE:g})")
    if not same:
        for name in sorted(diffs, key=diffs.get, reverse=True)[:5]:
            print(f"  {name}: ours {table[name].pu:.6f} naive {naive[name]:.6f}")

    if args.peak_tflops:
        peak, how = args.peak_tflops, "given"
    else:  # the scorer's passes hold about a token budget of rows; logits at the forced positions
        rows = max(1, min(args.token_budget, real // max(1, stats["decoding_forward_passes"] + stats["forcing_forward_passes"])))
        head_rows = max(1, stats["forcing_logit_positions"] // max(1, stats["forcing_forward_passes"]))
        peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        peak = measured_peak(linear_shapes(loaded.model), rows, peak_dtype, device, head_rows=head_rows) / 1e12
        how = (f"measured: {str(peak_dtype).removeprefix('torch.')} linear at the model's shapes, {rows} rows, "
               f"{torch.get_num_threads()} threads, {device.type}")
    achieved = ours_flops / ours / 1e12
    print(f"share of peak: ours {achieved:.3f} TFLOP/s useful / {peak:.3f} TFLOP/s peak ({how}) "
          f"= {achieved / peak:.1%}; naive {their_flops / reference / 1e12 / peak:.1%}")
    print(f"exact-work cap: speedup {reference / ours:.2f} / work ratio {their_flops / ours_flops:.2f} "
          f"= {reference / ours / (their_flops / ours_flops):.2f} of the cap")
    sizes = [int(s) for s in args.memory_sizes.split(",") if s.strip()]
    if sizes:
        probes = [run_probe(args, size) for size in sizes]
        unit = "GPU max_memory_allocated" if probes[0]["device"] == "cuda" else "max RSS"
        parts = [f"{p['tasks']} tasks: {p['peak'] / 2**20:.0f} MiB (+{(p['peak'] - p['base']) / 2**20:.0f} MiB "
                 f"over the loaded model; {60 * p['tasks'] / p['seconds']:.2f} tasks/min)" for p in probes]
        growth = probes[-1]["peak"] / probes[0]["peak"] - 1
        print(f"peak memory of ours ({unit}, fresh process each): " + "; ".join(parts) +
              f"; growth {growth:+.1%} for {sizes[-1] / sizes[0]:.0f}x the tasks")
    print(f"speedup={reference / ours:.2f}")


if __name__ == "__main__":
    main()

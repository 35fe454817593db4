"""The GPU check: one command that exercises every CUDA path of the project and prints one summary.

    python benchmarks/gpu_check.py                 # about 6-8 minutes on one H200
    python benchmarks/gpu_check.py --only scoring,training

Each check runs in its own subprocess with its own time limit (the limits add up to less
than 8 minutes), so a crash or a hang in one is reported and the others still run:

* ``scoring``: ``benchmarks/scoring.py --bf16`` on NIV2-subset tasks: our scorer against
  the naive reference loop, both on bf16 weights (the PU check within 1e-3), speedup and
  share of the bf16 peak, flat memory over two pool sizes;
* ``pu_bias``: the same tasks scored in fp32, with bf16 weights (bf16 logits) and under
  ``bf16_on_cuda`` (bf16 autocast, fp32 logits): the Spearman correlation of PU against
  fp32 and the mean PU shift (bf16 rounding of the logits inflates PU);
* ``training``: ``benchmarks/training.py --mixed-precision bf16``: our loop against the
  naive loop, both on the GPU in bf16 mixed precision;
* ``pipeline_full`` / ``pipeline_lora``: ``run.py`` on the offline default config cut to one
  selection round, with full fine-tuning and with LoRA, in a fresh ZenML store: the model
  files written (their dtype must be bf16), the disk of the store, the round table;
* ``multi_process`` (two or more GPUs visible): scoring under ``accelerate launch`` with two
  processes equals one process, and two-process fine-tuning runs.

Nothing is downloaded: the default model comes from its PyPI wheel (installed by
``./install.sh``), the NIV2 subset from ``../shared/data/niv2`` (``--niv2``; the checks
that need it are skipped without it). On a machine without network or ``./install.sh``,
``benchmarks/gpu_kit.sh`` packs all of that here and ``benchmarks/gpu_kit_run.sh`` installs
it there and runs this check. Without CUDA it says so and exits 0. Exit code 1
when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NIV2 = ROOT.parent / "shared" / "data" / "niv2"
#: Seconds each check may run (all together < 8 minutes).
LIMITS = {"scoring": 120, "pu_bias": 50, "training": 60, "pipeline_full": 100, "pipeline_lora": 100,
          "multi_process": 45}
CHECKS = tuple(LIMITS)


@dataclass
class Result:
    name: str
    status: str  # PASS, FAIL or SKIP
    seconds: float
    summary: str


def run(command: list[str], limit: int, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    """Run ``command`` from the repository root; (exit code, stdout + stderr, seconds). 124: timed out."""
    started = time.perf_counter()
    full_env = os.environ | {"PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"} | (env or {})
    try:
        done = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=limit)
        code, output = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as exc:
        code = 124
        output = ((exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or "")
        output += f"\n(timed out after {limit} s)"
    return code, output, time.perf_counter() - started


def lines_matching(output: str, *patterns: str) -> str:
    """The last line matching each pattern, joined with ' | '."""
    found = []
    for pattern in patterns:
        hits = [line.strip() for line in output.splitlines() if re.search(pattern, line)]
        if hits:
            found.append(hits[-1])
    return " | ".join(found)


def failure(output: str) -> str:
    tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
    return " / ".join(tail)[-400:]


def check_scoring(args: argparse.Namespace) -> tuple[str, str]:
    code, out, _ = run([sys.executable, "benchmarks/scoring.py", "--bf16", "--niv2", str(args.niv2),
                        "--tasks", "8", "--max-new-tokens", "64", "--token-budget", "65536",
                        "--memory-sizes", "8,32"], LIMITS["scoring"])
    if code != 0:
        return "FAIL", failure(out)
    summary = lines_matching(out, r"^speedup=", r"PU agreement", r"share of ideal", r"peak memory of ours")
    return ("PASS" if "OK" in summary else "FAIL"), summary


def check_training(args: argparse.Namespace) -> tuple[str, str]:
    code, out, _ = run([sys.executable, "benchmarks/training.py", "--path", str(args.niv2), "--mixed-precision",
                        "bf16", "--tasks", "8", "--instances", "16", "--batch-size", "8"], LIMITS["training"])
    if code != 0:
        return "FAIL", failure(out)
    return "PASS", lines_matching(out, r"^ours", r"^naive", r"^speedup=")


def check_pu_bias(args: argparse.Namespace) -> tuple[str, str]:
    code, out, _ = run([sys.executable, __file__, "--pu-bias-worker", "--niv2", str(args.niv2)], LIMITS["pu_bias"])
    if code != 0:
        return "FAIL", failure(out)
    result = json.loads(out.strip().splitlines()[-1])
    summary = ", ".join(f"{name}: Spearman {r['spearman']:.3f}, mean PU shift {r['shift']:+.2e}"
                        for name, r in result.items())
    return "PASS", f"PU vs fp32 on {args.pu_tasks} tasks: {summary}"


def pu_bias_worker(args: argparse.Namespace) -> None:
    """Score the same tasks in fp32, with bf16 weights and under bf16 autocast (fp32 logits); print JSON."""
    import torch
    from scipy.stats import spearmanr

    from activeit.models.builtin import DEFAULT_MODEL
    from activeit.models.loading import load_model
    from activeit.scoring.scorer import score_tasks
    from activeit.config.settings import ScoringSettings
    from activeit.data.sources import load_pool

    pool = load_pool("niv2", args.niv2, split_dir="available", seed=0)
    tasks = list(pool.train)[: args.pu_tasks]
    config = ScoringSettings(n=5, k=5, max_new_tokens=32, token_budget=65536)
    fp32 = load_model(DEFAULT_MODEL)
    fp32.model.to("cuda")
    reference = score_tasks(fp32, tasks, config, progress=False)
    autocast = score_tasks(fp32, tasks, config.replace(bf16_on_cuda=True), progress=False)
    fp32.model.to(torch.bfloat16)
    weights = score_tasks(fp32, tasks, config, progress=False)
    out = {}
    for name, table in (("bf16 autocast, fp32 logits", autocast), ("bf16 weights and logits", weights)):
        pus = [table[t.name].pu for t in tasks]
        ref = [reference[t.name].pu for t in tasks]
        out[name] = {"spearman": float(spearmanr(ref, pus).statistic),
                     "shift": sum(p - r for p, r in zip(pus, ref)) / len(ref)}
    print(json.dumps(out))


def check_pipeline(method: str) -> tuple[str, str]:
    """run.py on the default config, one selection round, in a fresh ZenML store."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="activeit-gpu-check-") as tmp:
        config = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
        config["rounds"] = 1
        config["training"] |= {"method": method}
        config["tracking"] = {"experiment": f"gpu-check-{method}"}
        path = Path(tmp) / f"{method}.yaml"
        path.write_text(yaml.safe_dump(config))
        store = Path(tmp) / "zenml"
        code, out, _ = run([sys.executable, "run.py", "--config", str(path)], LIMITS[f"pipeline_{method}"],
                           env={"ZENML_CONFIG_PATH": str(store), "ZENML_ANALYTICS_OPT_IN": "false",
                                "ZENML_LOGGING_COLORS_DISABLED": "true"})
        if code != 0:
            return "FAIL", failure(out)
        weights = [p for p in store.rglob("*.safetensors")]
        dtypes = sorted({dtype for p in weights for dtype in safetensors_dtypes(p)})
        model_mb = sum(p.stat().st_size for p in weights) / 1e6
        store_mb = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 1e6
        rounds = [line.strip() for line in out.splitlines() if re.match(r"^\s+(base|\d+)\s+\d+\s", line)]
        ok = bool(weights) and dtypes == ["BF16"]
        return ("PASS" if ok else "FAIL"), (f"{len(weights)} weight files, {model_mb:.1f} MB, dtypes {dtypes}; "
                                            f"store {store_mb:.1f} MB; rounds: " + " / ".join(rounds))


def safetensors_dtypes(path: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as weights:
        return {weights.get_slice(key).get_dtype() for key in weights.keys()}


def check_multi_process(args: argparse.Namespace) -> tuple[str, str]:
    import torch

    if torch.cuda.device_count() < 2:
        return "SKIP", f"{torch.cuda.device_count()} GPU visible; needs 2"
    code, out, _ = run([sys.executable, __file__, "--multi-worker", "--niv2", str(args.niv2)],
                       LIMITS["multi_process"])
    if code != 0:
        return "FAIL", failure(out)
    result = json.loads(out.strip().splitlines()[-1])
    ok = result["max_pu_diff"] < 1e-4 and result["train_processes"] == 2
    return ("PASS" if ok else "FAIL"), json.dumps(result)


def multi_worker(args: argparse.Namespace) -> None:
    """Two-process scoring against one process, and two-process fine-tuning; print JSON."""
    from activeit.scoring.launch import score
    from activeit.training.launch import train
    from activeit.models.builtin import DEFAULT_MODEL
    from activeit.config.settings import ScoringSettings, TrainingSettings
    from activeit.data.sources import load_pool

    pool = load_pool("niv2", args.niv2, split_dir="available", max_instances_per_task=16, seed=0)
    tasks = list(pool.train)[:8]
    config = ScoringSettings(n=4, k=4, max_new_tokens=32, token_budget=65536)
    one = score(DEFAULT_MODEL, tasks, config, progress=False)
    two = score(DEFAULT_MODEL, tasks, config.replace(num_processes=2), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        training = TrainingSettings(epochs=1, max_steps=4, batch_size=4, max_instances_per_task=8,
                                    warmup_steps=0, num_processes=2)
        result = train(DEFAULT_MODEL, tasks[:4], Path(tmp) / "m", training, progress=False)
    print(json.dumps({"max_pu_diff": max(abs(a.pu - b.pu) for a, b in zip(one, two)),
                      "score_processes": two.meta["processes"], "train_processes": result.metrics["num_processes"],
                      "train_loss": result.metrics["final_loss"]}))


RUNNERS: dict[str, Callable[[argparse.Namespace], tuple[str, str]]] = {
    "scoring": check_scoring,
    "pu_bias": check_pu_bias,
    "training": check_training,
    "pipeline_full": lambda args: check_pipeline("full"),
    "pipeline_lora": lambda args: check_pipeline("lora"),
    "multi_process": check_multi_process,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--niv2", type=Path, default=NIV2, help=f"NIV2 root (default: {NIV2})")
    parser.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {', '.join(CHECKS)}")
    parser.add_argument("--pu-tasks", type=int, default=16, help="tasks of the pu_bias check")
    parser.add_argument("--pu-bias-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--multi-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pu_bias_worker:
        pu_bias_worker(args)
        return 0
    if args.multi_worker:
        multi_worker(args)
        return 0

    import torch

    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(wanted) - set(CHECKS))
    if unknown:
        print(f"error: unknown check(s) {', '.join(unknown)}; choose from {', '.join(CHECKS)}", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print(f"gpu_check: no CUDA device visible (torch {torch.__version__}, CUDA build "
              f"{torch.version.cuda or 'none'}); skipped all {len(wanted)} checks: {', '.join(wanted)}. "
              "Run it on a machine with an NVIDIA GPU.")
        return 0
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    print(f"gpu_check: {len(names)} GPU(s): {', '.join(names)}; torch {torch.__version__}, CUDA "
          f"{torch.version.cuda}, native bf16 {torch.cuda.is_bf16_supported(including_emulation=False)}", flush=True)
    needs_niv2 = {"scoring", "pu_bias", "training", "multi_process"}
    results = []
    for name in wanted:
        started = time.perf_counter()
        if name in needs_niv2 and not (args.niv2 / "tasks").is_dir():
            status, summary = "SKIP", f"no NIV2 subset at {args.niv2} (pass --niv2)"
        else:
            try:
                status, summary = RUNNERS[name](args)
            except Exception as exc:  # a check's own bug must not hide the others
                status, summary = "FAIL", f"{type(exc).__name__}: {exc}"
        results.append(Result(name, status, time.perf_counter() - started, summary))
        print(f"[{status}] {name} ({results[-1].seconds:.0f} s): {summary}", flush=True)

    print("\n== GPU check summary ==")
    for r in results:
        print(f"{r.status:<4} {r.name:<14} {r.seconds:6.0f} s  {r.summary}")
    failed = [r.name for r in results if r.status == "FAIL"]
    print(f"total {sum(r.seconds for r in results):.0f} s; " + (f"FAILED: {', '.join(failed)}" if failed else "all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Before/after of the scorer's two hot paths, in one process, as a ratio.

    python benchmarks/ab_scorer.py --before /path/to/other/checkout [--tasks 2] [--repeats 4]

Loads ``activeit/scoring/engine/decoding.py`` and ``activeit/scoring/engine/forcing.py`` of another checkout (a
``git worktree`` of the base commit) next to this tree's, captures the exact inputs that
one scoring call gives them (SmolLM2, NIV2-subset tasks), then times both versions on those
inputs, alternating (old-new, new-old, ...) so drift on a noisy machine hits both alike.
Prints every timing, the mean ratio new/old per path, and whether the outputs are identical.
The other checkout's modules import everything else from this tree, so the comparison is
of those two files only.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import activeit.scoring.engine.forcing as new_forcing  # noqa: E402
import activeit.scoring.engine.decoding as new_decoding  # noqa: E402
import activeit.scoring.scorer as scoring  # noqa: E402
from activeit.models.devices import grouped_query_attention  # noqa: E402
from activeit.models.builtin import DEFAULT_MODEL  # noqa: E402
from activeit.models.loading import load_model  # noqa: E402
from activeit.config.settings import ScoringSettings  # noqa: E402
from activeit.data.sources import load_pool  # noqa: E402

NIV2 = ROOT.parent / "shared" / "data" / "niv2"


def load_other(checkout: Path, module: str) -> ModuleType:
    """``activeit/<module>.py`` of ``checkout``, importable under its own name."""
    name = f"before_{module}"
    spec = importlib.util.spec_from_file_location(name, checkout / "activeit" / f"{module}.py")
    if spec is None or spec.loader is None:
        raise SystemExit(f"error: --before: no activeit/{module}.py in {checkout}")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[name] = loaded
    spec.loader.exec_module(loaded)
    return loaded


def alternate(label: str, old: Callable[[], Any], new: Callable[[], Any], repeats: int) -> None:
    """Time ``old`` and ``new`` alternately; print each run, the mean ratio and output equality."""
    times: dict[str, list[float]] = {"old": [], "new": []}
    outputs: dict[str, Any] = {}
    for repeat in range(repeats):
        order = [("old", old), ("new", new)] if repeat % 2 == 0 else [("new", new), ("old", old)]
        for side, run in order:
            with grouped_query_attention():
                started = time.perf_counter()
                outputs[side] = run()
            times[side].append(time.perf_counter() - started)
            print(f"{label:9s} {side}: {times[side][-1]:6.2f} s", flush=True)
    ratio = statistics.mean(times["new"]) / statistics.mean(times["old"])
    print(f"{label:9s} mean old {statistics.mean(times['old']):.2f} s, new {statistics.mean(times['new']):.2f} s, "
          f"ratio new/old={ratio:.3f}, identical outputs: {outputs['old'] == outputs['new']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--niv2", type=Path, default=NIV2, help=f"NIV2 subset (default: {NIV2})")
    parser.add_argument("--tasks", type=int, default=2, help="NIV2-subset tasks scored (default: 2)")
    parser.add_argument("--repeats", type=int, default=4, help="runs of each side per path (default: 4)")
    args = parser.parse_args(argv)
    old_decoding, old_forcing = load_other(args.before, "prefix_decoding"), load_other(args.before, "forcing")

    prompts: list[Any] = []
    pairs: list[Any] = []

    def capture_decoding(loaded: Any, given: Any, *rest: Any, **options: Any) -> Any:
        prompts.extend(given)
        return new_decoding.greedy_decode_scored(loaded, given, *rest, **options)

    def capture_forcing(loaded: Any, given: Any, *rest: Any, **options: Any) -> Any:
        pairs.extend(given)
        return new_forcing.teacher_forced_nll(loaded, given, *rest, **options)

    scoring.greedy_decode_scored, scoring.teacher_forced_nll = capture_decoding, capture_forcing
    tasks = list(load_pool("niv2", args.niv2, split_dir="available").train)[: args.tasks]
    loaded = load_model(DEFAULT_MODEL)
    config = ScoringSettings(n=10, k=10, max_new_tokens=64)
    scoring.score_tasks(loaded, tasks, config, progress=False)
    eos = loaded.tokenizer.eos_token_id
    print(f"{len(prompts)} prompts decoded, {len(pairs)} pairs teacher-forced", flush=True)

    def decode(module: ModuleType) -> Callable[[], Any]:
        # (tokens, nll) pairs: the two modules' result classes differ, their contents must not
        return lambda: [(c.tokens, c.nll) for c in module.greedy_decode_scored(
            loaded, prompts, eos, config.max_new_tokens, config.token_budget)]

    def force(module: ModuleType) -> Callable[[], Any]:
        return lambda: module.teacher_forced_nll(loaded, pairs, config.token_budget, config.logit_budget)

    alternate("decoding", decode(old_decoding), decode(new_decoding), args.repeats)
    alternate("forcing", force(old_forcing), force(new_forcing), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())

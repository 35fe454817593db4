"""Adaptive scoring against exact scoring: the same top b, for how much less work, in one run.

For each seed (instances, perturbations and the adaptive pair order all follow it) the NIV2
subset's first ``--tasks`` train tasks are scored exactly once, then adaptively for each
budget b (:mod:`activeit.scoring.adaptive`). Per (seed, b) it prints whether the adaptive top b
(the ``uncertainty`` strategy's pick) is the exact one, their Jaccard overlap, the forward
tokens (prompt prefixes, suffixes and decoded tokens through the model: exact counts) and the
wall time of adaptive over exact scoring, the tasks stopped and the stages. The last line is

    adaptive: identical=<share of cases> jaccard=<mean> tokens=<adaptive/exact> wall=<adaptive/exact>

(ratios pooled over the cases). ``--before CHECKOUT`` also times the exact scorer of another
checkout (``activeit/scoring/scorer.py`` of, say, the commit before adaptive scoring) against
this tree's with adaptive off, alternating, on the first seed: same PU, same wall time.

    python benchmarks/adaptive.py                          # 40 tasks, n=k=10, 32 tokens, b=5,10, 3 seeds
    python benchmarks/adaptive.py --tasks 8 --max-new-tokens 8 --seeds 0 --budgets 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.config.settings import TOKEN_BUDGET, ScoringSettings  # noqa: E402
from activeit.models.builtin import DEFAULT_MODEL  # noqa: E402
from activeit.scoring.adaptive import score_adaptive  # noqa: E402
from activeit.scoring.scorer import score_tasks  # noqa: E402
from activeit.scoring.scores import ScoreTable  # noqa: E402
from activeit.selection.strategies import select_tasks  # noqa: E402
from benchmarks.scoring import NIV2, setup, timed  # noqa: E402

DEFAULTS = ScoringSettings()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--niv2", type=Path, default=NIV2, help="NIV2 root (default: ../shared/data/niv2)")
    parser.add_argument("--tasks", type=int, default=40, help="NIV2-subset train tasks scored")
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated scoring seeds")
    parser.add_argument("--budgets", default="5,10", help="comma-separated budgets b (tasks selected)")
    parser.add_argument("--delta", type=float, default=DEFAULTS.delta)
    parser.add_argument("--first-stage", type=int, default=DEFAULTS.first_stage)
    parser.add_argument("--stage-growth", type=float, default=DEFAULTS.stage_growth)
    parser.add_argument("--token-budget", type=int, default=TOKEN_BUDGET)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--before", type=Path, default=None, metavar="CHECKOUT",
                        help="also time that checkout's exact scorer against this one's (adaptive off)")
    args = parser.parse_args(argv)
    args.bf16, args.memory_probe = False, None  # for benchmarks.scoring.setup
    return args


def forward_tokens(table: ScoreTable) -> int:
    """Tokens the scoring ran through the model: prefixes, suffixes and decoded tokens."""
    stats = table.meta["stats"]
    return stats["decoding_decoded_tokens"] + sum(
        stats[f"{phase}_{kind}"] for phase in ("decoding", "forcing") for kind in ("prefix_tokens", "suffix_tokens")
    )


def top(table: ScoreTable, tasks: list[Any], budget: int) -> set[str]:
    return set(select_tasks("uncertainty", tasks, budget, scores=table).tasks)


def compare_before(args: argparse.Namespace, loaded: Any, tasks: list[Any], config: ScoringSettings) -> None:
    """The other checkout's exact scorer against this one's, alternating: PU and wall time."""
    from benchmarks.ab_scorer import load_other

    before = load_other(args.before, "scoring/scorer")
    times: dict[str, list[float]] = {"before": [], "now": []}
    tables: dict[str, ScoreTable] = {}
    for repeat in range(2):
        sides = [("before", before.score_tasks), ("now", score_tasks)]
        for side, run in sides if repeat % 2 == 0 else sides[::-1]:
            tables[side], seconds = timed(lambda: run(loaded, tasks, config, progress=False))
            times[side].append(seconds)
    worst = max(abs(tables["now"][t].pu - tables["before"][t].pu) for t in tables["now"].tasks)
    print(f"exact scorer, adaptive off, against {args.before}: max |PU now - PU before| = {worst:.2e}; "
          f"wall {sum(times['now']):.1f} s now vs {sum(times['before']):.1f} s before "
          f"(ratio {sum(times['now']) / sum(times['before']):.3f}, 2 runs each, alternating)", flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    loaded, tasks, device = setup(args)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [int(b) for b in args.budgets.split(",")]
    print(f"model {args.model} on {device}; {len(tasks)} NIV2 tasks, n={args.n}, k={args.k}, "
          f"max_new_tokens={args.max_new_tokens}; seeds {seeds}, budgets {budgets}; delta={args.delta}, "
          f"first_stage={args.first_stage}, stage_growth={args.stage_growth}", flush=True)
    score_tasks(loaded, [tasks[0].with_instances(tasks[0].instances[:2])], ScoringSettings(n=2, k=1, max_new_tokens=4),
                progress=False)  # warm-up
    print(f"{'seed':>4} {'b':>3} {'same':>5} {'jaccard':>7} {'tokens':>7} {'wall':>6} {'in':>3} {'out':>3} "
          f"{'stages':>6} {'exact s':>8} {'adapt s':>8}", flush=True)
    cases = []
    for seed in seeds:
        config = ScoringSettings(n=args.n, k=args.k, max_new_tokens=args.max_new_tokens,
                                 token_budget=args.token_budget, seed=seed)
        if args.before is not None and seed == seeds[0]:
            compare_before(args, loaded, tasks, config)
        exact, exact_s = timed(lambda: score_tasks(loaded, tasks, config, progress=False))
        adaptive_config = config.replace(adaptive=True, delta=args.delta, first_stage=args.first_stage,
                                         stage_growth=args.stage_growth)
        for budget in budgets:
            table, seconds = timed(lambda: score_adaptive(loaded, tasks, adaptive_config, budget, progress=False))
            mine, theirs = top(table, tasks, budget), top(exact, tasks, budget)
            case = {"same": mine == theirs, "jaccard": len(mine & theirs) / max(len(mine | theirs), 1),
                    "tokens": (forward_tokens(table), forward_tokens(exact)), "wall": (seconds, exact_s)}
            cases.append(case)
            meta = table.meta["adaptive"]
            print(f"{seed:>4} {budget:>3} {str(case['same']):>5} {case['jaccard']:>7.3f} "
                  f"{case['tokens'][0] / case['tokens'][1]:>7.3f} {seconds / exact_s:>6.3f} {meta['stopped_in']:>3} "
                  f"{meta['stopped_out']:>3} {meta['stages']:>6} {exact_s:>8.1f} {seconds:>8.1f}", flush=True)
    identical = sum(c["same"] for c in cases) / len(cases)
    jaccard = sum(c["jaccard"] for c in cases) / len(cases)
    tokens = sum(c["tokens"][0] for c in cases) / sum(c["tokens"][1] for c in cases)
    wall = sum(c["wall"][0] for c in cases) / sum(c["wall"][1] for c in cases)
    print(f"adaptive: identical={identical:.2f} jaccard={jaccard:.3f} tokens={tokens:.3f} wall={wall:.3f}")


if __name__ == "__main__":
    main()

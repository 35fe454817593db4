"""Adaptive scoring against exact scoring: the same top b, for how much less work, in one run.

For each seed (instances, perturbations and the adaptive pair order all follow it) the NIV2
subset's first ``--tasks`` train tasks are scored exactly **once**; that one table gives the
exact top b of every budget, and its forward tokens and wall time are the denominator of every
ratio of that seed. Then the tasks are scored adaptively for each budget b and each ``--delta``
(:mod:`activeit.scoring.adaptive`). Per case (seed, b, delta) it prints whether the adaptive
top b (the ``uncertainty`` strategy's pick) is the exact one, their Jaccard overlap, the tasks
stopped early (surely in + surely out), the share of the n x k pairs scored, the forward
tokens (prompt prefixes, suffixes and decoded tokens run through the model: exact counts), the
padded slots and forward passes those tokens ran in (what the wall time pays for beyond the
tokens: smaller stages pad more and fill fewer batches), and the wall time, each of adaptive
over exact scoring. A benchmark: it measures, it asserts nothing.
The last line is

    adaptive: identical=<share of cases> jaccard=<mean> tokens=<adaptive/exact> wall=<adaptive/exact>

over all cases of one delta (ratios pooled: summed adaptive over summed exact): the default
``delta`` when it is among ``--delta``, else the first; the line before it says which, and one
line per other delta comes before that.

``--before CHECKOUT`` first times the exact scorer of another checkout (say ``git worktree add
/tmp/head HEAD``) against this tree's (adaptive off), each run in a fresh process from its own
tree, alternating, on ``--before-tasks`` tasks of the first seed: whether PU is the same and
the ratio of wall times. With ``--before-adaptive`` both sides score adaptively instead (the
first budget and delta): the largest PU difference, and the padded slots, forward passes and
wall time of this tree over the other. ``--before-only`` stops after that.

    python benchmarks/adaptive.py --tasks 40 --n 10 --k 10 --max-new-tokens 8 --budgets 5,10 --seeds 0,1,2
    python benchmarks/adaptive.py --tasks 8 --max-new-tokens 8 --seeds 0 --budgets 2 --delta 0.1,0.5
    python benchmarks/adaptive.py --before /tmp/head --before-only --before-tasks 4
    python benchmarks/adaptive.py --before /tmp/head --before-adaptive --before-only --before-tasks 8 --budgets 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from activeit.config.settings import TOKEN_BUDGET, ScoringSettings  # noqa: E402
from activeit.models.builtin import DEFAULT_MODEL  # noqa: E402
from activeit.scoring.adaptive import kept_prefix_bytes, score_adaptive  # noqa: E402
from activeit.scoring.scorer import score_tasks  # noqa: E402
from activeit.scoring.scores import ScoreTable  # noqa: E402
from activeit.selection.strategies import select_tasks  # noqa: E402
from benchmarks.scoring import NIV2, setup, timed  # noqa: E402

DEFAULTS = ScoringSettings()
#: One exact (or, with a budget, adaptive) scoring in a fresh process, from the tree on its ``sys.path``: PU per task and seconds as JSON.
CHILD = """
import json, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["tree"])
import torch
from activeit.config.settings import ScoringSettings
from activeit.data.sources import load_pool
from activeit.models.loading import load_model
from activeit.scoring.adaptive import score_adaptive
from activeit.scoring.scorer import score_tasks
import activeit.scoring.scorer as scorer
assert scorer.__file__.startswith(spec["tree"]), scorer.__file__
if spec["threads"]:
    torch.set_num_threads(spec["threads"])
loaded = load_model(spec["model"])
tasks = list(load_pool("niv2", spec["niv2"], split_dir="available").train)[: spec["tasks"]]
config = ScoringSettings(**spec["config"])
score_tasks(loaded, [tasks[0].with_instances(tasks[0].instances[:2])], ScoringSettings(n=2, k=1, max_new_tokens=4),
            progress=False)
started = time.perf_counter()
if spec["budget"]:
    table = score_adaptive(loaded, tasks, config, spec["budget"], progress=False)
else:
    table = score_tasks(loaded, tasks, config, progress=False)
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "pu": {row.task: row.pu for row in table},
                  "pp": {row.task: row.pp for row in table}, "stats": table.meta["stats"]}))
"""


def _ints(text: str, flag: str, low: int) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"{flag} takes comma-separated whole numbers, got '{text}'") from None
    if not values or min(values) < low:
        raise SystemExit(f"{flag} takes comma-separated whole numbers of at least {low}, got '{text}'")
    return values


def _deltas(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(0 < v < 1 for v in values):
        raise SystemExit(f"--delta takes comma-separated numbers in (0, 1), got '{text}'")
    return values


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
    parser.add_argument("--delta", default=str(DEFAULTS.delta), help="comma-separated levels delta")
    parser.add_argument("--first-stage", type=int, default=DEFAULTS.first_stage)
    parser.add_argument("--stage-growth", type=float, default=DEFAULTS.stage_growth)
    parser.add_argument("--keep-prefixes-mb", type=float, default=None,
                        help="prefix KV caches kept between stages, MiB (0: every stage runs its prefixes again; "
                        "default: the setting's, half the free memory)")
    parser.add_argument("--token-budget", type=int, default=TOKEN_BUDGET)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--save-exact", type=Path, default=None, metavar="DIR",
                        help="also save each seed's exact table to DIR/seed<seed>.csv (with its detail), "
                        "for benchmarks/adaptive_replay.py")
    parser.add_argument("--before", type=Path, default=None, metavar="CHECKOUT",
                        help="also time that checkout's exact scorer against this tree's (fresh processes)")
    parser.add_argument("--before-tasks", type=int, default=4, help="tasks of the --before comparison")
    parser.add_argument("--before-repeats", type=int, default=2, help="runs of each side, alternating")
    parser.add_argument("--before-adaptive", action="store_true",
                        help="the --before comparison scores adaptively (the first budget and delta)")
    parser.add_argument("--before-only", action="store_true", help="only the --before comparison")
    args = parser.parse_args(argv)
    args.seed_list = _ints(args.seeds, "--seeds", 0)
    args.budget_list = _ints(args.budgets, "--budgets", 1)
    args.delta_list = _deltas(args.delta)
    for flag, value, low in (("--tasks", args.tasks, 1), ("--n", args.n, 1), ("--k", args.k, 1),
                             ("--max-new-tokens", args.max_new_tokens, 1), ("--first-stage", args.first_stage, 1),
                             ("--before-tasks", args.before_tasks, 1), ("--before-repeats", args.before_repeats, 1)):
        if value < low:
            raise SystemExit(f"{flag} must be at least {low}, got {value}")
    if args.stage_growth <= 1 or (args.keep_prefixes_mb or 0) < 0:
        raise SystemExit("--stage-growth must be above 1 and --keep-prefixes-mb not negative")
    if max(args.budget_list) >= args.tasks:
        raise SystemExit(f"every budget must be below --tasks ({args.tasks}), got {args.budgets}")
    if args.save_exact is not None and any((args.save_exact / f"seed{seed}.csv").exists() for seed in args.seed_list):
        raise SystemExit(f"--save-exact: {args.save_exact} already holds a seed's table; name another folder")
    if (args.before_only or args.before_adaptive) and args.before is None:
        raise SystemExit("--before-only and --before-adaptive need --before CHECKOUT")
    if args.before is not None and not (args.before / "activeit" / "scoring" / "scorer.py").is_file():
        raise SystemExit(f"--before: no activeit/scoring/scorer.py in {args.before}")
    if not args.niv2.is_dir():
        raise SystemExit(f"--niv2: no folder {args.niv2}")
    args.bf16, args.memory_probe = False, None  # for benchmarks.scoring.setup
    return args


def forward_tokens(table: ScoreTable) -> int:
    """Tokens the scoring ran through the model: prefixes, suffixes and decoded tokens."""
    stats = table.meta["stats"]
    return stats["decoding_decoded_tokens"] + sum(
        stats[f"{phase}_{kind}"] for phase in ("decoding", "forcing") for kind in ("prefix_tokens", "suffix_tokens")
    )


def padded_slots_and_passes(table: ScoreTable) -> tuple[int, int]:
    """Padded batch slots (prefix pools, rows, decoding steps) and forward passes of the scoring."""
    stats = table.meta["stats"]
    phases = ("decoding", "forcing")
    return (sum(stats[f"{phase}_padded_tokens"] for phase in phases),
            sum(stats[f"{phase}_forward_passes"] for phase in phases))


def top(table: ScoreTable, tasks: list[Any], budget: int) -> set[str]:
    return set(select_tasks("uncertainty", tasks, budget, scores=table).tasks)


def compare_before(args: argparse.Namespace, config: ScoringSettings) -> None:
    """The other checkout's scorer (exact, or adaptive with ``--before-adaptive``) against this
    tree's, each in fresh processes, alternating."""
    budget = args.budget_list[0] if args.before_adaptive else 0
    fields = {"n", "k", "max_new_tokens", "token_budget", "seed"}
    if budget:
        config = config.replace(adaptive=True, delta=args.delta_list[0], first_stage=args.first_stage,
                                stage_growth=args.stage_growth, keep_prefixes_mb=args.keep_prefixes_mb)
        fields |= {"adaptive", "delta", "first_stage", "stage_growth", "keep_prefixes_mb"}
    scorer = f"adaptive scorer (b={budget}, delta={config.delta:g})" if budget else "exact scorer"
    spec = {"model": args.model, "niv2": str(args.niv2), "tasks": args.before_tasks, "threads": args.threads,
            "budget": budget, "config": config.model_dump(include=fields)}
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "now": []}
    for repeat in range(args.before_repeats):
        sides = [("before", args.before.resolve()), ("now", ROOT)]
        for side, tree in sides if repeat % 2 == 0 else sides[::-1]:
            done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec | {"tree": str(tree)})], cwd=tree,
                                  capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"}, check=False)
            if done.returncode:
                raise SystemExit(f"the {scorer} of {tree} failed:\n{done.stderr[-2000:]}")
            runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {scorer} of {side} ({tree}), run {repeat + 1}: {runs[side][-1]['seconds']:.1f} s", flush=True)
    reference = runs["before"][0]
    worst = max(abs(run[key][task] - reference[key][task])
                for side in runs for run in runs[side] for key in ("pu", "pp") for task in reference["pu"])
    now, before = sum(r["seconds"] for r in runs["now"]), sum(r["seconds"] for r in runs["before"])
    wall = f"wall {now:.1f} s now vs {before:.1f} s before (ratio {now / before:.3f}, {args.before_repeats} runs " \
           "each, alternating, fresh processes)"
    head = (f"{scorer}, this tree against {args.before}: {args.before_tasks} tasks, n={config.n}, k={config.k}, "
            f"max_new_tokens={config.max_new_tokens}; max |PU or PP difference| = {worst:.2e}")
    if budget:
        counts = [sum(run["stats"][f"{phase}_{kind}"] for phase in ("decoding", "forcing"))
                  for run in (runs["now"][0], reference) for kind in ("padded_tokens", "forward_passes")]
        print(f"{head}; padded slots {counts[0] / counts[2]:.3f}x, forward passes {counts[1] / counts[3]:.3f}x "
              f"({counts[0]} vs {counts[2]}, {counts[1]} vs {counts[3]}); {wall}", flush=True)
        return
    same_work = all(run["stats"][key] == reference["stats"][key] for run in runs["now"]
                    for key in reference["stats"] if key.endswith(("_tokens", "_passes", "_positions")))
    print(f"{head.replace('exact scorer,', 'exact scorer, adaptive off,')} (identical: {worst == 0.0}); "
          f"same token counts: {same_work}; {wall}", flush=True)


def bad_input_exits_2(work: Callable[[], None]) -> None:
    """Run ``work``; bad input (a ``SystemExit`` with a message) is one ``error:`` line and exit status 2."""
    try:
        work()
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(f"error: {stop.code}", file=sys.stderr)
            raise SystemExit(2) from None
        raise


def main(argv: list[str] | None = None) -> None:
    """Bad input (or too small a pool): one ``error:`` line and exit status 2."""
    bad_input_exits_2(lambda: run(parse_args(argv)))


def run(args: argparse.Namespace) -> None:
    seeds, budgets, deltas = args.seed_list, args.budget_list, args.delta_list
    if args.before is not None:
        compare_before(args, ScoringSettings(n=args.n, k=args.k, max_new_tokens=args.max_new_tokens,
                                             token_budget=args.token_budget, seed=seeds[0]))
        if args.before_only:
            return
    loaded, tasks, device = setup(args)
    print(f"model {args.model} on {device}; {len(tasks)} NIV2 tasks, n={args.n}, k={args.k}, "
          f"max_new_tokens={args.max_new_tokens}; seeds {seeds}, budgets {budgets}, delta {deltas}; "
          f"first_stage={args.first_stage}, stage_growth={args.stage_growth}, kept prefix caches up to "
          f"{kept_prefix_bytes(ScoringSettings(keep_prefixes_mb=args.keep_prefixes_mb), device) / 2**20:.0f} MiB",
          flush=True)
    score_tasks(loaded, [tasks[0].with_instances(tasks[0].instances[:2])], ScoringSettings(n=2, k=1, max_new_tokens=4),
                progress=False)  # warm-up
    header = (f"{'seed':>4} {'b':>3} {'delta':>6} {'same':>5} {'jaccard':>7} {'stopped':>7} {'pairs':>6} "
              f"{'tokens':>7} {'padded':>7} {'passes':>7} {'wall':>6} {'stages':>6} {'exact s':>8} {'adapt s':>8}")
    print(header, flush=True)
    cases = []
    for seed in seeds:
        config = ScoringSettings(n=args.n, k=args.k, max_new_tokens=args.max_new_tokens,
                                 token_budget=args.token_budget, seed=seed)
        exact, exact_s = timed(lambda: score_tasks(loaded, tasks, config, progress=False))
        exact_tokens, (exact_padded, exact_passes) = forward_tokens(exact), padded_slots_and_passes(exact)
        print(f"{seed:>4} exact: {exact_s:.1f} s, {exact_tokens} forward tokens", flush=True)
        if args.save_exact is not None:
            exact.save(args.save_exact / f"seed{seed}.csv")
        for delta in deltas:
            adaptive_config = config.replace(adaptive=True, delta=delta, first_stage=args.first_stage,
                                             stage_growth=args.stage_growth, keep_prefixes_mb=args.keep_prefixes_mb)
            for budget in budgets:
                table, seconds = timed(lambda: score_adaptive(loaded, tasks, adaptive_config, budget, progress=False))
                mine, theirs = top(table, tasks, budget), top(exact, tasks, budget)
                meta = table.meta["adaptive"]
                case = {"delta": delta, "same": mine == theirs, "jaccard": len(mine & theirs) / len(mine | theirs),
                        "tokens": (forward_tokens(table), exact_tokens), "wall": (seconds, exact_s)}
                cases.append(case)
                stopped = f"{meta['stopped_in']}+{meta['stopped_out']}"
                pairs = meta["pairs"] / sum(r.n * r.k for r in exact)
                padded, passes = padded_slots_and_passes(table)
                print(f"{seed:>4} {budget:>3} {delta:>6g} {str(case['same']):>5} {case['jaccard']:>7.3f} "
                      f"{stopped:>7} {pairs:>6.3f} {case['tokens'][0] / exact_tokens:>7.3f} {padded / exact_padded:>7.3f} "
                      f"{passes / exact_passes:>7.3f} {seconds / exact_s:>6.3f} "
                      f"{meta['stages']:>6} {exact_s:>8.1f} {seconds:>8.1f}", flush=True)

    def summary(delta: float) -> str:
        mine = [c for c in cases if c["delta"] == delta]
        identical = sum(c["same"] for c in mine) / len(mine)
        jaccard = sum(c["jaccard"] for c in mine) / len(mine)
        tokens = sum(c["tokens"][0] for c in mine) / sum(c["tokens"][1] for c in mine)
        wall = sum(c["wall"][0] for c in mine) / sum(c["wall"][1] for c in mine)
        return f"adaptive: identical={identical:.2f} jaccard={jaccard:.3f} tokens={tokens:.3f} wall={wall:.3f}"

    last = DEFAULTS.delta if DEFAULTS.delta in deltas else deltas[0]
    for delta in deltas:
        if delta != last:
            print(f"delta={delta:g}: {summary(delta)}")
    print(f"last line: delta={last:g} ({'the default' if last == DEFAULTS.delta else 'the first given'}), "
          f"{len([c for c in cases if c['delta'] == last])} cases ({len(seeds)} seeds x {len(budgets)} budgets)")
    print(summary(last))


if __name__ == "__main__":
    main()

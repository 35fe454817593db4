"""Adaptive prompt uncertainty: score in stages, stop a task once it is surely in or out of the top b.

A round needs only *which* b tasks have the highest PU (docs/METHOD.md, "Adaptive PU"). A task's PU
is the mean of its ``N = n * k`` terms ``|p_ij - p_i0|``, each in ``[0, 1]``. Each task's pairs
``(i, j)`` are put in a seeded random order (a simple random sample without replacement of the
``N`` terms, however many are taken); stage 1 scores the first ``first_stage`` pairs of every
task, each later stage brings the tasks still undecided to ``stage_growth`` times as many, up
to all ``N``. After each stage every task's PU gets an interval ``[LB_t, UB_t]``, and task t is

* surely **in** when fewer than b other tasks have ``UB_u > LB_t``,
* surely **out** when at least b others have ``LB_u > UB_t``;

a decided task stops; the others go on. With stratified selection (``classification_ratio``)
the rule runs within the classification and the generation tasks, each with its share of b.

**The bound.** The interval is the hedged betting confidence *sequence* for sampling without
replacement of Waudby-Smith & Ramdas ("Confidence sequences for sampling without replacement",
NeurIPS 2020; "Estimating means of bounded random variables by betting", JRSS-B 2024), as the
``confseq`` package computes it (``betting.betting_cs`` with ``N``: the capital processes
``prod(1 ± lambda_i (x_i - mu_i(m)))`` against the mean ``mu_i(m)`` of the terms not yet drawn,
bets ``lambda_predmix_eb`` truncated at ``1/2 / mu_i`` and ``1/2 / (1 - mu_i)``, ``theta = 1/2``,
the maximum of the two). Why this one: it is valid at every stage at once (anytime-valid, so
looking after each stage and stopping costs nothing), it uses the finite population (it closes
on the exact PU when all N terms are in), and it adapts to the small variance of the terms
(PU is typically 0.01-0.2) where Hoeffding-Serfling or empirical-Bernstein-Serfling bounds with
range 1 stay far too wide at N = 100. ``confseq`` itself does not install (a source-only C++
build that needs Boost headers and CMake), so :func:`pu_interval` computes the same sequence
here, with numpy, its boundary found on a refined grid and rounded outwards. Each of the T
tasks' intervals has level ``delta / T`` (Bonferroni), so all hold together with probability
``1 - delta``, and then the selected top b equals exact scoring's.

Work is reused across stages: stage 1 decodes each sampled instance once (its greedy
prediction and ``p_i0``; PP needs them all, and decoding is about a tenth of the work), each
pair is teacher-forced once, and the prefix KV caches of a continuing task's perturbed prompts
are kept from one stage to the next (within ``keep_prefixes_mb``, by default half the
device's free memory; past it a prefix runs again), so each prompt prefix runs once, as in
exact scoring. The engine is the exact scorer's (:class:`activeit.scoring.scorer._Scorer`,
with pools that reuse the kept caches). A stage scores few rows a task, so it takes more tasks
at a time (as many rows as ``tasks_per_chunk`` tasks scored exactly), runs their wanted
prefixes first and pools kept prefixes by rows: its batches pad about as little as exact
scoring's. A task scored to the end has its exact PU (the same formula,
:func:`activeit.scoring.scores.summarize_task`); a stopped one the mean of its scored terms,
kept inside its interval, with ``k`` and ``pairs`` behind it, and its exact PP and perplexity.

Large pools: a stage scores its tasks a chunk at a time (at most the rows of
``tasks_per_chunk`` tasks scored exactly) and their instances, prompts and pair orders are
rebuilt for each chunk, so between stages a task costs a few numbers (its
predictions and likelihoods); the progress bar counts the tasks done and shows the stage, the
tasks decided and the tasks left. With a ``checkpoint`` file every chunk is journaled
(:class:`_Checkpoint`) and a run given an interrupted run's file resumes it to the same table.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from activeit.data.perturbations import PerturbedPrompts, perturb_tasks
from activeit.data.tasks import Instance, Task
from activeit.errors import ActiveITError
from activeit.models.batching import Ids
from activeit.models.loading import LoadedModel
from activeit.models.devices import free_memory, model_device
from activeit.config.settings import ScoringSettings
from activeit.scoring.engine.forcing import ForcedPair, ForcingStats, plan_pools, teacher_forced_nll
from activeit.scoring.engine.prefix_cache import PrefixPool, PrefixState, prefix_state
from activeit.scoring.scorer import _Scorer, check_tasks, table_meta
from activeit.scoring.scores import InstanceScore, ScoreTable, TaskScore, summarize_task

#: Truncation of the bets (confseq's ``trunc_scale``) and the weight of the upward bet (``theta``).
TRUNCATION = 0.5
THETA = 0.5
#: Points of each grid the interval's ends are searched on, and how many times a grid is refined.
GRID = 128
REFINEMENTS = 3


# ---- the bound (no torch) --------------------------------------------------------------------


def _bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """confseq's ``lambda_predmix_eb``: predictable plug-in bets ``sqrt(2 log(1/alpha) / (t log(1+t) var_{t-1}))``
    from a regularised running variance (prior mean 1/2, variance 1/4, one pseudo-observation)."""
    t = np.arange(1, len(x) + 1)
    mean = np.minimum((0.5 + np.cumsum(x)) / (t + 1), 1.0)
    variance = (0.25 + np.cumsum((x - mean) ** 2)) / (t + 1)
    previous = np.concatenate(([0.25], variance[:-1]))
    return np.sqrt(2 * math.log(1 / alpha) / (t * np.log1p(t) * previous))


def _log_capital(x: np.ndarray, population: int, m: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The largest log capital so far of the upward and downward bets against each mean ``m``."""
    drawn = np.concatenate(([0.0], np.cumsum(x)[:-1]))
    remaining = population - np.arange(len(x))
    mu = np.clip((population * m[:, None] - drawn) / remaining, 0.0, 1.0)  # mean of the terms not yet drawn
    bets = _bets(x, alpha * THETA)  # the same for both sides: theta = 1/2
    with np.errstate(divide="ignore"):
        up = np.minimum(bets, TRUNCATION / mu)
        down = np.minimum(bets, TRUNCATION / (1.0 - mu))
    gain = x - mu
    return (np.cumsum(np.log1p(up * gain), axis=1).max(axis=1),
            np.cumsum(np.log1p(-down * gain), axis=1).max(axis=1))


def pu_interval(terms: Sequence[float], population: int, alpha: float) -> tuple[float, float]:
    """An interval holding the mean of all ``population`` terms (each in [0, 1]) at level ``alpha``,
    from the first ``len(terms)`` of them in random order (see the module docstring); valid at
    every length at once, so it may be recomputed as terms come in. All terms in: the mean itself."""
    x = np.clip(np.asarray(terms, dtype=float), 0.0, 1.0)
    if not 0 < alpha < 1:
        raise ActiveITError(f"pu_interval: alpha must be in (0, 1), got {alpha}")
    if len(x) > population:
        raise ActiveITError(f"pu_interval: {len(x)} terms drawn from a population of {population}")
    total = float(x.sum())
    if len(x) == population:
        return total / population, total / population
    low, high = total / population, (total + population - len(x)) / population  # what the unseen terms allow
    if len(x) == 0:
        return low, high
    threshold = math.log(1 / (alpha * THETA))  # reject m once theta * capital >= 1 / alpha

    def end(side: int, outside: float, inside: float) -> float:
        """One end of the interval: ``outside`` is rejected, ``inside`` kept, and the capital of
        ``side`` (0: upward bets, 1: downward) falls monotonically from one to the other.
        Refined on grids; the last rejected point is returned (rounded outwards)."""
        for _ in range(REFINEMENTS):
            grid = np.linspace(outside, inside, GRID)
            kept = int(np.argmin(_log_capital(x, population, grid, alpha)[side] >= threshold))
            outside, inside = grid[max(kept - 1, 0)], grid[max(kept, 1)]
        return float(outside)

    (up_low, up_high), (down_low, down_high) = _log_capital(x, population, np.array([low, high]), alpha)
    lower = low if up_low < threshold else high if up_high >= threshold else end(0, low, high)
    upper = high if down_high < threshold else low if down_low >= threshold else end(1, high, low)
    return min(lower, upper), max(lower, upper)


def decide(intervals: Sequence[tuple[float, float]], budget: int) -> list[str]:
    """``"in"`` / ``"out"`` / ``""`` per task by the rule of docs/METHOD.md, "Adaptive PU" (see the module docstring)."""
    if not intervals:
        return []
    lows, highs = (np.array(side, dtype=float) for side in zip(*intervals))
    sorted_lows, sorted_highs = np.sort(lows), np.sort(highs)
    count = len(lows)
    # others with UB_u > LB_t (t itself counts when UB_t > LB_t), and others with LB_u > UB_t
    above_low = count - np.searchsorted(sorted_highs, lows, side="right") - (highs > lows)
    above_high = count - np.searchsorted(sorted_lows, highs, side="right")
    return ["in" if a < budget else "out" if b >= budget else "" for a, b in zip(above_low, above_high)]


# ---- the staged scorer -------------------------------------------------------------------------

#: Share of the scoring device's free memory that kept prefix KV caches may take when
#: ``keep_prefixes_mb`` is unset (past it, a prefix runs again).
KEEP_PREFIXES_SHARE = 0.5
#: What the first line of a checkpoint says it is, and the version of its records (2: stages chunked by rows).
CHECKPOINT_KIND, CHECKPOINT_VERSION = "activeit adaptive scoring checkpoint", 2


def kept_prefix_bytes(config: ScoringSettings, device: torch.device) -> int:
    """Bytes of prefix KV caches kept between stages: ``config.keep_prefixes_mb``, or when unset
    :data:`KEEP_PREFIXES_SHARE` of the memory free on ``device`` now (the caches live there)."""
    if config.keep_prefixes_mb is not None:
        return int(config.keep_prefixes_mb * 2**20)
    return int(KEEP_PREFIXES_SHARE * free_memory(device))


def pair_order(task: str, n: int, k: int, seed: int) -> list[tuple[int, int]]:
    """Task ``task``'s ``n * k`` pairs ``(i, j)`` in the random order seeded by (task name, seed)."""
    pairs = [(i, j) for i in range(n) for j in range(1, k + 1)]
    random.Random(f"adaptive:{task}:{seed}").shuffle(pairs)
    return pairs


def stage_sizes(first: int, growth: float, total: int) -> list[int]:
    """Pairs per task after each stage: ``first``, then ``growth`` times the last, up to ``total``;
    a stage that would leave fewer pairs than it adds takes them all (one stage less to run)."""
    sizes = [min(first, total)]
    while sizes[-1] < total:
        step = max(sizes[-1] + 1, math.ceil(sizes[-1] * growth))
        sizes.append(total if total - step < step - sizes[-1] else step)
    return sizes


@dataclass(eq=False)
class _Race:
    """What is known of one task being scored in stages. Compact (numbers only): its instances,
    prompts and pair order are rebuilt for each chunk it is scored in, so memory stays flat."""

    index: int  # the task's position in the pool
    n: int
    k: int
    scored: int = 0
    targets: list[Ids] = field(default_factory=list)  # i -> greedy prediction + EOS (empty: not decoded yet)
    nll0: list[float] = field(default_factory=list)  # i -> L_i0
    nll: np.ndarray = field(default_factory=lambda: np.empty(0))  # L of the pairs in their order (NaN: unscored)
    interval: tuple[float, float] = (0.0, 1.0)
    decided: str = ""

    def __post_init__(self) -> None:
        self.nll = np.full(self.n * self.k, np.nan)

    @property
    def pairs(self) -> int:
        return self.n * self.k

    @property
    def done(self) -> bool:
        return bool(self.decided) or self.scored == self.pairs

    def terms(self, order: Sequence[tuple[int, int]]) -> np.ndarray:
        """``|p_ij - p_i0|`` of the pairs scored, in their order."""
        p0 = np.exp(-np.asarray(self.nll0))[[i for i, _ in order[: self.scored]]]
        return np.abs(np.exp(-self.nll[: self.scored]) - p0)


@dataclass
class _Work:
    """A race in the chunk being scored, with what the chunk rebuilds for it."""

    race: _Race
    task: Task
    instances: tuple[Instance, ...]
    prompts: PerturbedPrompts | None  # None where only the table is built
    order: list[tuple[int, int]]


def _bytes(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Bytes held by one prefix's per-layer key and value caches."""
    return sum(t.numel() * t.element_size() for pair in layers for t in pair)


class _KeptPrefixes:
    """Prefix KV caches of continuing tasks, kept from one stage to the next within ``budget`` bytes.

    Without them each stage that continues a task runs its perturbed prompts' prefixes again
    (a pair order touches nearly every prompt j in every stage). A prefix forced in a stage is
    kept when its task goes on (``wanted``) and the budget has room, first come first kept (no
    eviction: what is kept is used); it is released when its task is done. Kept caches are the
    same numbers the prefix gave when it ran (fp32 rounding aside: it ran beside other prefixes).

    A stage forces few rows per prompt (a share of the n instances), so pools sized by prefix
    tokens, as exact scoring's, would hold few rows and batch them with more padding in more
    passes. Kept prefixes run nothing, so :meth:`plan` pools them by rows instead: up to what an
    exact pool of as wide prefixes holds (``token_budget`` prefix tokens, ``rows_per_prefix``
    rows each), gathered per batch straight from the kept caches (:class:`_KeptPool`).
    """

    def __init__(self, budget: int, rows_per_prefix: int) -> None:
        self.budget, self.used, self.peak, self.reused_tokens = budget, 0, 0, 0
        self.rows_per_prefix = rows_per_prefix
        self.kept: dict[Ids, tuple[int, list[tuple[torch.Tensor, torch.Tensor]]]] = {}  # prefix -> (race, layers)
        self.owned: dict[int, list[Ids]] = {}
        self.wanted: dict[Ids, int] = {}  # prefixes forced now whose task goes on -> its race

    def plan(self, prefixes: Sequence[Ids], rows: Mapping[Ids, int], token_budget: int) -> list[list[int]]:
        """Pools of ``prefixes`` (longest first): the ones to run as exact scoring pools them, the
        kept ones by rows (``rows x widest <= token_budget x rows_per_prefix``)."""
        missing = [number for number, prefix in enumerate(prefixes) if prefix not in self.kept]
        pools = [[missing[m] for m in pool] for pool in plan_pools([prefixes[m] for m in missing], rows, token_budget)]
        current: list[int] = []
        count = 0
        for number, prefix in enumerate(prefixes):
            if prefix not in self.kept:
                continue
            if current and (count + rows[prefix]) * len(prefixes[current[0]]) > token_budget * self.rows_per_prefix:
                pools.append(current)
                current, count = [], 0
            current.append(number)
            count += rows[prefix]
        return pools + [current] * bool(current)

    def pool(self, loaded: LoadedModel, prefixes: Sequence[Ids], device: torch.device) -> PrefixPool:
        """The kept caches of ``prefixes`` (all kept), or a pool that runs them (none kept) and keeps the wanted."""
        if all(prefix in self.kept for prefix in prefixes):
            self.reused_tokens += sum(map(len, prefixes))
            return _KeptPool(self, prefixes, device)
        pool = PrefixPool(loaded, prefixes, device)
        for number, prefix in enumerate(prefixes):
            if prefix in self.wanted:
                self.keep(prefix, [(k[number, :, : len(prefix)].clone(), v[number, :, : len(prefix)].clone())
                                   for k, v in pool.layers])
        return pool

    @torch.inference_mode()
    def run_wanted(self, loaded: LoadedModel, prefixes: Sequence[Ids], token_budget: int, stats: ForcingStats) -> None:
        """Run the wanted ``prefixes`` not kept yet, pooled as exact scoring pools them, and keep them
        (while the budget has room), so that their rows too are pooled by rows (:meth:`plan`)."""
        fresh = sorted({p for p in prefixes if p in self.wanted and p not in self.kept}, key=lambda p: (-len(p), p))
        device = model_device(loaded.model)
        for group in plan_pools(fresh, {}, token_budget):
            pool = self.pool(loaded, [fresh[number] for number in group], device)
            stats.prefix_tokens += pool.real_tokens
            stats.padded_tokens += pool.padded_tokens
            stats.forward_passes += 1

    def keep(self, prefix: Ids, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        size = _bytes(layers)
        race = self.wanted.get(prefix)
        if race is None or prefix in self.kept or self.used + size > self.budget:
            return
        self.kept[prefix] = (race, layers)
        self.owned.setdefault(race, []).append(prefix)
        self.used += size
        self.peak = max(self.peak, self.used)

    def release(self, race: int) -> None:
        for prefix in self.owned.pop(race, ()):
            self.used -= _bytes(self.kept.pop(prefix)[1])


class _KeptPool(PrefixPool):
    """Kept prefix caches as a pool: nothing runs; each batch gathers its rows' caches, right-padded."""

    def __init__(self, kept: _KeptPrefixes, prefixes: Sequence[Ids], device: torch.device) -> None:
        self.caches = [kept.kept[prefix][1] for prefix in prefixes]
        self.lengths = torch.tensor([len(p) for p in prefixes], device=device)
        self.device, self.real_tokens, self.padded_tokens = device, 0, 0

    def state(self, rows: Sequence[int]) -> PrefixState:
        def padded(layer: int, side: int) -> torch.Tensor:  # (rows, heads, width, dim) from (heads, length, dim) each
            return pad_sequence([self.caches[r][layer][side].transpose(0, 1) for r in rows],
                                batch_first=True).transpose(1, 2)

        layers = ((padded(layer, 0), padded(layer, 1)) for layer in range(len(self.caches[0])))
        return prefix_state(layers, self.lengths[torch.tensor(list(rows), device=self.device)])


def _flat(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested record as ``{"a.b": value}``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(found: Mapping[str, Any], wanted: Mapping[str, Any], shown: int = 3) -> str:
    """What differs between a journal's header and this run's, e.g. ``config.k: 4 in the file,
    2 now``; the fingerprint of tasks and prompts in words."""
    theirs, ours = _flat(found), _flat(wanted)
    keys = sorted(k for k in theirs.keys() | ours.keys() if theirs.get(k) != ours.get(k))
    words = [("other tasks or prompts (their fingerprint differs)" if key == "fingerprint"
              else f"{key}: {theirs.get(key, '(unset)')} in the file, {ours.get(key, '(unset)')} now")
             for key in keys[:shown]]
    return "; ".join(words) + (f"; and {len(keys) - shown} more" if len(keys) > shown else "")


class _Checkpoint:
    """An interrupted run's work, so that the next run with the same file resumes it.

    A journal: the first line describes the run (model, settings, budget, a fingerprint of the
    tasks and prompts), then one line per chunk scored (its stage, its place in the stage and,
    per task, the new predictions, L_i0 and L_ij). Each line is written whole and flushed to
    disk before the next chunk starts; a line cut short by the interruption is dropped on
    resume. Resuming replays the lines in the order the stages consume them (the chunks and
    the decisions are the same, so the table is the uninterrupted run's) and appends the rest.
    Memory stays flat: the file is read line by line as the stages reach them.
    """

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path, self.replayed = path, 0
        if not path.parent.is_dir():
            raise ActiveITError(f"adaptive scoring checkpoint '{path}': folder '{path.parent}' does not exist")
        end, records = 0, 0
        if path.exists() and path.stat().st_size:
            with path.open("rb") as file:
                first = file.readline()
                try:
                    found = json.loads(first)
                except ValueError:
                    found = None
                if not isinstance(found, dict) or found.get("kind") != CHECKPOINT_KIND or not first.endswith(b"\n"):
                    raise ActiveITError(f"'{path}' is not an adaptive scoring checkpoint; pass another path")
                if found != header:
                    raise ActiveITError(f"checkpoint '{path}' is of another run ({_differences(found, header)}); "
                                        "remove it, or pass another path, to start afresh")
                end = len(first)
                for line in file:
                    try:
                        json.loads(line)
                    except ValueError:
                        break
                    if not line.endswith(b"\n"):
                        break
                    end, records = end + len(line), records + 1
        with path.open("ab") as file:  # drop a line cut short
            file.truncate(end)
        self._pending = records
        self._reader = path.open("rb")
        self._reader.readline()
        self._out = path.open("ab")
        if end == 0:
            self._write(header)

    def next(self, stage: int, first: int) -> list[Any] | None:
        """The recorded chunk ``first`` of ``stage``, or None once every recorded chunk is replayed."""
        if not self._pending:
            return None
        self._pending -= 1
        record = json.loads(self._reader.readline())
        if (record["stage"], record["first"]) != (stage, first):
            raise ActiveITError(f"checkpoint '{self.path}' is out of step (chunk {record['first']} of stage "
                                f"{record['stage']} where chunk {first} of stage {stage} was due); remove it")
        self.replayed += 1
        if not self._pending:
            self._reader.close()
        return record["tasks"]

    def write(self, stage: int, first: int, entries: list[Any]) -> None:
        self._write({"stage": stage, "first": first, "tasks": entries})

    def _write(self, record: dict[str, Any]) -> None:
        self._out.write((json.dumps(record, separators=(",", ":")) + "\n").encode())
        self._out.flush()
        os.fsync(self._out.fileno())

    def close(self) -> None:
        self._reader.close()
        self._out.close()


def _fingerprint(loaded: LoadedModel, tasks: Sequence[Task], prompts: Mapping[str, PerturbedPrompts] | None) -> str:
    """A digest of the tasks (and the prompts given) and of the model's weights."""
    digest = hashlib.sha256()
    for task in tasks:
        digest.update(repr((task.name, task.definition, task.positive_examples, task.instances)).encode())
        if prompts is not None:
            digest.update(repr(prompts[task.name]).encode())
    with torch.no_grad():
        total = sum(float(p.float().sum()) for p in loaded.model.parameters())
    digest.update(f"{total:.12e}".encode())
    return digest.hexdigest()


def _works(
    races: Sequence[_Race], tasks: Sequence[Task], config: ScoringSettings,
    prompts: Mapping[str, PerturbedPrompts] | None, perturb: bool = True,
) -> list[_Work]:
    """The chunk's races with their instances, pair order and (unless not ``perturb``) prompts,
    perturbed here when not given."""
    chunk = [tasks[race.index] for race in races]
    made = prompts if prompts is not None or not perturb else perturb_tasks(
        chunk, config.perturbation, config.k, config.seed, drop_prob=config.drop_prob)
    return [_Work(race, task, task.sample_instances(config.n, config.seed), made[task.name] if made else None,
                  pair_order(task.name, race.n, race.k, config.seed)) for race, task in zip(races, chunk)]


def _force(scorer: _Scorer, pairs: list[ForcedPair], kept: _KeptPrefixes) -> list[float]:
    """:meth:`_Scorer.force` with the kept prefix caches."""
    cfg = scorer.config
    started = time.perf_counter()
    with scorer.autocast():
        kept.run_wanted(scorer.loaded, [pair.prefix for pair in pairs], cfg.token_budget, scorer.forcing)
        nll = teacher_forced_nll(scorer.loaded, pairs, cfg.token_budget, cfg.logit_budget, scorer.forcing,
                                 pools=kept.pool, plan=kept.plan)
    scorer.timing["teacher_forcing_s"] += time.perf_counter() - started
    return nll


def _advance(scorer: _Scorer, works: Sequence[_Work], size: int, kept: _KeptPrefixes) -> list[Any]:
    """Score each race's pairs up to ``size``: per race ``[index, predictions, L_i0, new L_ij]``
    (predictions and L_i0 only where the race had none). The first stage decodes every instance
    once (its prediction and L_i0: PP needs them all, and it is a tenth of the work), later ones
    force pairs only."""
    encode = scorer.formatter.encode

    def row(work: _Work, i: int, j: int) -> tuple[Ids, Ids]:
        variant = work.prompts.variants[j]  # type: ignore[union-attr]
        return scorer.split(encode(variant.definition, variant.examples, work.instances[i].input))

    # in the exact scorer's order (task, prompt, instance): a full first stage runs the same batches
    new = [(work, sorted(work.order[work.race.scored : size], key=lambda pair: (pair[1], pair[0]))) for work in works]
    originals = [(work, i) for work in works if not work.race.targets for i in range(work.race.n)]
    predictions, decoded = scorer.predict([row(work, i, 0) for work, i in originals]) if originals else ([], [])
    targets: dict[tuple[int, int], Ids] = {(w.race.index, i): t for (w, i), t in zip(originals, predictions)}
    nll0: dict[tuple[int, int], float] = {}
    forced = [(work, (i, j)) for work, pairs in new for i, j in pairs]
    if decoded is not None:
        nll0 = {(w.race.index, i): value for (w, i), value in zip(originals, decoded)}
    else:  # reduced precision: j = 0 is teacher-forced like the others
        forced = [(work, (i, 0)) for work, i in originals] + forced

    def target(work: _Work, i: int) -> Ids:
        return targets.get((work.race.index, i)) or work.race.targets[i]

    kept.wanted = {}
    rows = [(work, pair, row(work, *pair)) for work, pair in forced]
    for work, (_, j), (prefix, _) in rows:
        if j and size < work.race.pairs:  # its task goes on after this stage
            kept.wanted[prefix] = work.race.index
    values = _force(scorer, [ForcedPair(*ids, target(work, i)) for work, (i, _), ids in rows], kept) if rows else []
    kept.wanted = {}
    new_nll: dict[int, dict[tuple[int, int], float]] = {}
    for (work, (i, j)), value in zip(forced, values):
        if j == 0:
            nll0[work.race.index, i] = value
        else:
            new_nll.setdefault(work.race.index, {})[i, j] = value
    entries = []
    for work, pairs in new:
        index, first = work.race.index, not work.race.targets
        mine = new_nll.get(index, {})
        entries.append([
            index,
            [list(targets[index, i]) for i in range(work.race.n)] if first else None,
            [nll0[index, i] for i in range(work.race.n)] if first else None,
            [mine[pair] for pair in work.order[work.race.scored : size]],
        ])
    return entries


def _apply(races: Sequence[_Race], entries: list[Any], size: int) -> None:
    """Record a chunk's new predictions and likelihoods (scored now, or read from a checkpoint)."""
    for index, predictions, nll0, values in entries:
        race = races[index]
        if predictions is not None:
            race.targets, race.nll0 = [tuple(t) for t in predictions], [float(v) for v in nll0]
        end = min(size, race.pairs)
        if len(values) != end - race.scored or not race.targets:
            raise ActiveITError(f"adaptive scoring: the record of task {index} does not fit its stage (a checkpoint "
                                "of another run?)")
        race.nll[race.scored : end] = values
        race.scored = end


def _task_score(scorer: _Scorer, work: _Work) -> tuple[TaskScore, list[InstanceScore]]:
    """The race's row and the detail of its decoded instances (unscored p_ij NaN)."""
    race = work.race
    p = np.full((race.n, race.k), math.nan)
    for (i, j), value in zip(work.order[: race.scored], race.nll[: race.scored]):
        p[i, j - 1] = math.exp(-value)
    detail = [scorer.instance_score(work.task, work.instances[i], race.targets[i], race.nll0[i], p[i].tolist())
              for i in range(race.n)]
    row = summarize_task(work.task, detail)
    low, high = race.interval
    if race.scored < race.pairs:  # stopped early: the mean of its terms, inside its interval
        row = replace(row, pu=min(max(row.pu, low), high), pu_low=low, pu_high=high, decided=race.decided)
    return row, detail


def _tasks_per_chunk(config: ScoringSettings, rows: int) -> int:
    """Tasks scored together in a stage that scores ``rows`` rows a task: as many as give the rows of
    ``tasks_per_chunk`` tasks scored exactly (``n (k + 1)`` each), so that a stage's few rows per
    task still fill well-sorted batches (and memory stays what exact scoring's chunks take)."""
    return max(config.tasks_per_chunk, config.tasks_per_chunk * config.n * (config.k + 1) // max(rows, 1))


def _group_budgets(tasks: Sequence[Task], budget: int | Mapping[bool, int]) -> dict[Any, int]:
    """Budget per group of tasks: one group of all, or per ``is_classification`` (stratified selection)."""
    if isinstance(budget, Mapping):
        return {group: int(budget.get(group, 0)) for group in (True, False)}
    return {None: int(budget)}


def score_adaptive(
    loaded: LoadedModel,
    tasks: Sequence[Task],
    config: ScoringSettings,
    budget: int | Mapping[bool, int],
    prompts: Mapping[str, PerturbedPrompts] | None = None,
    progress: bool = True,
    *,
    checkpoint: str | Path | None = None,
) -> ScoreTable:
    """Score ``tasks`` in stages until every one is surely in or out of the top ``budget`` by PU,
    or scored in full (see the module docstring); rows in the order of ``tasks``.

    ``budget`` is the round's b, or ``{True: b_classification, False: b_generation}`` for a
    stratified selection (:func:`activeit.selection.strategies.stratified_budgets`). Each stage
    scores at most the rows of ``config.tasks_per_chunk`` tasks scored exactly at a time, their
    prompts built per chunk (when not given),
    so memory does not grow with the pool beyond a few numbers per task, the final table and at
    most :func:`kept_prefix_bytes` of prefix caches kept between stages. With
    ``checkpoint`` (a file) every chunk's work is journaled there, and a run given the file of
    an interrupted one with the same model, tasks, settings and budget resumes it, giving the
    same table. The table's ``meta["adaptive"]`` holds the settings, the stages, the tasks
    stopped and the work saved.
    """
    from tqdm.auto import tqdm

    tasks = list(tasks)
    check_tasks(tasks, prompts)
    budgets = _group_budgets(tasks, budget)
    if any(b < 0 for b in budgets.values()):
        raise ActiveITError(f"adaptive scoring: the budget must be non-negative, got {budget}")
    scorer = _Scorer(loaded, config)
    races = [_Race(index, len(task.sample_instances(config.n, config.seed)),
                   prompts[task.name].k if prompts is not None else config.k) for index, task in enumerate(tasks)]
    journal = None
    if checkpoint is not None:
        header = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, "model": loaded.name,
                  "config": config.model_dump(mode="json"),
                  "budget": budget if not isinstance(budget, Mapping) else {str(k): v for k, v in budget.items()},
                  "tasks": len(tasks), "fingerprint": _fingerprint(loaded, tasks, prompts)}
        journal = _Checkpoint(Path(checkpoint), json.loads(json.dumps(header)))
    kept = _KeptPrefixes(kept_prefix_bytes(config, model_device(loaded.model)), config.n)
    alpha = config.delta / max(len(tasks), 1)
    groups = {key: [r for r in races if key is None or tasks[r.index].is_classification == key] for key in budgets}
    started = time.perf_counter()
    sizes = stage_sizes(config.first_stage, config.stage_growth, max((r.pairs for r in races), default=0))
    stages = 0
    try:
        with tqdm(total=len(races), unit="task", desc="adaptive scoring", disable=not progress) as bar:
            for size in sizes:
                going = [r for r in races if not r.done]
                if not going:
                    break
                stages += 1
                # rows a task this stage: its new pairs, and in stage 1 the decoding of its instances
                rows = size - (sizes[stages - 2] if stages > 1 else 0) + (config.n if stages == 1 else 0)
                per_chunk = _tasks_per_chunk(config, rows)
                for first in range(0, len(going), per_chunk):
                    part = going[first : first + per_chunk]
                    entries = journal.next(stages, first) if journal is not None else None
                    if entries is None:
                        entries = _advance(scorer, _works(part, tasks, config, prompts), size, kept)
                        if journal is not None:
                            journal.write(stages, first, entries)
                    _apply(races, entries, size)
                    bar.update(sum(r.scored == r.pairs for r in part))
                    bar.set_postfix_str(f"stage {stages}/{len(sizes)} ({size} pairs): {first + len(part)}/"
                                        f"{len(going)} scored, decided {sum(bool(r.decided) for r in races)}, "
                                        f"left {sum(not r.done for r in races)}", refresh=False)
                for race in going:
                    order = pair_order(tasks[race.index].name, race.n, race.k, config.seed)
                    race.interval = pu_interval(race.terms(order), race.pairs, alpha)
                for key, members in groups.items():
                    for race, verdict in zip(members, decide([r.interval for r in members], budgets[key])):
                        if not race.done:  # a task scored in full keeps "" whatever its side
                            race.decided = verdict
                            bar.update(bool(verdict))
                for race in going:
                    if race.done:
                        kept.release(race.index)
                bar.set_postfix_str(f"stage {stages}/{len(sizes)} done: decided "
                                    f"{sum(bool(r.decided) for r in races)}, left {sum(not r.done for r in races)}")
    finally:
        if journal is not None:
            journal.close()
    rows: list[TaskScore] = []
    detail: list[InstanceScore] = []
    for first in range(0, len(races), config.tasks_per_chunk):
        for work in _works(races[first : first + config.tasks_per_chunk], tasks, config, prompts, perturb=False):
            row, instances = _task_score(scorer, work)
            rows.append(row)
            detail.extend(instances)
    decoded = sum(len(r.targets) for r in races)
    pairs = sum(r.scored for r in races)
    full = sum(r.n * (r.k + 1) for r in races)
    meta = table_meta(loaded, config, prompts or {}, scorer.stats() | {"wall_s": time.perf_counter() - started})
    meta["adaptive"] = {
        "budget": budget if not isinstance(budget, Mapping) else {str(k): v for k, v in budget.items()},
        "delta": config.delta,
        "first_stage": config.first_stage,
        "stage_growth": config.stage_growth,
        "stages": stages,
        "stopped_in": sum(r.decided == "in" for r in races),
        "stopped_out": sum(r.decided == "out" for r in races),
        "pairs": pairs,
        "decoded": decoded,
        # work in rows: a decoded original prompt or a teacher-forced pair (exact scoring: n (k + 1) per task)
        "work_saved": 1.0 - (decoded + pairs) / full if full else 0.0,
        # prefix tokens of kept caches (not run again) and the most bytes kept at once
        "prefix_tokens_reused": kept.reused_tokens,
        "kept_bytes_budget": kept.budget,
        "kept_bytes_peak": kept.peak,
        "resumed_chunks": journal.replayed if journal is not None else 0,
    }
    return ScoreTable(tuple(rows), tuple(detail), meta)

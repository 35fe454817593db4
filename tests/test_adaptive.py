"""Adaptive scoring: the bound, the in/out rule, and the staged scorer held to the exact one (tiny models)."""

from __future__ import annotations

import copy
import math
import os
import re

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from activeit.config.settings import ScoringSettings
from activeit.data.tasks import Task
from activeit.errors import ActiveITError
from activeit.models.devices import free_memory
from activeit.models.loading import LoadedModel, load_model
from activeit.scoring.adaptive import driver
from activeit.scoring.adaptive import decide, kept_prefix_bytes, pu_interval, score_adaptive, stage_sizes
from activeit.scoring.launch import score
from activeit.scoring.scorer import score_tasks
from activeit.scoring.scores import ScoreTable, TaskScore
from score_worker import handmade_tasks

pytestmark = pytest.mark.usefixtures("one_thread")

#: 6 instances x 6 perturbed prompts = 36 pairs per task.
SMALL = ScoringSettings(n=6, k=6, max_new_tokens=3, token_budget=700, tasks_per_chunk=4, chat=False)


# ---- the bound ----------------------------------------------------------------------------------


def test_interval_is_the_mean_once_every_term_is_in() -> None:
    terms = [0.1, 0.0, 0.7, 0.25]
    assert pu_interval(terms, 4, 0.01) == pytest.approx((0.2625, 0.2625))
    low, high = pu_interval(terms[:3], 4, 0.01)
    # the unseen term lies in [0, 1]: the interval never leaves what it allows
    assert 0.8 / 4 - 1e-12 <= low <= high <= 1.8 / 4 + 1e-12
    assert pu_interval([], 10, 0.1) == (0.0, 1.0)


def test_interval_matches_confseq_betting_cs() -> None:
    """Pinned to ``confseq.betting.betting_cs(x[:t], alpha=0.01, N=100, breaks=4000,
    running_intersection=True)`` (confseq 0.0.11, its last value; its grid step is 2.5e-4)."""
    rng = np.random.default_rng(0)
    x = rng.permutation(np.clip(rng.gamma(0.7, 0.05, 100), 0, 1))
    expected = {5: (0.0017, 0.7820), 20: (0.0112, 0.3775), 50: (0.0211, 0.1710), 99: (0.0447, 0.0547)}
    for t, (low, high) in expected.items():
        assert pu_interval(x[:t], 100, 0.01) == pytest.approx((low, high), abs=3e-4), t


def test_interval_covers_the_mean_at_every_stage() -> None:
    """Anytime-valid: over random orders, the running intervals miss the population mean in at
    most about alpha of the orders (here none of 200 at alpha = 0.1)."""
    rng = np.random.default_rng(1)
    population = np.clip(rng.gamma(0.5, 0.1, 60), 0, 1)
    misses = 0
    for _ in range(200):
        x = rng.permutation(population)
        misses += any(not low <= population.mean() <= high
                      for low, high in (pu_interval(x[:t], 60, 0.1) for t in (5, 10, 20, 40, 59)))
    assert misses <= 20
    widths = [np.subtract(*pu_interval(x[:t], 60, 0.1)[::-1]) for t in (5, 20, 59)]
    assert widths[0] > widths[1] > widths[2]


def test_in_out_rule_by_hand() -> None:
    # b = 1: t0 is above everyone's UB (surely in), t2 is below t0's LB (surely out), t1 overlaps t3
    intervals = [(0.5, 0.6), (0.1, 0.3), (0.0, 0.05), (0.2, 0.4)]
    assert decide(intervals, 1) == ["in", "out", "out", "out"]
    assert decide(intervals, 2) == ["in", "", "out", ""]
    assert decide(intervals, 4) == ["in"] * 4  # fewer than b others at all
    assert decide(intervals, 0) == ["out"] * 4
    assert decide([(0.2, 0.2), (0.2, 0.2)], 1) == ["in", "in"]  # a tie of exact scores: both "in", the name decides
    assert stage_sizes(10, 2.0, 100) == [10, 20, 40, 100]  # 80 would leave fewer than it adds
    assert stage_sizes(5, 1.1, 8) == [5, 6, 7, 8]
    assert stage_sizes(200, 2.0, 100) == [100]


# ---- the staged scorer ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return handmade_tasks(10)


@pytest.fixture(scope="module")
def sensitive() -> LoadedModel:
    """tiny-llama that answers EOS at once with a probability that swings with the prompt
    (a bias of ln V on the EOS logit, a large random EOS row): PUs from 0 to ~0.1 across tasks."""
    loaded = copy.copy(load_model("tiny-llama"))
    loaded.model = model = copy.deepcopy(loaded.model)
    head = model.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    biased.weight = head.weight
    eos = loaded.tokenizer.eos_token_id
    with torch.no_grad():
        biased.bias.zero_()
        biased.bias[eos] = math.log(head.out_features)
        head.weight[eos] = torch.randn(head.in_features, generator=torch.Generator().manual_seed(0)) * 10 / 8
    model.lm_head = biased
    return loaded


def _same_scores(adaptive: ScoreTable, exact: ScoreTable, tolerance: float = 0.0) -> None:
    """The same rows, scores within ``tolerance`` (other batches round fp32 otherwise, ~1e-8)."""
    assert adaptive.tasks == exact.tasks
    for a, e in zip(adaptive, exact):
        assert (a.pu, a.pp, a.perplexity) == pytest.approx((e.pu, e.pp, e.perplexity), rel=0, abs=tolerance)
        assert (a.n, a.k, a.pairs, a.decided) == (e.n, e.k, e.pairs, "")
        assert a.pu_low == a.pu_high == a.pu
    assert [s.instance_id for s in adaptive.instances] == [s.instance_id for s in exact.instances]


@pytest.mark.parametrize("seed", [0, 1])
def test_delta_to_zero_and_a_full_first_stage_are_exact(sensitive: LoadedModel, tasks: list[Task], seed: int) -> None:
    config = SMALL.replace(seed=seed, adaptive=True)
    exact = score_tasks(sensitive, tasks, config, progress=False)
    # delta -> 0: no interval ever excludes anything, every task goes on to all its pairs
    _same_scores(score_adaptive(sensitive, tasks, config.replace(delta=1e-12, first_stage=5), 2, progress=False),
                 exact, tolerance=1e-6)
    # a full first stage: everything is scored in stage 1, in the exact scorer's batches: the same numbers
    full = score_adaptive(sensitive, tasks, config.replace(first_stage=36), 2, progress=False)
    _same_scores(full, exact)
    assert full.meta["adaptive"]["stages"] == 1 and full.meta["adaptive"]["work_saved"] == 0.0


def test_a_task_stopped_early_has_an_interval_holding_its_exact_pu(sensitive: LoadedModel, tasks: list[Task]) -> None:
    stopped = 0
    for seed in range(4):
        config = SMALL.replace(seed=seed, adaptive=True, delta=0.5, first_stage=9, stage_growth=1.25)  # 9 .. 30, 36
        exact = score_tasks(sensitive, tasks, config, progress=False)
        for budget in (1, 10, 0):  # 10 and 0: every task is surely in / out after the first stage
            table = score_adaptive(sensitive, tasks, config, budget, progress=False)
            for row, truth in zip(table, exact):
                assert row.pu_low - 1e-6 <= truth.pu <= row.pu_high + 1e-6, (seed, budget, row)  # fp32 batches
                assert row.pu_low <= row.pu <= row.pu_high
                if row.stopped_early:
                    stopped += budget == 1
                    assert row.pairs < 36 and row.n <= 6 and row.k <= 6
                    assert sum(not math.isnan(p) for s in table.instances_of(row.task) for p in s.p) == row.pairs
            top = {r.task for r in sorted(table, key=lambda r: (-r.pu, r.task))[:budget]}
            assert top == {r.task for r in sorted(exact, key=lambda r: (-r.pu, r.task))[:budget]}
            meta = table.meta["adaptive"]
            assert meta["stopped_in"] + meta["stopped_out"] == sum(r.stopped_early for r in table)
            assert 0.0 <= meta["work_saved"] < 1.0
    assert stopped >= 1  # b = 1 stops some tasks early on this model (seed 1: five out at 30 of 36 pairs)


def test_the_replay_benchmark_repeats_the_live_race(sensitive: LoadedModel, tasks: list[Task], tmp_path) -> None:
    """benchmarks/adaptive_replay.py's race on a saved exact table's terms, in adaptive scoring's
    pair order of the same seed, stops the same tasks after the same pairs, with the same PU."""
    from benchmarks.adaptive_replay import race, task_terms

    config = SMALL.replace(seed=1, adaptive=True, delta=0.5, first_stage=9, stage_growth=1.25)
    score_tasks(sensitive, tasks, config, progress=False).save(tmp_path / "exact.csv")
    terms = task_terms(ScoreTable.load(tmp_path / "exact.csv"))
    ordered = [np.array([terms[task.name][i, j - 1] for i, j in driver.pair_order(task.name, 6, 6, config.seed)])
               for task in tasks]
    live = score_adaptive(sensitive, tasks, config, 1, progress=False)
    scored, decided, estimates = race(ordered, 1, config.delta, config.first_stage, config.stage_growth)
    assert scored == [row.pairs for row in live]
    assert decided == [row.decided for row in live] and any(decided)
    assert estimates == pytest.approx([row.pu for row in live], rel=0, abs=1e-6)


def test_stages_reuse_decoding_pairs_and_prefixes(sensitive: LoadedModel, tasks: list[Task]) -> None:
    """However many stages, each instance is decoded once and each pair forced once; with the
    prefix caches of continuing tasks kept, each prompt prefix runs once too (exact scoring's
    tokens, the same scores); without (a budget of 0), once per stage that needs it."""
    config = SMALL.replace(adaptive=True, delta=1e-12, first_stage=4, stage_growth=2.0)
    exact = score_tasks(sensitive, tasks, config, progress=False)
    table = score_adaptive(sensitive, tasks, config, 3, progress=False)
    rerun = score_adaptive(sensitive, tasks, config.replace(keep_prefixes_mb=0), 3, progress=False)
    stats = table.meta["stats"]
    for key in ("decoding_suffix_tokens", "decoding_decoded_tokens", "forcing_suffix_tokens", "forcing_logit_positions"):
        assert stats[key] == rerun.meta["stats"][key] == exact.meta["stats"][key], key
    assert stats["forcing_prefix_tokens"] == exact.meta["stats"]["forcing_prefix_tokens"]
    assert rerun.meta["stats"]["forcing_prefix_tokens"] > exact.meta["stats"]["forcing_prefix_tokens"]
    assert table.meta["adaptive"]["prefix_tokens_reused"] > 0 and table.meta["adaptive"]["kept_bytes_peak"] > 0
    assert rerun.meta["adaptive"]["prefix_tokens_reused"] == 0
    # and its few rows a task batch about as well as exact scoring's: stages score more tasks at a
    # time and kept prefixes pool by rows (before that: 1.31x the passes, 1.04x the padded slots)
    assert stats["forcing_forward_passes"] <= 1.1 * exact.meta["stats"]["forcing_forward_passes"]
    assert stats["forcing_padded_tokens"] <= 1.03 * exact.meta["stats"]["forcing_padded_tokens"]
    _same_scores(table, exact, tolerance=1e-6)
    _same_scores(rerun, exact, tolerance=1e-6)
    assert table.meta["adaptive"]["stages"] == len(stage_sizes(4, 2.0, 36))
    assert table.meta["adaptive"]["decoded"] == 60 and table.meta["adaptive"]["pairs"] == 360
    # a budget that holds some prefixes only: fewer reruns, the same scores
    some = score_adaptive(sensitive, tasks, config.replace(keep_prefixes_mb=table.meta["adaptive"]["kept_bytes_peak"]
                                                            / 3 / 2**20), 3, progress=False)
    assert (exact.meta["stats"]["forcing_prefix_tokens"] < some.meta["stats"]["forcing_prefix_tokens"]
            < rerun.meta["stats"]["forcing_prefix_tokens"])
    _same_scores(some, exact, tolerance=1e-6)


def test_kept_prefix_caches_take_the_setting_or_half_the_free_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    free = free_memory(cpu)
    assert 0 < free <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert kept_prefix_bytes(SMALL.replace(keep_prefixes_mb=1.5), cpu) == 3 * 2**19
    assert kept_prefix_bytes(SMALL.replace(keep_prefixes_mb=0), cpu) == 0
    monkeypatch.setattr(driver, "free_memory", lambda device: 6 * 2**30)
    assert kept_prefix_bytes(SMALL, cpu) == 3 * 2**30
    with pytest.raises(ValidationError):
        SMALL.replace(keep_prefixes_mb=-1)


def test_stratified_budgets_race_within_each_group(sensitive: LoadedModel, tasks: list[Task]) -> None:
    config = SMALL.replace(adaptive=True, delta=0.5, first_stage=6)
    table = score_adaptive(sensitive, tasks, config, {True: 5, False: 0}, progress=False)
    # every classification task is in (5 of 5), every generation task out (0)
    for row in table:
        if row.stopped_early:
            assert row.decided == ("in" if row.is_classification else "out")
    assert sum(r.stopped_early for r in table) == len(tasks)


def test_adaptive_off_leaves_the_exact_scorer_alone(sensitive: LoadedModel, tasks: list[Task]) -> None:
    """Off (the default), the dispatch scores exactly, whatever the adaptive settings say and
    whatever budget is passed; on, it needs a budget and one process."""
    assert ScoringSettings().adaptive is False
    exact = score_tasks(sensitive, tasks[:3], SMALL, progress=False)
    tweaked = score_tasks(sensitive, tasks[:3], SMALL.replace(delta=0.9, first_stage=1, stage_growth=5.0),
                          progress=False)
    assert [(r.pu, r.pp, r.perplexity) for r in tweaked] == [(r.pu, r.pp, r.perplexity) for r in exact]
    assert "adaptive" not in exact.meta
    assert all((r.pairs, r.pu_low, r.pu_high, r.decided) == (36, r.pu, r.pu, "") for r in exact)
    dispatched = score("tiny-llama", tasks[:2], SMALL, budget=1, progress=False)
    assert "adaptive" not in dispatched.meta and all(not r.stopped_early for r in dispatched)
    with pytest.raises(ActiveITError, match="needs the round's budget"):
        score("tiny-llama", tasks[:2], SMALL.replace(adaptive=True), progress=False)
    with pytest.raises(ValueError, match="one process"):
        SMALL.replace(adaptive=True, num_processes=2)


def test_adaptive_rows_save_and_load_and_older_rows_still_load(
    sensitive: LoadedModel, tasks: list[Task], tmp_path
) -> None:
    table = score_adaptive(sensitive, tasks, SMALL.replace(adaptive=True, first_stage=6, delta=0.5), 10,
                           progress=False)
    assert any(r.stopped_early for r in table)
    for suffix in (".csv", ".parquet"):
        back = ScoreTable.load(table.save(tmp_path / f"scores{suffix}"))
        assert back.rows == table.rows
        np.testing.assert_array_equal([s.p for s in back.instances], [s.p for s in table.instances])  # NaN: unscored
    assert ScoreTable.from_dict(table.to_dict()).rows == table.rows
    # a row as written before adaptive scoring: no pairs, interval or decision
    old = {"task": "t", "pu": 0.1, "pp": 0.5, "perplexity": 2.0, "n": 10, "k": 10,
           "is_classification": False, "category": "c"}
    row = ScoreTable.from_dict({"rows": [old]}).rows[0]
    assert (row.pairs, row.pu_low, row.pu_high, row.decided) == (100, 0.1, 0.1, "")
    table.to_frame().drop(columns=["pairs", "pu_low", "pu_high", "decided"]).to_csv(tmp_path / "old.csv", index=False)
    assert all(not r.stopped_early and r.pairs == r.n * r.k for r in ScoreTable.load(tmp_path / "old.csv"))
    with pytest.raises(ActiveITError, match="decided"):
        TaskScore("t", 0.1, 0.5, 2.0, 10, 10, False, "c", decided="maybe")


def test_task_map_and_mlflow_metrics_show_adaptive_rows(sensitive: LoadedModel, tasks: list[Task], tmp_path) -> None:
    from activeit.evaluation import EvalReport
    from activeit.selection.taskmap import plot_task_map
    from tracking.writer import round_metrics

    table = score_adaptive(sensitive, tasks, SMALL.replace(adaptive=True, first_stage=6, delta=0.5), 10,
                           progress=False)
    assert all(r.stopped_early for r in table)
    png = plot_task_map(table, tmp_path / "map.png", selected=table.tasks[:2])
    assert png.read_bytes().startswith(b"\x89PNG")
    report = EvalReport.from_predictions([{"task": "t", "id": "1", "category": "c", "is_classification": False,
                                           "prediction": "a", "references": ["a"], "rougeL": 1.0, "exact_match": 1.0}])
    metrics = round_metrics(report, 3, {}, 1.5, table)
    assert metrics["scoring_work_saved"] == pytest.approx(table.meta["adaptive"]["work_saved"]) and metrics["scoring_work_saved"] > 0.5
    assert "scoring_work_saved" not in round_metrics(report, 3, {}, 1.5, score_tasks(sensitive, tasks[:1], SMALL, progress=False))


# ---- large pools: flat memory, progress, checkpoint and resume ------------------------------------

#: 9 .. 36 pairs in 7 stages, five tasks stopped out at b = 1 on seed 1 (see the interval test above); 3 chunks per stage.
STAGED = SMALL.replace(adaptive=True, delta=0.5, first_stage=9, stage_growth=1.25, seed=1)


def _interrupted(monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    """Make the staged scorer stop (as Ctrl-C would) when it starts its chunk number ``after`` + 1."""
    real, calls = driver._advance, []

    def advance(*args, **kwargs):
        if len(calls) == after:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(driver, "_advance", advance)


def _same_table(resumed: ScoreTable, whole: ScoreTable, tolerance: float = 0.0) -> None:
    assert [(r.task, r.n, r.k, r.pairs, r.decided) for r in resumed] == [(r.task, r.n, r.k, r.pairs, r.decided)
                                                                          for r in whole]
    for a, b in zip(resumed, whole):
        assert (a.pu, a.pp, a.pu_low, a.pu_high) == pytest.approx((b.pu, b.pp, b.pu_low, b.pu_high), rel=0,
                                                                  abs=tolerance)
    np.testing.assert_allclose([s.p for s in resumed.instances], [s.p for s in whole.instances], rtol=0,
                               atol=tolerance)  # NaN where unscored, in both


@pytest.mark.parametrize("keep", [0, None])
def test_an_interrupted_run_resumes_to_the_same_table(
    sensitive: LoadedModel, tasks: list[Task], tmp_path, monkeypatch: pytest.MonkeyPatch, keep: int | None
) -> None:
    """Interrupted in stage 2 (after 4 of its chunks), then run again with the same checkpoint:
    the 4 chunks are read back, the rest scored, and the table is the uninterrupted run's (to
    the bit without kept prefix caches; within fp32 rounding with them, since the resumed run
    recomputes the prefixes the interrupted one had kept)."""
    config = STAGED if keep is None else STAGED.replace(keep_prefixes_mb=keep)
    whole = score_adaptive(sensitive, tasks, config, 1, progress=False)
    assert whole.meta["adaptive"]["stages"] >= 3 and whole.meta["adaptive"]["stopped_out"] >= 1
    path = tmp_path / "scores.checkpoint"
    with monkeypatch.context() as patch:
        _interrupted(patch, after=4)
        with pytest.raises(KeyboardInterrupt):
            score_adaptive(sensitive, tasks, config, 1, progress=False, checkpoint=path)
    assert len(path.read_text().splitlines()) == 1 + 4  # the header and the chunks done
    with path.open("a") as file:
        file.write('{"stage": 2, "first": 4, "tas')  # a line cut short by the interruption
    resumed = score_adaptive(sensitive, tasks, config, 1, progress=False, checkpoint=path)
    assert resumed.meta["adaptive"]["resumed_chunks"] == 4
    _same_table(resumed, whole, tolerance=0.0 if keep == 0 else 1e-6)
    varies = ("resumed_chunks", "prefix_tokens_reused", "kept_bytes_peak", "kept_bytes_budget")  # free memory moves
    assert {k: v for k, v in resumed.meta["adaptive"].items() if k not in varies} == \
        {k: v for k, v in whole.meta["adaptive"].items() if k not in varies}
    # the journal is now complete: a third run reads everything back and scores nothing
    again = score_adaptive(sensitive, tasks, config, 1, progress=False, checkpoint=path)
    _same_table(again, resumed)
    assert again.meta["stats"]["forcing_forward_passes"] == 0 and again.meta["stats"]["decoding_forward_passes"] == 0


def test_a_checkpoint_of_another_run_is_refused(sensitive: LoadedModel, tasks: list[Task], tmp_path) -> None:
    path = tmp_path / "scores.checkpoint"
    score_adaptive(sensitive, tasks[:4], STAGED, 1, progress=False, checkpoint=path)
    for budget, config, subset, what in [
        (2, STAGED, tasks[:4], "budget: 1 in the file, 2 now"),
        (1, STAGED.replace(seed=2), tasks[:4], f"config.seed: {STAGED.seed} in the file, 2 now"),
        (1, STAGED, tasks[1:5], "other tasks or prompts (their fingerprint differs)"),
    ]:  # each names what differs, with both values
        with pytest.raises(ActiveITError, match=re.escape(f"is of another run ({what}")):
            score_adaptive(sensitive, subset, config, budget, progress=False, checkpoint=path)
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    with pytest.raises(ActiveITError, match="not an adaptive scoring checkpoint"):
        score_adaptive(sensitive, tasks[:4], STAGED, 1, progress=False, checkpoint=other)
    assert other.read_text() == "my notes\n"
    with pytest.raises(ActiveITError, match="does not exist"):
        score_adaptive(sensitive, tasks[:4], STAGED, 1, progress=False, checkpoint=tmp_path / "no" / "file")


def test_prompts_are_built_per_chunk_and_the_bar_counts_decided_and_left(
    sensitive: LoadedModel, tasks: list[Task], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Memory stays flat: a stage takes its tasks a chunk at a time, never more rows at once (new
    pairs and decodes) than ``tasks_per_chunk`` tasks scored exactly, and builds the perturbed
    prompts of that chunk only; the progress bar says how many tasks are decided and left."""
    config = STAGED.replace(tasks_per_chunk=2)
    sizes, chunks = [], []
    real, real_advance = driver.perturb_tasks, driver._advance

    def perturb(chunk, *args, **kwargs):
        sizes.append(len(chunk))
        return real(chunk, *args, **kwargs)

    def advance(scorer, works, size, kept):
        chunks.append((len(works), sum(min(size, w.race.pairs) - w.race.scored + (0 if w.race.targets else w.race.n)
                                       for w in works)))
        return real_advance(scorer, works, size, kept)

    monkeypatch.setattr(driver, "perturb_tasks", perturb)
    monkeypatch.setattr(driver, "_advance", advance)
    table = score_adaptive(sensitive, tasks, config, 1, progress=True)
    stages = table.meta["adaptive"]["stages"]
    assert max(rows for _, rows in chunks) <= config.tasks_per_chunk * config.n * (config.k + 1)
    assert len(chunks) > stages and sizes == [count for count, _ in chunks]  # stage 1 took several chunks
    assert max(count for count, _ in chunks) > config.tasks_per_chunk  # stages of few rows a task take more tasks
    _same_table(table, score_adaptive(sensitive, tasks, config, 1, progress=False,
                                      prompts=real(tasks, config.perturbation, config.k, config.seed,
                                                   drop_prob=config.drop_prob)), tolerance=1e-6)
    err = capsys.readouterr().err
    decided = sum(r.stopped_early for r in table)
    assert f"decided {decided}, left 0" in err and "left" in err and "stage 1/" in err


def test_score_command_resumes_from_its_checkpoint(tmp_path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import activeit.cli
    from activeit.cli import main

    monkeypatch.setattr(activeit.cli, "COMMANDS", ("score",))  # this command's parser only
    fast = ["score", "--source", "builtin", "--model", "tiny-llama", "--n", "2", "--k", "3", "--max-new-tokens", "3",
            "--max-tasks", "4", "--max-instances", "100", "--no-progress",
            "--adaptive", "--first-stage", "2", "--budget", "2",
            "--tasks-per-chunk", "2"]
    path = tmp_path / "run.checkpoint"
    with monkeypatch.context() as patch:
        _interrupted(patch, after=1)
        assert main([*fast, "--out", str(tmp_path / "a"), "--checkpoint", str(path)]) == 130
    assert main([*fast, "--out", str(tmp_path / "a"), "--checkpoint", str(path)]) == 0
    assert main([*fast, "--out", str(tmp_path / "b")]) == 0
    assert ScoreTable.load(tmp_path / "a" / "scores.csv").rows == ScoreTable.load(tmp_path / "b" / "scores.csv").rows
    capsys.readouterr()
    assert main([*fast[:-7], "--out", str(tmp_path / "c"), "--checkpoint", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: --checkpoint is for --adaptive")


def test_the_benchmark_refuses_a_before_comparison_without_a_checkout(capsys: pytest.CaptureFixture[str]) -> None:
    """benchmarks/adaptive.py: ``--before-adaptive`` without ``--before`` is one error line and exit 2,
    before any model loads."""
    from benchmarks.adaptive import main

    with pytest.raises(SystemExit) as stop:
        main(["--before-adaptive", "--tasks", "3", "--budgets", "1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == "error: --before-only and --before-adaptive need --before CHECKOUT"

"""Scoring: the formulas by hand, the fast path against plain computations, the table, 2 processes."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from activeit.errors import ActiveITError
from activeit.scoring.engine.generation import greedy_generate
from activeit.scoring.engine.decoding import greedy_decode_scored
from activeit.models.loading import load_model
from activeit.data.perturbations import perturb_tasks
from activeit.data.prompts import PromptFormatter
from activeit.scoring.engine.forcing import ForcedPair, teacher_forced_nll
from activeit.scoring.scores import InstanceScore, ScoreTable, TaskScore, summarize_task, task_metrics
from activeit.scoring.scorer import score_tasks
from activeit.scoring.reference import forced_nll, reference_scores
from activeit.config.settings import ScoringSettings
from activeit.data.tasks import Task
from activeit.models.processes import free_port
from score_worker import WORKER_CONFIG, counting_tokens, handmade_tasks

ROOT = Path(__file__).resolve().parents[1]
SMALL = ScoringSettings(n=3, k=3, max_new_tokens=6, token_budget=700, tasks_per_chunk=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def llama():
    return load_model("tiny-llama")


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    return handmade_tasks()


# ---- the formulas, by hand ---------------------------------------------------------------


def test_task_metrics_by_hand() -> None:
    ln2, ln4 = math.log(2), math.log(4)
    # p = [[.5, .25, .5], [1, .5, 1]]: |p_ij - p_i0| = .25, 0, .5, 0
    pu, pp, perplexity = task_metrics([[ln2, ln4, ln2], [0.0, ln2, 0.0]])
    assert pu == pytest.approx(0.75 / 4)
    assert pp == pytest.approx(0.75)
    assert perplexity == pytest.approx((2 + 1) / 2)


def test_task_metrics_needs_perturbed_prompts() -> None:
    with pytest.raises(ActiveITError):
        task_metrics([[0.1]])
    with pytest.raises(ActiveITError):
        task_metrics([])


def test_summarize_task_by_hand(tasks: list[Task]) -> None:
    detail = [
        InstanceScore("hand_0", "a", "x", 2, math.log(2), 0.5, (0.25, 0.5, 0.75)),
        InstanceScore("hand_0", "b", "y", 3, math.log(5), 0.2, (0.2, 0.1, 0.3)),
    ]
    row = summarize_task(tasks[0], detail)
    assert row.pu == pytest.approx((0.25 + 0 + 0.25 + 0 + 0.1 + 0.1) / 6)
    assert row.pp == pytest.approx(0.35)
    assert row.perplexity == pytest.approx((2 + 5) / 2)
    assert (row.n, row.k, row.is_classification, row.category) == (2, 3, True, "Handmade")


def test_uniform_model_gives_hand_computed_scores(tasks: list[Task]) -> None:
    """All-zero logits: every token has probability 1/V, so PU = 0, PP = 1/V, perplexity = V."""
    loaded = load_model("tiny-gpt2")
    loaded = copy.copy(loaded)
    loaded.model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        loaded.model.get_output_embeddings().weight.zero_()
    vocab = loaded.model.config.vocab_size
    table = score_tasks(loaded, tasks[:2], SMALL, progress=False)
    for row in table:
        assert row.pu == pytest.approx(0.0, abs=1e-12)
        assert row.pp == pytest.approx(1 / vocab, rel=1e-5)
        assert row.perplexity == pytest.approx(vocab, rel=1e-5)
    # Token 0 wins every greedy step (ties go to the first id), never EOS: max tokens + EOS.
    assert {s.prediction_tokens for s in table.instances} == {SMALL.max_new_tokens + 1}


# ---- the fast path is exact ---------------------------------------------------------------


def forced_pairs(loaded, tasks: list[Task], max_source_length: int = 1024) -> list[ForcedPair]:
    """Pairs over every (task, prompt, instance) with targets of varied length ending in EOS."""
    formatter = PromptFormatter.for_model(loaded, max_source_length)
    prompts = perturb_tasks(tasks, k=3, seed=1)
    eos, pairs = loaded.tokenizer.eos_token_id, []
    for t, task in enumerate(tasks):
        for variant in prompts[task.name].variants:
            for i, instance in enumerate(task.instances[:4]):
                encoded = formatter.encode(variant.definition, variant.examples, instance.input)
                target = (*range(100 + t, 100 + t + (i * 3 + t) % 7), eos)
                pairs.append(ForcedPair(encoded.prefix_ids, encoded.suffix_ids, target))
    return pairs


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_prefix_reuse_equals_plain_computation(name: str, tasks: list[Task]) -> None:
    loaded = load_model(name)
    # A short source limit drops demonstrations for long instances: prefixes then differ
    # within one prompt, and the small budgets split groups across batches.
    pairs = forced_pairs(loaded, tasks, max_source_length=100)
    assert len({p.prefix for p in pairs}) > len(tasks) * 4
    fast = teacher_forced_nll(loaded, pairs, token_budget=500, logit_budget=40)
    plain = teacher_forced_nll(
        loaded, [ForcedPair((), p.prefix + p.suffix, p.target) for p in pairs], token_budget=500
    )
    reference = [forced_nll(loaded, list(p.prefix + p.suffix), list(p.target)) for p in pairs]
    assert max(abs(a - b) for a, b in zip(fast, reference)) < 1e-4
    assert max(abs(a - b) for a, b in zip(plain, reference)) < 1e-4


@pytest.mark.parametrize(("name", "early_stops"), [("tiny-llama", False), ("tiny-gpt2", True)])
def test_scored_decoding_equals_generate_then_forcing(name: str, early_stops: bool, tasks: list[Task]) -> None:
    """Shared-prefix greedy decoding: the same tokens as ``generate``, and L_i0 equal to a plain pass.

    Tokens that some rows choose after their first step are made stop tokens, so rows end
    at different steps (and leave their batch) while others run to ``max_new_tokens``
    (tiny-llama repeats one token, so all its rows run out).
    """
    loaded = copy.copy(load_model(name))
    pairs = forced_pairs(loaded, tasks, max_source_length=100)
    prompts = [(p.prefix, p.suffix) for p in pairs]
    eos, steps = loaded.tokenizer.eos_token_id, 7
    free_run = greedy_generate(loaded, [list(p + s) for p, s in prompts], steps)
    first = {tokens[0] for tokens in free_run}
    stops = sorted({token for tokens in free_run for token in tokens[1:4]} - first)[:2]
    loaded.model = copy.deepcopy(loaded.model)
    loaded.model.generation_config.eos_token_id = [eos, *stops]

    decoded = greedy_decode_scored(loaded, prompts, eos, steps, token_budget=300)
    expected = greedy_generate(loaded, [list(p + s) for p, s in prompts], steps)
    assert [list(d.tokens) for d in decoded] == expected
    lengths = {len(d.tokens) for d in decoded}
    assert steps in lengths and (len(lengths) > 2) == early_stops
    for (prefix, suffix), result in zip(prompts, decoded):
        target = [*result.tokens, eos]
        assert result.nll == pytest.approx(forced_nll(loaded, list(prefix + suffix), target), abs=1e-4)


def test_seq2seq_forcing_equals_reference(tasks: list[Task]) -> None:
    loaded = load_model("tiny-t5")
    pairs = forced_pairs(loaded, tasks[:3])
    fast = teacher_forced_nll(loaded, pairs, token_budget=600, logit_budget=30)
    reference = [forced_nll(loaded, list(p.prefix + p.suffix), list(p.target)) for p in pairs]
    assert max(abs(a - b) for a, b in zip(fast, reference)) < 1e-4


def test_score_tasks_matches_plain_loop(llama, tasks: list[Task]) -> None:
    """Every p_ij of the table against the plain scorer: greedy decode, then one plain forward per prompt."""
    table = score_tasks(llama, tasks[:3], SMALL, progress=False)
    reference = reference_scores(llama, tasks[:3], SMALL)
    assert table.tasks == tuple(t.name for t in tasks[:3])
    for task, plain in zip(tasks[:3], reference):
        detail = table.instances_of(task.name)
        instances = task.sample_instances(SMALL.n, SMALL.seed)
        assert [s.instance_id for s in detail] == [i.id for i in instances]
        assert [i.instance_id for i in plain.instances] == [i.id for i in instances]
        for score, instance in zip(detail, plain.instances):
            target = list(instance.target)
            assert score.prediction_tokens == len(target)
            expected = [math.exp(-value) for value in instance.nll]
            assert score.p0 == pytest.approx(expected[0], abs=1e-6)
            assert score.p == pytest.approx(expected[1:], abs=1e-6)
        row = table[task.name]
        assert (row.n, row.k) == (SMALL.n, SMALL.k)
        assert (row.pu, row.pp) == pytest.approx((plain.pu, plain.pp), abs=1e-6)
        assert row.perplexity == pytest.approx(plain.perplexity, rel=1e-6)


def test_scores_do_not_depend_on_order_or_chunking(llama, tasks: list[Task]) -> None:
    first = score_tasks(llama, tasks, SMALL, progress=False)
    other = ScoringSettings(**{**SMALL.__dict__, "tasks_per_chunk": 5, "token_budget": 5000})
    second = score_tasks(llama, list(reversed(tasks)), other, progress=False)
    for row in first:
        assert second[row.task].pu == pytest.approx(row.pu, abs=1e-7)
        assert second[row.task].pp == pytest.approx(row.pp, rel=1e-5)


def test_seq2seq_scoring_matches_plain_loop(tasks: list[Task]) -> None:
    """The encoder-decoder path of the fast scorer against the plain scorer, value by value."""
    t5 = load_model("tiny-t5")
    table = score_tasks(t5, tasks[:2], SMALL, progress=False)
    reference = reference_scores(t5, tasks[:2], SMALL)
    for task, plain in zip(tasks[:2], reference):
        detail = table.instances_of(task.name)
        assert [s.instance_id for s in detail] == [i.instance_id for i in plain.instances]
        for score, instance in zip(detail, plain.instances):
            assert score.prediction_tokens == len(instance.target)
            expected = [math.exp(-value) for value in instance.nll]
            assert score.p0 == pytest.approx(expected[0], abs=1e-6)
            assert score.p == pytest.approx(expected[1:], abs=1e-6)
        assert (table[task.name].pu, table[task.name].pp) == pytest.approx((plain.pu, plain.pp), abs=1e-6)
    assert len({row.pu for row in table}) == 2 and all(row.pu > 0 for row in table)


def test_scoring_errors(llama, tasks: list[Task]) -> None:
    with pytest.raises(ActiveITError, match="twice"):
        score_tasks(llama, [tasks[0], tasks[0]], SMALL, progress=False)
    with pytest.raises(ActiveITError, match="no instances"):
        score_tasks(llama, [tasks[0].with_instances([])], SMALL, progress=False)
    with pytest.raises(ActiveITError, match="no perturbed prompts"):
        score_tasks(llama, tasks[:2], SMALL, prompts=perturb_tasks(tasks[:1]), progress=False)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        ScoringSettings(k=0)


# ---- the table ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_score_table_round_trip(tmp_path: Path, suffix: str) -> None:
    table = ScoreTable(
        rows=(TaskScore("a", 0.01, 0.5, 2.5, 2, 2, True, "QA"), TaskScore("b", 0.2, 0.1, 9.0, 2, 2, False, "X")),
        instances=(
            InstanceScore("a", "a-1", "yes, no", 2, 0.6, math.exp(-0.6), (0.5, 0.6)),
            InstanceScore("a", "a-2", "", 1, 0.7, math.exp(-0.7), (0.4, 0.3)),
        ),
    )
    path = table.save(tmp_path / f"scores{suffix}")
    assert ScoreTable.instances_path(path).exists()
    loaded = ScoreTable.load(path)
    assert loaded == table
    assert loaded["b"].perplexity == 9.0
    assert ScoreTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table
    assert list(table.to_frame().columns)[:4] == ["task", "pu", "pp", "perplexity"]
    with pytest.raises(ActiveITError, match="csv or .parquet"):
        table.save(tmp_path / "scores.txt")
    with pytest.raises(KeyError, match="no scores"):
        table["zzz"]


# ---- several processes -------------------------------------------------------------------


def test_two_processes_gather_the_single_process_table(tmp_path: Path, llama, tasks: list[Task]) -> None:
    """Each process scores its share of the pool (fewer tokens than one process scoring
    all of it) and every process ends with the whole table, equal to one process's."""
    out = tmp_path / "table.json"
    env = os.environ | {"ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), str(ROOT / "tests" / "score_worker.py"), str(out),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    gathered = ScoreTable.from_dict(json.loads(out.read_text()))
    assert gathered.meta["processes"] == 2
    with counting_tokens(llama.model) as fed:
        single = score_tasks(llama, tasks, WORKER_CONFIG, progress=False)
    shares = [json.loads(Path(f"{out}.rank{rank}.json").read_text())["tokens"] for rank in (0, 1)]
    assert all(0 < share < fed[0] for share in shares), (shares, fed[0])
    assert gathered.tasks == single.tasks
    for mine, theirs in zip(single, gathered):
        assert theirs.pu == pytest.approx(mine.pu, abs=1e-7)
        assert theirs.pp == pytest.approx(mine.pp, rel=1e-5)
        assert theirs.perplexity == pytest.approx(mine.perplexity, rel=1e-5)
    assert [s.prediction for s in gathered.instances] == [s.prediction for s in single.instances]


def test_forcing_edge_cases(llama) -> None:
    eos = llama.tokenizer.eos_token_id
    prompt = (5, 6, 7, 8)
    value = forced_nll(llama, list(prompt), [9, eos])
    # all of the prompt in the prefix (empty suffix), and all in the suffix: same value
    splits = [(prompt, ()), ((), prompt), (prompt[:2], prompt[2:])]
    for pair in (ForcedPair(prefix, suffix, (9, eos)) for prefix, suffix in splits):
        assert teacher_forced_nll(llama, [pair])[0] == pytest.approx(value, abs=1e-5)
    with pytest.raises(ActiveITError, match="non-empty targets"):
        teacher_forced_nll(llama, [ForcedPair(prompt, (), ())])
    with pytest.raises(ActiveITError, match="non-empty prompt"):
        teacher_forced_nll(llama, [ForcedPair((), (), (eos,))])


def test_bf16_scoring_reads_fp32_logits_from_a_one_dtype_cache(llama, tasks: list[Task], monkeypatch: pytest.MonkeyPatch) -> None:
    """``bf16_on_cuda``'s path, run on the CPU (autocast works there too): every logit the
    scorer reads is fp32 (the output layer runs outside autocast on its fp32 weights), the
    KV caches hold keys and values in one dtype (bf16), the output layer is restored after,
    and PU stays within bf16 noise of fp32 scoring."""
    from activeit.scoring import scorer as scoring
    from activeit.scoring.engine import decoding as prefix_decoding, prefix_cache

    config = SMALL.replace(bf16_on_cuda=True)
    fp32 = score_tasks(llama, tasks[:3], config, progress=False)  # on the CPU: no autocast
    monkeypatch.setattr(scoring, "bf16_applies", lambda config, model: config.bf16_on_cuda)
    head = llama.model.get_output_embeddings()
    logits: set[torch.dtype] = set()
    caches: set[tuple[torch.dtype, torch.dtype]] = set()
    hook = head.register_forward_hook(lambda module, args, out: logits.add(out.dtype))
    pool_init, layer_init = prefix_cache.PrefixPool.__init__, prefix_decoding._PreallocatedLayer.__init__

    def recording_pool(self, *args, **kwargs) -> None:
        pool_init(self, *args, **kwargs)
        caches.update((keys.dtype, values.dtype) for keys, values in self.layers)

    def recording_layer(self, *args, **kwargs) -> None:
        layer_init(self, *args, **kwargs)
        caches.add((self.key_buffer.dtype, self.value_buffer.dtype))

    monkeypatch.setattr(prefix_cache.PrefixPool, "__init__", recording_pool)
    monkeypatch.setattr(prefix_decoding._PreallocatedLayer, "__init__", recording_layer)
    try:
        bf16 = score_tasks(llama, tasks[:3], config, progress=False)
    finally:
        hook.remove()
    assert logits == {torch.float32}
    assert caches == {(torch.bfloat16, torch.bfloat16)}
    assert "forward" not in head.__dict__
    assert [row.pu for row in bf16] == pytest.approx([row.pu for row in fp32], abs=0.02)
    assert [row.pu for row in bf16] != [row.pu for row in fp32]  # bf16 did run

"""IFD: the shared-prefix scorer against the plain unbatched computation, and against losses
known by hand (a uniform model, and a model whose next-token distribution depends only on the
current token and its position)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from activeit.config.settings import ScoringSettings
from activeit.data.prompts import PromptFormatter
from activeit.data.tasks import Instance, Task
from activeit.errors import ActiveITError
from activeit.models.loading import load_model
from activeit.scoring.ifd import IFDTable, instance_ifd, score_ifd
from activeit.scoring.reference import reference_ifd
from score_worker import handmade_tasks

SMALL = ScoringSettings(n=4, k=1, max_new_tokens=5, token_budget=600, tasks_per_chunk=2)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tasks() -> list[Task]:
    tasks = handmade_tasks()
    # longer answers than one word, so that the cut to max_new_tokens matters
    long = tasks[1].with_instances(
        [Instance(i.id, i.input, (f"{i.outputs[0]} and then some more words after it",)) for i in tasks[1].instances])
    return [tasks[0], long, *tasks[2:]]


def test_instance_ifd_is_the_ratio_of_mean_losses() -> None:
    assert instance_ifd(1.5, 3.0) == pytest.approx(0.5)
    assert instance_ifd(2.0, 0.0) == math.inf


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-t5"])
def test_ifd_equals_the_plain_unbatched_computation(name: str, tasks: list[Task]) -> None:
    loaded = load_model(name)
    table = score_ifd(loaded, tasks, SMALL, progress=False)
    plain = reference_ifd(loaded, tasks, SMALL)
    for task in tasks:
        values = [s.ifd for s in table.instances if s.task == task.name]
        assert values == pytest.approx(plain[task.name], rel=1e-4)
        assert table[task.name].ifd == pytest.approx(sum(plain[task.name]) / len(plain[task.name]), rel=1e-4)
        assert table[task.name].n == min(SMALL.n, len(task.instances))
    assert max(s.answer_tokens for s in table.instances) == SMALL.max_new_tokens + 1
    assert len({round(r.ifd, 6) for r in table}) == len(tasks)  # a random model still tells tasks apart


def test_uniform_model_has_losses_log_v_and_ifd_one(tasks: list[Task]) -> None:
    """All-zero logits: every token costs ln V after any context, so s(A|Q) = s(A) = ln V."""
    loaded = copy.copy(load_model("tiny-gpt2"))
    loaded.model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        loaded.model.get_output_embeddings().weight.zero_()
    table = score_ifd(loaded, tasks[:2], SMALL, progress=False)
    log_v = math.log(loaded.model.config.vocab_size)
    for s in table.instances:
        assert s.conditioned_nll == pytest.approx(log_v, rel=1e-5)
        assert s.direct_nll == pytest.approx(log_v, rel=1e-5)
        assert s.ifd == pytest.approx(1.0, rel=1e-5)


def test_ifd_by_hand_on_a_token_and_position_model(tasks: list[Task]) -> None:
    """GPT-2 with every block's output projections zeroed: the logits after token x at position
    p are ln_f(wte[x] + wpe[p]) @ wte^T, so both losses can be written down from the weights."""
    loaded = copy.copy(load_model("tiny-gpt2"))
    model = loaded.model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for block in model.transformer.h:
            for projection in (block.attn.c_proj, block.mlp.c_proj):
                projection.weight.zero_()
                projection.bias.zero_()
    wte, wpe, ln_f = model.transformer.wte.weight, model.transformer.wpe.weight, model.transformer.ln_f

    def by_hand(prompt: list[int], answer: list[int]) -> float:
        ids = prompt + answer
        losses = []
        with torch.no_grad():
            for position in range(len(prompt) - 1, len(ids) - 1):
                logits = ln_f(wte[ids[position]] + wpe[position]) @ wte.T
                losses.append(-torch.log_softmax(logits.double(), dim=-1)[ids[position + 1]].item())
        return sum(losses) / len(losses)

    task = tasks[1]
    formatter = PromptFormatter.for_model(loaded, SMALL.max_source_length)
    marker = formatter.encode_answer_only().ids
    table = score_ifd(loaded, [task], SMALL, progress=False)
    for instance, scored in zip(task.sample_instances(SMALL.n, SMALL.seed), table.instances):
        answer = formatter.encode_target(instance.outputs[0])
        answer = answer if len(answer) <= SMALL.max_new_tokens + 1 else [*answer[: SMALL.max_new_tokens], answer[-1]]
        conditioned = by_hand(formatter.encode_instance(task, instance).ids, answer)
        direct = by_hand(marker, answer)
        assert scored.conditioned_nll == pytest.approx(conditioned, rel=1e-4)
        assert scored.direct_nll == pytest.approx(direct, rel=1e-4)
        assert scored.ifd == pytest.approx(conditioned / direct, rel=1e-4)
        assert scored.ifd != pytest.approx(1.0, abs=1e-3)  # the positions differ: a real ratio


def test_ifd_table_round_trip_and_errors(tmp_path: Path, tasks: list[Task]) -> None:
    loaded = load_model("tiny-llama")
    table = score_ifd(loaded, tasks[:3], SMALL, progress=False)
    loaded_back = IFDTable.load(table.save(tmp_path / "ifd.json"))
    assert loaded_back == table and loaded_back.meta["model"] == "tiny-llama"
    assert [r.task for r in loaded_back] == [t.name for t in tasks[:3]]
    with pytest.raises(KeyError, match="no IFD for task 'nope'"):
        loaded_back["nope"]
    with pytest.raises(ActiveITError, match="given twice"):
        score_ifd(loaded, [tasks[0], tasks[0]], SMALL, progress=False)
    silent = tasks[0].with_instances([Instance("x", "some input", ())])
    with pytest.raises(ActiveITError, match="no reference output"):
        score_ifd(loaded, [silent], SMALL, progress=False)

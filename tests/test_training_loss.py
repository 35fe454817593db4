"""The answer-only loss: the same loss and gradients as ``model(**batch).loss``, in fp32,
for every model family and wrapper training uses, with padding, truncated answers and an
answer cut to nothing."""

from __future__ import annotations

import pytest
import torch

from activeit.config.settings import TrainingSettings
from activeit.models.batching import pad_id
from activeit.models.loading import load_model
from activeit.models.lora import add_lora
from activeit.training.data import IGNORE_INDEX, Collator, truncate_target
from activeit.training.loss import AnswerLoss, kept_positions

TOLERANCE = 1e-5


def batch_for(loaded, seed: int = 0) -> dict[str, torch.Tensor]:
    """Four examples of different lengths (right padding), two answers truncated to 6
    tokens and one whose answer is cut to zero tokens (all its labels ignored): 18 answer
    tokens. (Below 16 rows MKL's fp32 matmul kernel rounds the 49,152-long reduction of
    the output layer's backward ~20x less accurately, ~1e-5 relative, on any path.)"""
    rng = torch.Generator().manual_seed(seed)
    vocab = min(loaded.model.config.vocab_size, 5000)
    eos = loaded.tokenizer.eos_token_id
    pairs = []
    for prompt_len, answer_len in [(17, 5), (9, 8), (23, 2), (12, 6)]:
        prompt = torch.randint(10, vocab, (prompt_len,), generator=rng).tolist()
        answer = [*torch.randint(10, vocab, (answer_len,), generator=rng).tolist(), eos]
        pairs.append((prompt, truncate_target(answer, 6)))
    batch = Collator(pad_id(loaded), loaded.is_seq2seq)(pairs)
    batch.pop("num_tokens")
    batch["labels"][2] = IGNORE_INDEX  # an answer cut to zero tokens
    return batch


def loss_and_grads(model: torch.nn.Module, compute) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks (GPT-2, T5) in both
    loss = compute()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.item(), grads


def assert_same(model: torch.nn.Module, batch: dict[str, torch.Tensor], loss: AnswerLoss) -> None:
    reference, reference_grads = loss_and_grads(model, lambda: model(**batch).loss)
    value, grads = loss_and_grads(model, lambda: loss(model, batch))
    assert abs(value - reference) <= TOLERANCE * max(1.0, abs(reference))
    assert grads.keys() == reference_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, reference_grads[name], atol=TOLERANCE, rtol=TOLERANCE), name


@pytest.mark.parametrize(("name", "path"), [
    ("tiny-llama", "logits_to_keep"), ("tiny-llama", "head_hook"),
    ("tiny-gpt2", "logits_to_keep"), ("tiny-gpt2", "head_hook"),
    ("tiny-t5", "head_hook"),
])
def test_answer_loss_matches_the_full_loss_and_its_gradients(name: str, path: str) -> None:
    loaded = load_model(name)
    model = loaded.model.float().train()
    loss = AnswerLoss(model, loaded.is_seq2seq, path=path)
    assert loss.path == path
    assert_same(model, batch_for(loaded), loss)


def test_the_fastest_path_is_chosen_per_family() -> None:
    assert AnswerLoss(load_model("tiny-llama").model, seq2seq=False).path == "logits_to_keep"
    assert AnswerLoss(load_model("tiny-gpt2").model, seq2seq=False).path == "logits_to_keep"
    assert AnswerLoss(load_model("tiny-t5").model, seq2seq=True).path == "head_hook"


def test_answer_loss_matches_under_lora() -> None:
    loaded = load_model("tiny-llama")
    torch.manual_seed(0)
    model = add_lora(loaded.model.float(), TrainingSettings(method="lora"), base="tiny-llama", seq2seq=False).train()
    batch = batch_for(loaded)
    for path in ("logits_to_keep", "head_hook"):
        assert_same(model, batch, AnswerLoss(model, seq2seq=False, path=path))


def test_answer_loss_matches_on_smollm2() -> None:
    loaded = load_model("smollm2-135m-instruct")
    model = loaded.model.float().train()
    assert_same(model, batch_for(loaded, seed=1), AnswerLoss(model, seq2seq=False))


def test_kept_positions_are_those_before_a_label() -> None:
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX], [IGNORE_INDEX, 5, 6, 9, 2]])
    keep, targets = kept_positions(labels, seq2seq=False)
    assert keep.tolist() == [[False, True, True, False, False], [True, True, True, True, False]]
    assert targets.tolist() == [7, 8, 5, 6, 9, 2]
    keep, targets = kept_positions(labels, seq2seq=True)
    assert targets.tolist() == [7, 8, 5, 6, 9, 2] and keep[1, 1] and not keep[1, 0]


def test_a_batch_without_labels_gives_a_zero_loss_that_backpropagates() -> None:
    loaded = load_model("tiny-llama")
    model = loaded.model.float().train()
    batch = batch_for(loaded)
    batch["labels"][:] = IGNORE_INDEX
    value = AnswerLoss(model, seq2seq=False)(model, batch)
    value.backward()
    assert value.item() == 0.0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_grouped_query_attention_on_cpu_gives_the_same_loss_and_gradients() -> None:
    """Training on CPU runs under ``grouped_query_attention`` (SDPA reads the K/V heads as they
    are): the same loss and gradients as with transformers' per-head copies."""
    from activeit.models.devices import grouped_query_attention

    loaded = load_model("tiny-llama")
    model = loaded.model.float().train()
    loss = AnswerLoss(model, seq2seq=False)
    batch = batch_for(loaded)
    reference, reference_grads = loss_and_grads(model, lambda: loss(model, batch))
    with grouped_query_attention():
        value, grads = loss_and_grads(model, lambda: loss(model, batch))
    assert abs(value - reference) <= TOLERANCE
    for name, grad in grads.items():
        assert torch.allclose(grad, reference_grads[name], atol=TOLERANCE, rtol=TOLERANCE), name

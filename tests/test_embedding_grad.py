"""The tied embedding's distinct-rows backward: bit for bit the dense lookup gradient (not
merely close: the smoke model's predictions flip on a last-bit change), through gradient
accumulation and a fused AdamW step, and no change where it does not apply."""

from __future__ import annotations

import pytest
import torch

from activeit.config.settings import TrainingSettings
from activeit.models.batching import pad_id
from activeit.models.loading import load_model
from activeit.models.lora import add_lora
from activeit.training.data import Collator
from activeit.training.embedding_grad import sparse_tied_embedding_grad, tied_trainable_embedding
from activeit.training.loss import AnswerLoss
from tests.test_training_loss import batch_for, loss_and_grads


def repetitive_batch(loaded, seed: int) -> dict[str, torch.Tensor]:
    """Three padded examples drawn from six tokens: every row of the lookup's gradient sums
    many positions, where the order of the additions shows in the last bits."""
    rng = torch.Generator().manual_seed(seed)
    eos = loaded.tokenizer.eos_token_id
    pairs = [(torch.randint(10, 16, (prompt,), generator=rng).tolist(),
              [*torch.randint(10, 16, (answer,), generator=rng).tolist(), eos])
             for prompt, answer in [(40, 5), (30, 8), (50, 3)]]
    batch = Collator(pad_id(loaded), loaded.is_seq2seq)(pairs)
    batch.pop("num_tokens")
    return batch


def dense_and_ours(name: str, batch_of, padding_idx: int | None = None):
    """The loss and gradients of one backward pass, with torch's dense lookup gradient and
    with ours (the same dropout draws)."""
    results = []
    for ours in (False, True):
        torch.manual_seed(0)
        loaded = load_model(name)
        model = loaded.model.float().train()
        if padding_idx is not None:
            model.get_input_embeddings().padding_idx = padding_idx
        loss = AnswerLoss(model, loaded.is_seq2seq)
        batch = batch_of(loaded)
        with sparse_tied_embedding_grad(model, enabled=ours) as applied:
            assert applied == ours
            results.append(loss_and_grads(model, lambda: loss(model, batch)))
        assert type(model.get_input_embeddings()).forward is torch.nn.Embedding.forward
        assert "forward" not in vars(model.get_input_embeddings())  # restored
    return results


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-t5", "smollm2-135m-instruct"])
@pytest.mark.parametrize("batch_of", [lambda loaded: repetitive_batch(loaded, 1), lambda loaded: batch_for(loaded, 2)],
                         ids=["repetitive", "padded-truncated"])
def test_distinct_rows_lookup_gives_the_dense_gradients_bit_for_bit(name: str, batch_of) -> None:
    (reference, reference_grads), (value, grads) = dense_and_ours(name, batch_of)
    assert value == reference
    assert grads.keys() == reference_grads.keys()
    for parameter_name, grad in grads.items():
        assert grad.layout == torch.strided, parameter_name  # what fused AdamW needs
        assert torch.equal(grad, reference_grads[parameter_name]), parameter_name


def test_nn_embedding_sparse_is_not_bit_for_bit_on_the_same_batch() -> None:
    """Why the module does not use ``nn.Embedding.sparse``: on a repetitive batch its
    position-by-position sum rounds differently (the test above would catch that path)."""
    grads = []
    for sparse in (False, True):
        loaded = load_model("smollm2-135m-instruct")
        model = loaded.model.float().train()
        model.get_input_embeddings().sparse = sparse
        loss = AnswerLoss(model, seq2seq=False)
        loss(model, repetitive_batch(loaded, 1)).backward()
        grads.append(model.get_output_embeddings().weight.grad.to_dense())
    assert torch.allclose(grads[0], grads[1], atol=1e-6, rtol=1e-5)
    assert not torch.equal(grads[0], grads[1])


def test_a_padding_row_gets_no_lookup_gradient_as_in_the_dense_kernel() -> None:
    (_, reference_grads), (_, grads) = dense_and_ours("tiny-llama", lambda loaded: repetitive_batch(loaded, 1),
                                                      padding_idx=12)
    for parameter_name, grad in grads.items():
        assert torch.equal(grad, reference_grads[parameter_name]), parameter_name


def test_two_accumulated_micro_batches_and_fused_steps_give_the_dense_weights() -> None:
    """Gradient accumulation over two micro-batches (the second adds into a dense ``.grad``),
    then fused AdamW, twice: the very weights of the dense run."""
    weights = []
    for ours in (False, True):
        torch.manual_seed(0)
        loaded = load_model("smollm2-135m-instruct")
        model = loaded.model.float().train()
        loss = AnswerLoss(model, seq2seq=False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        with sparse_tied_embedding_grad(model, enabled=ours):
            for step in range(2):
                for seed in (3, 4):
                    loss(model, repetitive_batch(loaded, seed + step)).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        weights.append({key: value.detach().clone() for key, value in model.state_dict().items()})
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])
    assert not torch.equal(weights[0]["model.embed_tokens.weight"],
                           load_model("smollm2-135m-instruct").model.get_input_embeddings().weight)


def test_not_applied_to_a_frozen_untied_or_special_embedding() -> None:
    loaded = load_model("tiny-llama")
    lora = add_lora(loaded.model.float(), TrainingSettings(method="lora"), base="tiny-llama", seq2seq=False)
    assert tied_trainable_embedding(lora) is None  # LoRA freezes the embedding
    with sparse_tied_embedding_grad(lora) as applied:
        assert not applied
    model = load_model("tiny-gpt2").model
    model.get_output_embeddings().weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    assert tied_trainable_embedding(model) is None  # untied: the lookup's gradient alone would be sparse
    for setting, value in (("max_norm", 1.0), ("scale_grad_by_freq", True), ("sparse", True)):
        model = load_model("tiny-gpt2").model
        setattr(model.get_input_embeddings(), setting, value)
        assert tied_trainable_embedding(model) is None, setting

"""The tied embedding's row-sparse backward: the same dense gradients as torch's dense
lookup gradient, an optimizer step that accepts them, and no change where it does not apply."""

from __future__ import annotations

import pytest
import torch

from activeit.config.settings import TrainingSettings
from activeit.models.loading import load_model
from activeit.models.lora import add_lora
from activeit.training.embedding_grad import sparse_tied_embedding_grad, tied_trainable_embedding
from activeit.training.loss import AnswerLoss
from tests.test_training_loss import TOLERANCE, batch_for, loss_and_grads


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-t5", "smollm2-135m-instruct"])
def test_sparse_lookup_gradient_gives_the_dense_gradients(name: str) -> None:
    loaded = load_model(name)
    model = loaded.model.float().train()
    loss = AnswerLoss(model, loaded.is_seq2seq)
    batch = batch_for(loaded, seed=2)
    reference, reference_grads = loss_and_grads(model, lambda: loss(model, batch))
    with sparse_tied_embedding_grad(model) as applied:
        assert applied and model.get_input_embeddings().sparse
        value, grads = loss_and_grads(model, lambda: loss(model, batch))
    assert not model.get_input_embeddings().sparse  # restored
    assert value == reference
    assert grads.keys() == reference_grads.keys()
    for parameter_name, grad in grads.items():
        assert grad.layout == torch.strided, parameter_name  # what fused AdamW needs
        assert torch.allclose(grad, reference_grads[parameter_name], atol=TOLERANCE, rtol=TOLERANCE), parameter_name


def test_two_accumulated_micro_batches_and_a_fused_step_match_the_dense_run() -> None:
    """Gradient accumulation over two micro-batches (the second adds into a dense ``.grad``),
    then fused AdamW: the same weights as without the sparse lookup gradient."""
    weights = []
    for sparse in (False, True):
        loaded = load_model("tiny-llama")
        model = loaded.model.float().train()
        loss = AnswerLoss(model, seq2seq=False)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
        with sparse_tied_embedding_grad(model, enabled=sparse) as applied:
            assert applied == sparse
            for seed in (3, 4):
                loss(model, batch_for(loaded, seed=seed)).backward()
            optimizer.step()
        weights.append(model.get_input_embeddings().weight.detach().clone())
    assert torch.allclose(weights[0], weights[1], atol=TOLERANCE, rtol=0)
    assert not torch.equal(weights[0], load_model("tiny-llama").model.get_input_embeddings().weight)


def test_not_applied_to_a_frozen_or_untied_embedding() -> None:
    loaded = load_model("tiny-llama")
    lora = add_lora(loaded.model.float(), TrainingSettings(method="lora"), base="tiny-llama", seq2seq=False)
    assert tied_trainable_embedding(lora) is None  # LoRA freezes the embedding
    with sparse_tied_embedding_grad(lora) as applied:
        assert not applied
    model = load_model("tiny-gpt2").model
    model.get_output_embeddings().weight = torch.nn.Parameter(model.get_input_embeddings().weight.detach().clone())
    assert tied_trainable_embedding(model) is None  # untied: the lookup's gradient alone would be sparse
    model = load_model("tiny-gpt2").model
    model.get_input_embeddings().max_norm = 1.0
    assert tied_trainable_embedding(model) is None

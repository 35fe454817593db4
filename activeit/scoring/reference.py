"""The plain prompt-uncertainty computation: the executable spec of docs/METHOD.md, "Prompt uncertainty".

One (instance, prompt) at a time, no batching, no prefix reuse, no shortcut: for each of
a task's ``n`` seeded instances, the greedy prediction ``y_i`` under the original prompt
(``generate``, cut before EOS, then EOS appended); for each prompt ``j = 0..k`` one full
forward pass over ``prompt_j + y_i`` and ``L_ij``, the mean NLL of ``y_i``'s tokens
(EOS included) from a float64 log-softmax; then PU, PP and perplexity by
:func:`activeit.scoring.scores.task_metrics`, the only place of the formulas. The fast scorer
(:mod:`activeit.scoring.scorer`) is tested against this module and the scoring benchmark times it
as the naive side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from activeit.models.batching import cut_at_eos, eos_ids, pad_id
from activeit.models.devices import model_device
from activeit.models.loading import LoadedModel
from activeit.data.perturbations import PerturbedPrompts, perturb_tasks
from activeit.data.prompts import PromptFormatter
from activeit.scoring.scores import task_metrics
from activeit.config.settings import ScoringSettings
from activeit.data.tasks import Task


@dataclass(frozen=True)
class ReferenceInstance:
    """One instance: the ids of its prompts ``j = 0..k``, its prediction ``y_i`` + EOS, and ``L_ij``."""

    instance_id: str
    prompts: tuple[tuple[int, ...], ...]
    target: tuple[int, ...]
    nll: tuple[float, ...]


@dataclass(frozen=True)
class ReferenceTask:
    """One task's ``(PU, PP, perplexity)`` and the instances behind them."""

    task: str
    pu: float
    pp: float
    perplexity: float
    instances: tuple[ReferenceInstance, ...]


@torch.inference_mode()
def greedy_prediction(loaded: LoadedModel, prompt: Sequence[int], max_new_tokens: int) -> list[int]:
    """The greedy continuation of one prompt by ``generate``, cut before its stop token."""
    model, device, stop = loaded.model, model_device(loaded.model), eos_ids(loaded)
    ids = torch.tensor([list(prompt)], device=device)
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
        max_new_tokens=max_new_tokens, pad_token_id=pad_id(loaded), eos_token_id=sorted(stop),
    )[0].tolist()
    if loaded.is_seq2seq:
        return cut_at_eos(out[1:] if out and out[0] == model.config.decoder_start_token_id else out, stop)
    return cut_at_eos(out[ids.shape[1] :], stop)


@torch.inference_mode()
def forced_nll(loaded: LoadedModel, prompt: Sequence[int], target: Sequence[int]) -> float:
    """Mean NLL of every token of ``target`` after ``prompt``: one unbatched forward pass, full log-softmax."""
    model, device = loaded.model, model_device(loaded.model)
    prompt, target = list(prompt), list(target)
    if loaded.is_seq2seq:
        decoder = [model.config.decoder_start_token_id, *target[:-1]]
        logits = model(
            input_ids=torch.tensor([prompt], device=device), decoder_input_ids=torch.tensor([decoder], device=device)
        ).logits[0]
    else:
        logits = model(input_ids=torch.tensor([prompt + target[:-1]], device=device)).logits[0, len(prompt) - 1 :]
    logp = torch.log_softmax(logits.double(), dim=-1)
    return float(-logp[torch.arange(len(target)), torch.tensor(target, device=device)].mean())


def reference_scores(
    loaded: LoadedModel,
    tasks: Sequence[Task],
    config: ScoringSettings,
    prompts: Mapping[str, PerturbedPrompts] | None = None,
) -> list[ReferenceTask]:
    """PU, PP and perplexity of each task, computed plainly (see the module docstring).

    ``prompts`` are built from ``config`` when not given, as :func:`activeit.scoring.scorer.score_tasks` does.
    """
    formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
    if prompts is None:
        prompts = perturb_tasks(tasks, config.perturbation, config.k, config.seed, drop_prob=config.drop_prob)
    eos = loaded.tokenizer.eos_token_id
    was_training = loaded.model.training
    loaded.model.eval()
    try:
        scored = []
        for task in tasks:
            instances = []
            for instance in task.sample_instances(config.n, config.seed):
                encoded = tuple(
                    tuple(formatter.encode(variant.definition, variant.examples, instance.input).ids)
                    for variant in prompts[task.name].variants
                )
                target = (*greedy_prediction(loaded, encoded[0], config.max_new_tokens), eos)
                nll = tuple(forced_nll(loaded, prompt, target) for prompt in encoded)
                instances.append(ReferenceInstance(instance.id, encoded, target, nll))
            pu, pp, perplexity = task_metrics([list(i.nll) for i in instances])
            scored.append(ReferenceTask(task.name, pu, pp, perplexity, tuple(instances)))
        return scored
    finally:
        loaded.model.train(was_training)


def reference_ifd(loaded: LoadedModel, tasks: Sequence[Task], config: ScoringSettings) -> dict[str, list[float]]:
    """Task name -> the IFD of each of its ``n`` seeded instances, computed plainly: for each
    instance one unbatched forward pass over ``prompt + A`` and one over ``answer marker + A``
    (:func:`forced_nll`), ``A`` its first reference output cut to ``max_new_tokens`` + EOS."""
    formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
    marker = formatter.encode_answer_only().ids
    was_training = loaded.model.training
    loaded.model.eval()
    try:
        out = {}
        for task in tasks:
            values = []
            for instance in task.sample_instances(config.n, config.seed):
                answer = formatter.encode_target(instance.outputs[0])
                if len(answer) > config.max_new_tokens + 1:
                    answer = [*answer[: config.max_new_tokens], answer[-1]]
                conditioned = forced_nll(loaded, formatter.encode_instance(task, instance).ids, answer)
                values.append(conditioned / forced_nll(loaded, marker, answer))
            out[task.name] = values
        return out
    finally:
        loaded.model.train(was_training)

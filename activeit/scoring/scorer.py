"""Prompt-uncertainty scoring: greedy predictions, teacher-forced likelihoods, PU, PP, perplexity.

For each task (docs/METHOD.md, "Prompt uncertainty"): ``n`` seeded instances; the greedy prediction ``y_i`` of each
under the original prompt (its ids cut before EOS, then EOS appended); the mean
per-token NLL ``L_ij`` of ``y_i`` under the original (``j = 0``) and each perturbed prompt
(``j = 1..k``); ``p_ij = exp(-L_ij)``;

* ``PU = mean_{i, j>=1} |p_ij - p_i0|`` (prompt uncertainty),
* ``PP = mean_i p_i0`` (prediction probability),
* ``perplexity = mean_i exp(L_i0)``.

The hot path, for causal models with full attention: the original prompts of a chunk of
tasks are decoded greedily in length-sorted, token-budget batches in which each task's
prompt *prefix* (definition + demonstrations, shared by its instances) runs once and its KV
cache is expanded over the instances (:mod:`activeit.scoring.engine.decoding`); finished rows leave
the batch, and the log-probabilities of the chosen tokens give ``L_i0`` directly. Then every
(perturbed prompt, prediction) pair is teacher-forced (:mod:`activeit.scoring.engine.forcing`), one
forward pass per batch, no ``generate``, the same prefix sharing, and logits only at the
prediction positions. In reduced precision (``bf16_on_cuda``: bf16 autocast, the logits
still fp32, the KV cache all bf16) ``j = 0`` is teacher-forced too, so that
``|p_ij - p_i0|`` compares like with like. Seq2seq and sliding-window models use
batched ``generate`` and plain teacher forcing of all ``k + 1`` prompts. Under several
processes (``accelerate launch``) the tasks are split across processes and the results
gathered on every process.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any, NamedTuple

import torch

from activeit.models.batching import Ids
from activeit.models.devices import bf16_autocast_fp32_logits, grouped_query_attention, model_device, process_state
from activeit.errors import ActiveITError
from activeit.scoring.engine.forcing import ForcedPair, ForcingStats, teacher_forced_nll
from activeit.scoring.engine.generation import greedy_generate
from activeit.scoring.engine.kept_prefixes import KeptPrefixes
from activeit.models.loading import LoadedModel
from activeit.data.perturbations import PerturbedPrompts, perturb_tasks
from activeit.scoring.engine.prefix_cache import supports_prefix_reuse
from activeit.scoring.engine.decoding import DecodingStats, greedy_decode_scored
from activeit.data.prompts import EncodedPrompt, PromptFormatter
from activeit.scoring.scores import InstanceScore, ScoreTable, summarize_task
from activeit.config.settings import ScoringSettings
from activeit.data.tasks import Instance, Task


class RowKey(NamedTuple):
    """One scored row: task ``task`` (its index in the chunk), prompt ``j`` (0 = original), instance ``i``."""

    task: int
    j: int
    i: int


def bf16_applies(config: ScoringSettings, model: torch.nn.Module) -> bool:
    """Whether scoring runs under bf16 autocast: ``bf16_on_cuda``, an fp32 model, on CUDA."""
    parameter = next(model.parameters())
    return config.bf16_on_cuda and parameter.device.type == "cuda" and parameter.dtype == torch.float32


class Scorer:
    """Scores chunks of tasks with one model and config: the engine's public entries for the
    scorers built on it (adaptive scoring, IFD): :meth:`split` a prompt into shared prefix and own
    suffix, :meth:`predict` greedily, :meth:`force` (prompt, target) pairs, :meth:`instance_score`,
    :meth:`stats`; ``formatter`` renders the prompts, ``timing`` and the stats count the work."""

    def __init__(self, loaded: LoadedModel, config: ScoringSettings) -> None:
        self.loaded, self.config = loaded, config
        self.formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
        self.eos = loaded.tokenizer.eos_token_id
        if self.eos is None:
            raise ActiveITError(f"model '{loaded.name}': its tokenizer has no EOS token to score")
        self.reuse_prefix = config.reuse_prefix and supports_prefix_reuse(loaded)
        self.forcing, self.decoding = ForcingStats(), DecodingStats()
        self.timing = {"generation_s": 0.0, "teacher_forcing_s": 0.0}
        device = model_device(loaded.model)
        use_bf16 = bf16_applies(config, loaded.model)
        self.autocast = (
            (lambda: bf16_autocast_fp32_logits(loaded.model)) if use_bf16
            else grouped_query_attention if device.type == "cpu" else contextlib.nullcontext
        )
        # L_i0 is read off the greedy decoding only where that computation matches teacher
        # forcing to fp32 rounding; in reduced precision j = 0 is teacher-forced like j >= 1.
        exact = not use_bf16 and next(loaded.model.parameters()).dtype == torch.float32
        self.original_from_decoding = self.reuse_prefix and exact

    def score(self, tasks: Sequence[Task], prompts: Mapping[str, PerturbedPrompts]) -> list[InstanceScore]:
        """The instance scores of ``tasks``: every row (task, prompt j, instance i) is kept by its key."""
        cfg = self.config
        sampled = [task.sample_instances(cfg.n, cfg.seed) for task in tasks]
        rows: dict[RowKey, tuple[Ids, Ids]] = {
            RowKey(t, j, i): self.split(self.formatter.encode(variant.definition, variant.examples, instance.input))
            for t, (task, instances) in enumerate(zip(tasks, sampled))
            for j, variant in enumerate(prompts[task.name].variants)
            for i, instance in enumerate(instances)
        }
        originals = [key for key in rows if key.j == 0]
        predictions, decoded_nll = self.predict([rows[key] for key in originals])
        targets = {(key.task, key.i): target for key, target in zip(originals, predictions)}
        nll: dict[RowKey, float] = dict(zip(originals, decoded_nll)) if decoded_nll is not None else {}

        forced = [key for key in rows if key not in nll]
        nll.update(zip(forced, self.force([ForcedPair(*rows[key], targets[key.task, key.i]) for key in forced])))
        return [
            self.instance_score(task, instance, targets[t, i], nll[RowKey(t, 0, i)],
                                [math.exp(-nll[RowKey(t, j, i)]) for j in range(1, len(prompts[task.name].variants))])
            for t, (task, instances) in enumerate(zip(tasks, sampled))
            for i, instance in enumerate(instances)
        ]

    def force(self, pairs: list[ForcedPair], kept: KeptPrefixes | None = None) -> list[float]:
        """The teacher-forced ``L`` of each (prompt, target) pair, timed and counted; with ``kept``
        (adaptive scoring) the prefixes it wants kept are kept and those it holds reused."""
        cfg = self.config
        started = time.perf_counter()
        with self.autocast():
            if kept is None:
                nll = teacher_forced_nll(self.loaded, pairs, cfg.token_budget, cfg.logit_budget, self.forcing)
            else:
                nll = kept.force(self.loaded, pairs, cfg.token_budget, cfg.logit_budget, self.forcing)
        self.timing["teacher_forcing_s"] += time.perf_counter() - started
        return nll

    def instance_score(
        self, task: Task, instance: Instance, target: Ids, nll0: float, p: Sequence[float]
    ) -> InstanceScore:
        """One instance's detail: its prediction ``target`` (EOS last), ``L_i0`` and ``p_ij`` for j = 1..k."""
        return InstanceScore(
            task=task.name,
            instance_id=instance.id,
            prediction=self.loaded.tokenizer.decode(list(target[:-1]), skip_special_tokens=True).strip(),
            prediction_tokens=len(target),
            nll0=nll0,
            p0=math.exp(-nll0),
            p=tuple(p),
        )

    def predict(self, originals: list[tuple[Ids, Ids]]) -> tuple[list[Ids], list[float] | None]:
        """Greedy predictions (ending in EOS) of the original prompts, and their L_i0 when decoding gives it."""
        cfg = self.config
        started = time.perf_counter()
        with self.autocast():
            if self.reuse_prefix:
                decoded = greedy_decode_scored(
                    self.loaded, originals, self.eos, cfg.max_new_tokens, cfg.token_budget, self.decoding
                )
                generated = [d.tokens for d in decoded]
                nll = [d.nll for d in decoded] if self.original_from_decoding else None
            else:
                prompts = [prefix + suffix for prefix, suffix in originals]
                generated = greedy_generate(self.loaded, prompts, cfg.max_new_tokens, cfg.token_budget)
                self.decoding.suffix_tokens += sum(len(p) for p in prompts)
                self.decoding.decoded_tokens += sum(len(g) for g in generated)
                nll = None
        self.timing["generation_s"] += time.perf_counter() - started
        return [(*ids, self.eos) for ids in generated], nll

    def split(self, prompt: EncodedPrompt) -> tuple[Ids, Ids]:
        """(shared prefix, own suffix) of a prompt's ids; all suffix without prefix reuse."""
        return self.formatter.shared_split(prompt) if self.reuse_prefix else ((), tuple(prompt.ids))

    def stats(self) -> dict[str, Any]:
        forcing = {f"forcing_{key}": value for key, value in asdict(self.forcing).items()}
        decoding = {f"decoding_{key}": value for key, value in asdict(self.decoding).items()}
        return forcing | decoding | self.timing


def check_tasks(tasks: Sequence[Task], prompts: Mapping[str, PerturbedPrompts] | None) -> None:
    seen: set[str] = set()
    for task in tasks:
        if task.name in seen:
            raise ActiveITError(f"task '{task.name}' is given twice to score_tasks")
        seen.add(task.name)
        if not task.instances:
            raise ActiveITError(f"task '{task.name}' has no instances to score")
        if prompts is not None:
            if task.name not in prompts:
                raise ActiveITError(f"no perturbed prompts given for task '{task.name}'")
            if not prompts[task.name].perturbed:
                raise ActiveITError(f"task '{task.name}': the prompts given have no perturbed prompt")


def score_tasks(
    loaded: LoadedModel,
    tasks: Sequence[Task],
    config: ScoringSettings = ScoringSettings(),
    prompts: Mapping[str, PerturbedPrompts] | None = None,
    progress: bool = True,
) -> ScoreTable:
    """Score ``tasks`` (PU, PP, perplexity) with ``loaded``; rows in the order of ``tasks``.

    ``prompts`` (from :func:`activeit.data.perturbations.perturb_tasks`) are built from ``config`` when
    not given (when given, ``k`` is theirs). Under several accelerate processes each scores its share of the tasks and
    every process returns the full table. The model is used where it is (see
    :func:`place_model`); with ``config.bf16_on_cuda`` an fp32 model on CUDA runs under bf16
    autocast with fp32 logits (:func:`~activeit.models.devices.bf16_autocast_fp32_logits`).
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    tasks = list(tasks)
    check_tasks(tasks, prompts)
    state = process_state()
    mine = tasks[state.process_index :: state.num_processes]
    if prompts is None:
        prompts = perturb_tasks(mine, config.perturbation, config.k, config.seed, drop_prob=config.drop_prob)
    scorer = Scorer(loaded, config)
    instances: list[InstanceScore] = []
    started = time.perf_counter()
    desc = "scoring" if state.num_processes == 1 else f"scoring (process 0 of {state.num_processes})"
    with tqdm(total=len(mine), unit="task", desc=desc, disable=not progress or not state.is_main_process) as bar:
        for first in range(0, len(mine), config.tasks_per_chunk):
            chunk = mine[first : first + config.tasks_per_chunk]
            instances.extend(scorer.score(chunk, prompts))
            bar.update(len(chunk))
    stats = scorer.stats() | {"wall_s": time.perf_counter() - started}
    if state.num_processes > 1:
        parts = gather_object([{"instances": [asdict(s) for s in instances], "stats": stats}])
        instances = [InstanceScore(**(s | {"p": tuple(s["p"])})) for part in parts for s in part["instances"]]
        stats = {key: sum(part["stats"][key] for part in parts) for key in stats} | {
            "wall_s": max(part["stats"]["wall_s"] for part in parts)
        }
    by_task: dict[str, list[InstanceScore]] = {}
    for score in instances:
        by_task.setdefault(score.task, []).append(score)
    rows = tuple(summarize_task(task, by_task[task.name]) for task in tasks)
    ordered = tuple(s for task in tasks for s in by_task[task.name])
    return ScoreTable(rows, ordered, table_meta(loaded, config, prompts, stats, state.num_processes))


def table_meta(
    loaded: LoadedModel, config: ScoringSettings, prompts: Mapping[str, PerturbedPrompts], stats: dict[str, Any],
    processes: int = 1,
) -> dict[str, Any]:
    """A score table's metadata: the model, the settings (with the prompts' perturbation), the work done."""
    perturbation = next(iter(prompts.values())).perturbation if prompts else config.perturbation
    return {
        "model": loaded.name,
        "config": config.model_dump() | {"perturbation": perturbation},
        "processes": processes,
        "stats": stats,
    }

"""Prompt-uncertainty scoring: greedy predictions, teacher-forced likelihoods, PU, PP, perplexity.

For each task (METHOD.md): ``n`` seeded instances; the greedy prediction ``y_i`` of each
under the original prompt (its ids cut before EOS, then EOS appended); the mean
per-token NLL ``L_ij`` of ``y_i`` under the original (``j = 0``) and each perturbed prompt
(``j = 1..k``); ``p_ij = exp(-L_ij)``;

* ``PU = mean_{i, j>=1} |p_ij - p_i0|`` (prompt uncertainty),
* ``PP = mean_i p_i0`` (prediction probability),
* ``perplexity = mean_i exp(L_i0)``.

The hot path, for causal models with full attention: the original prompts of a chunk of
tasks are decoded greedily in length-sorted, token-budget batches in which each task's
prompt *prefix* (definition + demonstrations, shared by its instances) runs once and its KV
cache is expanded over the instances (:mod:`activeit.prefix_decoding`); finished rows leave
the batch, and the log-probabilities of the chosen tokens give ``L_i0`` directly. Then every
(perturbed prompt, prediction) pair is teacher-forced (:mod:`activeit.forcing`), one
forward pass per batch, no ``generate``, the same prefix sharing, and logits only at the
prediction positions. In reduced precision (bf16 on CUDA) ``j = 0`` is teacher-forced too,
so that ``|p_ij - p_i0|`` compares like with like. Seq2seq and sliding-window models use
batched ``generate`` and plain teacher forcing of all ``k + 1`` prompts. Under several
processes (``accelerate launch``) the tasks are split across processes and the results
gathered on every process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from activeit.errors import ActiveITError
from activeit.forcing import ForcedPair, ForcingStats, teacher_forced_nll
from activeit.generation import greedy_generate, model_device
from activeit.models import LoadedModel
from activeit.prefix_cache import supports_prefix_reuse
from activeit.prefix_decoding import DecodingStats, greedy_decode_scored
from activeit.perturb import PerturbedPrompts, perturb_tasks
from activeit.prompts import INSTANCE_HEADER, EncodedPrompt, PromptFormatter
from activeit.tasks import Task

TABLE_SUFFIXES = (".csv", ".parquet")
FORCE_GQA = "TRANSFORMERS_SDPA_FORCE_GQA"


@dataclass(frozen=True)
class ScoringConfig:
    """Scoring settings; the defaults are the paper's (n = k = 10, word drop 0.2, 128 tokens).

    ``token_budget`` bounds the padded tokens of one forward batch (prompt prefix width plus
    suffix and prediction, per row) and of one pool of prefix caches; peak memory follows
    it (8192: about 1.9 GB over SmolLM2's own on CPU, where larger batches are no faster;
    raise it on a GPU). ``logit_budget`` bounds the prediction positions whose
    vocabulary logits are held at once; ``tasks_per_chunk`` tasks are generated and
    teacher-forced together, which keeps memory flat however large the pool.
    """

    n: int = 10
    k: int = 10
    max_new_tokens: int = 128
    max_source_length: int = 1024
    seed: int = 0
    perturbation: str = "word_drop"
    drop_prob: float = 0.2
    token_budget: int = 8192
    reuse_prefix: bool = True
    logit_budget: int = 2048
    tasks_per_chunk: int = 8
    chat: bool | None = None
    bf16_on_cuda: bool = True

    def __post_init__(self) -> None:
        for name in ("n", "k", "max_new_tokens", "token_budget", "logit_budget", "tasks_per_chunk"):
            if getattr(self, name) < 1:
                raise ActiveITError(f"ScoringConfig.{name} must be at least 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class InstanceScore:
    """Per-instance detail: the greedy prediction and its probabilities under each prompt."""

    task: str
    instance_id: str
    prediction: str
    prediction_tokens: int  # including the EOS token
    nll0: float  # L_i0, mean NLL per token under the original prompt
    p0: float  # p_i0 = exp(-L_i0)
    p: tuple[float, ...]  # p_ij for j = 1..k


@dataclass(frozen=True)
class TaskScore:
    """One task's scores. ``category`` is the task's own category (e.g. NIV2's), not its task-map one."""

    task: str
    pu: float
    pp: float
    perplexity: float
    n: int
    k: int
    is_classification: bool
    category: str


def task_metrics(nll: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    """``(PU, PP, perplexity)`` from ``nll[i][j]`` = L_ij (j = 0 the original prompt)."""
    if not nll or any(len(row) < 2 for row in nll):
        raise ActiveITError("task_metrics needs at least one instance and one perturbed prompt")
    p = [[math.exp(-value) for value in row] for row in nll]
    pu = sum(abs(pij - row[0]) for row in p for pij in row[1:]) / sum(len(row) - 1 for row in p)
    pp = sum(row[0] for row in p) / len(p)
    perplexity = sum(math.exp(row[0]) for row in nll) / len(nll)
    return pu, pp, perplexity


def summarize_task(task: Task, instances: Sequence[InstanceScore]) -> TaskScore:
    """The task's row from its per-instance detail."""
    if not instances:
        raise ActiveITError(f"task '{task.name}' has no scored instances")
    nll = [[s.nll0, *(-math.log(max(p, 1e-300)) for p in s.p)] for s in instances]
    pu, pp, perplexity = task_metrics(nll)
    return TaskScore(
        task=task.name,
        pu=pu,
        pp=pp,
        perplexity=perplexity,
        n=len(instances),
        k=len(instances[0].p),
        is_classification=task.is_classification,
        category=task.category,
    )


@dataclass(frozen=True)
class ScoreTable:
    """Task scores (one :class:`TaskScore` per task) with per-instance detail and metadata."""

    rows: tuple[TaskScore, ...]
    instances: tuple[InstanceScore, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rows", tuple(self.rows))
        object.__setattr__(self, "instances", tuple(self.instances))
        index = {row.task: row for row in self.rows}
        if len(index) != len(self.rows):
            raise ActiveITError("ScoreTable: a task appears twice")
        object.__setattr__(self, "_index", index)

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[TaskScore]:
        return iter(self.rows)

    def __contains__(self, task: object) -> bool:
        return task in self._index  # type: ignore[attr-defined]

    def __getitem__(self, task: str) -> TaskScore:
        try:
            return self._index[task]  # type: ignore[attr-defined]
        except KeyError:
            raise KeyError(f"no scores for task '{task}'") from None

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(row.task for row in self.rows)

    def instances_of(self, task: str) -> tuple[InstanceScore, ...]:
        return tuple(s for s in self.instances if s.task == task)

    def to_frame(self) -> Any:
        """The task rows as a pandas DataFrame."""
        import pandas as pd

        columns = [f.name for f in TaskScore.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(row) for row in self.rows], columns=columns)

    def instances_frame(self) -> Any:
        """The per-instance detail as a pandas DataFrame (``p`` is a list per row)."""
        import pandas as pd

        columns = [f.name for f in InstanceScore.__dataclass_fields__.values()]
        return pd.DataFrame([asdict(s) | {"p": list(s.p)} for s in self.instances], columns=columns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [asdict(row) for row in self.rows],
            "instances": [asdict(s) | {"p": list(s.p)} for s in self.instances],
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreTable:
        return cls(
            rows=tuple(TaskScore(**row) for row in data["rows"]),
            instances=tuple(InstanceScore(**(s | {"p": tuple(s["p"])})) for s in data.get("instances", ())),
            meta=dict(data.get("meta", {})),
        )

    @staticmethod
    def instances_path(path: str | Path) -> Path:
        """Where :meth:`save` puts the per-instance detail of a table saved at ``path``."""
        path = Path(path)
        return path.with_name(f"{path.stem}.instances{path.suffix}")

    def save(self, path: str | Path) -> Path:
        """Write the task rows to ``path`` (.csv or .parquet) and the detail beside it."""
        path = Path(path)
        suffix = _table_suffix(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        detail = self.instances_frame()
        if suffix == ".csv":
            self.to_frame().to_csv(path, index=False)
            detail["p"] = detail["p"].map(json.dumps)
            detail.to_csv(self.instances_path(path), index=False)
        else:
            self.to_frame().to_parquet(path, index=False)
            detail.to_parquet(self.instances_path(path), index=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> ScoreTable:
        """Read a table written by :meth:`save` (the detail too when it is there)."""
        import pandas as pd

        path = Path(path)
        suffix = _table_suffix(path)
        if not path.exists():
            raise ActiveITError(f"score table '{path}' does not exist")
        read = pd.read_csv if suffix == ".csv" else pd.read_parquet
        frame = read(path)
        rows = tuple(
            TaskScore(
                task=str(r["task"]), pu=float(r["pu"]), pp=float(r["pp"]),
                perplexity=float(r["perplexity"]), n=int(r["n"]), k=int(r["k"]),
                is_classification=bool(r["is_classification"]), category=str(r["category"]),
            )
            for r in frame.to_dict("records")
        )
        instances: tuple[InstanceScore, ...] = ()
        detail_path = cls.instances_path(path)
        if detail_path.exists():
            detail = read(detail_path, keep_default_na=False) if suffix == ".csv" else read(detail_path)
            instances = tuple(
                InstanceScore(
                    task=str(r["task"]), instance_id=str(r["instance_id"]), prediction=str(r["prediction"]),
                    prediction_tokens=int(r["prediction_tokens"]), nll0=float(r["nll0"]), p0=float(r["p0"]),
                    p=tuple(float(x) for x in (json.loads(r["p"]) if suffix == ".csv" else r["p"])),
                )
                for r in detail.to_dict("records")
            )
        return cls(rows, instances)


def _table_suffix(path: Path) -> str:
    if path.suffix not in TABLE_SUFFIXES:
        raise ActiveITError(f"score table '{path}': use a .csv or .parquet file name")
    return path.suffix


@contextlib.contextmanager
def grouped_query_attention() -> Iterator[None]:
    """Let SDPA read grouped-query K/V heads as they are, under an attention mask (CPU).

    transformers copies each K/V head once per query head (``repeat_kv``) when a mask is
    given, because CUDA's fused kernels refuse masked GQA; PyTorch's CPU kernel takes it
    (``enable_gqa``), the same result without the copies. Switched on with transformers'
    own ``TRANSFORMERS_SDPA_FORCE_GQA`` for the duration of scoring.
    """
    previous = os.environ.get(FORCE_GQA)
    os.environ[FORCE_GQA] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(FORCE_GQA, None)
        else:
            os.environ[FORCE_GQA] = previous


class _Scorer:
    """Scores chunks of tasks with one model and config."""

    def __init__(self, loaded: LoadedModel, config: ScoringConfig) -> None:
        self.loaded, self.config = loaded, config
        self.formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
        self.eos = loaded.tokenizer.eos_token_id
        if self.eos is None:
            raise ActiveITError(f"model '{loaded.name}': its tokenizer has no EOS token to score")
        self.reuse_prefix = config.reuse_prefix and supports_prefix_reuse(loaded)
        # The instance header opens every suffix with the same ids: it joins the shared prefix.
        self.header = tuple(loaded.tokenizer(INSTANCE_HEADER, add_special_tokens=False)["input_ids"])
        self.forcing, self.decoding = ForcingStats(), DecodingStats()
        self.timing = {"generation_s": 0.0, "teacher_forcing_s": 0.0}
        device = model_device(loaded.model)
        use_bf16 = (
            config.bf16_on_cuda and device.type == "cuda"
            and next(loaded.model.parameters()).dtype == torch.float32
        )
        self.autocast = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_bf16
            else grouped_query_attention if device.type == "cpu" else contextlib.nullcontext
        )
        # L_i0 is read off the greedy decoding only where that computation matches teacher
        # forcing to fp32 rounding; in reduced precision j = 0 is teacher-forced like j >= 1.
        exact = not use_bf16 and next(loaded.model.parameters()).dtype == torch.float32
        self.original_from_decoding = self.reuse_prefix and exact

    def score(self, tasks: Sequence[Task], prompts: Mapping[str, PerturbedPrompts]) -> list[InstanceScore]:
        cfg = self.config
        sampled = [task.sample_instances(cfg.n, cfg.seed) for task in tasks]
        encoded = [
            [
                [self.split(self.formatter.encode(v.definition, v.examples, inst.input)) for inst in instances]
                for v in prompts[task.name].variants
            ]
            for task, instances in zip(tasks, sampled)
        ]
        targets, decoded_nll = self.predict([prompt for per_task in encoded for prompt in per_task[0]])

        first_forced = 1 if decoded_nll is not None else 0
        pairs, first = [], 0
        for per_task in encoded:
            for variant in per_task[first_forced:]:
                for i, (prefix, suffix) in enumerate(variant):
                    pairs.append(ForcedPair(prefix, suffix, targets[first + i]))
            first += len(per_task[0])
        started = time.perf_counter()
        with self.autocast():
            nll = teacher_forced_nll(self.loaded, pairs, cfg.token_budget, cfg.logit_budget, self.forcing)
        self.timing["teacher_forcing_s"] += time.perf_counter() - started

        scores, pair, first = [], 0, 0
        decode = self.loaded.tokenizer.decode
        for task, instances, per_task in zip(tasks, sampled, encoded):
            n, forced = len(instances), len(per_task) - first_forced
            table = [nll[pair + j * n : pair + (j + 1) * n] for j in range(forced)]  # [j][i]
            if decoded_nll is not None:
                table.insert(0, decoded_nll[first : first + n])
            for i, instance in enumerate(instances):
                target = targets[first + i]
                scores.append(
                    InstanceScore(
                        task=task.name,
                        instance_id=instance.id,
                        prediction=decode(list(target[:-1]), skip_special_tokens=True).strip(),
                        prediction_tokens=len(target),
                        nll0=table[0][i],
                        p0=math.exp(-table[0][i]),
                        p=tuple(math.exp(-table[j][i]) for j in range(1, len(table))),
                    )
                )
            pair += forced * n
            first += n
        return scores

    def predict(
        self, originals: list[tuple[tuple[int, ...], tuple[int, ...]]]
    ) -> tuple[list[tuple[int, ...]], list[float] | None]:
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

    def split(self, prompt: EncodedPrompt) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(shared prefix, own suffix) of a prompt's ids; all suffix without prefix reuse."""
        if not self.reuse_prefix:
            return (), tuple(prompt.ids)
        prefix, suffix = prompt.prefix_ids, prompt.suffix_ids
        cut = len(self.header)
        if suffix[:cut] == self.header and len(suffix) > cut:
            return prefix + suffix[:cut], suffix[cut:]
        return prefix, suffix

    def stats(self) -> dict[str, Any]:
        forcing = {f"forcing_{key}": value for key, value in asdict(self.forcing).items()}
        decoding = {f"decoding_{key}": value for key, value in asdict(self.decoding).items()}
        return forcing | decoding | self.timing


def _check_tasks(tasks: Sequence[Task], prompts: Mapping[str, PerturbedPrompts] | None) -> None:
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


def process_state() -> Any:
    """accelerate's ``PartialState`` for this process.

    Several processes on CPU (``ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu
    --num_processes 2 ...``, or any launch on a machine without CUDA) use gloo.
    """
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def place_model(loaded: LoadedModel) -> LoadedModel:
    """Move the model to this process's accelerate device (its own GPU under ``accelerate launch``)."""
    loaded.model.to(process_state().device)
    return loaded


def score_tasks(
    loaded: LoadedModel,
    tasks: Sequence[Task],
    config: ScoringConfig = ScoringConfig(),
    prompts: Mapping[str, PerturbedPrompts] | None = None,
    progress: bool = True,
) -> ScoreTable:
    """Score ``tasks`` (PU, PP, perplexity) with ``loaded``; rows in the order of ``tasks``.

    ``prompts`` (from :func:`activeit.perturb.perturb_tasks`) are built from ``config`` when
    not given (when given, ``k`` is theirs). Under several accelerate processes each scores its share of the tasks and
    every process returns the full table. The model is used where it is (see
    :func:`place_model`); on CUDA an fp32 model runs under bf16 autocast.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    tasks = list(tasks)
    _check_tasks(tasks, prompts)
    state = process_state()
    mine = tasks[state.process_index :: state.num_processes]
    if prompts is None:
        prompts = perturb_tasks(mine, config.perturbation, config.k, config.seed, drop_prob=config.drop_prob)
    scorer = _Scorer(loaded, config)
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
    perturbation = next(iter(prompts.values())).perturbation if prompts else config.perturbation
    meta = {
        "model": loaded.name,
        "config": asdict(config) | {"perturbation": perturbation},
        "processes": state.num_processes,
        "stats": stats,
    }
    return ScoreTable(rows, ordered, meta)

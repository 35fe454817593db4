"""ROUGE-L and exact match of greedy predictions on (unseen) test tasks.

Metrics follow the NIV2 reference evaluation (``compute_metrics.py`` of the
natural-instructions repository): ROUGE-L F-measure from ``rouge-score`` with its default
tokenizer (lowercases, keeps only ASCII letters and digits) and the Porter stemmer, and
exact match after lowercasing and removing punctuation and extra whitespace. Both take the
max over an instance's references and are reported x100, as means over instances:
overall, for classification vs generation tasks, per category and per task.

Beside them, a continuous metric that needs no decoding: the **reference log-likelihood**
(``loglik``), the mean per-token log-probability (nats) of a reference answer under the
prompt, teacher-forced, max over the instance's references. A reference longer than
``max_new_tokens`` tokens is cut there (its EOS then is not scored); one that fits is scored
with its EOS. ROUGE-L moves in coarse steps on short answers; the log-likelihood moves with
every change of the model, which is what a study over few seeds needs
(docs/STATISTICS.md measures both).

The default tokenizer sees nothing in non-Latin text (such a prediction scores 0); NIV2
switches to a GPT-2 tokenizer for its cross-lingual track, which English-only pools (the
default) do not need.
"""

from __future__ import annotations

import contextlib
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from activeit.config.settings import EvaluationSettings
from activeit.data.tasks import Instance, Task, TaskPool
from activeit.errors import ConfigError

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"
#: The two scores of an instance, and of a group of instances (x100).
ROUGE_L, EXACT_MATCH = "rougeL", "exact_match"
#: The reference log-likelihood of an instance (nats per token; not scaled).
LOGLIK = "loglik"
#: A report's headline metrics, in column order: name -> (group, score) (:meth:`EvalReport.headline`).
HEADLINE_METRICS: dict[str, tuple[str, str]] = {
    ROUGE_L: ("overall", ROUGE_L),
    f"{ROUGE_L}_classification": ("classification", ROUGE_L),
    f"{ROUGE_L}_generation": ("generation", ROUGE_L),
    EXACT_MATCH: ("overall", EXACT_MATCH),
    LOGLIK: ("overall", LOGLIK),
}
#: The metrics a study may compare strategies on (``study.metric``): the paper's headline and
#: the continuous one.
STUDY_METRICS = (ROUGE_L, LOGLIK)
_PUNCTUATION = str.maketrans("", "", string.punctuation)


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, collapse whitespace (the NIV2 exact-match rule)."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure in [0, 1], max over ``references`` (0 without references)."""
    scorer = _rouge_scorer()
    return max((scorer.score(ref, prediction)["rougeL"].fmeasure for ref in references), default=0.0)


def exact_match(prediction: str, references: Sequence[str]) -> float:
    """1.0 when the normalized prediction equals a normalized reference, else 0.0."""
    normalized = normalize_answer(prediction)
    return float(any(normalized == normalize_answer(ref) for ref in references))


def _summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ROUGE-L and exact match (x100) over records, ``None`` when there are none, and the
    mean reference log-likelihood where every record has one."""
    n = len(records)
    summary = {
        ROUGE_L: 100 * sum(r[ROUGE_L] for r in records) / n if n else None,
        EXACT_MATCH: 100 * sum(r[EXACT_MATCH] for r in records) / n if n else None,
        "instances": n,
    }
    if n and all(LOGLIK in r for r in records):
        summary[LOGLIK] = sum(r[LOGLIK] for r in records) / n
    return summary


def _grouped(records: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(record[key], []).append(record)
    return {name: _summary(group) for name, group in sorted(groups.items())}


@dataclass
class EvalReport:
    """Grouped metrics and the per-instance predictions behind them.

    ``overall``, ``classification`` and ``generation`` are
    ``{"rougeL", "exact_match", "instances"}`` (scores x100, ``None`` for an empty group);
    ``per_category`` and ``per_task`` map names to the same (tasks also carry
    ``category`` and ``is_classification``); ``predictions`` has one dict per instance:
    ``task, id, category, is_classification, prediction, references, rougeL, exact_match``
    (the last two in [0, 1]).
    """

    overall: dict[str, Any]
    classification: dict[str, Any]
    generation: dict[str, Any]
    per_category: dict[str, dict[str, Any]]
    per_task: dict[str, dict[str, Any]]
    predictions: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_predictions(cls, records: Iterable[Mapping[str, Any]]) -> EvalReport:
        """Aggregate per-instance records (the ``predictions`` format; scores in [0, 1])."""
        records = [dict(r) for r in records]
        per_task = _grouped(records, "task")
        for record in records:
            per_task[record["task"]].update(
                category=record["category"], is_classification=record["is_classification"]
            )
        return cls(
            overall=_summary(records),
            classification=_summary([r for r in records if r["is_classification"]]),
            generation=_summary([r for r in records if not r["is_classification"]]),
            per_category=_grouped(records, "category"),
            per_task=per_task,
            predictions=records,
        )

    def metrics(self) -> dict[str, Any]:
        """Everything but the predictions."""
        return {
            "overall": self.overall,
            "classification": self.classification,
            "generation": self.generation,
            "per_category": self.per_category,
            "per_task": self.per_task,
        }

    def headline(self) -> dict[str, float]:
        """The :data:`HEADLINE_METRICS` (groups without instances are left out)."""
        values = {name: getattr(self, group).get(score) for name, (group, score) in HEADLINE_METRICS.items()}
        return {name: float(value) for name, value in values.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        return {**self.metrics(), "predictions": self.predictions}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalReport:
        return cls(
            overall=dict(data["overall"]),
            classification=dict(data["classification"]),
            generation=dict(data["generation"]),
            per_category={k: dict(v) for k, v in data["per_category"].items()},
            per_task={k: dict(v) for k, v in data["per_task"].items()},
            predictions=[dict(p) for p in data.get("predictions", ())],
        )

    def save(self, path: str | Path) -> Path:
        """Write ``metrics.json`` and ``predictions.jsonl`` into the folder ``path``."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / METRICS_FILE).write_text(json.dumps(self.metrics(), indent=2), encoding="utf-8")
        with (folder / PREDICTIONS_FILE).open("w", encoding="utf-8") as out:
            for record in self.predictions:
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> EvalReport:
        """Read a folder written by :meth:`save`."""
        folder = Path(path)
        metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
        lines = (folder / PREDICTIONS_FILE).read_text(encoding="utf-8").splitlines()
        return cls.from_dict({**metrics, "predictions": [json.loads(line) for line in lines if line]})

    def summary(self, max_tasks: int = 20) -> str:
        """A short human-readable table."""

        def row(name: str, m: Mapping[str, Any]) -> str:
            if m["instances"] == 0:
                return f"  {name:<48} {'-':>8} {'-':>8} {0:>6}"
            return f"  {name:<48} {m[ROUGE_L]:>8.2f} {m[EXACT_MATCH]:>8.2f} {m['instances']:>6}"

        lines = [f"  {'':<48} {'ROUGE-L':>8} {'EM':>8} {'n':>6}", row("overall", self.overall),
                 row("classification", self.classification), row("generation", self.generation),
                 "per category:"]
        lines += [row(name, m) for name, m in self.per_category.items()]
        tasks = list(self.per_task.items())
        lines.append(f"per task ({len(tasks)}):" if len(tasks) <= max_tasks
                     else f"per task (first {max_tasks} of {len(tasks)}; all in {METRICS_FILE}):")
        lines += [row(name[:48], m) for name, m in tasks[:max_tasks]]
        return "\n".join(lines)


def score_predictions(
    items: Iterable[tuple[Task, Instance, str]], logliks: Sequence[float] | None = None
) -> EvalReport:
    """The report for ``(task, instance, prediction)`` triples (and, where given, each
    instance's reference log-likelihood, in the same order)."""
    items = list(items)
    extra = [{}] * len(items) if logliks is None else [{LOGLIK: float(value)} for value in logliks]
    return EvalReport.from_predictions(
        {
            "task": task.name,
            "id": instance.id,
            "category": task.category,
            "is_classification": task.is_classification,
            "prediction": prediction,
            "references": list(instance.outputs),
            ROUGE_L: rouge_l(prediction, instance.outputs),
            EXACT_MATCH: exact_match(prediction, instance.outputs),
            **more,
        }
        for (task, instance, prediction), more in zip(items, extra)
    )


def evaluation_tasks(pool: TaskPool, config: EvaluationSettings) -> tuple[Task, ...]:
    """The pool's tasks that ``config`` evaluates on (its ``split``); a :class:`ConfigError`
    when that split is empty."""
    tasks = pool.splits.get(config.split, ())
    if not tasks:
        hint = "set pool.validation_tasks" if config.split == "validation" else "set pool.test_tasks"
        raise ConfigError(f"pool '{pool.name}' has no {config.split} tasks to evaluate on ({hint})")
    return tuple(tasks)


def evaluate_model(
    loaded: Any, tasks: Sequence[Task], config: EvaluationSettings = EvaluationSettings(), progress: bool = True
) -> EvalReport:
    """Greedy predictions of ``loaded`` on a seeded sample of each task's instances, scored,
    and the reference log-likelihood of each instance (:func:`reference_logliks`).

    Causal full-attention models decode through the shared-prefix decoder: a task's
    definition and demonstrations run once per batch, not once per instance, and the
    references are teacher-forced on the same prompt caches (the prompt runs once for the
    prediction and the log-likelihood); other models generate, then force the references.
    """
    from tqdm.auto import tqdm

    from activeit.data.prompts import PromptFormatter
    from activeit.models.devices import grouped_query_attention, model_device
    from activeit.scoring.engine.decoding import greedy_decode, greedy_decode_forcing
    from activeit.scoring.engine.prefix_cache import supports_prefix_reuse

    formatter = PromptFormatter.for_model(loaded, config.max_source_length, chat=config.chat)
    pairs = [(t, i) for t in tasks for i in t.sample_instances(config.max_instances_per_task, config.seed)]
    prompts = [formatter.shared_split(formatter.encode_instance(task, instance)) for task, instance in pairs]
    was_training = loaded.model.training
    loaded.model.eval()
    decoding: dict[str, Any] = {
        "max_new_tokens": config.max_new_tokens, "token_budget": config.token_budget,
        "wrap": lambda batches: tqdm(batches, desc="evaluate", unit="batch", disable=not progress),
    }
    # on CPU, SDPA reads grouped-query K/V heads as they are (no copy of the KV cache per query
    # head at every decoding step), as the scorer does
    cpu = model_device(loaded.model).type == "cpu"
    try:
        with grouped_query_attention() if cpu else contextlib.nullcontext():
            if supports_prefix_reuse(loaded):  # the references forced on the decoder's own prompt caches
                targets = [reference_targets(formatter, instance, config) for _, instance in pairs]
                generated, nlls = greedy_decode_forcing(loaded, prompts, targets, **decoding)
                logliks = [max((-value for value in values), default=float("nan")) for values in nlls]
            else:
                generated = greedy_decode(loaded, prompts, **decoding)
                logliks = reference_logliks(loaded, formatter, pairs, prompts, config)
    finally:
        loaded.model.train(was_training)
    texts = [loaded.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in generated]
    return score_predictions(((task, inst, text) for (task, inst), text in zip(pairs, texts)), logliks)


def reference_target(ids: Sequence[int], max_new_tokens: int) -> tuple[int, ...]:
    """A reference's target ids (EOS last) as the log-likelihood scores them: whole when it
    fits in ``max_new_tokens`` tokens, else its first ``max_new_tokens`` (no EOS)."""
    return tuple(ids) if len(ids) <= max_new_tokens + 1 else tuple(ids[:max_new_tokens])


def reference_targets(formatter: Any, instance: Instance, config: EvaluationSettings) -> list[tuple[int, ...]]:
    """The target ids of each of ``instance``'s references (:func:`reference_target`)."""
    return [reference_target(formatter.encode_target(reference), config.max_new_tokens) for reference in instance.outputs]


def reference_logliks(
    loaded: Any,
    formatter: Any,
    pairs: Sequence[tuple[Task, Instance]],
    prompts: Sequence[tuple[tuple[int, ...], tuple[int, ...]]],
    config: EvaluationSettings,
) -> list[float]:
    """Per ``(task, instance)`` with its ``(prefix, suffix)`` prompt ids: the largest mean
    per-token log-likelihood of one of its references under that prompt (teacher forcing on the
    shared-prefix engine, every reference of every instance in one call; NaN for an instance
    without references)."""
    import torch

    from activeit.scoring.engine.forcing import ForcedPair, teacher_forced_nll
    from activeit.scoring.engine.prefix_cache import supports_prefix_reuse

    reuse = supports_prefix_reuse(loaded)
    forced, owner = [], []
    for number, ((_, instance), (prefix, suffix)) in enumerate(zip(pairs, prompts)):
        prompt = (prefix, suffix) if reuse else ((), prefix + suffix)
        for target in reference_targets(formatter, instance, config):
            forced.append(ForcedPair(*prompt, target))
            owner.append(number)
    with torch.inference_mode():  # under evaluate_model's attention setting
        nll = teacher_forced_nll(loaded, forced, config.token_budget) if forced else []
    per_instance: list[list[float]] = [[] for _ in pairs]
    for number, value in zip(owner, nll):
        per_instance[number].append(-value)
    return [max(values) if values else float("nan") for values in per_instance]

"""Every setting of the library, declared once: pool, scoring, training and evaluation.

The defaults are the offline default regime (``configs/default.yaml`` states nothing else;
docs/METHOD.md, "The default regime"): the builtin pool, a 135M model and a schedule sized
for 2 CPU cores, so that ``python -m activeit train`` and ``run.py`` train alike unless told
otherwise. The paper's regime is ``configs/paper.yaml``.

Each class is a frozen pydantic model (unknown keys are errors). The experiment config
(:mod:`experiment.config`) composes them, the pipeline steps receive them as they are, and
the command-line flags are generated from their fields (:mod:`activeit.config.flags`): name,
type, default and help come from here, so a new setting is one line. ``seed`` and ``chat``
are declared once, in :class:`WithSeed` and :class:`WithChat`; an experiment config sets them
once, at its top level, for every section.

A bad value raises pydantic's ``ValidationError``; at the boundaries (a config file, the
command line) :func:`describe_error` makes it the one line that names the file or flag and key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

#: The repository root: relative paths in settings and configs resolve against it (it is
#: also the code root of a pipeline's container image), not the working directory.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Padded tokens of one forward batch (and of one pool of prefix caches) while scoring or
#: evaluating. On the 2-core CPU it is as fast as 16384 with two thirds of the memory;
#: raise it on a GPU.
TOKEN_BUDGET = 8192
#: Prediction positions whose vocabulary logits are held at once while teacher forcing.
LOGIT_BUDGET = 2048
Source = Literal["niv2", "self-instruct", "hub", "builtin", "alpaca", "sharegpt", "messages", "hf-disk"]
SOURCES: tuple[str, ...] = get_args(Source)
#: The sources of instance records (activeit.data.sources.records): a column mapping and a grouping apply.
RECORD_SOURCES: tuple[str, ...] = ("alpaca", "sharegpt", "messages", "hf-disk")
MixedPrecision = Literal["auto", "no", "bf16", "fp16"]


def describe_error(error: ValidationError, source: str, name: Callable[[str], str] = "key '{}'".format) -> str:
    """The first problem of ``error`` as one line: ``source`` (a file, the command line),
    the key (as ``name`` spells it: ``key 'pool.path'``, ``--pool-path``) and pydantic's message."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown {name(key)}"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] != "value_error":  # our own messages name the value already
        message += f", got {first['input']!r}"
    return f"{source}: {name(key)}: {message}" if key else f"{source}: {message}"


_S = TypeVar("_S", bound="Settings")


class Settings(BaseModel):
    """A frozen group of settings; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def replace(self: _S, **changes: Any) -> _S:
        """A validated copy with ``changes`` applied."""
        return self.model_validate(self.model_dump() | changes)


#: The largest seed: torch, numpy and ``random`` all accept 0..2**32 - 1.
MAX_SEED = 2**32 - 1


def check_seed(value: int) -> int:
    """``value`` when torch, numpy and ``random`` all accept it as a seed; else a ValueError."""
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"a seed must be in 0..{MAX_SEED} (what torch, numpy and random accept), got {value}")
    return value


Seed = Annotated[int, AfterValidator(check_seed)]


class WithSeed(Settings):
    """Settings that sample or shuffle."""

    seed: Seed = Field(default=0, description="seed of every sampling, perturbation and shuffle")


class WithChat(Settings):
    """Settings that render prompts."""

    chat: bool | None = Field(
        default=None, description="wrap prompts in the model's chat template (default: when the model has one)"
    )


#: The fields an experiment config sets once, at its top level, for every section.
SHARED_FIELDS: tuple[str, ...] = (*WithSeed.model_fields, *WithChat.model_fields)


def _accelerate_config() -> Any:
    return Field(
        default=None,
        description="an accelerate config file (`accelerate config`: multi-GPU, FSDP, DeepSpeed, several "
        "machines) for `accelerate launch`; it lays out the processes (num_processes > 1 overrides its count)",
        json_schema_extra={"metavar": "FILE", "path": True},
    )


def repo_path(value: str) -> Path:
    """A settings path: ``~`` expanded, a relative one taken from the repository root."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def existing_file(value: str | None, what: str) -> str | None:
    """``value`` (kept as written, so a config stays portable) if it names an existing file."""
    if value is None:
        return None
    path = repo_path(value)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        where = "" if Path(value).expanduser().is_absolute() else f" (relative paths start at {REPO_ROOT})"
        raise ValueError(f"{what} '{value}' {problem}{where}; give the path of an existing file")
    return value


#: An accelerate config file's path, checked to exist when the settings are made.
AccelerateConfigFile = Annotated[str | None, AfterValidator(lambda value: existing_file(value, "accelerate config file"))]


def column_pairs(value: Any) -> Any:
    """``{role: column}`` (a config's mapping) or ``ROLE=COLUMN`` strings (the command line) as
    checked ``ROLE=COLUMN`` strings; the roles each source knows are checked where it reads."""
    if isinstance(value, Mapping):
        value = [f"{role}={column}" for role, column in value.items()]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return value  # pydantic names the wrong type
    roles: set[str] = set()
    for pair in value:
        role, equals, column = str(pair).partition("=")
        if not (equals and role.strip() and column.strip()):
            raise ValueError(f"a column mapping is ROLE=COLUMN (e.g. output=response), got {pair!r}")
        if role.strip() in roles:
            raise ValueError(f"the column mapping names role '{role.strip()}' twice")
        roles.add(role.strip())
    return tuple(f"{r.strip()}={c.strip()}" for r, _, c in (str(p).partition("=") for p in value))


#: The column mapping of a record source, kept as ``ROLE=COLUMN`` strings (one flag, one config key).
ColumnPairs = Annotated[tuple[str, ...] | None, BeforeValidator(column_pairs)]


class PoolSettings(WithSeed):
    """Where the task pool comes from and how it is split."""

    source: Source = Field(
        default="builtin", description="where the tasks come from (builtin: the offline suite)"
    )
    path: str | None = Field(
        default=None, description="NIV2 root folder, Self-Instruct .jsonl file or folder, a hub dataset id, an "
        "Alpaca / ShareGPT / messages .json or .jsonl file or folder, or (hf-disk) a save_to_disk folder or a "
        ".parquet / .json / .jsonl / .csv file"
    )
    split_dir: str = Field(default="default", description="NIV2 split folder under <path>/splits")
    english_only: bool = Field(
        default=True,
        description="NIV2: English tasks only",
        json_schema_extra={"flag": "--all-languages", "invert": True,
                           "flag_help": "NIV2: keep non-English tasks too (default: English only)"},
    )
    max_instances: int | None = Field(
        default=20, ge=1, description="keep at most N seeded instances per task (null: all of them)",
        json_schema_extra={"metavar": "N"},
    )
    validation_tasks: int = Field(
        default=0, ge=0, description="hold out N seeded train tasks as a validation split",
        json_schema_extra={"metavar": "N"},
    )
    test_tasks: int = Field(
        default=0, ge=0, description="hold out N seeded train tasks as the test split (sources without one)",
        json_schema_extra={"metavar": "N"},
    )
    skip_invalid: bool = Field(
        default=False, description="warn about invalid tasks (records) and missing task files instead of failing",
        json_schema_extra={"store_true": True},
    )
    columns: ColumnPairs = Field(
        default=None,
        description="alpaca / sharegpt / messages / hf-disk: the file's column of each role it names otherwise, "
        "as ROLE=COLUMN (in a config, a mapping); roles: instruction, input, output, conversations, messages, "
        "system, name, category, is_classification",
        json_schema_extra={"metavar": "ROLE=COLUMN"},
    )
    group_by: str | None = Field(
        default=None,
        description="alpaca / sharegpt / messages / hf-disk: one task per value of this column (task, category, "
        "source, ...) instead of one task per distinct instruction",
        json_schema_extra={"metavar": "COLUMN"},
    )
    task_clusters: int | None = Field(
        default=None, ge=1,
        description="alpaca / sharegpt / messages / hf-disk: cluster the distinct instructions into N tasks "
        "(TF-IDF + k-means) instead of one task per distinct instruction",
        json_schema_extra={"metavar": "N"},
    )

    @property
    def column_map(self) -> dict[str, str]:
        """:attr:`columns` as a ``{role: column}`` dict."""
        return dict(pair.split("=", 1) for pair in self.columns or ())  # type: ignore[misc]

    @model_validator(mode="after")
    def _path_required(self) -> PoolSettings:
        if self.source in ("niv2", "self-instruct", "hub", *RECORD_SOURCES) and not self.path:
            raise ValueError(f"pool source '{self.source}' needs a 'path'")
        return self

    @model_validator(mode="after")
    def _record_options(self) -> PoolSettings:
        given = [key for key in ("columns", "group_by", "task_clusters") if getattr(self, key)]
        if given and self.source not in RECORD_SOURCES:
            raise ValueError(f"{given[0]} applies to the {', '.join(RECORD_SOURCES)} sources, "
                             f"not '{self.source}'")
        if self.group_by and self.task_clusters:
            raise ValueError("group_by and task_clusters are two ways of making tasks; give one")
        return self


class ScoringSettings(WithSeed, WithChat):
    """Prompt-uncertainty scoring (the paper's: n = k = 10, word drop 0.2, 128 tokens, configs/paper.yaml)."""

    n: int = Field(default=3, ge=1, description="instances sampled per task")
    k: int = Field(default=4, ge=1, description="perturbed prompts per task")
    max_new_tokens: int = Field(default=8, ge=1, description="longest greedy prediction, in tokens")
    max_source_length: int = Field(default=512, ge=16, description="longest prompt, in tokens")
    #: A name of :data:`activeit.data.perturbations.PERTURBATIONS` (which imports these settings,
    #: so the name is checked where the settings are used: the experiment config, the CLI choices).
    perturbation: str = Field(default="word_drop", description="how prompts are perturbed")
    drop_prob: float = Field(default=0.2, ge=0.0, le=1.0, description="word_drop: probability of dropping a word")
    token_budget: int = Field(
        default=TOKEN_BUDGET, ge=1, description="padded tokens per forward batch (peak memory follows it)"
    )
    logit_budget: int = Field(
        default=LOGIT_BUDGET, ge=1, description="prediction positions whose vocabulary logits are held at once"
    )
    tasks_per_chunk: int = Field(
        default=8, ge=1, description="tasks decoded and teacher-forced together (memory stays flat); an "
        "adaptive stage takes as many tasks as give the rows of this many scored exactly"
    )
    reuse_prefix: bool = Field(
        default=True,
        description="run each task's shared prompt prefix once (off: recompute it per instance; same scores)",
    )
    bf16_on_cuda: bool = Field(
        default=False,
        description="score an fp32 model under bf16 autocast on CUDA (faster; the logits stay fp32, since "
        "bf16-rounded logits bias PU upward; PU then differs from fp32 scoring by bf16 noise)",
    )
    num_processes: int = Field(
        default=1, ge=1, description=">1 scores under `accelerate launch`, the pool split across this many "
        "processes and the table gathered (CPU: gloo; GPU: one each)",
    )
    accelerate_config: AccelerateConfigFile = _accelerate_config()
    adaptive: bool = Field(
        default=False,
        description="score in stages and stop a task once it is surely inside or outside the round's top b by PU "
        "(activeit.scoring.adaptive; strategies uncertainty and ambiguous); off: every task gets all n x k pairs",
        json_schema_extra={"store_true": True},
    )
    delta: float = Field(
        default=0.1, gt=0.0, lt=1.0,
        description="adaptive: the chance, at most, that the top b differs from exact scoring's (each of T tasks' "
        "PU intervals has level delta / T)",
    )
    first_stage: int = Field(
        default=20, ge=1,
        description="adaptive: (instance, perturbed prompt) pairs per task in the first stage (n x k or more: exact)",
    )
    stage_growth: float = Field(
        default=2.0, gt=1.0, description="adaptive: each later stage brings a task's pairs to this many times as many"
    )
    keep_prefixes_mb: float | None = Field(
        default=None, ge=0.0,
        description="adaptive: MiB of prefix KV caches kept between stages, so no prefix runs twice (0: none kept; "
        "unset: half the memory free on the scoring device when scoring starts)",
    )

    @model_validator(mode="after")
    def _adaptive_in_one_process(self) -> ScoringSettings:
        if self.adaptive and (self.num_processes > 1 or self.accelerate_config):
            raise ValueError("adaptive scoring runs in one process; set num_processes 1 and no accelerate_config")
        return self


class TrainingSettings(WithSeed, WithChat):
    """Fine-tuning (the paper's: 8 epochs at 5e-5 after 50 warm-up steps, up to 200 instances a task,
    configs/paper.yaml; docs/METHOD.md, "The loop").

    The effective batch is ``batch_size * grad_accum * num_processes``; ``warmup_steps``
    and ``max_steps`` count optimizer steps.
    """

    epochs: int = Field(default=1, ge=1, description="passes over the training examples")
    learning_rate: float = Field(
        default=1e-4, gt=0, description="peak learning rate (constant after the warm-up)",
        json_schema_extra={"flag": "--lr"},
    )
    warmup_steps: int = Field(default=0, ge=0, description="linear warm-up, in optimizer steps")
    batch_size: int = Field(default=8, ge=1, description="examples per process and micro-step")
    grad_accum: int = Field(default=1, ge=1, description="micro-steps per optimizer step")
    max_instances_per_task: int = Field(default=6, ge=1, description="seeded training instances per task")
    max_source_length: int = Field(default=512, ge=16, description="longest prompt, in tokens")
    max_target_length: int = Field(default=16, ge=2, description="longest target, in tokens (EOS included)")
    group_by_length: bool = Field(
        default=False,
        description="batch examples of similar length (less padding); off: consecutive examples of the seeded "
        "order, so two training sets that share examples see them in the same order (common random numbers)",
    )
    gradient_checkpointing: bool = Field(
        default=False, description="trade compute for memory", json_schema_extra={"store_true": True}
    )
    mixed_precision: MixedPrecision = Field(
        default="auto", description="auto: bf16 on a CUDA device that supports it, full precision otherwise"
    )
    max_steps: int | None = Field(default=None, ge=1, description="stop after this many optimizer steps")
    weight_decay: float = Field(default=0.0, ge=0.0, description="AdamW weight decay")
    max_grad_norm: float | None = Field(default=1.0, gt=0, description="gradient clipping norm (None: off)")
    num_processes: int = Field(
        default=1, ge=1, description=">1 runs `accelerate launch` with this many processes (CPU: gloo; GPU: one each)"
    )
    method: Literal["full", "lora"] = Field(
        default="full",
        description="full: every weight (the paper's setting); lora: a low-rank adapter (peft), saved without its base",
    )
    lora_rank: int = Field(default=8, ge=1, description="lora: rank of the adapter matrices")
    lora_alpha: int = Field(default=16, ge=1, description="lora: scaling numerator (scale = alpha / rank)")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="lora: dropout on the adapter's input")
    lora_target_modules: tuple[str, ...] | None = Field(
        default=None,
        description="lora: names of the linear layers to adapt (default: every attention and MLP projection "
        "of the model's family, see activeit.models.lora.LORA_TARGET_MODULES)",
        json_schema_extra={"metavar": "NAME"},
    )
    mode: Literal["retrain", "continue"] = Field(
        default="retrain",
        description="retrain: every round from the base model on all tasks selected so far (reference); "
        "continue: from the previous round's model on the newly selected tasks",
        json_schema_extra={"cli": False},
    )
    accelerate_config: AccelerateConfigFile = _accelerate_config()


class EvaluationSettings(WithSeed, WithChat):
    """ROUGE-L evaluation on the test tasks (the NIV2 benchmark's: 100 instances a task, configs/paper.yaml)."""

    split: Literal["test", "validation"] = Field(
        default="test",
        description="the tasks evaluated on: test (unseen tasks, the reported result) or validation (train tasks "
        "held out by pool.validation_tasks, for choosing a training regime without looking at the test tasks)",
        json_schema_extra={"cli": False},  # `activeit evaluate` has its own --split
    )
    max_instances_per_task: int = Field(default=20, ge=1, description="seeded test instances per task")
    max_new_tokens: int = Field(default=8, ge=1, description="longest greedy prediction, in tokens")
    max_source_length: int = Field(default=512, ge=16, description="longest prompt, in tokens")
    token_budget: int = Field(default=TOKEN_BUDGET, ge=1, description="padded tokens (prompt + new) per batch")


class DiversitySettings(Settings):
    """Task embeddings (computed once per pool) and the diversity rules of the ``diverse`` and
    ``uncertainty-diverse`` strategies."""

    encoder: str = Field(
        default="all-minilm-l6-v2",
        description="sentence encoder of the task embeddings: all-minilm-l6-v2 (from its PyPI wheel), "
        "a sentence-transformers folder or a hub id",
    )
    threshold: float = Field(
        default=0.9, gt=0.0, le=1.0,
        description="uncertainty-diverse: skip a task whose cosine similarity to one already selected is at "
        "least this (DEITA's representation filter)",
    )
    batch_size: int = Field(default=32, ge=1, description="tasks per encoder batch")

"""Every setting of the library, declared once: pool, scoring, training and evaluation.

Each class is a frozen pydantic model (unknown keys are errors). The experiment config
(:mod:`activeit.experiment`) composes them, the pipeline steps receive them as they are, and
the command-line flags are generated from their fields (:mod:`activeit.config.flags`): name,
type, default and help come from here, so a new setting is one line. ``seed`` and ``chat``
are declared once, in :class:`WithSeed` and :class:`WithChat`; an experiment config sets them
once, at its top level, for every section.

A bad value raises pydantic's ``ValidationError``; at the boundaries (a config file, the
command line) :func:`describe_error` makes it the one line that names the file or flag and key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

#: The repository root: relative paths in settings and configs resolve against it (it is
#: also the code root of a pipeline's container image), not the working directory.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Padded tokens of one forward batch (and of one pool of prefix caches) while scoring or
#: evaluating. On the 2-core CPU it is as fast as 16384 with two thirds of the memory;
#: raise it on a GPU.
TOKEN_BUDGET = 8192
#: Prediction positions whose vocabulary logits are held at once while teacher forcing.
LOGIT_BUDGET = 2048
Source = Literal["niv2", "self-instruct", "hub", "builtin"]
SOURCES: tuple[str, ...] = get_args(Source)
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


class Settings(BaseModel):
    """A frozen group of settings; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def replace(self, **changes: Any) -> Self:
        """A validated copy with ``changes`` applied."""
        return self.model_validate(self.model_dump() | changes)


class WithSeed(Settings):
    """Settings that sample or shuffle."""

    seed: int = Field(default=0, description="seed of every sampling, perturbation and shuffle")


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


class PoolSettings(WithSeed):
    """Where the task pool comes from and how it is split."""

    source: Source = Field(
        default="builtin", description="where the tasks come from (builtin: the offline suite)"
    )
    path: str | None = Field(
        default=None, description="NIV2 root folder, Self-Instruct .jsonl file or folder, or a hub dataset id"
    )
    split_dir: str = Field(default="default", description="NIV2 split folder under <path>/splits")
    english_only: bool = Field(
        default=True,
        description="NIV2: English tasks only",
        json_schema_extra={"flag": "--all-languages", "invert": True,
                           "flag_help": "NIV2: keep non-English tasks too (default: English only)"},
    )
    max_instances: int | None = Field(
        default=None, ge=1, description="keep at most N seeded instances per task", json_schema_extra={"metavar": "N"}
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
        default=False, description="warn about invalid tasks and missing task files instead of failing",
        json_schema_extra={"store_true": True},
    )

    @model_validator(mode="after")
    def _path_required(self) -> PoolSettings:
        if self.source in ("niv2", "self-instruct", "hub") and not self.path:
            raise ValueError(f"pool source '{self.source}' needs a 'path'")
        return self


class ScoringSettings(WithSeed, WithChat):
    """Prompt-uncertainty scoring; the defaults are the paper's (n = k = 10, word drop 0.2, 128 tokens)."""

    n: int = Field(default=10, ge=1, description="instances sampled per task")
    k: int = Field(default=10, ge=1, description="perturbed prompts per task")
    max_new_tokens: int = Field(default=128, ge=1, description="longest greedy prediction, in tokens")
    max_source_length: int = Field(default=1024, ge=16, description="longest prompt, in tokens")
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
        default=8, ge=1, description="tasks decoded and teacher-forced together (memory stays flat)"
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


class TrainingSettings(WithSeed, WithChat):
    """Fine-tuning; the defaults are the reference ones (METHOD.md).

    The effective batch is ``batch_size * grad_accum * num_processes``; ``warmup_steps``
    and ``max_steps`` count optimizer steps.
    """

    epochs: int = Field(default=8, ge=1, description="passes over the training examples")
    learning_rate: float = Field(
        default=5e-5, gt=0, description="peak learning rate (constant after the warm-up)",
        json_schema_extra={"flag": "--lr"},
    )
    warmup_steps: int = Field(default=50, ge=0, description="linear warm-up, in optimizer steps")
    batch_size: int = Field(default=8, ge=1, description="examples per process and micro-step")
    grad_accum: int = Field(default=1, ge=1, description="micro-steps per optimizer step")
    max_instances_per_task: int = Field(default=200, ge=1, description="seeded training instances per task")
    max_source_length: int = Field(default=1024, ge=16, description="longest prompt, in tokens")
    max_target_length: int = Field(default=128, ge=2, description="longest target, in tokens (EOS included)")
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
    """ROUGE-L evaluation on the test tasks; 100 instances per task as in the NIV2 benchmark."""

    max_instances_per_task: int = Field(default=100, ge=1, description="seeded test instances per task")
    max_new_tokens: int = Field(default=128, ge=1, description="longest greedy prediction, in tokens")
    max_source_length: int = Field(default=1024, ge=16, description="longest prompt, in tokens")
    token_budget: int = Field(default=TOKEN_BUDGET, ge=1, description="padded tokens (prompt + new) per batch")

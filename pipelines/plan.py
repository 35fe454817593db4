"""From ``run.py``'s command line to the runs it starts: the configs, one per (strategy,
seed), and the checks that refuse a bad plan in one line before anything runs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from activeit.config.flags import flag_of, given_values
from activeit.config.settings import check_seed
from activeit.errors import ConfigError, PoolSettingError
from activeit.selection.strategies import STRATEGIES
from experiment.config import ExperimentConfig, load_config

#: The config keys that ``run.py`` flags override; each flag is generated from its field.
OVERRIDES = (
    "rounds", "tasks_per_round", "initial_tasks", "seed", "model", "pool.source", "pool.path",
    "tracking.experiment", "schedule", "study.metric", "study.parallel",
)
#: Each overridden key's flag, so that a bad value is blamed on it (``--compare`` and
#: ``--seeds`` are comma-separated lists of run.py's own).
FLAGS = {key: flag_of(ExperimentConfig, key) for key in ("strategy", *OVERRIDES)} | {
    "study.strategies": "--compare", "study.seeds": "--seeds",
}


def parse_list(value: str, flag: str, kind: type = str) -> list[Any]:
    """A comma-separated flag value: not empty, no empty items, no repeats, each of ``kind``
    (ints: seeds in range; strings: strategy names)."""
    example = "0,1,2" if kind is int else "uncertainty,random"
    items = [item.strip() for item in value.split(",")]
    if not any(items):
        raise ConfigError(f"{flag} is empty; give a comma-separated list, e.g. {flag} {example}")
    if "" in items:
        raise ConfigError(f"{flag} '{value}' has an empty item (two commas, or one at an end); "
                          f"give a comma-separated list, e.g. {flag} {example}")
    try:
        parsed = [kind(item) for item in items]
    except ValueError:
        raise ConfigError(f"{flag}: '{value}' is not a comma-separated list of {kind.__name__}s") from None
    if kind is int:
        for seed in parsed:
            try:
                check_seed(seed)
            except ValueError as exc:
                raise ConfigError(f"{flag}: {exc}") from None
    repeated = sorted({str(item) for item in parsed if parsed.count(item) > 1})
    if repeated:
        raise ConfigError(f"{flag} repeats {', '.join(repeated)}")
    if kind is str:
        for name in parsed:
            if name not in STRATEGIES:
                raise ConfigError(f"{flag}: unknown strategy '{name}'; choose from {', '.join(STRATEGIES)}")
    return parsed


def load_experiment(
    args: argparse.Namespace, strategy: str | None = None, seed: int | None = None,
    study: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """The config file with the command-line overrides applied, validated."""
    overrides = given_values(args, ExperimentConfig, OVERRIDES)
    if "pool.path" in overrides and not str(overrides["pool.path"]).strip():
        raise ConfigError(f"{FLAGS['pool.path']} is empty; give the pool's file or folder (or leave the flag out)")
    if "pool.path" in overrides and overrides.get("pool.source") != "hub":  # from where the command was typed
        overrides["pool.path"] = str(Path(overrides["pool.path"]).expanduser().resolve())
    overrides["strategy"] = strategy
    if seed is not None:
        overrides["seed"] = seed
    for key, value in (study or {}).items():
        overrides[f"study.{key}"] = value
    if args.no_cache:
        overrides["zenml.enable_cache"] = False
    return load_config(args.config, overrides, FLAGS)


def plan_runs(args: argparse.Namespace) -> tuple[list[ExperimentConfig], bool]:
    """The configs to run, one per (strategy, seed), and whether they form a study."""
    if args.strategies is not None and not args.report:
        raise ConfigError("--strategies filters --report; to run strategies use --compare S1,S2")
    if args.seeds is not None and args.seed is not None:
        raise ConfigError("give either --seed (one run) or --seeds (a study), not both")
    base = load_experiment(args)
    seeds = parse_list(args.seeds, "--seeds", int) if args.seeds is not None else base.study.seeds or [base.seed]
    if args.compare is not None:
        named = [name.strip() for name in args.compare.split(",") if name.strip()]
        if len(set(named)) < 2 or len(set(named)) != len(named):
            raise ConfigError("--compare needs at least two different strategies, e.g. uncertainty,random")
        strategies = parse_list(args.compare, "--compare")
    elif args.strategy is not None:
        strategies = parse_list(args.strategy, "--strategy")
    else:
        strategies = base.study.strategies or [base.strategy]
    is_study = args.compare is not None or args.seeds is not None or (args.strategy is None and bool(base.study.strategies))
    study = {"strategies": strategies, "seeds": seeds} if is_study else None
    configs = [load_experiment(args, strategy, seed, study) for seed in seeds for strategy in strategies]
    if is_study and configs[0].schedule:
        raise ConfigError("a study (--compare / --seeds) runs now; it cannot be combined with a schedule")
    return configs, is_study


def plan_report(args: argparse.Namespace) -> tuple[ExperimentConfig, list[str] | None, list[int] | None]:
    """For ``--report``: the config (its stack and tracker) and the strategies and seeds to keep (None: all)."""
    if not args.report.strip():
        raise ConfigError("--report needs an MLflow experiment name")
    strategies = parse_list(args.strategies, "--strategies") if args.strategies is not None else None
    seeds = parse_list(args.seeds, "--seeds", int) if args.seeds is not None else None
    return load_experiment(args), strategies, seeds


def check_before_running(configs: Sequence[ExperimentConfig], source: str) -> None:
    """Refuse up front, in one line, what would fail later: a pool that does not load or is
    too small for a schedule, a model that cannot be loaded, LoRA without target modules for
    the model's family, more GPU processes than GPUs, settings for a step that runs no model
    (``source``: the config file, named in that error), a sentence encoder that cannot be found."""
    from activeit.data.sources import load_pool_from
    from activeit.models.checks import check_lora, check_model
    from activeit.models.encoder import check_encoder
    from activeit.models.processes import check_processes
    from activeit.selection.strategies import NEEDS_EMBEDDINGS

    config = configs[0]
    try:
        pool_size = len(load_pool_from(config.pool, need_test_tasks=True).train)
    except PoolSettingError as exc:  # a config key that does not fit the pool: name the file it is in
        raise ConfigError(f"{source}: {exc}") from None
    for each in configs:
        each.check_budget(pool_size, f"the {each.pool.source} pool")
    check_model(config.model, config.chat)
    check_lora(config.model, config.training.method, config.training.lora_target_modules)
    check_processes(config.training.num_processes, "training.num_processes")
    check_processes(config.scoring.num_processes, "scoring.num_processes")
    if any(each.strategy in NEEDS_EMBEDDINGS for each in configs):
        check_encoder(config.diversity.encoder)
    if config.zenml.step_settings:  # (imports ZenML only then)
        from pipelines.active_tuning import check_step_settings

        check_step_settings(config, source)

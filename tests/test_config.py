"""The experiment config: every shipped config validates; bad input gives one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from activeit.errors import ConfigError
from experiment.config import (
    CONFIG_DIR,
    DEFAULT_CONFIG,
    REPO_ROOT,
    ExperimentConfig,
    flatten,
    load_config,
    parse_config,
)
from tracking.policy import registered_model_name

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_every_scenario_ships_a_config() -> None:
    names = {p.stem for p in CONFIGS}
    assert {"default", "smoke", "niv2", "self_instruct", "remote"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_validate(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, ExperimentConfig)
    assert config.tasks_needed >= config.initial_tasks
    assert registered_model_name(config) == REGISTERED_MODELS[path.stem]


#: The MLflow registered model of each shipped config (its experiment, then its strategy).
REGISTERED_MODELS = {
    "default": "activeit-default-uncertainty", "smoke": "activeit-smoke-uncertainty",
    "niv2": "activeit-niv2-uncertainty", "self_instruct": "activeit-self-instruct-uncertainty",
    "remote": "activeit-niv2-t5-large-uncertainty", "niv2_study": "activeit-niv2-study-uncertainty",
    "paper": "activeit-paper-uncertainty",
}


def test_the_default_config_is_the_code_defaults() -> None:
    """One source of defaults: configs/default.yaml states no value, so ``run.py``'s default run
    is the code's defaults (the offline regime of docs/METHOD.md, "The default regime")."""
    import yaml

    assert yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")) == {}
    default = load_config(DEFAULT_CONFIG)
    assert default == parse_config({})
    assert (default.pool.source, default.pool.max_instances, default.model) == ("builtin", 20, "smollm2-135m-instruct")
    assert (default.rounds, default.initial_tasks, default.tasks_per_round) == (2, 3, 3)
    assert (default.scoring.n, default.scoring.k, default.scoring.max_new_tokens) == (3, 4, 8)
    training = default.training
    assert (training.epochs, training.learning_rate, training.warmup_steps, training.max_instances_per_task) == (
        1, 1e-4, 0, 6)
    assert training.group_by_length is False
    assert (default.evaluation.max_instances_per_task, default.tracking.experiment, default.study.metric) == (
        20, "activeit-default", "loglik")


def test_activeit_train_trains_as_run_py_does(tmp_path: Path) -> None:
    """``python -m activeit train`` without flags: the pool and training settings of run.py's default run."""
    from activeit.cli import build_parser
    from activeit.config.flags import settings_from_args
    from activeit.config.settings import PoolSettings, TrainingSettings

    args = build_parser().parse_args(["train", "--source", "builtin", "--tasks", "t", "--out", str(tmp_path / "m")])
    default = load_config(DEFAULT_CONFIG)
    assert args.model == default.model
    assert settings_from_args(args, TrainingSettings, max_instances_per_task=args.max_instances) == default.training
    assert settings_from_args(args, PoolSettings, seed=0) == default.pool


def test_the_papers_regime_is_its_own_config() -> None:
    """configs/paper.yaml: the paper's schedule and training regime (docs/METHOD.md, "The loop")."""
    paper = load_config(CONFIG_DIR / "paper.yaml")
    assert (paper.pool.source, paper.pool.max_instances, paper.pool.validation_tasks) == ("niv2", None, 68)
    assert paper.classification_ratio == 0.356
    assert paper.training.batch_size * paper.training.grad_accum == 128
    assert (paper.rounds, paper.initial_tasks, paper.tasks_per_round) == (4, 68, 68)
    assert (paper.scoring.n, paper.scoring.k, paper.scoring.max_new_tokens, paper.scoring.drop_prob) == (10, 10, 128, 0.2)
    training = paper.training
    assert (training.epochs, training.learning_rate, training.warmup_steps, training.max_instances_per_task,
            training.max_target_length, training.group_by_length) == (8, 5e-5, 50, 200, 128, True)
    assert (paper.evaluation.max_instances_per_task, paper.study.metric) == (100, "rougeL")


def test_registered_model_follows_the_strategy() -> None:
    config = parse_config({"strategy": "random", "tracking": {"experiment": "exp"}})
    assert registered_model_name(config) == "exp-random"
    assert registered_model_name(parse_config(config.model_dump(), overrides={"strategy": "high-perplexity"})) == (
        "exp-high-perplexity"
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_sections_are_the_library_settings_with_seed_and_chat_shared(path: Path) -> None:
    from activeit.config.settings import EvaluationSettings, ScoringSettings, TrainingSettings

    config = load_config(path)
    scoring, training, evaluation = config.scoring, config.training, config.evaluation
    assert isinstance(scoring, ScoringSettings) and isinstance(training, TrainingSettings)
    assert isinstance(evaluation, EvaluationSettings)
    assert (scoring.n, scoring.k) == (config.scoring.n, config.scoring.k)
    assert training.epochs == config.training.epochs and training.seed == config.seed
    assert evaluation.max_new_tokens == config.evaluation.max_new_tokens
    assert {scoring.seed, training.seed, evaluation.seed, config.pool.seed} == {config.seed}
    assert {scoring.chat, training.chat, evaluation.chat} == {config.chat}


def test_seed_and_chat_follow_the_top_level_and_are_set_only_there(tmp_path: Path) -> None:
    config = parse_config({"pool": {"source": "builtin"}}, overrides={"seed": 3, "chat": False})
    assert (config.scoring.seed, config.training.seed, config.evaluation.seed, config.pool.seed) == (3, 3, 3, 3)
    assert config.training.chat is False and config.evaluation.chat is False
    assert "scoring.seed" not in config.flat() and config.flat()["seed"] == 3
    assert "seed" not in config.model_dump()["scoring"] and ExperimentConfig.model_validate(config.model_dump()) == config
    bad = tmp_path / "bad.yaml"
    bad.write_text("scoring:\n  seed: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'scoring.seed': set 'seed' once, at the top level"):
        load_config(bad)
    with pytest.raises(ConfigError, match="^x.yaml: key 'training.chat': set 'chat' once, at the top level"):
        parse_config({"training": {"chat": True}}, "x.yaml")


def test_shipped_pools_and_budgets_fit() -> None:
    from activeit.data.sources import load_pool

    for name in ("default", "smoke", "niv2", "self_instruct"):
        config = load_config(CONFIG_DIR / f"{name}.yaml")
        pool = load_pool(config.pool.source, config.pool.path, split_dir=config.pool.split_dir,
                         validation_tasks=config.pool.validation_tasks, test_tasks=config.pool.test_tasks,
                         seed=config.seed, max_instances_per_task=1)
        config.check_budget(len(pool.train))
        assert pool.test, name


def test_relative_pool_paths_resolve_against_the_repo_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(CONFIG_DIR / "niv2.yaml")
    assert config.pool.path == str((REPO_ROOT / "../shared/data/niv2").resolve())


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pool:\n  source: builtin\n  max_instance: 3\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and "pool.max_instance" in message


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"strategy": "clever"}, "unknown strategy 'clever'"),
        ({"rounds": -1}, "key 'rounds'"),
        ({"training": {"mode": "restart"}}, "key 'training.mode'"),
        ({"pool": {"source": "niv2"}}, "needs a 'path'"),
        ({"schedule": "daily"}, "not a cron expression"),
        ({"seed": "abc"}, "key 'seed'"),
        ({"scoring": {"perturbation": "shout"}}, "unknown perturbation 'shout'"),
    ],
)
def test_invalid_values_are_one_line(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(data, "x.yaml")
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("pool: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_impossible_budget_is_explained() -> None:
    config = parse_config({"initial_tasks": 10, "rounds": 3, "tasks_per_round": 10})
    config.check_budget(40)
    with pytest.raises(ConfigError, match="10 \\+ rounds 3 x tasks_per_round 10 = 40 tasks.*only 39"):
        config.check_budget(39)
    everything = parse_config({"strategy": "all", "initial_tasks": 10, "rounds": 3})
    assert everything.selection_rounds == 1 and everything.tasks_needed == 10


def test_overrides_use_dotted_keys_and_skip_none() -> None:
    config = parse_config({"rounds": 2}, overrides={"rounds": None, "pool.source": "builtin", "seed": 7})
    assert (config.rounds, config.seed, config.pool.source) == (2, 7, "builtin")


def test_flat_params_and_stable_digest() -> None:
    config = load_config(CONFIG_DIR / "smoke.yaml")
    flat = config.flat()
    assert flat["scoring.n"] == config.scoring.n and flat["model"] == config.model
    assert config.digest() == load_config(CONFIG_DIR / "smoke.yaml").digest()
    assert config.digest() != parse_config(config.model_dump(), overrides={"seed": 1}).digest()
    assert flatten({"a": {"b": 1, "c": {}}}) == {"a.b": 1, "a.c": {}}


def test_cli_flags_are_generated_from_the_settings() -> None:
    import argparse

    from activeit.config.flags import add_settings_arguments, settings_from_args
    from activeit.config.settings import ScoringSettings, TrainingSettings

    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, ScoringSettings)
    args = parser.parse_args(["--k", "3", "--no-reuse-prefix", "--perturbation", "word_drop"])
    settings = settings_from_args(args, ScoringSettings, seed=4)
    assert (settings.k, settings.n, settings.reuse_prefix, settings.seed) == (3, ScoringSettings().n, False, 4)
    assert settings.token_budget == ScoringSettings().token_budget
    with pytest.raises(ConfigError, match="^command line: --k: Input should be greater than or equal to 1, got 0$"):
        settings_from_args(parser.parse_args(["--k", "0"]), ScoringSettings)
    training = argparse.ArgumentParser()
    add_settings_arguments(training, TrainingSettings)
    assert settings_from_args(training.parse_args(["--lr", "0.01"]), TrainingSettings).learning_rate == 0.01
    with pytest.raises(ConfigError, match="^command line: --lr: Input should be greater than 0, got -1.0$"):
        settings_from_args(training.parse_args(["--lr", "-1"]), TrainingSettings)


def test_run_py_override_flags_are_generated_from_the_config_fields() -> None:
    import run as run_py
    from pipelines.plan import FLAGS, load_experiment

    parser = run_py.build_parser()
    args = parser.parse_args(["--config", str(CONFIG_DIR / "smoke.yaml"), "--rounds", "2", "--pool-source", "builtin",
                              "--experiment", "exp", "--tasks-per-round", "3"])
    config = load_experiment(args, seed=5)
    assert (config.rounds, config.pool.source, config.tracking.experiment, config.tasks_per_round) == (2, "builtin", "exp", 3)
    assert config.seed == config.scoring.seed == 5
    assert {FLAGS[key] for key in ("tracking.experiment", "pool.path", "tasks_per_round", "strategy")} == {
        "--experiment", "--pool-path", "--tasks-per-round", "--strategy"}
    with pytest.raises(ConfigError, match="^command line: --tasks-per-round: Input should be greater than or equal to 1"):
        load_experiment(parser.parse_args(["--tasks-per-round", "0"]))

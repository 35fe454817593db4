"""Bad input refused before compute, in one line that points at the cause (issue 20, parts 3
and 6): seeds out of range, NIV2 field types and split-file encodings, cron ranges, empty
list items, configs that are folders or only comments, an empty pool under --skip-invalid,
an Alpaca array given as Self-Instruct, empty reference outputs, repeated Self-Instruct
records and a mistyped model name. Nothing here loads a model or starts ZenML."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

import run as run_py
from activeit.config.settings import MAX_SEED
from activeit.data.sources import SkippedTaskWarning, load_pool
from activeit.data.sources.self_instruct import read_self_instruct_file
from activeit.errors import ConfigError, ModelLoadError, PoolError, TaskFormatError
from experiment.config import CONFIG_DIR, load_config, parse_config
from pipelines.plan import FLAGS, parse_list, plan_runs

SMOKE = CONFIG_DIR / "smoke.yaml"


def _one_line(error: pytest.ExceptionInfo[Exception]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def _plan(*argv: str) -> Any:
    return plan_runs(run_py.build_parser().parse_args(["--config", str(SMOKE), *argv]))


# ---------------------------------------------------------------- seeds


@pytest.mark.parametrize("seed", ["-1", "99999999999", str(MAX_SEED + 1)])
def test_a_seed_out_of_range_is_refused_naming_the_flag(seed: str) -> None:
    with pytest.raises(ConfigError) as error:
        _plan("--seed", seed)
    message = _one_line(error)
    assert message.startswith("command line: --seed: ") and f"0..{MAX_SEED}" in message and seed in message


def test_the_largest_seed_is_taken() -> None:
    (config,), _ = _plan("--seed", str(MAX_SEED))
    assert config.seed == config.training.seed == MAX_SEED


@pytest.mark.parametrize("seeds", ["0,-1", f"0,{MAX_SEED + 1}"])
def test_study_seeds_out_of_range_are_refused_naming_seeds(seeds: str) -> None:
    with pytest.raises(ConfigError) as error:
        _plan("--compare", "uncertainty,random", "--seeds", seeds)
    assert _one_line(error).startswith("--seeds: a seed must be in 0..")


def test_config_study_seeds_out_of_range_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"key 'study\.seeds\.1': a seed must be in 0\.\."):
        parse_config({"study": {"seeds": [0, -5]}}, "x.yaml")


# ---------------------------------------------------------------- list flags


@pytest.mark.parametrize(
    ("value", "flag", "kind"),
    [("0,,1", "--seeds", int), ("0,1,", "--seeds", int), (",0", "--seeds", int),
     ("uncertainty,,random", "--compare", str)],
)
def test_empty_list_items_are_refused(value: str, flag: str, kind: type) -> None:
    with pytest.raises(ConfigError) as error:
        parse_list(value, flag, kind)
    message = _one_line(error)
    assert message.startswith(f"{flag} '{value}' has an empty item") and f"e.g. {flag} " in message


def test_empty_seed_item_is_refused_by_run_py_planning() -> None:
    with pytest.raises(ConfigError, match="--seeds '0,,1' has an empty item"):
        _plan("--compare", "uncertainty,random", "--seeds", "0,,1")


# ---------------------------------------------------------------- cron


@pytest.mark.parametrize(
    ("cron", "fragment"),
    [("61 25 * * 9", "minute 61 is out of range 0-59"), ("0 25 * * 1", "hour 25 is out of range 0-23"),
     ("0 3 * * 9", "day of week 9 is out of range 0-7"), ("0 3 0 * *", "day of month 0 is out of range 1-31"),
     ("0 3 * 13 *", "month 13 is out of range 1-12"), ("0 3 * * mon-xyz", "day of week 'mon-xyz'"),
     ("*/0 * * * *", "minute '*/0'"), ("30-10 * * * *", "runs backwards"),
     ("0 0 3 * * 1", "it has 6 field(s), a cron expression 5"), ("0 3 * *", "it has 4 field(s)")],
)
def test_cron_fields_out_of_range_are_refused_naming_the_flag(cron: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({}, "x.yaml", {"schedule": cron}, FLAGS)
    message = _one_line(error)
    assert message.startswith("command line: --schedule: ") and fragment in message


@pytest.mark.parametrize("cron", ["0 3 * * 1", "*/15 0-23 1,15 jan-dec mon-fri", "0 0 * * 7", "5 4 * * sun"])
def test_valid_cron_expressions_are_taken(cron: str) -> None:
    assert parse_config({"schedule": cron}).schedule == cron


# ---------------------------------------------------------------- config files


def test_a_config_that_is_a_folder_is_said_to_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path)
    assert "is a folder" in _one_line(error) and "does not exist" not in str(error.value)


def test_a_comment_only_config_is_said_to_be_empty(tmp_path: Path) -> None:
    path = tmp_path / "comments.yaml"
    path.write_text("# my experiment\n# rounds: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = _one_line(error)
    assert "is empty" in message and "budget" not in message


# ---------------------------------------------------------------- NIV2


def _load_niv2(root: Path, **options: Any) -> Any:
    return load_pool("niv2", root, **options)


@pytest.mark.parametrize(("field", "value"), [("Categories", 5), ("Domains", {"a": 1}), ("Source", [1, 2])])
def test_niv2_metadata_of_the_wrong_type_is_a_format_error(
    tmp_path: Path, write_niv2: Any, niv2_task: Any, field: str, value: Any
) -> None:
    root = write_niv2(tmp_path, {"good": niv2_task(), "bad": niv2_task(**{field: value}), "held": niv2_task()},
                      ["good", "bad"], ["held"])
    with pytest.raises(TaskFormatError) as error:
        _load_niv2(root)
    message = _one_line(error)
    assert "bad.json" in message and f"field '{field}': must be a list of strings" in message
    with pytest.warns(SkippedTaskWarning, match=f"field '{field}'"):
        pool = _load_niv2(root, skip_invalid=True)
    assert [t.name for t in pool.train] == ["good"]


def test_niv2_a_split_file_that_is_not_utf8_is_a_format_error(tmp_path: Path, write_niv2: Any, niv2_task: Any) -> None:
    root = write_niv2(tmp_path, {"caf\u00e9": niv2_task(), "other": niv2_task()}, [], ["other"])
    (root / "splits" / "default" / "train_tasks.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(TaskFormatError) as error:
        _load_niv2(root)
    assert "train_tasks.txt" in _one_line(error) and "not UTF-8" in str(error.value)
    with pytest.warns(SkippedTaskWarning), pytest.raises(PoolError) as empty:  # the train split skipped
        _load_niv2(root, skip_invalid=True)
    assert "not UTF-8" in _one_line(empty) and "--all-languages" not in str(empty.value)


def test_niv2_skip_invalid_skips_a_test_split_file_that_is_not_utf8(
    tmp_path: Path, write_niv2: Any, niv2_task: Any
) -> None:
    root = write_niv2(tmp_path, {"a": niv2_task(), "b": niv2_task()}, ["a", "b"], [])
    (root / "splits" / "default" / "test_tasks.txt").write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.warns(SkippedTaskWarning, match="test_tasks.txt.*not UTF-8"):
        pool = _load_niv2(root, skip_invalid=True)
    assert [t.name for t in pool.train] == ["a", "b"] and pool.test == ()


def test_every_task_invalid_under_skip_invalid_does_not_blame_the_language(
    tmp_path: Path, write_niv2: Any, niv2_task: Any
) -> None:
    root = write_niv2(tmp_path, {"x": "{not json", "y": niv2_task(Instances=[])}, ["x", "y"], [])
    with pytest.warns(SkippedTaskWarning), pytest.raises(PoolError) as error:
        _load_niv2(root, skip_invalid=True)
    message = _one_line(error)
    assert "2 invalid" in message and "--all-languages" not in message


def test_every_task_in_another_language_suggests_all_languages(
    tmp_path: Path, write_niv2: Any, niv2_task: Any
) -> None:
    root = write_niv2(tmp_path, {"de": niv2_task(Input_language=["German"])}, ["de"], [])
    with pytest.warns(SkippedTaskWarning), pytest.raises(PoolError) as error:
        _load_niv2(root)
    assert "1 not in English (--all-languages keeps them)" in _one_line(error)


# ---------------------------------------------------------------- empty reference outputs


def test_an_empty_reference_output_is_refused_at_pool_load(tmp_path: Path, write_niv2: Any, niv2_task: Any) -> None:
    blank = niv2_task()
    blank["Instances"][1]["output"] = ["  "]
    root = write_niv2(tmp_path, {"fine": niv2_task(), "blank": blank, "held": niv2_task()}, ["fine", "blank"], ["held"])
    with pytest.raises(PoolError) as error:
        _load_niv2(root)
    message = _one_line(error)
    assert "task 'blank' instance 'i1' has an empty reference output" in message and "--skip-invalid" in message


def test_skip_invalid_leaves_empty_references_out_with_one_warning(
    tmp_path: Path, write_niv2: Any, niv2_task: Any
) -> None:
    blank = niv2_task()
    blank["Instances"][1]["output"] = [""]
    only_blank = niv2_task(outputs=("",))
    root = write_niv2(tmp_path, {"fine": niv2_task(), "blank": blank, "nothing": only_blank, "held": niv2_task()},
                      ["fine", "blank", "nothing"], ["held"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pool = _load_niv2(root, skip_invalid=True)
    skipped = [str(w.message) for w in caught if issubclass(w.category, SkippedTaskWarning)]
    assert len(skipped) == 1 and "2 instance(s) with an empty reference output" in skipped[0]
    assert [t.name for t in pool.train] == ["fine", "blank"]  # 'nothing' had no instance left
    assert [i.id for i in pool.task("blank").instances] == ["i0", "i2"]


# ---------------------------------------------------------------- Self-Instruct


def test_an_alpaca_json_array_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps([{"instruction": "Add.", "input": "1 1", "output": "2"}], indent=2), encoding="utf-8")
    with pytest.raises(TaskFormatError) as error:
        load_pool("self-instruct", path)
    message = _one_line(error)
    assert "JSON array" in message and "pool.source" in message and "line 1" not in message


def test_a_record_repeated_three_times_gets_three_names(tmp_path: Path) -> None:
    record = {"id": "seed_task_0", "name": "breakfast", "instruction": "Suggest a breakfast.",
              "instances": [{"input": "", "output": "Eggs."}]}
    path = tmp_path / "tasks.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for _ in range(3)), encoding="utf-8")
    names = [task.name for task in read_self_instruct_file(path)]
    assert len(set(names)) == 3 and names[0] == "breakfast"
    assert len(load_pool("self-instruct", path).train) == 3


def test_names_stay_distinct_across_the_files_of_a_folder(tmp_path: Path) -> None:
    record = {"name": "same", "instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}]}
    for stem in ("a", "b"):
        (tmp_path / f"{stem}.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")
    assert len({t.name for t in load_pool("self-instruct", tmp_path).train}) == 2


# ---------------------------------------------------------------- model names


def test_a_mistyped_model_name_is_not_blamed_on_the_network(
    monkeypatch: pytest.MonkeyPatch, network_calls: list
) -> None:
    from huggingface_hub import constants

    from activeit.models.names import local_folder

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelLoadError) as error:
        local_folder("tiny-lama")
    message = _one_line(error)
    assert message.startswith("model 'tiny-lama' is not a built-in model (")
    assert "did you mean 'tiny-llama'?" in message and "smollm2-135m-instruct" in message

"""The record formats (alpaca, sharegpt, messages, hf-disk): the shared Self-Instruct tasks
converted into each format (in tmp_path, never in the repository) give the native reader's
pool; grouping into tasks (instruction, column, TF-IDF clusters); conversations; bad input
(one ``error:`` line, exit 2, or under ``--skip-invalid`` one counting warning); and the
smoke pipeline on each format."""

from __future__ import annotations

import zenml_isolation  # noqa: F401  (must precede zenml)

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from activeit.cli import main
from activeit.config.settings import PoolSettings
from activeit.data.sources import SkippedTaskWarning, load_pool, load_pool_from
from activeit.data.sources.records import conversation_parts
from activeit.data.tasks import Task, TaskPool
from activeit.errors import ActiveITError, ConfigError, PoolError, TaskFormatError
from experiment.config import CONFIG_DIR, parse_config

FORMATS = ("alpaca", "sharegpt", "messages", "hf-disk", "hf-disk-parquet")


@pytest.fixture(autouse=True, scope="module")
def datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """``datasets.load_dataset`` (hf-disk files) caches its Arrow copy in a temporary folder."""
    import datasets

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path_factory.mktemp("hf-cache"))
        yield


# ---------------------------------------------------------------- conversion (fixtures only)


def _records(task: Task) -> Iterator[tuple[str, tuple[str, ...]]]:
    """A task's instances in their original order (its demonstrations were its first ones)."""
    yield from ((e.input, (e.output,)) for e in task.positive_examples)
    yield from ((i.input, i.outputs) for i in task.instances)


def _extra(task: Task) -> dict[str, Any]:
    return {"name": task.name, "is_classification": task.is_classification} | (
        {"category": task.categories[0]} if task.categories else {}
    )


def alpaca_rows(pool: TaskPool) -> list[dict[str, Any]]:
    return [
        {"instruction": t.definition, "input": i, "output": o[0] if len(o) == 1 else list(o), **_extra(t)}
        for t in pool.train for i, o in _records(t)
    ]


def sharegpt_rows(pool: TaskPool) -> list[dict[str, Any]]:
    """The instruction as the first human turn, or (with an input) in the ``system`` column."""
    return [
        {"conversations": [{"from": "human", "value": i or t.definition}, {"from": "gpt", "value": o[0]}],
         **({"system": t.definition} if i else {}), **_extra(t)}
        for t in pool.train for i, o in _records(t)
    ]


def messages_rows(pool: TaskPool) -> list[dict[str, Any]]:
    """The instruction as the first user message, or (with an input) as a system message."""
    return [
        {"messages": ([{"role": "system", "content": t.definition}, {"role": "user", "content": i}] if i
                      else [{"role": "user", "content": t.definition}]) + [{"role": "assistant", "content": o[0]}],
         **_extra(t)}
        for t in pool.train for i, o in _records(t)
    ]


def convert(pool: TaskPool, folder: Path) -> dict[str, tuple[str, Path]]:
    """``pool`` written in every format: format -> (pool.source, path)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alpaca.json").write_text(json.dumps(alpaca_rows(pool), indent=1), encoding="utf-8")
    (folder / "sharegpt.json").write_text(json.dumps(sharegpt_rows(pool)), encoding="utf-8")
    (folder / "messages.jsonl").write_text("".join(json.dumps(r) + "\n" for r in messages_rows(pool)), encoding="utf-8")
    datasets.disable_progress_bars()
    datasets.Dataset.from_list(alpaca_rows(pool)).save_to_disk(str(folder / "disk"))
    datasets.Dataset.from_list(messages_rows(pool)).to_parquet(str(folder / "messages.parquet"))
    datasets.enable_progress_bars()
    return {
        "alpaca": ("alpaca", folder / "alpaca.json"),
        "sharegpt": ("sharegpt", folder / "sharegpt.json"),
        "messages": ("messages", folder / "messages.jsonl"),
        "hf-disk": ("hf-disk", folder / "disk"),
        "hf-disk-parquet": ("hf-disk", folder / "messages.parquet"),
    }


def _tasks(pool: TaskPool) -> list[Task]:
    """The tasks, their source aside (it names the reader)."""
    return [replace(t, source="") for t in pool]


@pytest.fixture(scope="module")
def seed_path(shared_data: Path) -> Path:
    return shared_data / "self_instruct" / "seed_tasks.jsonl"


@pytest.fixture(scope="module")
def seed_formats(seed_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    return convert(load_pool("self-instruct", seed_path), tmp_path_factory.mktemp("seed"))


@pytest.fixture(scope="module")
def user_oriented(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TaskPool, dict[str, tuple[str, Path]]]:
    native = load_pool("self-instruct", shared_data / "self_instruct" / "user_oriented_instructions.jsonl")
    return native, convert(native, tmp_path_factory.mktemp("user_oriented"))


@pytest.fixture(scope="module")
def smoke_formats(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, Path]]:
    """The smoke tasks (several instances each: demonstrations) in every format."""
    return convert(load_pool("self-instruct", CONFIG_DIR / "smoke_tasks.jsonl"), tmp_path_factory.mktemp("smoke"))


# ---------------------------------------------------------------- every format gives the native pool


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_gives_the_native_pool(fmt: str, seed_path: Path, seed_formats: dict[str, tuple[str, Path]],
                                            smoke_formats: dict[str, tuple[str, Path]]) -> None:
    native = load_pool("self-instruct", seed_path)
    source, path = seed_formats[fmt]
    pool = load_pool(source, path)
    assert len(pool.train) == 175 and _tasks(pool) == _tasks(native)
    assert sum(t.is_classification for t in pool) == 26
    smoke_native = load_pool("self-instruct", CONFIG_DIR / "smoke_tasks.jsonl")
    smoke = load_pool(*smoke_formats[fmt])
    assert _tasks(smoke) == _tasks(smoke_native) and all(len(t.positive_examples) == 2 for t in smoke)


def test_grouping_by_instruction_merges_a_repeated_instruction(user_oriented: tuple[TaskPool, Any]) -> None:
    """The user-oriented set repeats one instruction in two records (two native tasks): one
    task per distinct instruction makes them one task whose first instance is the demonstration;
    grouping by the name column gives the native pool again."""
    native, formats = user_oriented
    source, path = formats["alpaca"]
    pool = load_pool(source, path)
    assert (len(native.train), len(pool.train)) == (252, 251)
    (merged,) = [t for t in pool if t.positive_examples]
    first, second = (t for t in native if t.definition == merged.definition)
    assert merged.name == first.name and merged.categories == first.categories
    assert merged.positive_examples[0].input == first.instances[0].input
    assert [i.input for i in merged.instances] == [second.instances[0].input]
    assert _tasks(load_pool(source, path, group_by="name")) == _tasks(native)


def test_grouping_by_a_column(user_oriented: tuple[TaskPool, Any]) -> None:
    """One task per category (the app): its most common instruction is the definition and each
    instance keeps its own instruction at the top of its input."""
    native, formats = user_oriented
    pool = load_pool(*formats["messages"], group_by="category")
    apps = list(dict.fromkeys(t.category for t in native))
    assert [t.name for t in pool] == apps and [t.category for t in pool] == apps
    assert sum(len(t.instances) + len(t.positive_examples) for t in pool) == 252
    grammarly = pool.task("Grammarly")
    definitions = [t.definition for t in native if t.category == "Grammarly"]
    assert grammarly.definition == definitions[0]  # all distinct: the first
    record = next(t for t in native if t.category == "Grammarly" and t.definition == definitions[-1])
    assert grammarly.instances[-1].input.startswith(record.definition)
    assert grammarly.instances[-1].outputs == record.instances[0].outputs


def test_tfidf_clusters(seed_formats: dict[str, tuple[str, Path]], seed_path: Path) -> None:
    pool = load_pool(*seed_formats["alpaca"], task_clusters=12)
    again = load_pool(*seed_formats["sharegpt"], task_clusters=12)
    assert _tasks(pool) == _tasks(again)  # seeded; the same records in another format
    assert 1 < len(pool.train) <= 12 and all(t.name.startswith("cluster_") for t in pool)
    native = load_pool("self-instruct", seed_path)
    definitions = {t.definition for t in native}
    assert all(t.definition in definitions for t in pool)  # a member's instruction
    assert sum(len(t.instances) + len(t.positive_examples) for t in pool) == 175
    with pytest.raises(PoolError, match="cannot cluster 175 distinct instruction"):
        load_pool(*seed_formats["alpaca"], task_clusters=176)


def test_hf_disk_dataset_dict_gives_its_splits(tmp_path: Path) -> None:
    import datasets

    rows = [{"instruction": f"Say {w}.", "output": w, "name": w} for w in ("a", "b", "c")]
    datasets.disable_progress_bars()
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:2]), "dev": datasets.Dataset.from_list(rows[2:])}
                         ).save_to_disk(str(tmp_path / "dict"))
    datasets.enable_progress_bars()
    pool = load_pool("hf-disk", tmp_path / "dict")
    assert [t.name for t in pool.train] == ["a", "b"] and [t.name for t in pool.split("validation")] == ["c"]


def test_readme_has_one_valid_config_per_record_format() -> None:
    readme = (CONFIG_DIR.parent / "README.md").read_text(encoding="utf-8")
    blocks = [yaml.safe_load(b.split("```", 1)[0]) for b in readme.split("```yaml\n")[1:]]
    pools = [b["pool"] for b in blocks if isinstance(b, dict) and "pool" in b]
    sources = [PoolSettings(**p).source for p in pools]
    assert sorted(s for s in sources if s in ("alpaca", "sharegpt", "messages", "hf-disk")) == [
        "alpaca", "hf-disk", "messages", "sharegpt"]


# ---------------------------------------------------------------- conversations


def test_the_last_assistant_turn_is_the_output() -> None:
    turns = [("user", "Add the numbers."), ("assistant", "Which?"), ("user", "2 and 3"), ("assistant", "5"),
             ("user", "thanks")]
    assert conversation_parts(turns, None, "messages", "content") == (
        "Add the numbers.", "Assistant: Which?\n\nUser: 2 and 3", ("5",))
    with_system = [("system", "You add numbers."), *turns]
    assert conversation_parts(with_system, None, "messages", "content") == (
        "You add numbers.", "User: Add the numbers.\n\nAssistant: Which?\n\nUser: 2 and 3", ("5",))
    assert conversation_parts([("user", "Hi."), ("assistant", "Hello")], "Be brief.", "c", "v") == ("Be brief.", "Hi.", ("Hello",))


def test_multi_turn_records_in_each_conversation_format(tmp_path: Path) -> None:
    sharegpt = tmp_path / "chat.json"
    sharegpt.write_text(json.dumps([{"conversations": [
        {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Red."},
        {"from": "human", "value": "Another."}, {"from": "gpt", "value": "Blue."}]}]))
    messages = tmp_path / "chat.jsonl"
    messages.write_text(json.dumps({"messages": [
        {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]},
        {"role": "assistant", "content": "Red."}, {"role": "user", "content": "Another."},
        {"role": "assistant", "content": "Blue."}]}) + "\n")
    for source, path in (("sharegpt", sharegpt), ("messages", messages)):
        (task,) = load_pool(source, path).train
        assert (task.name, task.definition) == (f"chat_1", "Name a colour.")
        assert [(i.input, i.outputs) for i in task.instances] == [("Assistant: Red.\n\nUser: Another.", ("Blue.",))]


# ---------------------------------------------------------------- settings and flags


def test_settings_take_a_mapping_or_role_column_pairs() -> None:
    config = parse_config({"pool": {"source": "alpaca", "path": "x.json", "columns": {"output": "response"},
                                    "group_by": "category"}}, "cfg.yaml")
    assert config.pool.column_map == {"output": "response"} and config.pool.group_by == "category"
    assert PoolSettings(source="hf-disk", path="d", columns=["instruction=prompt", "output=response"]).column_map == {
        "instruction": "prompt", "output": "response"}
    for bad, message in (({"source": "niv2", "path": "x", "group_by": "c"}, "group_by applies to the alpaca"),
                         ({"source": "alpaca", "path": "x", "group_by": "c", "task_clusters": 3}, "give one"),
                         ({"source": "alpaca", "path": "x", "columns": ["output"]}, "ROLE=COLUMN")):
        with pytest.raises(ConfigError, match=message):
            parse_config({"pool": bad}, "cfg.yaml")


def test_pool_help_shows_the_record_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["pool", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "alpaca,sharegpt,messages,hf-disk" in out
    assert "--columns ROLE=COLUMN [ROLE=COLUMN ...]" in out and "--group-by COLUMN" in out and "--task-clusters N" in out


def test_cli_columns_and_unknown_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "renamed.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Say {w}.", "response": w}) + "\n" for w in ("a", "b")))
    assert main(["pool", "--source", "alpaca", "--path", str(path), "--columns", "instruction=prompt",
                 "output=response", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train_tasks"] == 2
    assert main(["pool", "--source", "alpaca", "--path", str(path), "--columns", "conversations=prompt"]) == 2
    assert "role 'conversations', which Alpaca records do not have" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input


@dataclass(frozen=True)
class Bad:
    source: str
    path: Path
    fragments: tuple[str, ...]  # each one in the message
    flags: tuple[str, ...] = ()
    skippable: bool = True  # --skip-invalid loads the valid rest (one good task)


GOOD = {"instruction": "Say hi.", "input": "", "output": "hi"}
CHAT = [{"from": "human", "value": "Say hi."}, {"from": "gpt", "value": "hi"}]


def _write(path: Path, rows: list[Any], jsonl: bool = False) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) if jsonl else json.dumps(rows), encoding="utf-8")
    return path


def _parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import datasets

    datasets.disable_progress_bars()
    datasets.Dataset.from_list(rows).to_parquet(str(path))
    datasets.enable_progress_bars()
    return path


BAD: dict[str, Callable[[Path], Bad]] = {
    "record_missing_a_mapped_column": lambda d: Bad(
        "alpaca", _write(d / "data.json", [{"q": "Say hi.", "a": "hi"}, {"q": "Say bye."}]),
        ("data.json: record 2", "field 'a'", "is missing"), ("--columns", "instruction=q", "output=a")),
    "conversation_without_an_assistant_turn": lambda d: Bad(
        "sharegpt", _write(d / "chat.json", [{"conversations": CHAT}, {"conversations": CHAT[:1]}]),
        ("chat.json: record 2", "field 'conversations'", "no assistant turn")),
    "empty_file": lambda d: Bad("messages", _write(d / "empty.jsonl", [], jsonl=True), ("empty.jsonl", "empty"),
                                skippable=False),
    "mixed_formats": lambda d: Bad(
        "alpaca", _write(d / "mixed.jsonl", [GOOD, {"conversations": CHAT}], jsonl=True),
        ("mixed.jsonl: line 2", "field 'conversations'", "ShareGPT record", "--source sharegpt")),
    "mapping_names_a_missing_column": lambda d: Bad(
        "alpaca", _write(d / "data.json", [GOOD]), ("data.json", "field 'prompt'", "is in no record"),
        ("--columns", "instruction=prompt"), skippable=False),
    "another_format_altogether": lambda d: Bad(
        "alpaca", _write(d / "chat.json", [{"conversations": CHAT}]), ("chat.json", "ShareGPT records", "--source sharegpt"),
        skippable=False),
    "sharegpt_turns_in_a_messages_file": lambda d: Bad(
        "messages", _write(d / "m.jsonl", [{"messages": [{"role": "user", "content": "Hi."},
                                                         {"role": "assistant", "content": "hi"}]},
                                           {"messages": CHAT}], jsonl=True),
        ("m.jsonl: line 2", "field 'messages[0]'", "'from' / 'value'")),
    "hf_disk_null_in_a_mapped_column": lambda d: Bad(
        "hf-disk", _parquet(d / "rows.parquet", [{"q": "Say hi.", "a": "hi"}, {"q": "Say bye.", "a": None}]),
        ("rows.parquet: record 2", "field 'a'", "is missing"), ("--columns", "instruction=q", "output=a")),
    "hf_disk_mapping_names_a_missing_column": lambda d: Bad(
        "hf-disk", _parquet(d / "rows.parquet", [GOOD]), ("rows.parquet", "field 'response'", "is in no record"),
        ("--columns", "output=response"), skippable=False),
}


@pytest.fixture(params=list(BAD))
def bad(request: pytest.FixtureRequest, tmp_path: Path) -> Bad:
    return BAD[request.param](tmp_path)


def _options(case: Bad) -> dict[str, Any]:
    pairs = [f for f in case.flags if "=" in f]
    return {"columns": dict(p.split("=", 1) for p in pairs)} if pairs else {}


def _cli(case: Bad, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["pool", "--source", case.source, "--path", str(case.path), "--json", *case.flags, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_input_is_one_error_line_exit_2(bad: Bad, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises((TaskFormatError, PoolError)) as caught:
        load_pool(bad.source, bad.path, **_options(bad))
    assert "\n" not in str(caught.value) and all(f in str(caught.value) for f in bad.fragments), str(caught.value)
    code, out, err = _cli(bad, capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert all(f in err for f in bad.fragments)


def test_skip_invalid_skips_bad_records_in_one_warning(bad: Bad, capsys: pytest.CaptureFixture[str]) -> None:
    if not bad.skippable:
        with pytest.raises(ActiveITError):
            load_pool(bad.source, bad.path, skip_invalid=True, **_options(bad))
        return
    with pytest.warns(SkippedTaskWarning, match=r"skipped 1 invalid record\(s\) of 2"):
        assert len(load_pool(bad.source, bad.path, skip_invalid=True, **_options(bad)).train) == 1
    code, out, err = _cli(bad, capsys, "--skip-invalid")
    assert code == 0 and json.loads(out)["train_tasks"] == 1
    (line,) = err.splitlines()
    file, record = bad.fragments[0].split(": ")
    assert line.startswith("warning: skipped 1 invalid record(s) of 2 in ") and f"{file}; the first: {record}" in line


def test_run_py_refuses_bad_records_before_any_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import activeit.models.checks
    import run as run_py

    def no_model(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was checked before the pool")

    monkeypatch.setattr(activeit.models.checks, "check_model", no_model)
    data = _write(tmp_path / "chat.json", [{"conversations": CHAT}, {"conversations": CHAT[:1]}])
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"pool": {"source": "sharegpt", "path": str(data), "test_tasks": 1},
                                      "model": "tiny-llama"}))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert run_py.main(["--config", str(config)]) == 2
    (line,) = err.getvalue().splitlines()
    assert line.startswith("error: ") and "chat.json: record 2" in line and "no assistant turn" in line


# ---------------------------------------------------------------- the smoke pipeline on each format


def _smoke_config(pool: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The smoke config with ``pool`` in place of its pool, training cut to 2 steps (the rounds
    run; that the smoke model learns is test_pipeline's)."""
    config = yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text())
    config["pool"] |= pool
    config["training"] |= {"max_steps": 2, "epochs": 2}
    config["tracking"] = {"experiment": f"activeit-formats-{fmt}"}
    return config


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "messages"])  # hf-disk: run.py below
def test_smoke_rounds_run_on_each_format(fmt: str, smoke_formats: dict[str, tuple[str, Path]], one_thread: None) -> None:
    """Round 0 and round 1 of the smoke config through the steps' entrypoints, the pool in ``fmt``."""
    from steps import accelerate_finetuner, perturber, pool_loader, rouge_evaluator, selector, uncertainty_scorer

    source, path = smoke_formats[fmt]
    config = parse_config(_smoke_config({"source": source, "path": str(path)}, fmt), f"smoke_{fmt}.yaml")
    pool = pool_loader.entrypoint(config.pool)
    assert pool.name.startswith(source) and (len(pool.train), len(pool.test)) == (12, 4)
    first, trained = selector.entrypoint(pool, [], "random", config.initial_tasks, config.seed, None, 0)
    model, metrics = accelerate_finetuner.entrypoint(config.model, pool, trained, first, config.training, 0)
    report = rouge_evaluator.entrypoint(model, pool, config.evaluation)
    prompts = perturber.entrypoint(pool, trained, config.scoring, 1)
    table, _ = uncertainty_scorer.entrypoint(model, pool, prompts, config.scoring)
    second, trained = selector.entrypoint(pool, trained, "uncertainty", config.tasks_per_round, config.seed, None, 1, table)
    assert len(table.rows) == 9 and len(second.tasks) == 3 and len(trained) == 6
    assert metrics and report is not None


@pytest.mark.slow
def test_run_py_smoke_pipeline_on_a_renamed_grouped_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``run.py --rounds 1`` (ZenML, MLflow) on the smoke tasks as a saved dataset whose columns
    are named otherwise (a column mapping) and whose tasks are a column's values (group_by)."""
    import datasets

    import run as run_py

    native = load_pool("self-instruct", CONFIG_DIR / "smoke_tasks.jsonl")
    rows = [{"prompt": r["instruction"], "context": r["input"], "response": r["output"], "task": r["name"],
             "is_classification": r["is_classification"]}
            for r in alpaca_rows(native)]
    datasets.disable_progress_bars()
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "renamed"))
    datasets.enable_progress_bars()
    pool = {"source": "hf-disk", "path": str(tmp_path / "renamed"), "group_by": "task",
            "columns": {"instruction": "prompt", "input": "context", "output": "response"}}
    config = _smoke_config(pool, "hf-disk")
    assert _tasks(load_pool_from(parse_config(config, "renamed.yaml").pool)) == _tasks(
        load_pool("self-instruct", CONFIG_DIR / "smoke_tasks.jsonl", test_tasks=4, max_instances_per_task=6))
    file = tmp_path / "renamed.yaml"
    file.write_text(yaml.safe_dump(config))
    monkeypatch.setattr(run_py, "OUTPUTS", tmp_path / "outputs")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_py.main(["--config", str(file), "--rounds", "1"])
    assert code == 0, err.getvalue()[-3000:]
    assert "Done in" in out.getvalue()

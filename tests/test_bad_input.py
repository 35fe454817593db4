"""Bad input: each malformed pool gives one clear error from the library (a typed
exception naming the file, the field and the fix) and from the CLI (exit code 2, one
line on stderr, no traceback); ``skip_invalid`` turns invalid tasks into warnings."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from activeit.cli import main
from activeit.errors import ActiveITError, PoolError, TaskFormatError
from activeit.data.sources import SkippedTaskWarning, load_pool


@dataclass(frozen=True)
class Case:
    source: str
    path: Path
    error: type[ActiveITError]
    fragments: tuple[str, ...]  # every one must appear in the message
    skippable: bool = True  # skip_invalid loads the valid rest


def _niv2_case(tmp_path: Path, write_niv2: Any, niv2_task: Any, bad: Any, error: type[ActiveITError], *fragments: str) -> Case:
    root = write_niv2(tmp_path / "niv2", {"ok": niv2_task(), "bad": bad, "ok_test": niv2_task()}, ["ok", "bad"], ["ok_test"])
    return Case("niv2", root, error, ("bad.json", *fragments))


def _self_instruct_case(tmp_path: Path, bad_line: str, *fragments: str) -> Case:
    path = tmp_path / "tasks.jsonl"
    good = json.dumps({"name": "good", "instruction": "Say hi.", "instances": [{"input": "", "output": "hi"}]})
    path.write_text(f"{good}\n{bad_line}\n", encoding="utf-8")
    return Case("self-instruct", path, TaskFormatError, ("tasks.jsonl:2", *fragments))


def _without(task: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in task.items() if k != key}


CASES = (
    "not_json", "no_definition", "no_instances", "empty_instances", "output_not_a_list",
    "missing_task_file", "empty_pool", "path_does_not_exist", "jsonl_line_not_json", "jsonl_no_instruction",
)


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path, write_niv2: Any, niv2_task: Any) -> Case:
    name = request.param
    task = niv2_task()
    if name == "not_json":
        return _niv2_case(tmp_path, write_niv2, niv2_task, '{"Definition": ["x"],', TaskFormatError, "not valid JSON")
    if name == "no_definition":
        return _niv2_case(tmp_path, write_niv2, niv2_task, _without(task, "Definition"), TaskFormatError, "'Definition'", "is missing")
    if name == "no_instances":
        return _niv2_case(tmp_path, write_niv2, niv2_task, _without(task, "Instances"), TaskFormatError, "'Instances'", "is missing")
    if name == "empty_instances":
        return _niv2_case(tmp_path, write_niv2, niv2_task, {**task, "Instances": []}, TaskFormatError, "'Instances'", "is empty")
    if name == "output_not_a_list":
        bad = {**task, "Instances": [{"id": "i0", "input": "q", "output": "yes"}]}
        return _niv2_case(tmp_path, write_niv2, niv2_task, bad, TaskFormatError, "'Instances[0].output'", "list of strings", '["yes"]')
    if name == "missing_task_file":
        root = write_niv2(tmp_path / "niv2", {"ok": task, "ok_test": task}, ["ok", "ghost"], ["ok_test"])
        return Case("niv2", root, PoolError, ("train_tasks.txt", "ghost.json", "--skip-invalid"))
    if name == "empty_pool":
        root = write_niv2(tmp_path / "niv2", {"ok": task}, [], ["ok"])
        return Case("niv2", root, PoolError, ("empty", "no train task"), skippable=False)
    if name == "path_does_not_exist":
        return Case("niv2", tmp_path / "nowhere", PoolError, ("nowhere", "does not exist"), skippable=False)
    if name == "jsonl_line_not_json":
        return _self_instruct_case(tmp_path, '{"instruction": "Say hi.", ', "not valid JSON")
    assert name == "jsonl_no_instruction"
    return _self_instruct_case(tmp_path, json.dumps({"instances": [{"input": "", "output": "x"}]}), "'instruction'", "is missing")


def _cli(capsys: pytest.CaptureFixture[str], case: Case, *extra: str) -> tuple[int, str, str]:
    code = main(["pool", "--source", case.source, "--path", str(case.path), "--json", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_library_raises_one_clear_typed_error(case: Case) -> None:
    with pytest.raises(case.error) as caught:
        load_pool(case.source, case.path)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in case.fragments:
        assert fragment in message


def test_cli_exits_2_with_one_line(case: Case, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "pool.json"
    code, out, err = _cli(capsys, case, "--out", str(out_file))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    assert all(fragment in lines[0] for fragment in case.fragments)
    assert not out_file.exists() and not list(tmp_path.glob("pool.json*"))  # nothing half-written


def test_skip_invalid_turns_invalid_tasks_into_warnings(case: Case, capsys: pytest.CaptureFixture[str]) -> None:
    if not case.skippable:
        with pytest.raises(case.error):
            load_pool(case.source, case.path, skip_invalid=True)
        return
    with pytest.warns(SkippedTaskWarning) as caught:
        pool = load_pool(case.source, case.path, skip_invalid=True)
    assert len(pool.train) == 1 and pool.train[0].name in {"ok", "good"}
    assert any(case.fragments[0] in str(w.message) for w in caught)
    code, out, err = _cli(capsys, case, "--skip-invalid")
    assert code == 0 and json.loads(out)["train_tasks"] == 1
    assert err.startswith("warning: skipped: ") and case.fragments[0] in err and "Traceback" not in err


def test_missing_path_and_hub_id_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    for source in ("niv2", "self-instruct", "hub"):
        with pytest.raises(PoolError, match="needs a"):
            load_pool(source)
        assert main(["pool", "--source", source]) == 2
        assert len(capsys.readouterr().err.splitlines()) == 1


def test_non_object_records_are_format_errors(tmp_path: Path, write_niv2: Any) -> None:
    root = write_niv2(tmp_path, {"list": "[1, 2]"}, ["list"], [])
    with pytest.raises(TaskFormatError, match="must be a JSON object"):
        load_pool("niv2", root)
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text('"just a string"\n{"instruction": "Do.", "instances": [{"input": "a"}]}\n')
    with pytest.raises(TaskFormatError, match="must be a JSON object"):
        load_pool("self-instruct", jsonl)
    with pytest.warns(SkippedTaskWarning), pytest.raises(PoolError, match="empty"):
        load_pool("self-instruct", jsonl, skip_invalid=True)  # both lines invalid: nothing left

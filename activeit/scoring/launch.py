"""Where scoring runs: in this process, or in several started by ``accelerate launch``.

:func:`score` is the one dispatch the pipeline step and the command line use. Under
``accelerate launch`` every process runs :func:`run_launched`: it scores its share of the
pool and the main process writes the gathered table, which is read back here. With
``scoring.adaptive`` the round's budget comes along, and scoring runs here, in one process
(:mod:`activeit.scoring.adaptive`), journaled to a checkpoint file when one is given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from activeit.config.settings import ScoringSettings
from activeit.data.perturbations import PerturbedPrompts
from activeit.data.tasks import Task
from activeit.errors import ActiveITError
from activeit.models.processes import check_processes, launch, needs_launch, work_folder
from activeit.scoring.scores import ScoreTable


def score(
    model_name: str,
    tasks: Sequence[Task],
    config: ScoringSettings,
    prompts: Mapping[str, PerturbedPrompts] | None = None,
    *,
    budget: int | Mapping[bool, int] | None = None,
    cpu: bool = False,
    progress: bool = True,
    checkpoint: str | Path | None = None,
) -> ScoreTable:
    """Score ``tasks`` with ``model_name`` here (placed on this process's device), or under
    ``accelerate launch`` in ``config.num_processes`` processes (the main one writes the
    gathered table, read back here): the same table as one process gives. ``budget`` (the
    round's b, or b per ``is_classification``) is what ``config.adaptive`` scoring decides;
    ``checkpoint`` (adaptive only) is the file an interrupted adaptive run resumes from."""
    if config.adaptive and budget is None:
        raise ActiveITError("adaptive scoring needs the round's budget (the tasks it will select)")
    if checkpoint is not None and not config.adaptive:
        raise ActiveITError("a scoring checkpoint is for adaptive scoring (scoring.adaptive); exact scoring has none")
    check_processes(config.num_processes, "scoring.num_processes", cpu)
    if config.adaptive or not needs_launch(config.num_processes, config.accelerate_config, cpu):
        return _score_here(model_name, tasks, config, prompts, progress, budget, checkpoint)
    with work_folder() as work:
        table_file = work / "table.json"
        error = launch("activeit.scoring.launch:run_launched", {
            "model_name": model_name,
            "tasks": [t.to_dict() for t in tasks],
            "prompts": {name: p.to_dict() for name, p in prompts.items()} if prompts is not None else None,
            "config": config.model_dump(),
            "progress": progress,
            "out_file": str(table_file),
        }, config.num_processes, "no", cpu, work, config.accelerate_config)
        if error:
            raise ActiveITError(f"scoring under accelerate launch failed: {error}")
        if not table_file.exists():
            raise ActiveITError("the launched scoring finished but wrote no score table")
        return ScoreTable.from_dict(json.loads(table_file.read_text(encoding="utf-8")))


def _score_here(
    model_name: str, tasks: Sequence[Task], config: ScoringSettings,
    prompts: Mapping[str, PerturbedPrompts] | None, progress: bool,
    budget: int | Mapping[bool, int] | None = None,
    checkpoint: str | Path | None = None,
) -> ScoreTable:
    from activeit.models.devices import place_model  # torch and transformers load only here
    from activeit.models.loading import load_model

    loaded = place_model(load_model(model_name))
    if config.adaptive:
        from activeit.scoring.adaptive.driver import score_adaptive

        return score_adaptive(loaded, tasks, config, budget, prompts, progress=progress,  # type: ignore[arg-type]
                              checkpoint=checkpoint)
    from activeit.scoring.scorer import score_tasks

    return score_tasks(loaded, tasks, config, prompts, progress=progress)


def run_launched(spec: dict[str, Any]) -> None:
    """What one launched process does with the spec :func:`score` wrote."""
    from activeit.models.devices import process_state

    prompts = spec["prompts"] and {name: PerturbedPrompts.from_dict(p) for name, p in spec["prompts"].items()}
    state = process_state()
    table = _score_here(spec["model_name"], [Task.from_dict(t) for t in spec["tasks"]],
                        ScoringSettings.model_validate(spec["config"]), prompts or None, spec["progress"])
    if state.is_main_process:
        Path(spec["out_file"]).write_text(json.dumps(table.to_dict()), encoding="utf-8")
    state.wait_for_everyone()

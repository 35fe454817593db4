"""Scoring test helpers: handmade tasks, and a script scoring them (run under accelerate).

    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 tests/score_worker.py OUT.json

Each process also writes ``OUT.rank<i>.json``: the tokens its model was fed, which shows
that it scored its share of the pool only.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from activeit.config.settings import ScoringSettings
from activeit.data.tasks import Example, Instance, Task

WORDS = "the cat dog sat ran on under a mat tree quickly slowly red blue big small house river".split()
WORKER_CONFIG = ScoringSettings(n=3, k=3, max_new_tokens=6, token_budget=700, tasks_per_chunk=2)


def handmade_tasks(count: int = 5) -> list[Task]:
    """``count`` small tasks of varied definition, demonstration and instance lengths."""
    tasks = []
    for t in range(count):
        words = [WORDS[(t * 7 + i * 3) % len(WORDS)] for i in range(6 + 4 * t)]
        definition = f"Task {t}: given a short sentence, answer with one word from it. " + " ".join(words)
        examples = tuple(
            Example(input=" ".join(WORDS[(t + e) % 5 : (t + e) % 5 + 4 + e]), output=WORDS[(t + e) % 7])
            for e in range(2)
        )
        instances = tuple(
            Instance(
                id=f"t{t}-{i}",
                input=" ".join(WORDS[(i * 5 + t + j) % len(WORDS)] for j in range(2 + (i * 3 + t) % 9)),
                outputs=(WORDS[i % 4],),
            )
            for i in range(6)
        )
        tasks.append(
            Task(name=f"hand_{t}", definition=definition, positive_examples=examples, instances=instances,
                 categories=("Handmade",), is_classification=t % 2 == 0)
        )
    return tasks


@contextlib.contextmanager
def counting_tokens(model: Any) -> Iterator[list[int]]:
    """``[n]``: the token ids fed to ``model``'s forward passes while inside (a real hook)."""
    fed = [0]

    def count(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        fed[0] += 0 if ids is None else int(ids.numel())

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        yield fed
    finally:
        handle.remove()


def main(out: str, model: str = "tiny-llama") -> None:
    from activeit.models.loading import load_model
    from activeit.models.devices import process_state
    from activeit.scoring.scorer import score_tasks

    state = process_state()
    loaded = load_model(model)
    with counting_tokens(loaded.model) as fed:
        table = score_tasks(loaded, handmade_tasks(), WORKER_CONFIG, progress=False)
    Path(f"{out}.rank{state.process_index}.json").write_text(json.dumps({"tokens": fed[0]}))
    if state.is_main_process:
        Path(out).write_text(json.dumps(table.to_dict() | {"processes": state.num_processes}))
    state.wait_for_everyone()


if __name__ == "__main__":
    from activeit.models.processes import exit_without_teardown

    main(*sys.argv[1:])
    exit_without_teardown(0)

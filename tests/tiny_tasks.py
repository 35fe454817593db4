"""Trivially learnable tasks for fast training and evaluation tests."""

from __future__ import annotations

import random

from activeit.data.tasks import Example, Instance, Task

WORDS = "apple river stone cloud green music table orange window paper".split()


def constant_task(
    name: str = "say_banana", answer: str = "banana", n: int = 32, seed: int = 0, **fields: object
) -> Task:
    """Every instance (a few random words) has the same output: ``answer``."""
    rng = random.Random(seed)
    instances = tuple(
        Instance(
            id=f"{name}-{k}",
            input=" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6))),
            outputs=(answer,),
        )
        for k in range(n)
    )
    return Task(
        name=name,
        definition=f"Say {answer}.",
        positive_examples=(Example("stone cloud", answer),),
        instances=instances,
        **fields,  # type: ignore[arg-type]
    )

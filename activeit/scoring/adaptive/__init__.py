"""Adaptive prompt uncertainty: score in stages, stop a task once it is surely in or out of the top b.

A round needs only *which* b tasks have the highest PU (docs/METHOD.md, "Adaptive PU"). A
task's PU is the mean of its ``N = n * k`` terms ``|p_ij - p_i0|``, each in ``[0, 1]``,
scored in a seeded random order, a stage at a time; after each stage every task's PU gets an
interval ``[LB_t, UB_t]``, and task t is

* surely **in** when fewer than b other tasks have ``UB_u > LB_t``,
* surely **out** when at least b others have ``LB_u > UB_t``;

a decided task stops; the others go on. With stratified selection (``classification_ratio``)
the rule runs within the classification and the generation tasks, each with its share of b.

One concern a module: :mod:`~activeit.scoring.adaptive.bounds` (the confidence sequence and the
rule; no torch), :mod:`~activeit.scoring.adaptive.driver` (the stages, on the exact scorer's
:class:`~activeit.scoring.scorer.Scorer`), :mod:`~activeit.scoring.adaptive.journal` (the
checkpoint a run resumes from); the prefix caches kept between stages live beside the engine
(:mod:`activeit.scoring.engine.kept_prefixes`).
"""

from activeit.scoring.adaptive.bounds import decide, pu_interval
from activeit.scoring.adaptive.driver import (
    kept_prefix_bytes,
    pair_order,
    score_adaptive,
    stage_sizes,
)

__all__ = ["decide", "kept_prefix_bytes", "pair_order", "pu_interval", "score_adaptive", "stage_sizes"]

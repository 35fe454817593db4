"""Does a study's verdict hold its stated level? Resampled studies of known truth.

From a finished study's per-seed, per-test-task paired differences (:class:`PairedScores`),
this builds studies whose true mean difference is known: the differences are centred on zero
(a null of no effect), or on zero plus a ``shift``, and a synthetic seed is one of the study's
seeds drawn at random with its test tasks drawn with replacement within it (the two levels
the spread comes from: seeds, then the test sample). A study of 3-5 seeds makes a lumpy
population of 3-5 points, which no procedure can cover at 3 draws when all of them land on
one seed (a 3-seed source: 1 draw in 9); real seed effects are not lumpy, so by default the
seed level is smoothed the standard way, a shrunk smoothed bootstrap (Silverman 1986, 6.4):
Gaussian noise of Silverman's bandwidth around each drawn seed, rescaled to keep the variance.
``smooth=False`` gives the plain resampling, reported beside it. Each synthetic study of n seeds goes
through the study's own inference (:func:`~activeit.study.statistics.infer_difference`, or
any other passed in), and the share of studies where

* the 95% interval holds the true mean (coverage),
* P(improvement) passes 0.95 or falls below 0.05 although nothing differs (false claims),
* the interval leaves 0 out on the side of a true shift (power),

says whether the numbers a reader sees mean what they say (docs/STATISTICS.md). No torch,
no MLflow: ``benchmarks/calibration.py`` reads the study, this module resamples it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from activeit.errors import ActiveITError
from activeit.study.statistics import PairedDifference, PairedScores, infer_difference

#: The seed counts people run, and the resampled studies per count and truth.
SEED_COUNTS = (3, 5, 10)
STUDIES = 2000
#: The goal a calibrated verdict meets at every seed count.
COVERAGE_GOAL = 0.93
FALSE_CLAIM_GOAL = 0.06
#: P(improvement) beyond these reads as a claim.
CLAIM = (0.05, 0.95)


@dataclass(frozen=True)
class Calibration:
    """How the inference did on resampled studies of ``seeds`` seeds."""

    seeds: int
    studies: int
    #: Share of null studies whose interval holds 0 (a study without an interval counts as a miss).
    coverage: float
    #: Share of null studies with P(improvement) > 0.95 or < 0.05.
    false_claims: float
    #: Share of shifted studies whose interval lies above 0 (and the shift itself).
    power: float
    shift: float
    #: Share of null studies where the interval was not computable (no spread).
    not_computable: float

    @property
    def meets_goal(self) -> bool:
        return self.coverage >= COVERAGE_GOAL and self.false_claims <= FALSE_CLAIM_GOAL


def centred_rows(scores: PairedScores) -> list[np.ndarray]:
    """The seeds' rows of differences, minus the mean of the seed means: the population the
    resampling draws from then has mean difference exactly 0."""
    rows = [np.asarray(row, dtype=float) for row in scores.differences]
    if len(rows) < 2:
        raise ActiveITError("calibration needs a study of 2 or more paired seeds")
    grand = float(np.mean([row.mean() for row in rows]))
    return [row - grand for row in rows]


def resample_rows(rows: Sequence[np.ndarray], seeds: int, studies: int, rng: np.random.Generator) -> np.ndarray:
    """``studies`` x ``seeds`` x T synthetic rows: each synthetic seed is a study seed drawn
    at random, T test tasks drawn with replacement from that seed's own (T: the fewest tasks a
    seed has)."""
    width = min(len(row) for row in rows)
    drawn = rng.integers(0, len(rows), size=(studies, seeds))
    if len({len(row) for row in rows}) == 1:
        return np.stack(rows)[drawn[..., None], rng.integers(0, width, size=(studies, seeds, width))]
    out = np.empty((studies, seeds, width))
    for index, row in enumerate(rows):
        where = drawn == index
        out[where] = row[rng.integers(0, len(row), size=(int(where.sum()), width))]
    return out


def silverman_bandwidth(count: int) -> float:
    """Silverman's rule for a Gaussian kernel, (4 / (3 n))^(1/5), as a share of the sd."""
    return (4 / (3 * count)) ** 0.2


def synthetic_seeds(
    rows: Sequence[np.ndarray], seeds: int, studies: int, rng: np.random.Generator, smooth: bool = True
) -> np.ndarray:
    """``studies`` x ``seeds`` synthetic per-seed differences (mean 0 in the population): the
    mean of each synthetic seed's resampled row (:func:`resample_rows`), with ``smooth``
    the shrunk smoothed bootstrap at the seed level, (x + h s z) / sqrt(1 + h^2), z standard
    normal, s the sd of the study's seed means, h :func:`silverman_bandwidth`."""
    values = resample_rows(rows, seeds, studies, rng).mean(axis=-1)
    if not smooth:
        return values
    h = silverman_bandwidth(len(rows))
    spread = float(np.std([row.mean() for row in rows], ddof=1))
    return (values + h * spread * rng.standard_normal(values.shape)) / np.sqrt(1 + h * h)


def calibrate(
    scores: PairedScores,
    seed_counts: Sequence[int] = SEED_COUNTS,
    studies: int = STUDIES,
    shift: float | None = None,
    seed: int = 0,
    infer: Callable[[Sequence[float]], PairedDifference] = infer_difference,
    smooth: bool = True,
) -> list[Calibration]:
    """Coverage, false claims and power of ``infer`` on studies resampled from ``scores``
    (:func:`synthetic_seeds`), null and shifted by ``shift`` (default: the sd of the study's
    per-seed differences), at each of ``seed_counts``. Seeded: the same study always gives
    the same numbers."""
    rows = centred_rows(scores)
    if shift is None:
        shift = float(np.std([row.mean() for row in rows], ddof=1))
    if not shift > 0:
        raise ActiveITError("calibration needs a positive shift (the study's paired differences do not vary)")
    rng = np.random.default_rng(seed)
    found = []
    for n in seed_counts:
        null = synthetic_seeds(rows, n, studies, rng, smooth)
        shifted = synthetic_seeds(rows, n, studies, rng, smooth) + shift
        covered = claims = missing = 0
        for values in null:
            d = infer(values.tolist())
            if d.low is None:
                missing += 1
            elif d.low <= 0.0 <= d.high:
                covered += 1
            if d.improvement is not None and not CLAIM[0] <= d.improvement <= CLAIM[1]:
                claims += 1
        detected = sum(1 for values in shifted if (d := infer(values.tolist())).low is not None and d.low > 0)
        found.append(Calibration(n, studies, covered / studies, claims / studies, detected / studies, shift,
                                 missing / studies))
    return found

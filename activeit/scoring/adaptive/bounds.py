"""The bound of adaptive scoring: an interval for a task's PU from some of its terms, and the in/out rule.

The interval is the hedged betting confidence *sequence* for sampling without replacement of
Waudby-Smith & Ramdas ("Confidence sequences for sampling without replacement", NeurIPS 2020;
"Estimating means of bounded random variables by betting", JRSS-B 2024), as the ``confseq``
package computes it (``betting.betting_cs`` with ``N``: the capital processes
``prod(1 ± lambda_i (x_i - mu_i(m)))`` against the mean ``mu_i(m)`` of the terms not yet drawn,
bets ``lambda_predmix_eb`` truncated at ``1/2 / mu_i`` and ``1/2 / (1 - mu_i)``, ``theta = 1/2``,
the maximum of the two). Why this one: it is valid at every stage at once (anytime-valid, so
looking after each stage and stopping costs nothing), it uses the finite population (it closes
on the exact PU when all N terms are in), and it adapts to the small variance of the terms
(PU is typically 0.01-0.2) where Hoeffding-Serfling or empirical-Bernstein-Serfling bounds with
range 1 stay far too wide at N = 100. ``confseq`` itself does not install (a source-only C++
build that needs Boost headers and CMake), so :func:`pu_interval` computes the same sequence
here, with numpy, its boundary found on a refined grid and rounded outwards. Each of the T
tasks' intervals has level ``delta / T`` (Bonferroni), so all hold together with probability
``1 - delta``, and then the selected top b equals exact scoring's (docs/METHOD.md, "Adaptive PU").
No torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from activeit.errors import ActiveITError

#: Truncation of the bets (confseq's ``trunc_scale``) and the weight of the upward bet (``theta``).
TRUNCATION = 0.5
THETA = 0.5
#: Points of each grid the interval's ends are searched on, and how many times a grid is refined.
GRID = 128
REFINEMENTS = 3


def _bets(x: np.ndarray, alpha: float) -> np.ndarray:
    """confseq's ``lambda_predmix_eb``: predictable plug-in bets ``sqrt(2 log(1/alpha) / (t log(1+t) var_{t-1}))``
    from a regularised running variance (prior mean 1/2, variance 1/4, one pseudo-observation)."""
    t = np.arange(1, len(x) + 1)
    mean = np.minimum((0.5 + np.cumsum(x)) / (t + 1), 1.0)
    variance = (0.25 + np.cumsum((x - mean) ** 2)) / (t + 1)
    previous = np.concatenate(([0.25], variance[:-1]))
    return np.sqrt(2 * math.log(1 / alpha) / (t * np.log1p(t) * previous))


def _log_capital(x: np.ndarray, population: int, m: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """The largest log capital so far of the upward and downward bets against each mean ``m``."""
    drawn = np.concatenate(([0.0], np.cumsum(x)[:-1]))
    remaining = population - np.arange(len(x))
    mu = np.clip((population * m[:, None] - drawn) / remaining, 0.0, 1.0)  # mean of the terms not yet drawn
    bets = _bets(x, alpha * THETA)  # the same for both sides: theta = 1/2
    with np.errstate(divide="ignore"):
        up = np.minimum(bets, TRUNCATION / mu)
        down = np.minimum(bets, TRUNCATION / (1.0 - mu))
    gain = x - mu
    return (np.cumsum(np.log1p(up * gain), axis=1).max(axis=1),
            np.cumsum(np.log1p(-down * gain), axis=1).max(axis=1))


def pu_interval(terms: Sequence[float], population: int, alpha: float) -> tuple[float, float]:
    """An interval holding the mean of all ``population`` terms (each in [0, 1]) at level ``alpha``,
    from the first ``len(terms)`` of them in random order (see the module docstring); valid at
    every length at once, so it may be recomputed as terms come in. All terms in: the mean itself."""
    x = np.clip(np.asarray(terms, dtype=float), 0.0, 1.0)
    if not 0 < alpha < 1:
        raise ActiveITError(f"pu_interval: alpha must be in (0, 1), got {alpha}")
    if len(x) > population:
        raise ActiveITError(f"pu_interval: {len(x)} terms drawn from a population of {population}")
    total = float(x.sum())
    if len(x) == population:
        return total / population, total / population
    low, high = total / population, (total + population - len(x)) / population  # what the unseen terms allow
    if len(x) == 0:
        return low, high
    threshold = math.log(1 / (alpha * THETA))  # reject m once theta * capital >= 1 / alpha

    def end(side: int, outside: float, inside: float) -> float:
        """One end of the interval: ``outside`` is rejected, ``inside`` kept, and the capital of
        ``side`` (0: upward bets, 1: downward) falls monotonically from one to the other.
        Refined on grids; the last rejected point is returned (rounded outwards)."""
        for _ in range(REFINEMENTS):
            grid = np.linspace(outside, inside, GRID)
            kept = int(np.argmin(_log_capital(x, population, grid, alpha)[side] >= threshold))
            outside, inside = grid[max(kept - 1, 0)], grid[max(kept, 1)]
        return float(outside)

    (up_low, up_high), (down_low, down_high) = _log_capital(x, population, np.array([low, high]), alpha)
    lower = low if up_low < threshold else high if up_high >= threshold else end(0, low, high)
    upper = high if down_high < threshold else low if down_low >= threshold else end(1, high, low)
    return min(lower, upper), max(lower, upper)


def decide(intervals: Sequence[tuple[float, float]], budget: int) -> list[str]:
    """``"in"`` / ``"out"`` / ``""`` per task by the rule of docs/METHOD.md, "Adaptive PU": task t is
    surely in when fewer than ``budget`` other tasks have ``UB_u > LB_t``, surely out when at least
    ``budget`` others have ``LB_u > UB_t``."""
    if not intervals:
        return []
    lows, highs = (np.array(side, dtype=float) for side in zip(*intervals))
    sorted_lows, sorted_highs = np.sort(lows), np.sort(highs)
    count = len(lows)
    # others with UB_u > LB_t (t itself counts when UB_t > LB_t), and others with LB_u > UB_t
    above_low = count - np.searchsorted(sorted_highs, lows, side="right") - (highs > lows)
    above_high = count - np.searchsorted(sorted_lows, highs, side="right")
    return ["in" if a < budget else "out" if b >= budget else "" for a, b in zip(above_low, above_high)]

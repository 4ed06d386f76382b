"""The project's statistics, on plain numbers: one module serves the evaluate stage and the searcher verdict.

- Spread over seeds and paired/unpaired differences of means with their t-intervals and p-values
  (scipy's ``ttest_rel`` where the two samples share seeds, Welch's ``ttest_ind(equal_var=False)``
  where they do not). Both assume roughly normal means.
- Holm's step-down adjustment of a family's p-values (Holm 1979).
- Wilson's interval for a share (Wilson 1927), through ``binomtest``.
- Power of a two-sided t-test from the noncentral t: the smallest difference a design detects and
  the seeds a difference would need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

IMPROVEMENT = "improvement"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference"
UNDETERMINED = "undetermined"  # no interval: fewer than 2 seeds where both configurations finished
PAIRED, WELCH = "paired", "Welch"
POWER = 0.8


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float  # sample standard deviation (n - 1 in the denominator)
    n: int


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``after - before`` over pairs, with a two-sided ``confidence`` t-interval."""

    mean: float
    ci_low: float
    ci_high: float
    n: int
    confidence: float


@dataclass(frozen=True)
class Difference:
    """``mean(a) - mean(b)``: a paired or Welch t-test, its interval and what the power calculation needs."""

    design: str  # PAIRED or WELCH
    mean: float
    ci_low: float
    ci_high: float
    p: float
    df: float
    se: float  # standard error of the difference
    n_a: int
    n_b: int
    sd_a: float  # paired: the sd of the per-seed differences; Welch: the sd of a
    sd_b: float  # paired: the same as sd_a; Welch: the sd of b


def spread(values: Sequence[float]) -> Spread:
    if len(values) < 2:
        raise ValueError(f"a spread needs at least 2 values, got {len(values)}")
    array = np.asarray(values, dtype=np.float64)
    return Spread(mean=float(array.mean()), std=float(array.std(ddof=1)), n=len(array))


def _check_confidence(confidence: float) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")


def difference(a: Sequence[float], b: Sequence[float], paired: bool, confidence: float = 0.95) -> Difference:
    """``mean(a) - mean(b)``: paired (``a[i]`` and ``b[i]`` share seed i) or Welch (independent samples)."""
    _check_confidence(confidence)
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if paired and len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} vs {len(y)}")
    if min(len(x), len(y)) < 2:
        raise ValueError(f"a difference needs at least 2 values per sample, got {len(x)} and {len(y)}")
    mean = float(x.mean() - y.mean())
    if paired:
        sd = float((x - y).std(ddof=1))
        se, df, sds = sd / math.sqrt(len(x)), float(len(x) - 1), (sd, sd)
    else:
        va, vb = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(x) - 1) + vb**2 / (len(y) - 1)) if se > 0 else float(len(x) + len(y) - 2)
        sds = (float(x.std(ddof=1)), float(y.std(ddof=1)))
    if se == 0.0:  # no spread at all: the difference is exact
        return Difference(PAIRED if paired else WELCH, mean, mean, mean, 1.0 if mean == 0 else 0.0, df, 0.0,
                          len(x), len(y), *sds)
    result = stats.ttest_rel(x, y) if paired else stats.ttest_ind(x, y, equal_var=False)
    interval = result.confidence_interval(confidence)
    return Difference(PAIRED if paired else WELCH, mean, float(interval.low), float(interval.high),
                      float(result.pvalue), df, se, len(x), len(y), *sds)


def paired_difference(after: Sequence[float], before: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """``after[i] - before[i]`` summarised; pairs must be aligned (here: the same seed)."""
    if len(after) != len(before):
        raise ValueError(f"paired samples differ in length: {len(after)} vs {len(before)}")
    result = difference(after, before, paired=True, confidence=confidence)
    return PairedDifference(result.mean, result.ci_low, result.ci_high, result.n_a, confidence)


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the one-sample t-interval of a mean (collapsed to the mean without spread)."""
    _check_confidence(confidence)
    array = np.asarray(values, dtype=np.float64)
    mean = float(array.mean())
    if len(array) < 2 or float(array.std(ddof=1)) == 0.0:
        return mean, mean, mean
    interval = stats.ttest_1samp(array, 0.0).confidence_interval(confidence)
    return mean, float(interval.low), float(interval.high)


def verdict(difference: PairedDifference | None) -> str:
    """For a higher-is-better metric: does the interval exclude zero, and on which side?"""
    if difference is None:
        return UNDETERMINED
    if difference.ci_low > 0.0:
        return IMPROVEMENT
    if difference.ci_high < 0.0:
        return WORSE
    return NO_DIFFERENCE


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order.

    Sorted ascending, the i-th smallest (from 0) is multiplied by m - i, the running maximum keeps
    the adjusted values in the same order as the raw ones, and each is capped at 1. A family's
    hypothesis is rejected at level alpha when its adjusted p is below alpha; the chance of any
    false rejection in the family stays below alpha whatever the tests' dependence.
    """
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def wilson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a share (Wilson 1927)."""
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def power(delta: float, se: float, df: float, alpha: float) -> float:
    """The chance a two-sided t-test at ``alpha`` rejects when the true difference is ``delta``."""
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    shift = abs(delta) / se
    exact = float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))
    if math.isnan(exact):  # scipy's noncentral t gives up at large shifts and df: the normal limit is exact enough
        return float(stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift))
    return exact


def minimum_detectable(se: float, df: float, alpha: float, target: float = POWER) -> float:
    """The smallest difference detected with probability ``target`` (noncentral t, two-sided)."""
    if se == 0.0:
        return 0.0
    return float(optimize.brentq(lambda delta: power(delta, se, df, alpha) - target, 0.0, 20 * se))


def seeds_needed(delta: float, design: Callable[[int], tuple[float, float]], alpha: float, target: float = POWER,
                 most: int = 1_000_000) -> int | None:
    """The fewest seeds per sample with power ``target`` for ``delta``; ``design(n)`` gives (se, df) at n seeds.

    None when ``delta`` is 0 or even ``most`` seeds fall short.
    """
    def enough(n: int) -> bool:
        se, df = design(n)
        return se == 0.0 or power(delta, se, df, alpha) >= target

    if delta == 0.0 or not enough(most):
        return None
    low, high = 2, most  # power grows with n: bisect for the first n that is enough
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle + 1, high)
    return low


def design_of(result: Difference) -> Callable[[int], tuple[float, float]]:
    """(se, df) of the same test at n seeds per sample, the seeds' sds held at those measured."""
    if result.design == PAIRED:
        return lambda n: (result.sd_a / math.sqrt(n), float(n - 1))

    def welch(n: int) -> tuple[float, float]:
        va, vb = result.sd_a**2 / n, result.sd_b**2 / n
        if va + vb == 0.0:
            return 0.0, float(2 * n - 2)
        return math.sqrt(va + vb), (va + vb) ** 2 / ((va**2 + vb**2) / (n - 1))
    return welch

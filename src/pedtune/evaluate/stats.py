"""Spread over seeds and the paired tuned - initial difference: pure functions on plain numbers.

Both configurations are trained with the same seeds, so seed-to-seed noise that affects
both alike cancels in the per-seed differences; the interval is the Student t-interval
on those differences (a paired t-interval), which assumes they are roughly normal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

IMPROVEMENT = "improvement"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference"
UNDETERMINED = "undetermined"  # no interval: fewer than 2 seeds where both configurations finished


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


def spread(values: Sequence[float]) -> Spread:
    if len(values) < 2:
        raise ValueError(f"a spread needs at least 2 values, got {len(values)}")
    array = np.asarray(values, dtype=np.float64)
    return Spread(mean=float(array.mean()), std=float(array.std(ddof=1)), n=len(array))


def paired_difference(after: Sequence[float], before: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """``after[i] - before[i]`` summarised; pairs must be aligned (here: the same seed)."""
    if len(after) != len(before):
        raise ValueError(f"paired samples differ in length: {len(after)} vs {len(before)}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    differences = spread(np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64))
    critical = float(stats.t.ppf(0.5 + confidence / 2.0, df=differences.n - 1))
    half_width = critical * differences.std / math.sqrt(differences.n)
    return PairedDifference(
        mean=differences.mean,
        ci_low=differences.mean - half_width,
        ci_high=differences.mean + half_width,
        n=differences.n,
        confidence=confidence,
    )


def verdict(difference: PairedDifference | None) -> str:
    """For a higher-is-better metric: does the interval exclude zero, and on which side?"""
    if difference is None:
        return UNDETERMINED
    if difference.ci_low > 0.0:
        return IMPROVEMENT
    if difference.ci_high < 0.0:
        return WORSE
    return NO_DIFFERENCE

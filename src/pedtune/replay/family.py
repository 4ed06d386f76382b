"""The verdict's statistics: each variant's regret and shares, and the named comparison family.

The family: every variant against random+FIFO at the same budget, and ASHA against FIFO within
each searcher. Two variants with the same searcher replay the same searcher seeds (seed k
proposes the same first configurations and replays the same recorded seeds), so their per-seed
regrets are paired (``ttest_rel``); variants with different searchers are independent samples
(Welch's ``ttest_ind``). Holm's adjustment runs over the whole family. Those tests carry the
searcher seeds' noise only; each comparison also gets an interval from the hierarchical
bootstrap (:mod:`pedtune.replay.noise`) that carries the table's training seeds as well, and
a difference is called only when its Holm-adjusted p is below ``ALPHA`` and that interval
excludes 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pedtune.evaluate.stats import Difference, design_of, difference, holm, mean_interval, minimum_detectable, \
    seeds_needed, wilson
from pedtune.replay.noise import TableResamples, difference_draws, percentile_interval, regret_draws, sign_flips
from pedtune.replay.outcome import Outcome
from pedtune.replay.variant import Variant

BASELINE = ("random", "fifo")
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE  # the family's error rate


@dataclass(frozen=True)
class Share:
    count: int
    of: int

    @property
    def value(self) -> float:
        return self.count / self.of

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.count, self.of, CONFIDENCE)


@dataclass(frozen=True)
class VariantSummary:
    variant: Variant
    sweeps: int
    regret: tuple[float, float, float]  # mean and t-interval over searcher seeds
    regret_with_table: tuple[float, float]  # bootstrap interval: searcher and table seeds
    regret_sd: float
    found_best: Share
    best_stopped_early: Share
    best_tried: Share
    trial_epochs: float
    wall_s: float


@dataclass(frozen=True)
class Comparison:
    """``a`` − ``b`` in mean regret: negative means ``a`` picks better configurations."""

    a: Variant
    b: Variant
    test: Difference  # over searcher seeds
    p_holm: float
    with_table: tuple[float, float]  # bootstrap interval: searcher and table seeds
    sign_flips: float  # share of bootstrap draws on the other side of 0
    detectable: float  # the smallest |Δ| this design detects with 80 % power at the strictest Holm level
    seeds_for_observed: int | None  # seeds per variant the observed Δ would need for 80 % power there

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA

    @property
    def beyond_table_noise(self) -> bool:
        return self.with_table[0] > 0 or self.with_table[1] < 0

    @property
    def direction(self) -> str:
        return "lower" if self.test.mean < 0 else "higher"

    @property
    def word(self) -> str:
        if self.significant and self.beyond_table_noise:
            return f"{self.direction} regret"
        if self.significant:
            return f"{self.direction} regret over searcher seeds, within the table's noise"
        return "no detectable difference"


def family_pairs(variants: list[Variant]) -> list[tuple[Variant, Variant]]:
    """(a, b) for each comparison of the family, in the verdict's order."""
    pairs: list[tuple[Variant, Variant]] = []
    for budget in sorted({v.budget for v in variants}):
        baseline = Variant(*BASELINE, budget)
        if baseline in variants:
            pairs += [(v, baseline) for v in variants if v.budget == budget and v != baseline]
        for searcher in dict.fromkeys(v.searcher for v in variants):
            asha, fifo = Variant(searcher, "asha", budget), Variant(searcher, "fifo", budget)
            if asha in variants and fifo in variants and (asha, fifo) not in pairs:
                pairs.append((asha, fifo))
    return pairs


def shares_seeds(a: list[Outcome], b: list[Outcome], variant_a: Variant, variant_b: Variant) -> bool:
    """Paired by design: the same searcher, replayed with the same searcher seeds."""
    return variant_a.searcher == variant_b.searcher and [o.seed for o in a] == [o.seed for o in b]


def _by_seed(outcomes: list[Outcome]) -> list[Outcome]:
    return sorted(outcomes, key=lambda o: o.seed)


def summarise(results: dict[Variant, list[Outcome]], noise: TableResamples,
              rng: np.random.Generator) -> list[VariantSummary]:
    rows = []
    for variant, outcomes in results.items():
        regrets = [o.regret for o in outcomes]
        n = len(outcomes)
        rows.append(VariantSummary(
            variant=variant, sweeps=n, regret=mean_interval(regrets, CONFIDENCE),
            regret_with_table=percentile_interval(regret_draws(noise, [o.picked for o in outcomes], rng), CONFIDENCE),
            regret_sd=float(np.std(regrets, ddof=1)) if n > 1 else 0.0,
            found_best=Share(sum(o.found_best for o in outcomes), n),
            best_stopped_early=Share(sum(o.best_stopped_early for o in outcomes), n),
            best_tried=Share(sum(o.best_tried for o in outcomes), n),
            trial_epochs=float(np.mean([o.trial_epochs for o in outcomes])),
            wall_s=float(np.sum([o.wall_s for o in outcomes])),
        ))
    return rows


def compare_family(results: dict[Variant, list[Outcome]], noise: TableResamples,
                   rng: np.random.Generator) -> list[Comparison]:
    pairs = [(a, b) for a, b in family_pairs(list(results)) if len(results[a]) > 1 and len(results[b]) > 1]
    tests, draws = [], []
    for variant_a, variant_b in pairs:
        a, b = _by_seed(results[variant_a]), _by_seed(results[variant_b])
        paired = shares_seeds(a, b, variant_a, variant_b)
        tests.append(difference([o.regret for o in a], [o.regret for o in b], paired, CONFIDENCE))
        draws.append(difference_draws(noise, [o.picked for o in a], [o.picked for o in b], paired, rng))
    adjusted = holm([t.p for t in tests])
    strictest = ALPHA / max(len(pairs), 1)  # Holm's first step: the level the smallest p faces
    comparisons = []
    for (variant_a, variant_b), test, p_holm, drawn in zip(pairs, tests, adjusted, draws):
        comparisons.append(Comparison(
            a=variant_a, b=variant_b, test=test, p_holm=p_holm, with_table=percentile_interval(drawn, CONFIDENCE),
            sign_flips=sign_flips(drawn, test.mean),
            detectable=minimum_detectable(test.se, test.df, strictest),
            seeds_for_observed=seeds_needed(test.mean, design_of(test), strictest),
        ))
    return comparisons

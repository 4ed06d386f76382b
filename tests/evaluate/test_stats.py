from __future__ import annotations

import pytest
from scipy import stats

from pedtune.evaluate.stats import (
    IMPROVEMENT,
    NO_DIFFERENCE,
    PAIRED,
    WELCH,
    WORSE,
    PairedDifference,
    design_of,
    difference,
    holm,
    minimum_detectable,
    paired_difference,
    power,
    seeds_needed,
    spread,
    verdict,
    wilson,
)


def test_spread_uses_the_sample_standard_deviation():
    result = spread([1.0, 2.0, 3.0, 4.0])
    assert (result.mean, result.n) == (2.5, 4)
    assert result.std == pytest.approx((5.0 / 3.0) ** 0.5)  # sum of squares 5, n - 1 = 3


def test_identical_inputs_give_zero_delta_and_an_interval_containing_zero():
    scores = [0.31, 0.27, 0.35]
    result = paired_difference(scores, scores)
    assert (result.mean, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)
    assert result.ci_low <= 0.0 <= result.ci_high
    assert verdict(result) == NO_DIFFERENCE


def test_constant_shift_gives_exactly_that_delta_with_a_zero_width_interval():
    before = [0.25, 0.5, 0.75, 0.125]
    after = [b + 0.0625 for b in before]  # binary fractions: the differences are exact
    result = paired_difference(after, before)
    assert result.mean == 0.0625
    assert result.ci_low == result.ci_high == 0.0625
    assert verdict(result) == IMPROVEMENT
    assert verdict(paired_difference(before, after)) == WORSE


def test_students_sleep_data_matches_the_published_interval():
    # Cushny & Peebles' hours of extra sleep under two drugs, the data of Student (1908);
    # R's t.test(extra ~ group, data = sleep, paired = TRUE) prints the 95 % interval
    # -2.4598858 -0.7001142 for group 1 - group 2, so group 2 - group 1 is its mirror image.
    drug_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    drug_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    result = paired_difference(drug_2, drug_1)
    assert result.mean == pytest.approx(1.58)
    assert result.ci_low == pytest.approx(0.7001142, abs=1e-7)
    assert result.ci_high == pytest.approx(2.4598858, abs=1e-7)
    assert (result.n, result.confidence) == (10, 0.95)
    assert verdict(result) == IMPROVEMENT


def test_a_wider_confidence_gives_a_wider_interval():
    after, before = [0.5, 0.6, 0.4, 0.55], [0.45, 0.5, 0.42, 0.5]
    narrow, wide = paired_difference(after, before, 0.8), paired_difference(after, before, 0.99)
    assert wide.ci_low < narrow.ci_low < narrow.mean < narrow.ci_high < wide.ci_high


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.01, 0.2, IMPROVEMENT), (-0.2, -0.01, WORSE), (-0.1, 0.1, NO_DIFFERENCE), (0.0, 0.1, NO_DIFFERENCE)],
)
def test_verdict_follows_the_interval(low, high, expected):
    assert verdict(PairedDifference(mean=(low + high) / 2, ci_low=low, ci_high=high, n=3, confidence=0.95)) == expected


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2"):
        paired_difference([1.0], [0.5])
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([1.0, 2.0], [0.0, 1.0], confidence=1.0)


def test_holm_matches_a_hand_computed_example():
    # m = 4, sorted p 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1: 0.04, 0.06, 0.06, 0.04 -> running max
    # 0.04, 0.06, 0.06, 0.06; given in another order, each keeps its own place.
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 * 2 capped at 1


def test_wilson_matches_the_closed_form():
    # 8 of 50 at 95 %: (p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.959964.
    z, n, p = 1.959964, 50, 8 / 50
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * (p * (1 - p) / n + z**2 / (4 * n**2)) ** 0.5 / (1 + z**2 / n)
    low, high = wilson(8, 50)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-6)


def test_paired_and_welch_differences_are_scipys_tests():
    a, b = [0.5, 0.61, 0.4, 0.55, 0.47], [0.45, 0.5, 0.42, 0.5, 0.41]
    paired, welch = difference(a, b, paired=True), difference(a, b, paired=False)
    assert (paired.design, welch.design) == (PAIRED, WELCH)
    assert paired.p == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert welch.p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert (welch.ci_low, welch.ci_high) == pytest.approx((interval.low, interval.high))


def test_the_minimum_detectable_difference_has_the_asked_power_and_more_seeds_detect_less():
    se, df = 0.01, 49
    delta = minimum_detectable(se, df, alpha=0.05)
    assert power(delta, se, df, 0.05) == pytest.approx(0.8, abs=1e-6)
    assert 2.8 * se < delta < 2.9 * se  # (1.96 + 0.84) se for a z-test, a little more for t with 49 df
    result = difference([0.1 + 0.01 * (i % 7) for i in range(20)], [0.1 + 0.011 * (i % 5) for i in range(20)],
                        paired=False)
    needed = seeds_needed(0.005, design_of(result), alpha=0.05)
    se_at, df_at = design_of(result)(needed)
    assert power(0.005, se_at, df_at, 0.05) >= 0.8 > power(0.005, *design_of(result)(needed - 1), 0.05)

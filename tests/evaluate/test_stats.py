from __future__ import annotations

import pytest

from pedtune.evaluate.stats import (
    IMPROVEMENT,
    NO_DIFFERENCE,
    WORSE,
    PairedDifference,
    paired_difference,
    spread,
    verdict,
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

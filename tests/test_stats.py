"""The one statistical method of the reports against hand-computed values."""

from __future__ import annotations

import math
import statistics

import pytest

from bgd_experiments.reporting.stats import (
    BETTER,
    NOT_RESOLVED,
    WORSE,
    compare,
    compare_paired,
    holm,
    holm_correct,
    minimum_detectable_difference,
    student_t_cdf,
    student_t_quantile,
    verdict_text,
)


def test_t_quantiles_against_printed_tables() -> None:
    assert student_t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert student_t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert student_t_quantile(0.975, 3) == pytest.approx(3.182446, abs=1e-6)
    assert student_t_quantile(0.8, 4) == pytest.approx(0.940965, abs=1e-6)
    assert student_t_quantile(0.025, 10) == pytest.approx(-2.228139, abs=1e-6)
    assert student_t_quantile(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)


def test_welch_interval_by_hand() -> None:
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0]
    # var a = 1, var b = 4, n = 3: se^2 = 1/3 + 4/3 = 5/3;
    # df = (5/3)^2 / ((1/3)^2 / 2 + (4/3)^2 / 2) = (25/9) / (17/18) = 50/17.
    comparison = compare(a, b)
    assert comparison is not None
    se = math.sqrt(5 / 3)
    df = 50 / 17
    assert comparison.diff == pytest.approx(-4.0)
    assert comparison.standard_error == pytest.approx(se)
    assert comparison.df == pytest.approx(df)
    half = student_t_quantile(0.975, df) * se
    assert student_t_cdf(half / se, df) == pytest.approx(0.975, abs=1e-9)
    assert 3.182446 < half / se < 4.302653  # between the printed t_{0.975} at 3 and 2 df
    assert (comparison.low, comparison.high) == pytest.approx((-4.0 - half, -4.0 + half))
    # The interval holds 0 exactly when the two-sided p is above 0.05 (here p = 0.055).
    assert comparison.low < 0 < comparison.high and 0.05 < comparison.p < 0.06
    assert comparison.verdict == NOT_RESOLVED
    far = compare(a, [7.0, 8.0, 9.0])  # diff -6, se sqrt(2/3), t = -7.35 on 4 df
    assert far is not None and far.high < 0 and far.p < 0.05 and far.verdict == WORSE
    assert compare([7.0, 8.0, 9.0], a).verdict == BETTER  # type: ignore[union-attr]
    assert compare([1.0], b) is None


def test_holm_on_a_known_p_vector() -> None:
    # Sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> 0.06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_holm_changes_the_verdict_and_skips_missing_comparisons() -> None:
    shifted = [x + 4.604 * math.sqrt(2 / 3) for x in (60.0, 61.0, 62.0)]  # p = 0.01
    alone = compare(shifted, [60.0, 61.0, 62.0])
    assert alone is not None and alone.p == pytest.approx(0.01, abs=1e-4)
    assert alone.verdict == BETTER
    # Among six comparisons, five of them with p = 1, Holm multiplies it by 6: not resolved.
    nulls = [compare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) for _ in range(5)]
    corrected = holm_correct([alone, None, *nulls])
    assert corrected[1] is None
    assert corrected[0].p_holm == pytest.approx(0.06, abs=6e-4)  # type: ignore[union-attr]
    assert corrected[0].verdict == NOT_RESOLVED  # type: ignore[union-attr]
    assert "not resolved at this n" in verdict_text(corrected[0])
    assert "detectable >=" in verdict_text(corrected[0])


def test_smallest_detectable_difference() -> None:
    # (t_{0.975,4} + t_{0.8,4}) * se with se = sqrt(2/3): n = 3 per side, unit variances.
    se = math.sqrt(2 / 3)
    expected = (2.776445 + 0.940965) * se
    assert minimum_detectable_difference(se, 4.0) == pytest.approx(expected, abs=1e-5)
    comparison = compare([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
    assert comparison is not None and comparison.detectable == pytest.approx(expected, abs=1e-5)
    assert minimum_detectable_difference(0.0, None) is None
    assert statistics.stdev([0.0, 1.0, 2.0]) == 1.0


def test_paired_interval_by_hand() -> None:
    # Differences -1, -2, -3: mean -2, sd 1, se 1/sqrt(3), df 2, t_{0.975,2} = 4.302653.
    comparison = compare_paired([-1.0, -2.0, -3.0])
    assert comparison is not None
    half = 4.302653 / math.sqrt(3)
    assert (comparison.low, comparison.high) == pytest.approx((-2 - half, -2 + half), abs=1e-6)
    t = 2 * math.sqrt(3)  # on 2 df the two-sided p is 1 - t / sqrt(2 + t^2) in closed form
    assert comparison.p == pytest.approx(1 - t / math.sqrt(2 + t * t), abs=1e-10)
    assert comparison.verdict == NOT_RESOLVED
    assert compare_paired([1.0]) is None

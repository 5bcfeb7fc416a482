"""One statistical method for every comparison of two optimizers' accuracies over seeds.

Tables 2, 3 and 2+ compare mean accuracies over a few seeds (often n = 3). Each comparison is
read the same way:

- the mean difference with a 95% confidence interval (Welch: unequal variances, the
  Welch-Satterthwaite degrees of freedom);
- a two-sided Welch t-test whose p-value is corrected for the number of comparisons in its
  table by Holm's step-down method (it controls the family-wise error rate at ``ALPHA``);
- a verdict in three words: "better" or "worse" when the Holm-corrected p is below ``ALPHA``,
  otherwise "not resolved at this n", with the smallest difference the same n and spread
  would detect at 80% power. With n = 3, "not resolved" is low power, not equivalence.

Also the spreads of the found rate (max/min, coefficient of variation) and the permutation
test of a start-rate effect that Table 1 and the search's noise floor report.

Plain Python (no SciPy): the t distribution comes from the regularized incomplete beta.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

ALPHA = 0.05  # family-wise error rate of each table's tests (Holm)
CONFIDENCE = 0.95  # of the interval around each mean difference
POWER = 0.80  # of the smallest detectable difference
BETTER, WORSE, NOT_RESOLVED = "better", "worse", "not resolved at this n"

METHOD_TEXT = (
    "Every comparison of two optimizers (Tables 2, 3 and 2+; paired runs of one changed "
    "setting use the paired form) reports the mean difference over "
    f"seeds with a {CONFIDENCE:.0%} confidence interval (Welch: unequal variances, "
    "Welch-Satterthwaite degrees of freedom) and a two-sided Welch t-test whose p-value is "
    "corrected for the number of comparisons in its table by Holm's step-down method "
    f"(family-wise error rate {ALPHA:g}). A difference is called better or worse only when "
    "its Holm-corrected p is below that level; otherwise it is *not resolved at this n*, "
    "and the table gives the smallest difference the same number of seeds and spread would "
    f"detect with {POWER:.0%} power (not resolved is low power, not equivalence)."
)


# --------------------------------------------------------------------------- t distribution


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), valid for x < (a + 1) / (a + b + 2)."""
    tiny, epsilon = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 10_000):
        # The even step d_{2m}, then the odd step d_{2m+1} of the fraction.
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < epsilon:
            return result
    return result


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the CDF at ``x`` of a Beta(a, b) variable (a, b > 0, 0 <= x <= 1)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The fraction converges fast on this side of the mean; the symmetry covers the other.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def two_sided_t_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def student_t_quantile(probability: float, df: float) -> float:
    """The t with P(T <= t) = ``probability`` (bisection on the CDF, to about 1e-12)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability must lie in (0, 1), got {probability}")
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < probability:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if student_t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-12 * max(1.0, high):
            break
    return 0.5 * (low + high)


# --------------------------------------------------------------------------- Welch


@dataclass(frozen=True)
class WelchTest:
    t: float  # (mean of a - mean of b) / its standard error
    df: float | None  # Welch-Satterthwaite; None when both samples have no spread
    p: float  # two-sided


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchTest | None:
    """Two-sided Welch t-test of equal means; None unless both samples have 2 values or more.

    Two samples without any spread differ for sure (p = 0) unless their means are equal (p = 1).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    share_a, share_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    standard_error = math.sqrt(share_a + share_b)
    if standard_error == 0.0:
        if mean_a == mean_b:
            return WelchTest(0.0, None, 1.0)
        return WelchTest(math.copysign(math.inf, mean_a - mean_b), None, 0.0)
    t = (mean_a - mean_b) / standard_error
    df = (share_a + share_b) ** 2 / (share_a**2 / (len(a) - 1) + share_b**2 / (len(b) - 1))
    return WelchTest(t, df, two_sided_t_p(t, df))


@dataclass(frozen=True)
class Comparison:
    """Mean of ``a`` minus mean of ``b`` over seeds, with its Welch interval and test."""

    diff: float
    low: float  # the CONFIDENCE interval of diff (equal to diff when neither side spreads)
    high: float
    standard_error: float
    df: float | None
    p: float
    n_a: int
    n_b: int
    p_holm: float | None = None  # p corrected for the comparisons of its table
    detectable: float | None = None  # smallest |diff| found at POWER with this n and spread

    @property
    def verdict(self) -> str:
        """ "better" (a above b), "worse" or "not resolved at this n", on the Holm p."""
        p = self.p if self.p_holm is None else self.p_holm
        if p >= ALPHA:
            return NOT_RESOLVED
        return BETTER if self.diff > 0 else WORSE

    def with_holm(self, p_holm: float) -> Comparison:
        return Comparison(
            self.diff,
            self.low,
            self.high,
            self.standard_error,
            self.df,
            self.p,
            self.n_a,
            self.n_b,
            p_holm,
            self.detectable,
        )


def minimum_detectable_difference(
    standard_error: float, df: float | None, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The smallest true difference a two-sided level-``alpha`` Welch test detects with
    probability ``power``: (t_{1-alpha/2} + t_{power}) * standard error (normal-shift
    approximation with the Welch degrees of freedom). None without spread."""
    if df is None or standard_error == 0.0:
        return None
    return (
        student_t_quantile(1.0 - alpha / 2.0, df) + student_t_quantile(power, df)
    ) * standard_error


def compare(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """Welch comparison of mean(a) - mean(b); None unless both sides have 2 values or more."""
    test = welch_t_test(a, b)
    if test is None:
        return None
    diff = statistics.fmean(a) - statistics.fmean(b)
    standard_error = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    half = 0.0
    if test.df is not None:
        half = student_t_quantile(1.0 - (1.0 - CONFIDENCE) / 2.0, test.df) * standard_error
    return Comparison(
        diff,
        diff - half,
        diff + half,
        standard_error,
        test.df,
        test.p,
        len(a),
        len(b),
        detectable=minimum_detectable_difference(standard_error, test.df),
    )


def compare_paired(differences: Sequence[float]) -> Comparison | None:
    """The same reading for paired runs (one setting changed, same seed and cell): the mean
    of the per-pair differences with its t interval on n - 1 degrees of freedom (the paired
    form of the Welch interval); None with fewer than 2 pairs."""
    n = len(differences)
    if n < 2:
        return None
    diff = statistics.fmean(differences)
    standard_error = statistics.stdev(differences) / math.sqrt(n)
    df = float(n - 1)
    if standard_error == 0.0:
        p = 1.0 if diff == 0 else 0.0
        return Comparison(diff, diff, diff, 0.0, None, p, n, n)
    half = student_t_quantile(1.0 - (1.0 - CONFIDENCE) / 2.0, df) * standard_error
    return Comparison(
        diff,
        diff - half,
        diff + half,
        standard_error,
        df,
        two_sided_t_p(diff / standard_error, df),
        n,
        n,
        detectable=minimum_detectable_difference(standard_error, df),
    )


# --------------------------------------------------------------------------- Holm


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order: the i-th smallest p is
    multiplied by (m - i + 1), made non-decreasing along the sorted order, and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda index: p_values[index])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def holm_correct(comparisons: Sequence[Comparison | None]) -> list[Comparison | None]:
    """The comparisons with their Holm p over the ones present (None stays None)."""
    present = [index for index, item in enumerate(comparisons) if item is not None]
    adjusted = holm([comparisons[index].p for index in present])  # type: ignore[union-attr]
    out = list(comparisons)
    for index, p_holm in zip(present, adjusted, strict=True):
        out[index] = comparisons[index].with_holm(p_holm)  # type: ignore[union-attr]
    return out


# --------------------------------------------------------------------------- wording


def interval_text(comparison: Comparison, digits: int = 2) -> str:
    """ "+1.23 [-0.40, +2.86]" (difference and its 95% interval)."""
    return (
        f"{comparison.diff:+.{digits}f} [{comparison.low:+.{digits}f}, "
        f"{comparison.high:+.{digits}f}]"
    )


def verdict_text(comparison: Comparison | None, subject: str = "", digits: int = 2) -> str:
    """The verdict in words: "better"/"worse" with its Holm p, or "not resolved at this n"
    with the smallest detectable difference."""
    if comparison is None:
        return "n/a (needs 2 seeds or more on both sides)"
    prefix = f"{subject} " if subject else ""
    p = comparison.p if comparison.p_holm is None else comparison.p_holm
    p_text = f"{p:.3g}" if p >= 1e-4 else "<1e-4"
    if comparison.verdict != NOT_RESOLVED:
        return f"{prefix}{comparison.verdict} (Holm p {p_text})"
    detect = (
        ""
        if comparison.detectable is None
        else f", detectable >= {comparison.detectable:.{digits}f}"
    )
    return f"{prefix}{NOT_RESOLVED} (Holm p {p_text}{detect})"


# --------------------------------------------------------------------------- spreads

START_EFFECT_PERMUTATIONS = 2000


def mean_and_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (None with fewer than two values; both None with none)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else None
    return mean, std


def max_min_and_cv(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """(max/min ratio, coefficient of variation = sample std / mean) of positive values."""
    usable = [value for value in values if value is not None and value > 0]
    if len(usable) < 2:
        return None, None
    return max(usable) / min(usable), statistics.stdev(usable) / statistics.fmean(usable)


def _between_starts(blocks: Sequence[Sequence[float]]) -> float:
    """Sum over starts of (start mean over seeds - grand mean)^2; ``blocks[seed][start]``."""
    starts = len(blocks[0])
    means = [statistics.fmean(block[start] for block in blocks) for start in range(starts)]
    grand = statistics.fmean(means)
    return sum((mean - grand) ** 2 for mean in means)


def start_effect_p_value(
    blocks: Sequence[Sequence[float]], permutations: int = START_EFFECT_PERMUTATIONS
) -> float | None:
    """Permutation test of "the found rate does not depend on the start rate", each seed a
    block: ``blocks[seed]`` holds that seed's log found rates, one per start rate (the same
    starts in the same order for every seed). A seed shares its weights and batches across
    the nine start rates, so only the start labels within a seed are exchangeable: each
    relabelling shuffles them inside every seed. The statistic is the spread of the start
    means over seeds (seed offsets cancel in it); the p-value is the share of relabellings
    whose statistic reaches the observed one (fixed RNG: reproducible). None with fewer than
    two seeds of two starts or more."""
    blocks = [list(block) for block in blocks if block]
    if len(blocks) < 2 or len({len(block) for block in blocks}) != 1 or len(blocks[0]) < 2:
        return None
    observed = _between_starts(blocks)
    rng = random.Random(0)
    reached = 0
    for _ in range(permutations):
        shuffled = []
        for block in blocks:
            relabelled = list(block)
            rng.shuffle(relabelled)
            shuffled.append(relabelled)
        reached += _between_starts(shuffled) >= observed * (1 - 1e-12)
    return (reached + 1) / (permutations + 1)

"""Paired significance tests over per-query values, multiple-testing corrections, confidence
intervals and win/tie/loss counts: pure functions of arrays, no files.

Every test compares a run with a baseline on the same queries, in the same order, and is
two-sided. The distributions are scipy's (`scipy.stats`), imported only when a test runs, so that
`rank1 --help` stays fast. `TESTS` and `CORRECTIONS` are the single source of the names, help
texts and functions that `rank1 compare` offers.

Identical per-query values (every difference zero) give p = 1 for every test: no evidence of a
difference (scipy's t-test would answer NaN, 0/0). Every p-value says how it was found
(`PValue.method`): the outputs of `rank1 compare` name it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..errors import OptionError

DEFAULT_ROUNDS = 10_000
DEFAULT_SEED = 42
PERMUTATION_BATCH = 1 << 22  # values per batch of permutation rounds (32 MB of doubles)
# The exact signed-rank distribution costs about n^3 steps for n non-zero differences (50 ms at
# 200, 6 s at 1000); beyond 200 the normal approximation is within a thousandth of it, beyond
# 1000 within 1e-5.
WILCOXON_EXACT_LIMIT = 200  # "auto"
WILCOXON_EXACT_MAX = 1000  # "exact"
# Differences are compared at this many decimals: 0.6 - 0.4 and 0.4 - 0.2 (P@5 values) differ in
# the last bit of a double but are one tie.
TIE_DECIMALS = 12
IDENTICAL = "identical values"


class PValue(NamedTuple):
    value: float
    method: str  # how it was found: "exact", "normal approximation", "t distribution", ...


def _differences(run: Sequence[float], baseline: Sequence[float]):
    import numpy as np

    x = np.asarray(run, dtype=float)
    y = np.asarray(baseline, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired values need two sequences of one length, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("a paired test needs at least 2 queries")
    return x, y


def _quietly(function: Callable[[], float]) -> float:
    # scipy warns about precision loss when the differences are (nearly) constant; the answer it
    # gives there is still the right limit, and the warning would only be noise on the terminal
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(function())


def paired_t_test(run: Sequence[float], baseline: Sequence[float]) -> PValue:
    """Two-sided p-value of Student's paired t-test (`scipy.stats.ttest_rel`)."""
    from scipy.stats import ttest_rel

    x, y = _differences(run, baseline)
    if (x == y).all():
        return PValue(1.0, IDENTICAL)
    return PValue(_quietly(lambda: ttest_rel(x, y).pvalue), "t distribution")


def signed_rank_exact(differences: Sequence[float]) -> float:
    """Two-sided p-value of the signed-rank statistic under its exact distribution given the
    differences (every sign of every non-zero difference equally likely; ranks of |d| averaged
    over ties, zeros dropped first). With ranks doubled to integers, the distribution of the sum
    of positive ranks is built one difference at a time, each step over the sums reached so far."""
    import numpy as np
    from scipy.stats import rankdata

    d = np.asarray(differences, dtype=float)
    d = d[d != 0]
    doubled = np.rint(2 * rankdata(np.abs(d))).astype(np.int64)  # average ranks are multiples of 1/2
    total = int(doubled.sum())
    probability = np.zeros(total + 1)
    probability[0] = 1.0
    reach = 0
    for rank in doubled:  # P(sum = s) becomes (P(s) + P(s - rank)) / 2: this difference negative or positive
        reach += rank
        shifted = probability[:reach + 1 - rank].copy()
        probability[:reach + 1] /= 2
        probability[rank:reach + 1] += shifted / 2
    observed = int(doubled[d > 0].sum())
    sums = np.arange(total + 1)
    return min(1.0, float(probability[np.abs(2 * sums - total) >= abs(2 * observed - total)].sum()))


def wilcoxon_test(run: Sequence[float], baseline: Sequence[float], method: str = "auto") -> PValue:
    """Two-sided p-value of the Wilcoxon signed-rank test; `method` a name of WILCOXON_METHODS.

    Zero differences (queries where run and baseline score the same) are dropped before ranking
    (zero_method="wilcox", as in scipy, PyTerrier and R's wilcox.test), and tied differences share
    their average rank. "auto" uses the exact distribution of the statistic given those ranks
    (`signed_rank_exact`) up to WILCOXON_EXACT_LIMIT non-zero differences, the normal
    approximation with scipy's tie correction beyond ("approx": always). "scipy" is
    `scipy.stats.wilcoxon`'s default, as in PyTerrier: with ties or zeros and more than 13 values
    it takes the normal approximation, whose p can be far below the exact one for few non-zero
    differences (0.276 where the exact p is 0.5).
    """
    from scipy.stats import wilcoxon

    choose(WILCOXON_METHODS, method, "wilcoxon_method")
    x, y = _differences(run, baseline)
    if (x == y).all():
        return PValue(1.0, IDENTICAL)
    if method == "scipy":
        return PValue(_quietly(lambda: wilcoxon(x, y, zero_method="wilcox").pvalue), "scipy default")
    d = (x - y).round(TIE_DECIMALS)
    d = d[d != 0]
    if len(d) == 0:
        return PValue(1.0, IDENTICAL)
    if method == "exact" and len(d) > WILCOXON_EXACT_MAX:
        raise OptionError(f"{{wilcoxon_method:exact}} computes the exact distribution for up to {WILCOXON_EXACT_MAX} "
                          f"queries with different values, here {len(d)}: give {{wilcoxon_method:auto}}, whose "
                          "normal approximation is within 1e-5 of it at that size")
    if method == "exact" or (method == "auto" and len(d) <= WILCOXON_EXACT_LIMIT):
        return PValue(signed_rank_exact(d), "exact")
    return PValue(_quietly(lambda: wilcoxon(d, method="asymptotic").pvalue), "normal approximation")


@dataclass(frozen=True, slots=True)
class WilcoxonMethod:
    name: str
    help: str


WILCOXON_METHODS: dict[str, WilcoxonMethod] = {w.name: w for w in (
    WilcoxonMethod("auto", f"the exact distribution up to {WILCOXON_EXACT_LIMIT} queries with different values, "
                           "ties and zeros included, the normal approximation beyond"),
    WilcoxonMethod("exact", f"the exact distribution, up to {WILCOXON_EXACT_MAX} queries with different values"),
    WilcoxonMethod("approx", "the normal approximation with scipy's tie correction"),
    WilcoxonMethod("scipy", "scipy.stats.wilcoxon's default, as in PyTerrier: the normal approximation with ties "
                            "or zeros beyond 13 queries, even when only a few differ"),
)}
DEFAULT_WILCOXON_METHOD = "auto"


def permutation_test(run: Sequence[float], baseline: Sequence[float], *, rounds: int = DEFAULT_ROUNDS,
                     seed: int = DEFAULT_SEED) -> PValue:
    """Two-sided p-value of the paired randomisation test on the mean difference.

    `scipy.stats.permutation_test` with permutation_type="samples": each round swaps run and
    baseline within a random subset of the queries (a sign flip of their differences). `rounds`
    random rounds drawn with `seed`, so the same inputs give the same p-value; when 2**queries is
    at most `rounds`, scipy enumerates every flip and the test is exact.
    """
    from scipy.stats import permutation_test as scipy_permutation_test

    if rounds < 1:
        raise OptionError(f"{{rounds:{rounds}}} must be at least 1")
    x, y = _differences(run, baseline)
    if (x == y).all():
        return PValue(1.0, IDENTICAL)

    def mean_difference(a, b, axis):
        return (a - b).mean(axis=axis)

    batch = max(1, PERMUTATION_BATCH // len(x))  # scipy would otherwise hold rounds x queries values at once
    return PValue(_quietly(lambda: scipy_permutation_test(
        (x, y), mean_difference, permutation_type="samples", vectorized=True, n_resamples=rounds, batch=batch,
        alternative="two-sided", rng=seed).pvalue), "exact" if 2 ** len(x) <= rounds else "random sign flips")


@dataclass(frozen=True, slots=True)
class SignificanceTest:
    name: str
    label: str  # for legends: "paired t-test"
    help: str
    function: Callable[..., PValue]  # (run, baseline) -> p; with rounds= and seed= when `randomised`
    randomised: bool = False
    has_methods: bool = False  # function takes method= (wilcoxon)

    def p_value(self, run: Sequence[float], baseline: Sequence[float], *, rounds: int = DEFAULT_ROUNDS,
                seed: int = DEFAULT_SEED, wilcoxon_method: str = DEFAULT_WILCOXON_METHOD) -> PValue:
        if self.randomised:
            return self.function(run, baseline, rounds=rounds, seed=seed)
        if self.has_methods:
            return self.function(run, baseline, method=wilcoxon_method)
        return self.function(run, baseline)


TESTS: dict[str, SignificanceTest] = {t.name: t for t in (
    SignificanceTest("t", "paired t-test", "paired Student's t-test, scipy.stats.ttest_rel, the usual choice in IR", paired_t_test),
    SignificanceTest("wilcoxon", "Wilcoxon signed-rank test", "Wilcoxon signed-rank test, queries with equal values "
                                 "dropped first, exact or approximate by --wilcoxon-method", wilcoxon_test,
                     has_methods=True),
    SignificanceTest("permutation", "paired randomisation test", "paired randomisation test of the mean difference, "
                                    "scipy.stats.permutation_test with sign flips, --rounds and --seed", permutation_test, randomised=True),
)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni step-down adjusted p-values: the i-th smallest of m is multiplied by
    m - i (i from 0), then made non-decreasing in that order and capped at 1."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for i, index in enumerate(sorted(range(m), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (m - i) * p_values[index]))
        adjusted[index] = running
    return adjusted


def bonferroni(p_values: Sequence[float]) -> list[float]:
    """Each p-value times the number of tests, capped at 1."""
    return [min(1.0, p * len(p_values)) for p in p_values]


def no_correction(p_values: Sequence[float]) -> list[float]:
    return list(p_values)


@dataclass(frozen=True, slots=True)
class Correction:
    name: str
    label: str  # for legends, before "over N comparisons"
    help: str
    function: Callable[[Sequence[float]], list[float]]


CORRECTIONS: dict[str, Correction] = {c.name: c for c in (
    Correction("holm", "Holm-corrected", "Holm-Bonferroni step-down, controls the family-wise error rate and is never "
                       "less powerful than Bonferroni", holm),
    Correction("bonferroni", "Bonferroni-corrected", "each p-value times the number of tests", bonferroni),
    Correction("none", "uncorrected", "each test on its own", no_correction),
)}


def choose(table: dict, value: str, option: str):
    """table[value], or an OptionError naming `option` and the valid values."""
    try:
        return table[value]
    except KeyError:
        raise OptionError(f"{{{option}:{value}}} is not one of {', '.join(table)}") from None


def confidence_interval(run: Sequence[float], baseline: Sequence[float], confidence: float = 0.95
                        ) -> tuple[float, float]:
    """t-based confidence interval of the mean difference run - baseline (`scipy.stats.t.interval`,
    the interval `ttest_rel(...).confidence_interval()` gives); a point when the differences are constant."""
    import numpy as np
    from scipy.stats import t

    x, y = _differences(run, baseline)
    if not 0 < confidence < 1:
        raise OptionError(f"the confidence level must lie strictly between 0 and 1, got {confidence}")
    differences = x - y
    mean = float(differences.mean())
    sem = float(differences.std(ddof=1) / math.sqrt(len(differences)))
    if sem == 0 or not np.isfinite(sem):
        return mean, mean
    low, high = t.interval(confidence, len(differences) - 1, loc=mean, scale=sem)
    return float(low), float(high)


def wins_ties_losses(run: Sequence[float], baseline: Sequence[float]) -> tuple[int, int, int]:
    """Queries where the run is above, equal to, and below the baseline."""
    x, y = _differences(run, baseline)
    wins = int((x > y).sum())
    losses = int((x < y).sum())
    return wins, len(x) - wins - losses, losses


EFFECT_SIZE = "Cohen's d_z = mean(run - baseline) / sd(run - baseline), sd with ddof=1, over the paired per-query values"


def cohens_dz(run: Sequence[float], baseline: Sequence[float]) -> float | None:
    """Cohen's d_z, the standardised mean of the paired differences: mean(d) / sd(d) with the
    sample standard deviation (ddof=1). 0 when every difference is 0; None (undefined) when the
    differences are one constant other than 0."""
    x, y = _differences(run, baseline)
    differences = (x - y).round(TIE_DECIMALS)
    sd = float(differences.std(ddof=1))
    mean = float(differences.mean())
    if sd == 0:
        return 0.0 if mean == 0 else None
    return mean / sd

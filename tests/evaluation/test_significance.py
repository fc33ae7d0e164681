"""The statistics kernels' own checks: what they refuse, and the edges they accept."""

import pytest

from rank1_cli.errors import OptionError
from rank1_cli.evaluation.significance import (
    TESTS,
    WILCOXON_EXACT_LIMIT,
    WILCOXON_EXACT_MAX,
    PValue,
    confidence_interval,
    holm,
    permutation_test,
    wilcoxon_test,
    wins_ties_losses,
)

RUN = [0.5, 0.7, 0.2, 0.9, 0.4]
BASE = [0.4, 0.5, 0.3, 0.6, 0.4]


@pytest.mark.parametrize("name", sorted(TESTS))
def test_paired_tests_refuse_unpaired_or_too_few_values(name):
    with pytest.raises(ValueError, match=r"two sequences of one length, got \(3,\) and \(2,\)"):
        TESTS[name].p_value([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least 2 queries"):
        TESTS[name].p_value([0.1], [0.2])
    assert 0 < TESTS[name].p_value(RUN, BASE).value <= 1


def test_one_permutation_round_is_a_valid_request_and_none_is_not():
    assert 0 < permutation_test(RUN, BASE, rounds=1, seed=3).value <= 1
    with pytest.raises(OptionError, match="must be at least 1"):
        permutation_test(RUN, BASE, rounds=0)


def test_the_confidence_level_lies_strictly_between_0_and_1():
    low, high = confidence_interval(RUN, BASE, 0.5)
    assert low < sum(r - b for r, b in zip(RUN, BASE)) / len(RUN) < high
    for level in (0.0, 1.0):
        with pytest.raises(OptionError, match="strictly between 0 and 1"):
            confidence_interval(RUN, BASE, level)


def test_holm_of_one_test_is_the_test_itself():
    assert holm([0.03]) == [0.03]
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert wins_ties_losses(RUN, BASE) == (3, 1, 1)


@pytest.mark.parametrize("name", sorted(TESTS))
def test_two_queries_are_enough_and_one_is_refused_in_so_many_words(name):
    assert 0 < TESTS[name].p_value([0.5, 0.9], [0.4, 0.2]).value <= 1
    with pytest.raises(ValueError) as error:
        TESTS[name].p_value([0.1], [0.2])
    assert str(error.value) == "a paired test needs at least 2 queries"


@pytest.mark.parametrize("name", sorted(TESTS))
def test_a_constant_difference_gets_a_p_value_and_no_warning_on_the_terminal(name):
    import warnings

    run, base = [0.3, 0.6, 0.9, 0.7], [0.2, 0.5, 0.8, 0.6]      # differences 0.1, up to rounding
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0 <= TESTS[name].p_value(run, base).value <= 1


# --- Wilcoxon: the exact distribution with ties and zeros ----------------------------------------

def sign_flip_p(differences):
    """Two-sided p of the signed-rank statistic by enumerating every sign of the non-zero
    differences, ranks averaged over ties (the exact conditional distribution)."""
    import itertools

    from scipy.stats import rankdata

    d = [v for v in differences if v != 0]
    ranks = rankdata([abs(v) for v in d])
    observed = sum(r for r, v in zip(ranks, d) if v > 0)
    centre = ranks.sum() / 2
    flips = [sum(r for r, s in zip(ranks, signs) if s > 0) for signs in itertools.product((1, -1), repeat=len(d))]
    return sum(abs(t - centre) >= abs(observed - centre) - 1e-9 for t in flips) / len(flips)


FIFTEEN_QUERIES = ([0.7, 0.7, 0.2] + [0.4] * 12, [0.5, 0.5, 0.3] + [0.4] * 12)   # differences .2, .2, -.1, 12 zeros


def test_wilcoxon_with_ties_and_zeros_on_few_queries_is_exact():
    run, base = FIFTEEN_QUERIES
    assert sign_flip_p([r - b for r, b in zip(run, base)]) == 0.5      # 4 of the 8 sign flips are as extreme
    assert wilcoxon_test(run, base) == PValue(pytest.approx(0.5, abs=1e-12), "exact")
    # scipy's default (PyTerrier's) takes the normal approximation here: 15 values with zeros and ties
    scipy_default = wilcoxon_test(run, base, method="scipy")
    assert scipy_default.value == pytest.approx(0.2763029, abs=1e-6) and scipy_default.method == "scipy default"


@pytest.mark.parametrize("seed", range(6))
def test_wilcoxon_exact_is_the_sign_flip_enumeration(seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    run, base = np.round(rng.random(n), 1), np.round(rng.random(n), 1)      # one decimal: ties and zeros
    if (run == base).all():
        base[0] += 0.1
    expected = sign_flip_p(list(np.round(run - base, 10)))
    for method in ("auto", "exact"):
        assert wilcoxon_test(run, base, method=method).value == pytest.approx(expected, abs=1e-12)


def test_wilcoxon_takes_the_normal_approximation_beyond_the_exact_limit():
    import numpy as np
    from scipy.stats import wilcoxon

    rng = np.random.default_rng(1)
    run, base = np.round(rng.random(WILCOXON_EXACT_LIMIT + 20), 2), np.round(rng.random(WILCOXON_EXACT_LIMIT + 20), 2)
    approximation = wilcoxon(np.round(run - base, 12), method="asymptotic").pvalue   # ties as ties, not float noise
    assert wilcoxon_test(run, base) == PValue(pytest.approx(approximation, rel=1e-12), "normal approximation")
    assert wilcoxon_test(run, base, method="approx") == wilcoxon_test(run, base)
    exact = wilcoxon_test(run, base, method="exact")
    assert exact.method == "exact" and exact.value == pytest.approx(approximation, abs=0.01)
    few = FIFTEEN_QUERIES
    assert wilcoxon_test(*few, method="approx").value == pytest.approx(0.2763029, abs=1e-6)


def test_wilcoxon_method_is_checked():
    with pytest.raises(OptionError, match=r"wilcoxon_method='normal' is not one of auto, exact, approx, scipy"):
        wilcoxon_test(RUN, BASE, method="normal")
    many = [0.1 * (i % 7 + 1) * (-1) ** i for i in range(WILCOXON_EXACT_MAX + 1)]
    with pytest.raises(OptionError, match=r"wilcoxon_method='exact' computes the exact distribution for up to 1000 "
                                          r"queries with different values, here 1001: give wilcoxon_method='auto'"):
        wilcoxon_test(many, [0.0] * len(many), method="exact")
    assert wilcoxon_test(many, [0.0] * len(many)).method == "normal approximation"

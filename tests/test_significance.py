"""The statistics kernels' own checks: what they refuse, and the edges they accept."""

import pytest

from rank1_cli.errors import OptionError
from rank1_cli.significance import TESTS, confidence_interval, holm, permutation_test, wins_ties_losses

RUN = [0.5, 0.7, 0.2, 0.9, 0.4]
BASE = [0.4, 0.5, 0.3, 0.6, 0.4]


@pytest.mark.parametrize("name", sorted(TESTS))
def test_paired_tests_refuse_unpaired_or_too_few_values(name):
    with pytest.raises(ValueError, match=r"two sequences of one length, got \(3,\) and \(2,\)"):
        TESTS[name].p_value([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least 2 queries"):
        TESTS[name].p_value([0.1], [0.2])
    assert 0 < TESTS[name].p_value(RUN, BASE) <= 1


def test_one_permutation_round_is_a_valid_request_and_none_is_not():
    assert 0 < permutation_test(RUN, BASE, rounds=1, seed=3) <= 1
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
    assert 0 < TESTS[name].p_value([0.5, 0.9], [0.4, 0.2]) <= 1
    with pytest.raises(ValueError) as error:
        TESTS[name].p_value([0.1], [0.2])
    assert str(error.value) == "a paired test needs at least 2 queries"


@pytest.mark.parametrize("name", sorted(TESTS))
def test_a_constant_difference_gets_a_p_value_and_no_warning_on_the_terminal(name):
    import warnings

    run, base = [0.3, 0.6, 0.9, 0.7], [0.2, 0.5, 0.8, 0.6]      # differences 0.1, up to rounding
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert 0 <= TESTS[name].p_value(run, base) <= 1

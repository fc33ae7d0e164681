"""Calibration kernels: the reliability bins, ECE and Brier score by hand on fixed data, and
against scikit-learn's `calibration_curve` and `brier_score_loss` (test oracles only)."""

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from rank1_cli.evaluation.calibration import reliability

# Ten pairs: scores on the bin edges too (0.1, 0.3, 0.5 and 1.0 go to the bin below: right-closed).
SCORES = [0.05, 0.1, 0.15, 0.3, 0.35, 0.5, 0.72, 0.9, 0.95, 1.0]
RELEVANT = [0, 0, 1, 0, 1, 1, 0, 1, 1, 1]


def test_bins_ece_and_brier_by_hand():
    found = reliability(SCORES, RELEVANT, bins=4)
    # bins [0, .25]: .05 .1 .15 -> rel 0 0 1; (.25, .5]: .3 .35 .5 -> 0 1 1; (.5, .75]: .72 -> 0; (.75, 1]: .9 .95 1 -> 1 1 1
    assert [(b.low, b.high, b.pairs) for b in found.bins] == [(0, .25, 3), (.25, .5, 3), (.5, .75, 1), (.75, 1, 3)]
    assert [b.mean_score for b in found.bins] == pytest.approx([0.1, 1.15 / 3, 0.72, 2.85 / 3])
    assert [b.share_relevant for b in found.bins] == pytest.approx([1 / 3, 2 / 3, 0, 1])
    by_hand = (3 * abs(0.1 - 1 / 3) + 3 * abs(1.15 / 3 - 2 / 3) + 1 * abs(0.72 - 0) + 3 * abs(2.85 / 3 - 1)) / 10
    assert found.ece == pytest.approx(by_hand)  # (0.7 + 0.85 + 0.72 + 0.15) / 10
    assert found.ece == pytest.approx(0.242)
    squares = [(s - y) ** 2 for s, y in zip(SCORES, RELEVANT)]
    assert found.brier == pytest.approx(sum(squares) / 10)
    assert found.brier == pytest.approx(0.20284)
    assert (found.pairs, found.relevant) == (10, 6)


def test_a_perfectly_calibrated_and_a_certain_wrong_scorer():
    assert reliability([0.5, 0.5], [1, 0]).ece == 0 and reliability([0.5, 0.5], [1, 0]).brier == 0.25
    wrong = reliability([1.0, 0.0], [0, 1])
    assert wrong.ece == 1 and wrong.brier == 1


def test_empty_bins_are_listed_without_values():
    found = reliability([0.95], [1], bins=10)
    assert [b.pairs for b in found.bins] == [0] * 9 + [1]
    assert found.bins[0].mean_score is None and found.bins[0].share_relevant is None
    assert "10 equal-width bins" in found.binning


@pytest.mark.parametrize("bins", [5, 10, 20])
def test_agrees_with_scikit_learn(bins):
    rng = np.random.default_rng(7)
    scores = np.concatenate([rng.random(500), np.linspace(0, 1, bins + 1)])  # the edges themselves too
    relevant = (rng.random(len(scores)) < scores ** 2).astype(int)
    found = reliability(scores, relevant, bins=bins)
    share, mean_score = calibration_curve(relevant, scores, n_bins=bins, strategy="uniform")
    filled = [b for b in found.bins if b.pairs]
    assert [b.share_relevant for b in filled] == pytest.approx(share)
    assert [b.mean_score for b in filled] == pytest.approx(mean_score)
    assert found.brier == pytest.approx(brier_score_loss(relevant, scores))
    weights = np.array([b.pairs for b in filled]) / len(scores)
    assert found.ece == pytest.approx(float((weights * np.abs(mean_score - share)).sum()))


@pytest.mark.parametrize("scores, labels, message", [
    ([], [], "at least one"), ([1.5], [1], r"in \[0, 1\]"), ([0.5, 0.2], [1], "one length"),
])
def test_bad_input_is_refused(scores, labels, message):
    with pytest.raises(ValueError, match=message):
        reliability(scores, labels)

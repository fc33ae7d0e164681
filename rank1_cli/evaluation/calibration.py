"""Calibration of scores read as probabilities of relevance: the reliability bins, the expected
calibration error and the Brier score, as plain functions of two arrays (no files).

    reliability(scores, relevant, bins=10) -> Reliability

`scores` are in [0, 1] (rank1's P(true) / (P(true) + P(false))), `relevant` the binary labels
(1: the qrels grade the pair at least the relevance level). The bins are `bins` equal-width
intervals of [0, 1], each closed on the right and the first closed on both sides ([0, 0.1],
(0.1, 0.2], ..., (0.9, 1] for 10), the binning of scikit-learn's
`calibration_curve(strategy="uniform")`.

Expected calibration error (ECE) = sum over the non-empty bins b of n_b / n * |mean score_b -
share relevant_b|. Brier score = mean of (score - relevant)^2, scikit-learn's `brier_score_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_BINS = 10


@dataclass(frozen=True, slots=True)
class ReliabilityBin:
    low: float
    high: float
    pairs: int
    mean_score: float | None     # None for an empty bin
    share_relevant: float | None


@dataclass(frozen=True, slots=True)
class Reliability:
    bins: list[ReliabilityBin]   # every bin, the empty ones too, lowest scores first
    pairs: int
    relevant: int
    ece: float
    brier: float

    @property
    def binning(self) -> str:
        return binning_note(len(self.bins))

    def to_json(self) -> dict:
        return {"pairs": self.pairs, "relevant": self.relevant, "ece": self.ece, "brier": self.brier,
                "binning": self.binning,
                "bins": [{"low": b.low, "high": b.high, "pairs": b.pairs, "mean_score": b.mean_score,
                          "share_relevant": b.share_relevant} for b in self.bins]}


def binning_note(bins: int) -> str:
    return (f"{bins} equal-width bins of the score on [0, 1], each closed on the right, the first on both sides "
            "(scikit-learn calibration_curve, strategy='uniform')")


def bin_edges(bins: int = DEFAULT_BINS):
    import numpy as np

    return np.linspace(0.0, 1.0, bins + 1)


def reliability(scores: Sequence[float], relevant: Sequence[int | bool], bins: int = DEFAULT_BINS) -> Reliability:
    """The reliability bins, ECE and Brier score of `scores` against the labels `relevant`.

    Raises ValueError for no pairs, a score outside [0, 1], arrays of unequal length or bins < 1.
    """
    import numpy as np

    s = np.asarray(scores, dtype=float)
    y = np.asarray(relevant, dtype=float)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels need one length, got {s.shape} and {y.shape}")
    if len(s) == 0:
        raise ValueError("calibration needs at least one scored, judged pair")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if not ((s >= 0) & (s <= 1)).all():
        raise ValueError("scores must lie in [0, 1] to be read as probabilities")
    edges = bin_edges(bins)
    index = np.searchsorted(edges[1:-1], s, side="left")
    counts = np.bincount(index, minlength=bins)
    score_sums = np.bincount(index, weights=s, minlength=bins)
    relevant_sums = np.bincount(index, weights=y, minlength=bins)
    found = []
    ece = 0.0
    for b in range(bins):
        n = int(counts[b])
        mean_score = float(score_sums[b] / n) if n else None
        share = float(relevant_sums[b] / n) if n else None
        if n:
            ece += n / len(s) * abs(mean_score - share)
        found.append(ReliabilityBin(float(edges[b]), float(edges[b + 1]), n, mean_score, share))
    return Reliability(bins=found, pairs=len(s), relevant=int(y.sum()), ece=float(ece),
                       brier=float(np.mean((s - y) ** 2)))

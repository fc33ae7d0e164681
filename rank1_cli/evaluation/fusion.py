"""Fuse runs into one (`rank1 fuse`): reciprocal rank fusion, or interpolation of per-query
normalised scores. Pure functions over runs in memory (qid -> docid -> score); reading and
writing runs is trec.py's.

rank1's scores are probabilities bunched near 0 and 1, so many documents tie or nearly tie;
interpolating them with the first stage's scores, or fusing the two rankings, is the usual remedy.
Each run is ranked as trec_eval ranks it (`evaluate.trec_order`: score descending, then docid
descending). `METHODS` and `NORMALISATIONS` are the single source of the names, help texts and
functions that the command offers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from ..errors import OptionError, quote_some
from .trec_eval import trec_order

log = logging.getLogger(__name__)

Scores = Mapping[str, Mapping[str, float]]  # qid -> docid -> score
Ranking = dict[str, list[tuple[str, float]]]  # qid -> [(docid, fused score)], best first
Exact = dict[str, dict[str, Fraction]]  # qid -> docid -> fused score in exact arithmetic

DEFAULT_RRF_K = 60
DEFAULT_NORMALISATION = "minmax"


def minmax(scores: Mapping[str, float]) -> dict[str, Fraction]:
    """(s - min) / (max - min), exact: the query's best document 1, its worst 0; all 0 when the scores are equal."""
    low, high = Fraction(min(scores.values())), Fraction(max(scores.values()))
    span = high - low
    return {d: (Fraction(s) - low) / span if span else Fraction(0) for d, s in scores.items()}


def zscore(scores: Mapping[str, float]) -> dict[str, float]:
    """(s - mean) / standard deviation (of the query's scores, population); all 0 when the scores are equal.
    In doubles: a square root is not exact, so fusion is exact on these values, not on the true z-scores."""
    n = len(scores)
    mean = math.fsum(scores.values()) / n
    sd = math.sqrt(math.fsum((s - mean) ** 2 for s in scores.values()) / n)
    return {d: (s - mean) / sd if sd else 0.0 for d, s in scores.items()}


@dataclass(frozen=True, slots=True)
class Normalisation:
    name: str
    help: str
    function: Callable[[Mapping[str, float]], Mapping[str, float | Fraction]]


NORMALISATIONS: dict[str, Normalisation] = {n.name: n for n in (
    Normalisation("minmax", "(s - min) / (max - min) per query", minmax),
    Normalisation("zscore", "(s - mean) / standard deviation per query", zscore),
)}


def reciprocal_rank_fusion(runs: Sequence[Scores], weights: Sequence[float], *, rrf_k: float = DEFAULT_RRF_K
                           ) -> Exact:
    """Cormack et al.'s RRF: a document scores sum over runs of weight / (rrf_k + its rank), ranks
    from 1; a run that did not retrieve it adds nothing. Exact (weights and k as the doubles given)."""
    fused: Exact = {}
    k = Fraction(rrf_k)
    for run, weight in zip(runs, weights):
        exact_weight = Fraction(weight)
        terms: list[Fraction] = []  # weight / (k + rank), made once per rank
        for qid, docs in run.items():
            scores = fused.setdefault(qid, {})
            for rank, docid in enumerate(trec_order(docs), start=1):
                if rank > len(terms):
                    terms.append(exact_weight / (k + rank))
                term = terms[rank - 1]
                scores[docid] = scores[docid] + term if docid in scores else term
    return fused


def interpolate(runs: Sequence[Scores], weights: Sequence[float], *, normalise: str = DEFAULT_NORMALISATION
                ) -> Exact:
    """Sum over runs of weight * the score normalised per query (`NORMALISATIONS`), exact.

    A document a run did not retrieve for a query gets that run's lowest normalised score there
    (0 with minmax), so no run lifts the documents it left out above those it ranked; a query a
    run does not have at all gets nothing from it (the same for every document, so it changes no order).
    """
    function = NORMALISATIONS[normalise].function
    normalised = [{qid: function(docs) for qid, docs in run.items() if docs} for run in runs]
    fused: Exact = {}
    for run in normalised:
        for qid, docs in run.items():
            fused.setdefault(qid, {}).update(dict.fromkeys(docs, Fraction(0)))
    for run, weight in zip(normalised, weights):
        exact_weight = Fraction(weight)
        for qid, scores in fused.items():
            docs = run.get(qid)
            if docs is None:
                continue
            floor = min(docs.values())
            for docid in scores:
                scores[docid] += exact_weight * Fraction(docs.get(docid, floor))
    return fused


@dataclass(frozen=True, slots=True)
class FusionMethod:
    name: str
    help: str
    function: Callable[..., Exact]  # (runs, weights, **options)
    options: tuple[str, ...]  # the keyword options the method takes
    default_weight: Callable[[int], float]  # weight of each of n runs when none are given


METHODS: dict[str, FusionMethod] = {m.name: m for m in (
    FusionMethod("rrf", f"reciprocal rank fusion, sum of weight / (k + rank); weights 1 each and k = {DEFAULT_RRF_K} "
                        "unless given", reciprocal_rank_fusion, ("rrf_k",), lambda n: 1.0),
    FusionMethod("interpolate", "sum of weight * score normalised per query; weights 1/n each unless given", interpolate, ("normalise",), lambda n: 1.0 / n),
)}


def parse_weights(text: str) -> list[float]:
    """'0.3,0.7' -> [0.3, 0.7]; each a finite number >= 0."""
    weights = []
    for item in text.split(","):
        try:
            value = float(item)
        except ValueError:
            raise OptionError(f"{{weights:{text}}}: {item.strip()!r} is not a number; give one number per run, "
                              "separated by commas (e.g. 0.3,0.7)") from None
        if not math.isfinite(value) or value < 0:
            raise OptionError(f"{{weights:{text}}}: each weight must be a finite number >= 0, found {item.strip()!r}")
        weights.append(value)
    return weights


def check_options(method: str, runs: int, *, weights: Sequence[float] | None = None, normalise: str | None = None,
                  rrf_k: float | None = None) -> tuple[FusionMethod, list[float], dict[str, object]]:
    """(the method, one weight per run, its keyword options) for `runs` runs, or an OptionError."""
    chosen = METHODS.get(method)
    if chosen is None:
        raise OptionError(f"{{method:{method}}} is not one of {', '.join(METHODS)}")
    if runs < 2:
        raise OptionError(f"fusion needs at least 2 runs, got {runs}")
    given = {"normalise": normalise, "rrf_k": rrf_k}
    for option, value in given.items():
        if value is not None and option not in chosen.options:
            owner = " and ".join(m.name for m in METHODS.values() if option in m.options)
            raise OptionError(f"{{{option}}} is an option of {{method:{owner}}}, not of {{method:{method}}}")
    if normalise is not None and normalise not in NORMALISATIONS:
        raise OptionError(f"{{normalise:{normalise}}} is not one of {', '.join(NORMALISATIONS)}")
    if rrf_k is not None and not (math.isfinite(rrf_k) and rrf_k >= 0):
        raise OptionError(f"{{rrf_k:{rrf_k:g}}} must be a finite number >= 0")
    if weights is None:
        weights = [chosen.default_weight(runs)] * runs
    else:
        shown = ",".join(f"{w:g}" for w in weights)
        if len(weights) != runs:
            raise OptionError(f"{{weights:{shown}}} gives {len(weights)} weights for {runs} runs; give one per run, "
                              "in the order of the runs")
        if not any(weights) or not all(math.isfinite(w) and w >= 0 for w in weights):
            raise OptionError(f"{{weights:{shown}}}: weights must be finite numbers >= 0, at least one above 0")
    return chosen, list(weights), {option: value for option, value in given.items() if value is not None}


def _warn_unshared_queries(runs: Sequence[Scores]) -> None:
    """One warning when some query is not in every run: it is fused from the runs that have it."""
    queries = list(dict.fromkeys(qid for run in runs for qid in run))
    unshared = [qid for qid in queries if not all(qid in run for run in runs)]
    if not unshared:
        return
    lacks = "; ".join(f"run #{i} lacks {len(absent)}: {quote_some(absent)}"
                      for i, run in enumerate(runs, start=1) if (absent := [q for q in unshared if q not in run]))
    if len(unshared) == len(queries):
        log.warning("the runs have no query in common (%s); the fused run is their union, each query fused from the "
                    "runs that have it. Check that the runs are for the same topics, with the same query ids", lacks)
    else:
        log.warning("%d of the %d queries are not in every run (%s); each is fused from the runs that have it",
                    len(unshared), len(queries), lacks)


def fuse(runs: Sequence[Scores], method: str = "rrf", *, weights: Sequence[float] | None = None,
         normalise: str | None = None, rrf_k: float | None = None) -> Ranking:
    """Fuse runs (qid -> docid -> score) into one ranking per query, best first.

    method: a name of `METHODS`. weights: one per run, in the order of the runs (default: the
    method's). normalise (interpolate only): a name of `NORMALISATIONS`, default minmax. rrf_k
    (rrf only): default 60. An option of the other method is an error, not ignored.
    Fused scores are compared in exact arithmetic (the nearest double is returned), and equal ones
    are ordered by the documents' ranks in the first run, then in the second... (no two documents
    have the same ranks in every run); queries come in the order the runs
    first give them, and one warning counts the queries that are not in every run.
    """
    chosen, weights, options = check_options(method, len(runs), weights=weights, normalise=normalise, rrf_k=rrf_k)
    _warn_unshared_queries(runs)
    fused = chosen.function(runs, weights, **options)

    ranking: Ranking = {}
    for qid in dict.fromkeys(qid for run in runs for qid in run):
        scores = fused[qid]
        positions = [{d: i for i, d in enumerate(trec_order(run[qid]))} if qid in run else {} for run in runs]
        ranked = sorted(scores, key=lambda d: (-scores[d], *(p.get(d, math.inf) for p in positions)))
        ranking[qid] = [(docid, float(scores[docid])) for docid in ranked]
    return ranking

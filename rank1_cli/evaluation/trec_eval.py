"""Evaluate TREC runs against qrels with trec_eval's semantics (`rank1 eval`).

pytrec_eval (trec_eval's C code) computes most measures. The measures trec_eval 10.0 has and
pytrec_eval lacks (rbp, rbp_resid, unj, relstring's text), those where pytrec_eval's bundled
trec_eval 9 differs from 10.0 (iprec_at_recall and 11pt_avg: 10.0 rounds recall cutoffs with
lround, 9 added 0.9 and truncated), and Judged@k / RR@k are computed here. Every measure sees the
ranking trec_eval 10.0 builds: score read as a C double, descending, ties broken by docid
descending. pytrec_eval (trec_eval 9 inside) would read scores as C floats, where scores closer than
a float step tie and are reordered by docid; it is given ranks as scores instead (n, n-1, ... 1,
exact in a float), which encode the order decided here.

Entry points: `run_eval` (what the CLI calls: read runs, evaluate, print), `evaluate_run` (one run
already in memory), and the formatters `format_tsv`, `to_json`, `build_table`.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import gt
from pathlib import PurePath
from typing import IO, Any

from ..errors import InputError, quote
from .measures import (
    FAMILIES,
    Measure,
    parse_measures,
    pt_avg_points,
    pytrec_key,
    pytrec_requests,
    rbp_p,
    relstring_length,
)

log = logging.getLogger(__name__)

MIN_GEO_MEAN = 0.00001  # trec_eval: geometric means floor each value at this
NONPOOL = -1  # trec_eval's RELVALUE_NONPOOL: retrieved document absent from the qrels
UNJUDGED = -2  # trec_eval's RELVALUE_UNJUDGED: in the qrels with a negative grade (pooled, unjudged)
EXCLUDED = -100  # ir_datasets' BRIGHT grade "excluded from evaluation": BRIGHT's scorer drops these documents
OUTPUT_FORMATS = ("auto", "tsv", "json", "table")
EVAL_CHUNK = 256  # queries per pytrec_eval call: bounds the C copy of the run

Value = float | int | str
FAMILY_ORDER = {name: i for i, name in enumerate(FAMILIES)}  # trec_eval's measure table order


@dataclass
class RunEvaluation:
    """Per-query values and the aggregate of one run. Values are keyed by `Measure.name`."""

    name: str
    runid: str
    measures: list[Measure]
    queries: list[str]  # evaluated query ids, in trec_eval's order (string order)
    per_query: dict[str, dict[str, Value]] = field(default_factory=dict)
    summary: dict[str, Value] = field(default_factory=dict)
    excluded: int = 0  # documents graded EXCLUDED removed from the run before evaluation

    def value(self, measure: str | Measure, qid: str = "all") -> Value:
        """A value by label, name (trec_eval's printed name) or Measure; qid "all" is the aggregate."""
        m = self._find(measure)
        return self.summary[m.name] if qid == "all" else self.per_query[qid][m.name]

    def _find(self, measure: str | Measure) -> Measure:
        if isinstance(measure, Measure):
            return measure
        for m in self.measures:
            if measure in (m.label, m.name):
                return m
        raise KeyError(measure)


# ---------------------------------------------------------------------------------------------
# The ranking trec_eval evaluates


def trec_order(docs: Mapping[str, float]) -> list[str]:
    """Docids in trec_eval 10.0's order: score (a double) descending, then docid descending.

    (form_res_rels.c, comp_sim_docno: strcmp on the docids; Python's code-point order is UTF-8
    byte order.)
    """
    scores = list(docs.values())
    if len(set(scores)) == len(scores):  # no ties: the score alone decides
        if scores == sorted(scores, reverse=True):
            return list(docs)  # the usual run: written in that order already
        return sorted(docs, key=docs.__getitem__, reverse=True)
    order = sorted(docs, reverse=True)
    order.sort(key=docs.__getitem__, reverse=True)  # stable: equal scores keep docid descending
    return order


_RANKS: list[float] = []


def rank_scores(docs: Mapping[str, float]) -> dict[str, float]:
    """The same ranking with scores n, n-1, ... 1: distinct and exact as C floats, so a reader of
    floats (pytrec_eval) ranks exactly as trec_eval 10.0 ranks the double scores."""
    order = trec_order(docs)
    n = len(order)
    if n > 1 << 24:
        raise InputError(f"a query has {n} documents; at most {1 << 24} can be ranked exactly")
    if len(_RANKS) < n:
        _RANKS[:] = map(float, range(max(n, 2 * len(_RANKS)), 0, -1))
    return dict(zip(order, _RANKS[len(_RANKS) - n:]))


def float_safe(docs: Mapping[str, float]) -> Mapping[str, float]:
    """Scores a reader of C floats ranks as trec_eval 10.0 ranks `docs`: `docs` itself when its
    scores strictly decrease as floats in the order given (the usual run: then float order is
    double order and no tie is left for the docid to break), else `rank_scores(docs)`."""
    floats = array("f", docs.values())
    if all(map(gt, floats, floats[1:])):
        return docs
    return rank_scores(docs)


def ranked_relevance(docs: Mapping[str, float], qrel: Mapping[str, int], *, judged_only: bool = False,
                     depth: int | None = None) -> list[int]:
    """Grades of the retrieved documents in trec_eval's order, NONPOOL/UNJUDGED for the others.

    The order is trec_eval 10.0's (`trec_order`). `depth` keeps only the top documents.
    judged_only (trec_eval -J) drops documents without a grade >= 0 before ranking positions count.
    """
    top = trec_order(docs)
    if depth is not None and not judged_only:
        del top[depth:]
    get = qrel.get
    rels = []
    for docid in top:
        grade = get(docid)
        rels.append(NONPOOL if grade is None else (grade if grade >= 0 else UNJUDGED))
    if judged_only:
        rels = [r for r in rels if r >= 0]
        if depth is not None:
            del rels[depth:]
    return rels


def _lround(x: float) -> int:
    """C's lround for x >= 0: halves away from zero."""
    whole = math.floor(x)
    return whole + (1 if x - whole >= 0.5 else 0)


def interpolated_precision(rels: Sequence[int], num_rel: int, level: int, points: Sequence[float],
                           rounding: Callable[[float], int] = _lround) -> list[float]:
    """trec_eval 10.0's iprec_at_recall at recall `points` (ascending); 0 for an empty ranking.

    A recall level becomes a number of relevant documents with `rounding(point * num_rel)`:
    lround in trec_eval 10.0; trec_eval 9 (bundled in pytrec_eval) used int(x + 0.9).
    """
    num_ret = len(rels)
    values = [0.0] * len(points)
    if num_ret == 0:
        return values
    num_rel_ret = sum(1 for r in rels if r >= level)
    cutoffs = [rounding(p * num_rel) for p in points]
    current = len(points) - 1
    while current >= 0 and cutoffs[current] > num_rel_ret:
        current -= 1
    int_precis = num_rel_ret / num_ret
    rel_so_far = num_rel_ret
    i = num_ret
    while i > 0 and rel_so_far > 0:
        precis = rel_so_far / i
        if int_precis < precis:
            int_precis = precis
        if rels[i - 1] >= level:
            while current >= 0 and rel_so_far == cutoffs[current]:
                values[current] = int_precis
                current -= 1
            rel_so_far -= 1
        i -= 1
    while current >= 0:
        values[current] = int_precis
        current -= 1
    return values


def relstring(rels: Sequence[int], length: int) -> str:
    chars = []
    for r in rels[:length]:
        if r > 9:
            chars.append(">")
        elif r >= 0:
            chars.append(str(r))
        elif r == NONPOOL:
            chars.append("-")
        elif r == UNJUDGED:
            chars.append(".")
        else:
            chars.append("<")
    return "".join(chars)


def rank_biased_precision(rels: Sequence[int], p: float, max_grade: int) -> float:
    """trec_eval's rbp: gains are grades, scaled to [0, 1] by the query's highest grade if > 1."""
    scale = max_grade if max_grade > 1 else 0
    total = 0.0
    weight = 1.0
    for r in rels:
        if r > 0:
            total += (r / scale if scale else float(r)) * weight
        weight *= p
    return (1.0 - p) * total


def rbp_residual(rels: Sequence[int], p: float = 0.9) -> float:
    """trec_eval's rbp_resid: weight of the unjudged ranks plus the tail (0 if nothing is unjudged)."""
    unjudged = 0
    total = 0.0
    weight = 1.0
    for r in rels:
        if r < 0:
            unjudged += 1
            total += weight
        weight *= p
    return weight + (1.0 - p) * total if unjudged else 0.0


def unjudged_at(rels: Sequence[int], k: int) -> float:
    """trec_eval's unj_k: unjudged among the top k, over k (a short ranking is padded as judged)."""
    return sum(1 for r in rels[:k] if r < 0) / k


def judged_at(rels: Sequence[int], k: int) -> float:
    """ir_measures' Judged@k: top-k documents with any qrels entry, over min(k, retrieved)."""
    top = rels[:k]
    return sum(1 for r in top if r != NONPOOL) / len(top) if top else 0.0


def reciprocal_rank_at(rels: Sequence[int], k: int, level: int) -> float:
    for i, r in enumerate(rels[:k]):
        if r >= level:
            return 1.0 / (i + 1)
    return 0.0


def _python_depth(measures: Sequence[Measure]) -> int | None | bool:
    """How much of each ranking the Python measures need: False none, None all, or a depth."""
    depth = 0
    for m in measures:
        if m.backend != "python":
            continue
        if m.family in ("iprec_at_recall", "11pt_avg", "rbp", "rbp_resid"):
            return None
        if m.family == "relstring":
            depth = max(depth, relstring_length(m.param))  # type: ignore[arg-type]
        else:
            depth = max(depth, int(m.param))  # type: ignore[arg-type]
    return depth or False


def _python_values(measures: Sequence[Measure], rels: list[int], qrel: Mapping[str, int],
                   level: int) -> dict[str, Value]:
    out: dict[str, Value] = {}
    iprec = [m for m in measures if m.family == "iprec_at_recall"]
    num_rel = sum(1 for g in qrel.values() if g >= level)
    if iprec:
        values = interpolated_precision(rels, num_rel, level, [float(m.param) for m in iprec])  # type: ignore[arg-type]
        out.update(zip((m.name for m in iprec), values))
    for m in measures:
        family = m.family
        if family == "11pt_avg":
            points = pt_avg_points(m.param)  # type: ignore[arg-type]
            out[m.name] = sum(interpolated_precision(rels, num_rel, level, points)) / len(points)
        elif family == "relstring":
            out[m.name] = relstring(rels, relstring_length(m.param))  # type: ignore[arg-type]
        elif family == "rbp":
            max_grade = max((g for g in qrel.values() if g >= 0), default=0)
            out[m.name] = rank_biased_precision(rels, rbp_p(m.param), max_grade)  # type: ignore[arg-type]
        elif family == "rbp_resid":
            out[m.name] = rbp_residual(rels)
        elif family == "unj":
            out[m.name] = unjudged_at(rels, m.param)  # type: ignore[arg-type]
        elif family == "Judged":
            out[m.name] = judged_at(rels, m.param)  # type: ignore[arg-type]
        elif family == "RR":
            out[m.name] = reciprocal_rank_at(rels, m.param, level)  # type: ignore[arg-type]
    return out


# ---------------------------------------------------------------------------------------------
# Evaluation


def drop_excluded(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]
                  ) -> tuple[Mapping[str, Mapping[str, float]], Mapping[str, Mapping[str, int]], int]:
    """(run, qrels, removed): the (query, document) pairs graded EXCLUDED (-100) taken out of both.

    BRIGHT's scorer removes these documents from the ranking before scoring, so the documents
    below them move up; trec_eval would keep them as unjudged non-relevant positions. `removed`
    counts the run's documents taken out. Inputs without such grades are returned as they are.
    """
    excluded = {qid: {d for d, g in docs.items() if g == EXCLUDED}
                for qid, docs in qrels.items() if EXCLUDED in docs.values()}
    if not excluded:
        return run, qrels, 0
    kept_qrels = {qid: ({d: g for d, g in docs.items() if g != EXCLUDED} if qid in excluded else docs)
                  for qid, docs in qrels.items()}
    kept_run = dict(run)
    removed = 0
    for qid, docids in excluded.items():
        docs = run.get(qid)
        if docs is not None and not docids.isdisjoint(docs):
            kept_run[qid] = {d: s for d, s in docs.items() if d not in docids}
            removed += len(docs) - len(kept_run[qid])
    return kept_run, kept_qrels, removed


def pytrec_qrel(qrel: Mapping[str, int], docs: Mapping[str, float]) -> Mapping[str, int]:
    """A query's qrels as pytrec_eval (trec_eval's C code) can evaluate them against `docs` (the run's).

    trec_eval's form_res_rels counts judged documents per grade in an array of (highest grade + 1)
    cells. For a query graded only below 0 that size is 0 or negative: trec_eval 10.0 and pytrec_eval
    stop, crash, or give 0 for every measure. Such a query gets one more document graded 0 (judged
    non-relevant) that the run does not retrieve. No value changes: grades below 0 all mean "pooled,
    unjudged" and are counted nowhere, and with no relevant document an unretrieved non-relevant one
    enters no measure (trec_eval 10.0 agrees: tests/data/negative_grades).
    """
    if any(grade >= 0 for grade in qrel.values()):
        return qrel
    unused = max(max(qrel), max(docs, default="")) + " "  # sorts after every docid: neither has it
    return {**qrel, unused: 0}


def _sample(ids: Iterable[str], n: int = 3) -> str:
    items = sorted(ids)
    shown = ", ".join(quote(i) for i in items[:n])
    return shown + (", ..." if len(items) > n else "")


def evaluate_run(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                 measures: Sequence[Measure] | Sequence[str], *, relevance_level: int = 1,
                 complete: bool = False, judged_only: bool = False, keep_excluded: bool = False,
                 runid: str = "", name: str = "run") -> RunEvaluation:
    """Evaluate one run (qid -> docid -> score) against qrels (qid -> docid -> grade).

    relevance_level: least grade counted relevant by binary measures (trec_eval -l).
    complete: average over every qrels query; one missing from the run is an empty ranking (-c).
    judged_only: drop retrieved documents without a qrels grade >= 0 first (trec_eval -J).
    keep_excluded: keep the documents graded -100 (BRIGHT's "excluded from evaluation") in the
    run and qrels, as trec_eval would; by default they are removed first (`drop_excluded`).
    Queries of the run that are not in the qrels are ignored (with a warning).
    """
    if not measures or any(isinstance(m, str) for m in measures):
        measures = parse_measures([m if isinstance(m, str) else m.label for m in measures])
    measures = list(measures)  # type: ignore[arg-type]
    if relevance_level < 1:
        raise InputError(f"relevance level must be at least 1 (got {relevance_level}); "
                         "grades below it count as non-relevant")
    excluded = 0
    if not keep_excluded:
        run, qrels, excluded = drop_excluded(run, qrels)
    judged = {qid: docs for qid, docs in qrels.items() if docs}
    common = [qid for qid in run if qid in judged]
    ignored = [qid for qid in run if qid not in judged]
    missing = [qid for qid in judged if qid not in run]
    if not common:
        log.warning(
            "%s: no query of the run is in the qrels (run: %s; qrels: %s). Check that both are for the "
            "same topics with the same query ids. %s", name, _sample(run), _sample(judged),
            "Every qrels query counts as an empty ranking (all measures 0)." if complete
            else "Nothing is evaluated: every mean is 0 (--complete, like trec_eval -c, would count "
                 "each qrels query as an empty ranking).")
    elif ignored:
        log.warning("%s: %d of the run's %d queries are not in the qrels and were ignored (%s)",
                    name, len(ignored), len(run), _sample(ignored))
    if common and missing:
        if complete:
            log.warning("%s: %d of the %d qrels queries are not in the run; they count as empty "
                        "rankings, every measure 0", name, len(missing), len(judged))
        else:
            log.warning("%s: %d of the %d qrels queries are not in the run and are left out of the "
                        "means (%s); --complete (trec_eval -c) counts them as empty rankings",
                        name, len(missing), len(judged), _sample(missing))

    # trec_eval 10.0's ranking, as scores any float reader ranks the same way
    eval_run: dict[str, Mapping[str, float]] = {qid: float_safe(run[qid]) for qid in common}
    if complete:
        eval_run.update((qid, {}) for qid in missing)
    queries = sorted(eval_run)

    per_query: dict[str, dict[str, Value]] = {qid: {} for qid in queries}
    requests = pytrec_requests(measures)
    if requests and queries:
        from pytrec_eval_ext import RelevanceEvaluator  # pytrec_eval's C core (no name filtering)

        evaluator = RelevanceEvaluator({qid: pytrec_qrel(judged[qid], eval_run[qid]) for qid in queries},
                                       requests, relevance_level, judged_only)
        results: dict[str, dict[str, float]] = {}
        for start in range(0, len(queries), EVAL_CHUNK):  # pytrec_eval copies what it is given
            chunk = queries[start:start + EVAL_CHUNK]
            results.update(evaluator.evaluate({qid: eval_run[qid] for qid in chunk}))
        trec_measures = [(m.name, pytrec_key(m), m.kind == "int") for m in measures
                         if m.backend == "trec" and m.family not in ("runid", "num_q")]
        for qid in queries:
            values = results.get(qid, {})
            row = per_query[qid]
            for key, result_key, is_int in trec_measures:
                v = values.get(result_key, 0.0)
                if v != v:  # NaN: trec_eval's 0/0 on an empty ranking; trec_eval 10 prints 0
                    v = 0.0
                row[key] = int(v) if is_int else v
    python_measures = [m for m in measures if m.backend == "python"]
    depth = _python_depth(python_measures)
    # trec_eval 10.0 starts interpolated precision at 0/0 when -J leaves no document: -nan
    nan_in_trec_eval = judged_only and any(m.family in ("iprec_at_recall", "11pt_avg") for m in python_measures)
    emptied = []
    if depth is not False:
        for qid in queries:
            qrel = judged[qid]
            rels = ranked_relevance(eval_run[qid], qrel, judged_only=judged_only, depth=depth)
            if nan_in_trec_eval and not rels:
                emptied.append(qid)
            per_query[qid].update(_python_values(python_measures, rels, qrel, relevance_level))
    if emptied:
        log.warning("%s: with --judged-only %d queries keep no document (%s); trec_eval 10.0 prints -nan (0/0) "
                    "for their 11pt_avg and low-recall iprec_at_recall and for those means, rank1 counts 0",
                    name, len(emptied), _sample(emptied))

    summary: dict[str, Value] = {}
    n = len(queries)
    for m in measures:
        if m.aggregate == "none":
            continue
        if m.aggregate == "runid":
            summary[m.name] = runid
        elif m.aggregate == "count":
            summary[m.name] = n
        elif m.aggregate == "sum":
            summary[m.name] = sum(int(per_query[q][m.name]) for q in queries)
        elif m.aggregate == "gmean":  # pytrec_eval gives log(max(value, MIN_GEO_MEAN)) per query
            summary[m.name] = math.exp(sum(per_query[q][m.name] for q in queries) / n) if n else 0.0  # type: ignore[misc]
        else:
            summary[m.name] = sum(per_query[q][m.name] for q in queries) / n if n else 0.0  # type: ignore[misc]
    return RunEvaluation(name=name, runid=runid, measures=measures, queries=queries,
                         per_query=per_query, summary=summary, excluded=excluded)


# ---------------------------------------------------------------------------------------------
# Output


def format_value(measure: Measure, value: Value) -> str:
    """trec_eval's printing: %6.4f for most, %ld for counts, 'text' for relstring."""
    if measure.kind == "int":
        return str(int(value))
    if measure.kind == "str":
        return str(value)
    if measure.kind == "quoted":
        return f"'{value}'"
    return f"{value:6.4f}"


def _line(label: str, qid: str, text: str) -> str:
    return f"{label:<22}\t{qid}\t{text}\n"


def trec_eval_order(measures: Sequence[Measure]) -> list[Measure]:
    """Measures in the order trec_eval prints them (its measure table), whatever order -m gave."""
    return sorted(measures, key=lambda m: FAMILY_ORDER[m.family])  # stable within a family


def format_tsv(evaluation: RunEvaluation, *, per_query: bool = False) -> str:
    """Lines exactly as trec_eval prints them (`-q` with per_query): per-query lines, then `all`."""
    lines = []
    measures = trec_eval_order(evaluation.measures)
    if per_query:
        shown = [m for m in measures if m.per_query]
        for qid in evaluation.queries:
            row = evaluation.per_query[qid]
            lines.extend(_line(m.label, qid, format_value(m, row[m.name])) for m in shown)
    lines.extend(_line(m.label, "all", format_value(m, evaluation.summary[m.name]))
                 for m in measures if m.summary)
    return "".join(lines)


def _json_value(measure: Measure, value: Value) -> Value:
    if measure.kind == "int":
        return int(value)
    return value


def to_json(evaluations: Sequence[RunEvaluation], *, per_query: bool = False, **options: Any) -> dict:
    """A JSON-ready dict: options, then per run its aggregate (and per-query values), by label."""
    runs = []
    for ev in evaluations:
        entry: dict[str, Any] = {
            "run": ev.name,
            "runid": ev.runid,
            "num_q": len(ev.queries),
            "measures": {m.label: _json_value(m, ev.summary[m.name]) for m in ev.measures if m.summary},
        }
        if ev.excluded:
            entry["excluded"] = ev.excluded
        if per_query:
            entry["per_query"] = {
                qid: {m.label: _json_value(m, ev.per_query[qid][m.name]) for m in ev.measures if m.per_query}
                for qid in ev.queries
            }
        runs.append(entry)
    return {**options, "runs": runs}


def short_names(names: Sequence[str]) -> list[str]:
    """File names without their folders when that keeps them apart, else the paths as given."""
    short = [PurePath(n).name or n for n in names]
    return short if len(set(short)) == len(short) else list(names)


def build_table(evaluations: Sequence[RunEvaluation], *, per_query: bool = False):
    """A rich Table: a row per run (per_query: a row per run and query, then the run's `all`)."""
    from rich.table import Table

    measures: list[Measure] = []
    seen = set()
    for ev in evaluations:
        for m in ev.measures:
            if m.label not in seen and (m.summary or per_query):
                seen.add(m.label)
                measures.append(m)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("run", overflow="fold")
    if per_query:
        table.add_column("query", no_wrap=True)
    for m in measures:
        table.add_column(m.label, justify="left" if m.kind in ("str", "quoted") else "right", no_wrap=True)
    names = short_names([ev.name for ev in evaluations])

    def cells(ev: RunEvaluation, row: Mapping[str, Value], is_summary: bool) -> list[str]:
        out = []
        for m in measures:
            wanted = m.summary if is_summary else m.per_query
            out.append(format_value(m, row[m.name]) if wanted and m.name in row else "")
        return out

    for i, ev in enumerate(evaluations):
        if per_query:
            for qid in ev.queries:
                table.add_row(names[i], qid, *cells(ev, ev.per_query[qid], False))
            table.add_row(names[i], "all", *cells(ev, ev.summary, True), style="bold",
                          end_section=i < len(evaluations) - 1)
        else:
            table.add_row(names[i], *cells(ev, ev.summary, True))
    return table


def excluded_note(names: Sequence[str], removed: Sequence[int]) -> str | None:
    """A line saying how many documents graded -100 each run lost (None when none did)."""
    if not any(removed):
        return None
    counts = ", ".join(f"{name} {n}" for name, n in zip(names, removed))
    return (f"Documents graded {EXCLUDED} (excluded from evaluation) were removed from the runs first, as BRIGHT's "
            f"scorer does: {counts}; --keep-excluded keeps them.")


def read_runid(path: str) -> str:
    """The run tag (6th column) of the last line, as trec_eval 10.0's runid; "" for stdin.

    (get_trec_results.c keeps the run_id of every line it parses, so the last one wins.)
    """
    from ..io.text import iter_chunks

    if str(path) == "-":
        return ""
    runid = ""
    for _, chunk in iter_chunks(path):
        for raw in reversed(chunk.split(b"\n")):
            fields = raw.split()
            if fields and not fields[0].startswith(b"#"):
                runid = fields[5].decode("utf-8", errors="replace") if len(fields) >= 6 else ""
                break
    return runid


def run_eval(run_paths: Sequence[str], qrels: Mapping[str, Mapping[str, int]], measures: Sequence[str], *,
             per_query: bool = False, complete: bool = False, relevance_level: int = 1,
             judged_only: bool = False, keep_excluded: bool = False, output_format: str = "auto",
             stdout: IO[str] | None = None, console=None) -> list[RunEvaluation]:
    """`rank1 eval`: read each run, evaluate it, print the results to `stdout`.

    output_format: tsv (trec_eval's lines; with several runs each block starts with a `run` line
    naming the file), json, table (rich; on `console`, default a Console on `stdout`), or auto
    (tsv for one run, table for several). Measure names are checked before any run is read.
    Returns the evaluations.
    """
    from ..console import print_table
    from ..io.text import check_stdin_once
    from ..io.trec import read_run_scores

    check_stdin_once(run_paths)
    if output_format not in OUTPUT_FORMATS:
        raise InputError(f"unknown output format {output_format!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    if not run_paths:
        raise InputError("no run file given")
    parsed = parse_measures(measures)
    if relevance_level < 1:
        raise InputError(f"relevance level must be at least 1 (got {relevance_level})")
    if not any(qrels.values()):
        raise InputError("the qrels are empty")
    out = stdout if stdout is not None else sys.stdout
    wants_runid = any(m.family == "runid" for m in parsed)

    evaluations = []
    for path in run_paths:
        run = read_run_scores(path)
        evaluations.append(evaluate_run(
            run, qrels, parsed, relevance_level=relevance_level, complete=complete,
            judged_only=judged_only, keep_excluded=keep_excluded, runid=read_runid(path) if wants_runid else "", name=str(path)))
        del run

    fmt = output_format
    if fmt == "auto":
        fmt = "tsv" if len(evaluations) == 1 else "table"
    if fmt == "tsv":
        for ev in evaluations:
            if len(evaluations) > 1:
                out.write(_line("run", "all", ev.name))
            out.write(format_tsv(ev, per_query=per_query))
    elif fmt == "json":
        options = {"relevance_level": relevance_level, "complete": complete, "judged_only": judged_only,
                   "keep_excluded": keep_excluded}
        json.dump(to_json(evaluations, per_query=per_query, **options), out, indent=2)
        out.write("\n")
    else:
        if console is None:
            from rich.console import Console

            console = Console(file=out)
        print_table(console, build_table(evaluations, per_query=per_query))
        note = excluded_note(short_names([ev.name for ev in evaluations]), [ev.excluded for ev in evaluations])
        if note:
            console.print(note, markup=False, highlight=False)
    out.flush()
    return evaluations

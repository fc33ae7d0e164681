"""`rank1 report`: one self-contained HTML file for the error analysis of rank1 reranks of a baseline.

`build_report` joins the reranked run, its first stage, the qrels and the reasoning traces into a
`Report` (pure: data in, dataclasses out); `render_html` turns a Report into the HTML text, with
Vega-Lite charts whose scripts (vega, vega-lite, vega-embed, from vl-convert-python) and data are
inline, so the file opens offline; `write_report` reads the files and writes the HTML atomically.
Further reranks of the same baseline (`OtherRun`) are compared with it together with the first run
and shown beside it; `read_texts` adds the query and passage texts from the collection.

Size stays bounded on large runs: every reranked document's numbers are embedded, but its
reasoning only for the top `ReportLimits.top` of each query's new ranking and for at most
`ReportLimits.max_disagreements` documents where the verdict contradicts the qrels, each text cut to
`ReportLimits.reasoning_chars` characters. The charts get pre-binned data, never one point per pair.
"""

from __future__ import annotations

import bisect
import html
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from ..errors import InputError, OptionError, quote, quote_some
from ..evaluation.calibration import Reliability
from ..evaluation.compare import (
    DEFAULT_ALPHA,
    Comparison,
    check_options,
    comparable_measures,
    compare_evaluations,
    describe,
    format_p,
    notes,
    scored_pairs_calibration,
)
from ..evaluation.measures import Measure, parse_measures
from ..evaluation.significance import DEFAULT_ROUNDS, DEFAULT_SEED, EFFECT_SIZE
from ..evaluation.trec_eval import evaluate_run, short_names, trec_order
from ..io.collection import CollectionSource
from ..io.traces import Trace
from ..io.trec import Qrels, Run
from ..reasoning import prompts

DEFAULT_MEASURES = ("nDCG@10", "AP", "P@10")
COMPLETIONS = ("stop", "forced", "fallback")
SCORE_BINS = 20          # calibration: bins of the score over [0, 1]
LENGTH_BINS = 40         # reasoning length histogram
AGREEMENT_GROUPS = 10    # reasoning length against agreement: groups of equal size
CHART_WIDTH = 860


@dataclass(frozen=True, slots=True)
class ReportLimits:
    """What bounds the file's size: reasoning is embedded for each query's `top` documents of the
    new ranking and for at most `max_disagreements` documents whose verdict contradicts the qrels
    (the most confident first, the two kinds in turn), each cut to `reasoning_chars` characters."""

    top: int = 10
    max_disagreements: int = 500
    reasoning_chars: int = 4000
    passage_chars: int = 2000     # each embedded passage (beside its reasoning) and query text cut to this

    def __post_init__(self) -> None:
        for name in ("top", "max_disagreements", "reasoning_chars", "passage_chars"):
            if getattr(self, name) < 0:
                raise OptionError(f"{{{name}}} must be 0 or more (got {getattr(self, name)})")


@dataclass(frozen=True, slots=True)
class Names:
    """How the inputs are named in messages and in the report."""

    run: str = "run"
    baseline: str = "baseline"
    qrels: str = "qrels"
    traces: str = "traces"


@dataclass(slots=True)
class Document:
    """A reranked document of one query: where it was and went, its grade and rank1's judgement."""

    docid: str
    new_rank: int
    first_stage_rank: int
    grade: int | None               # None: not in the qrels
    score: float | None
    verdict: str | None             # "true" / "false"; None for a fallback
    completion: str
    output_tokens: int
    truncated: bool
    reasoning: str                  # in full; the renderer embeds only what the limits allow
    prompt_sha256: str = ""         # the trace's: checks a passage read from the corpus against the prompt

    def agrees(self, level: int) -> bool | None:
        """Whether the verdict matches the qrels (grade >= level is relevant); None when there is
        nothing to compare (no verdict, or no grade >= 0)."""
        if self.verdict is None or self.grade is None or self.grade < 0:
            return None
        return (self.verdict == "true") == (self.grade >= level)


@dataclass(slots=True)
class QueryResult:
    qid: str
    baseline: dict[str, float]      # measure label -> value; empty for a query the qrels do not judge
    run: dict[str, float]
    documents: list[Document]       # the reranked ones, in the new ranking's order (none: not in the run)
    unreranked: int                 # documents of the run below them (first-stage order), not shown

    @property
    def judged(self) -> bool:
        return bool(self.run)


@dataclass(frozen=True, slots=True)
class Texts:
    """The query texts as they went into the prompt (instruction and dataset template applied) and
    the passages (title and text, as `rerank` joins them) of the documents the report embeds."""

    source: str                     # where they were read, for the report's notes
    queries: dict[str, str]         # qid -> the query as the model saw it
    topics: dict[str, str]          # qid -> the query text alone: its words are highlighted in passages
    passages: dict[str, str]        # docid -> passage
    seen: dict[tuple[str, str], str] = field(default_factory=dict)  # truncated pair -> the part the model saw


# How a passage compares with what the model saw (Document.prompt_sha256 is the prompt's hash).
SEEN, CUT, TRUNCATED, DIFFERS, ABSENT = "seen", "cut", "truncated", "differs", "absent"


def passage_state(query: str | None, passage: str | None, doc: Document, seen: str | None = None) -> str:
    """SEEN: the prompt built from this query and passage is the one the model was given (its hash
    is the trace's); CUT: the passage was cut by tokens to fit the prompt and `seen`, the part the
    model saw, is known (the prompt rebuilt with the model's tokenizer has the trace's hash);
    TRUNCATED: cut, where unknown; DIFFERS: the prompt's hash is not the trace's (the collection or
    the query rewrite is not the one reranked); ABSENT: no passage in the collection."""
    if passage is None:
        return ABSENT
    if doc.truncated:
        return CUT if seen is not None else TRUNCATED
    if query is not None and prompts.prompt_sha256(prompts.build_prompt(query, passage)) == doc.prompt_sha256:
        return SEEN
    return DIFFERS


@dataclass(slots=True)
class OtherRun:
    """A further rerank of the same baseline, shown beside the first run in every view."""

    names: Names                    # its run and traces (baseline and qrels: the report's)
    model: str
    documents: dict[tuple[str, str], Document]   # (qid, docid) -> the document as this run ranked and judged it
    completions: dict[str, int]
    truncated: int
    calibration: Reliability | None


@dataclass(slots=True)
class Report:
    names: Names
    model: str
    settings: dict[str, Any]
    comparison: Comparison          # the measures, with significance against the baseline
    queries: list[QueryResult]      # the judged ones by the first measure's delta, worst first; then the others
    relevance_level: int
    limits: ReportLimits
    completions: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    calibration: Reliability | None = None  # of the traced scores over the pairs the qrels grade; None: none
    texts: Texts | None = None      # query and passage texts, when the report was given a collection
    others: list[OtherRun] = field(default_factory=list)   # further reranks, in the order given

    @property
    def run_names(self) -> list[str]:
        return [self.names.run, *(other.names.run for other in self.others)]

    def verdict_splits(self) -> list[tuple[str, Document]]:
        """The first run's documents that another run judges otherwise (a verdict each, not the
        same), the widest spread of scores first."""
        found = []
        for query in self.queries:
            for doc in query.documents:
                sides = [doc, *(o.documents.get((query.qid, doc.docid)) for o in self.others)]
                verdicts = {d.verdict for d in sides if d is not None and d.verdict is not None}
                if len(verdicts) > 1:
                    scores = [d.score for d in sides if d is not None and d.score is not None]
                    found.append((max(scores) - min(scores), query.qid, doc))
        found.sort(key=lambda item: -item[0])
        return [(qid, doc) for _, qid, doc in found]

    @property
    def primary(self) -> str:
        return self.comparison.measures[0]

    @property
    def documents(self) -> list[Document]:
        return [d for q in self.queries for d in q.documents]

    def disagreements(self) -> tuple[list[tuple[str, Document]], list[tuple[str, Document]]]:
        """(relevant documents judged false, non-relevant ones judged true), each the most confident
        (score furthest from 0.5) first."""
        relevant_false, nonrelevant_true = [], []
        for query in self.queries:
            for doc in query.documents:
                if doc.agrees(self.relevance_level) is False:
                    (relevant_false if doc.verdict == "false" else nonrelevant_true).append((query.qid, doc))
        for found in (relevant_false, nonrelevant_true):
            found.sort(key=lambda item: -abs(item[1].score - 0.5))        # a verdict comes with a score
        return relevant_false, nonrelevant_true


# ---------------------------------------------------------------------------------------------
# The join


def _checked_options(measures: Sequence[str], relevance_level: int, test: str, correction: str, alpha: float,
                     rounds: int) -> list[Measure]:
    """The measures to compare, once every option is known to be valid."""
    check_options(test, correction, alpha, rounds)
    if relevance_level < 1:
        raise OptionError(f"{{relevance_level}} must be at least 1 (got {relevance_level})")
    return comparable_measures(parse_measures(measures))


def _check_traces(run: Run, baseline: Run, traces: Sequence[Trace], names: Names) -> dict[tuple[str, str], Trace]:
    """The traces keyed by pair, after checking that they belong to `run` and `baseline`."""
    by_pair: dict[tuple[str, str], Trace] = {}
    for trace in traces:
        if trace.key in by_pair:
            raise InputError(f"{names.traces}: the pair {trace.qid}/{trace.docid} is traced twice; "
                             "give the traces of one rerank")
        by_pair[trace.key] = trace
    if not by_pair:
        raise InputError(f"{names.traces}: no traces; give the traces file `rank1 rerank` wrote with {names.run}")
    in_run = {(qid, e.docid) for qid, entries in run.items() for e in entries}
    stray = [key for key in by_pair if key not in in_run]
    if stray:
        raise InputError(f"{names.traces}: {len(stray)} traced pairs are not in the run {names.run} "
                         f"({quote_some([f'{q}/{d}' for q, d in stray])}); give the traces written with that run")
    untraced = [qid for qid in run if not any((qid, e.docid) in by_pair for e in run[qid])]
    if untraced:
        raise InputError(f"{names.traces}: {len(untraced)} queries of the run {names.run} have no traces "
                         f"({quote_some(untraced)}); give the traces written with that run")
    _check_order(run, by_pair, names)
    positions = {(qid, e.docid): i for qid, entries in baseline.items() for i, e in enumerate(entries, start=1)}
    moved = [(key, t.first_stage_rank, positions.get(key)) for key, t in by_pair.items()
             if positions.get(key) != t.first_stage_rank]
    if moved:
        (qid, docid), traced, found = moved[0]
        where = f"rank {found}" if found else "absent"
        raise InputError(f"{names.baseline}: is not the first stage the traces were made from: {len(moved)} traced "
                         f"pairs are elsewhere in it ({qid}/{docid}: first-stage rank {traced} in the traces, "
                         f"{where} in {names.baseline}); give the run that was reranked as the baseline")
    return by_pair


def _check_order(run: Run, by_pair: dict[tuple[str, str], Trace], names: Names) -> None:
    """The run must rank its traced documents as the rerank did: by score in the traces, ties by
    first-stage rank. Traces of another rerank (another model, another first stage) do not."""
    disordered = []
    for qid, entries in run.items():
        traced = [by_pair[(qid, e.docid)] for e in entries if (qid, e.docid) in by_pair]
        wrong = next(((a, b) for a, b in zip(traced, traced[1:])
                      if (-a.score, a.first_stage_rank) > (-b.score, b.first_stage_rank)), None)
        if wrong:
            disordered.append(wrong)
    if disordered:
        above, below = disordered[0]
        ranks = (f", first-stage ranks {above.first_stage_rank} and {below.first_stage_rank}"
                 if above.score == below.score else "")
        raise InputError(f"{names.traces}: the traces do not belong to the run {names.run}: in {len(disordered)} "
                         f"queries the run orders the traced documents otherwise than their scores in the traces "
                         f"({above.qid}: {quote(above.docid)} above {quote(below.docid)}, scored {above.score:g} and "
                         f"{below.score:g}{ranks}); give the traces written with that run")


def _scores(run: Run) -> dict[str, dict[str, float]]:
    return {qid: {e.docid: e.score for e in entries} for qid, entries in run.items()}


def _ranked_documents(qid: str, run: Run, by_pair: dict[tuple[str, str], Trace], grades: dict[str, int]
                      ) -> tuple[list[Document], int]:
    """(the traced documents of a query in the run's order, how many untraced ones follow them)."""
    order = trec_order({e.docid: e.score for e in run.get(qid, [])})
    docs = []
    for new_rank, docid in enumerate(order, start=1):
        trace = by_pair.get((qid, docid))
        if trace is not None:
            docs.append(Document(docid, new_rank, trace.first_stage_rank, grades.get(docid), trace.score,
                                 trace.verdict, trace.completion, trace.output_tokens, trace.truncated,
                                 trace.reasoning, trace.prompt_sha256))
    return docs, len(order) - len(docs)


def _checked_run(run: Run, baseline: Run, qrels: Qrels, traces: Sequence[Trace], names: Names
                 ) -> dict[tuple[str, str], Trace]:
    not_in_baseline = [qid for qid in run if qid not in baseline]
    if not_in_baseline:
        raise InputError(f"{names.baseline}: {len(not_in_baseline)} queries of the run {names.run} are not in it "
                         f"({quote_some(not_in_baseline)}); give the run that was reranked as the baseline")
    by_pair = _check_traces(run, baseline, traces, names)
    if not any(qrels.get(qid) for qid in run):
        raise InputError(f"{names.qrels}: judges no query of the run {names.run}; give the qrels of its topics")
    return by_pair


def build_report(run: Run, baseline: Run, qrels: Qrels, traces: Sequence[Trace], *,
                 measures: Sequence[str] = DEFAULT_MEASURES, relevance_level: int = 1, test: str = "t",
                 correction: str = "holm", alpha: float = DEFAULT_ALPHA, rounds: int = DEFAULT_ROUNDS,
                 seed: int = DEFAULT_SEED, keep_excluded: bool = False, limits: ReportLimits = ReportLimits(),
                 names: Names = Names(), others: Sequence[tuple[Run, Sequence[Trace], Names]] = ()) -> Report:
    """Join a reranked run, its first stage, qrels and the rerank's traces into a Report.

    The measures (means over queries) are compared with `compare.compare_evaluations`: every query
    of the qrels counts, one missing from a run as 0; `test`, `correction`, `alpha`, `rounds` and
    `seed` are its (`compare.compare_runs` says what they mean); documents graded -100 are left
    out of the evaluation unless `keep_excluded`, as in `rank1 compare`. The first measure orders the
    per-query view. Raises InputError when the traces are not the run's (a
    traced pair missing from the run, a query of the run without traces), or the baseline is not
    the first stage they were made from (a query of the run missing from it, a traced pair at
    another first-stage rank).

    others: further reranks of the same baseline, each (run, its traces, names), checked the same
    way and compared with the baseline together with `run` (the correction runs over every run and
    measure); the report shows them beside `run`, whose order leads the per-query views.
    """
    parsed = _checked_options(measures, relevance_level, test, correction, alpha, rounds)
    by_pair = _checked_run(run, baseline, qrels, traces, names)
    other_pairs = [_checked_run(r, baseline, qrels, t, n) for r, t, n in others]
    sides = [(baseline, names.baseline), (run, names.run), *((r, n.run) for r, _, n in others)]
    evaluations = [evaluate_run(_scores(r), qrels, parsed, relevance_level=relevance_level, complete=True,
                                keep_excluded=keep_excluded, name=name) for r, name in sides]
    missing = {ev.name: sum(1 for qid in ev.queries if qid not in r) for ev, (r, _) in zip(evaluations, sides)}
    comparison = compare_evaluations(evaluations[0], evaluations[1:], test=test, correction=correction, alpha=alpha,
                                     rounds=rounds, seed=seed, missing=missing, keep_excluded=keep_excluded)
    position = {qid: i for i, qid in enumerate(comparison.queries)}

    def values(name: str, qid: str) -> dict[str, float]:
        if qid not in position:
            return {}
        return {m: comparison.per_query[name][m][position[qid]] for m in comparison.measures}

    queries = []
    for qid in [*run, *(q for q in comparison.queries if q not in run)]:
        docs, unreranked = _ranked_documents(qid, run, by_pair, qrels.get(qid, {}))
        queries.append(QueryResult(qid, values(names.baseline, qid), values(names.run, qid), docs, unreranked))
    primary = comparison.measures[0]
    queries.sort(key=lambda q: (not q.judged, q.run.get(primary, 0.0) - q.baseline.get(primary, 0.0), q.qid))

    def completions(pairs: dict[tuple[str, str], Trace]) -> dict[str, int]:
        return {state: sum(t.completion == state for t in pairs.values()) for state in COMPLETIONS}

    def calibration(pairs: dict[tuple[str, str], Trace], name: str) -> Reliability | None:
        return scored_pairs_calibration(((t.qid, t.docid, t.score) for t in pairs.values()), qrels, relevance_level,
                                        name=name)

    other_runs = []
    for (other, other_traces, other_names), pairs in zip(others, other_pairs):
        documents = {(qid, doc.docid): doc for qid in other
                     for doc in _ranked_documents(qid, other, pairs, qrels.get(qid, {}))[0]}
        other_runs.append(OtherRun(other_names, other_traces[0].model, documents, completions(pairs),
                                   sum(t.truncated for t in pairs.values()), calibration(pairs, other_names.traces)))
    first = traces[0]
    return Report(
        names=names, model=first.model, settings=dict(first.settings), comparison=comparison, queries=queries,
        relevance_level=relevance_level, limits=limits, completions=completions(by_pair),
        truncated=sum(t.truncated for t in by_pair.values()), calibration=calibration(by_pair, names.traces),
        others=other_runs)


def _template(settings: dict[str, Any]) -> prompts.QueryTemplate | None:
    """The rerank's query template, from its traces' settings, where it can still be found (a
    template file since moved cannot: then no passage checks as seen)."""
    try:
        found = prompts.resolve_template(settings.get("prompt_template"))
    except (InputError, OptionError):
        return None
    if found is not None and prompts.prompt_sha256(found.text) != settings.get("prompt_template_sha256"):
        return None
    return found


def read_texts(report: Report, source: CollectionSource) -> Texts:
    """The query texts of the report's queries and the passages of the documents it embeds, read
    from `source` with the readers `rank1 rerank` uses."""
    template = _template(report.settings)
    found = source.load_queries()
    wanted = [q.qid for q in report.queries if q.qid in found]
    pairs = embedded(report)[0]
    documents = source.load_documents({doc.docid for _, doc in pairs})
    queries = {qid: prompts.rank1_query(found[qid].text, found[qid].instruction, template) for qid in wanted}
    passages = {docid: prompts.passage_text(doc.title, doc.text) for docid, doc in documents.items()}
    truncated = [(qid, doc) for qid, doc in pairs if doc.truncated and qid in queries and doc.docid in passages]
    return Texts(source=source.describe(), queries=queries, topics={qid: found[qid].text for qid in wanted},
                 passages=passages, seen=_seen_parts(report, truncated, queries, passages))


def _local_tokenizer(spec: str):
    """The tokenizer of the model the traces name, from a local folder or the local Hugging Face
    cache only (a report never downloads); None when neither has it."""
    from ..reasoning.models import resolve_model

    try:
        model = resolve_model(spec)
    except (InputError, OptionError):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.path, local_files_only=True)
    except (OSError, ValueError):
        return None


def _seen_parts(report: Report, truncated: Sequence[tuple[str, Document]], queries: dict[str, str],
                passages: dict[str, str]) -> dict[tuple[str, str], str]:
    """The part of each truncated passage the model saw: the prompt fitted again as rerank fits it
    (`fitting.fit_prompts`, the model's tokenizer, the traces' max_model_len and
    max_reasoning_tokens), kept only when its hash is the trace's."""
    from ..reasoning.fitting import Budget, fit_prompts

    lengths = (report.settings.get("max_model_len"), report.settings.get("max_reasoning_tokens"))
    if not truncated or not all(isinstance(n, int) for n in lengths):
        return {}
    tokenizer = _local_tokenizer(report.model)
    if tokenizer is None:
        return {}
    budget = Budget(*lengths).prompt_tokens
    fitted = fit_prompts(tokenizer, [queries[qid] for qid, _ in truncated],
                         [passages[doc.docid] for _, doc in truncated], budget)
    seen = {}
    for (qid, doc), fit in zip(truncated, fitted):
        if fit.truncated and prompts.prompt_sha256(fit.prompt) == doc.prompt_sha256:
            head = prompts.PROMPT_HEAD + queries[qid] + prompts.PASSAGE_LABEL
            seen[(qid, doc.docid)] = fit.prompt[len(head):len(fit.prompt) - len(prompts.THINK_OPEN)]
    return seen


# ---------------------------------------------------------------------------------------------
# Charts: Vega-Lite specifications over pre-binned data


def _first_run(report: Report) -> str:
    """For the titles of the views that show the first run only, when there are others."""
    return f", {short_names(report.run_names)[0]}" if report.others else ""


def _round_step(step: float) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... at least `step`: bins that start at round numbers."""
    scale = 1
    while True:
        for unit in (1, 2, 5):
            if unit * scale >= step:
                return unit * scale
        scale *= 10


def _length_histogram(report: Report) -> dict:
    docs = report.documents
    longest = max((d.output_tokens for d in docs), default=0)
    width = _round_step((longest + 1) / LENGTH_BINS)
    counts = Counter((d.output_tokens // width, d.completion) for d in docs)
    values = [{"from": b * width, "to": (b + 1) * width, "completion": state, "pairs": n}
              for (b, state), n in sorted(counts.items())]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "title": "Reasoning length (output tokens), by completion state" + _first_run(report),
        "width": CHART_WIDTH, "height": 180, "data": {"values": values},
        "mark": {"type": "bar", "binSpacing": 0},
        "encoding": {
            "x": {"field": "from", "type": "quantitative", "bin": {"binned": True, "step": width},
                  "title": "output tokens"},
            "x2": {"field": "to"},
            "y": {"field": "pairs", "type": "quantitative", "stack": True, "title": "pairs"},
            "color": {"field": "completion", "type": "nominal", "scale": {"domain": list(COMPLETIONS)},
                      "title": "completion"},
            "tooltip": [{"field": "from", "title": "tokens from"}, {"field": "to", "title": "to (excl.)"},
                        {"field": "completion"}, {"field": "pairs"}],
        },
    }


def _grade_label(grade: int | None) -> str:
    return "unjudged" if grade is None or grade < 0 else f"grade {grade}"


def _calibration(report: Report) -> dict:
    counts: Counter = Counter()
    totals: Counter = Counter()
    for d in report.documents:
        if d.score is None:
            continue
        label = _grade_label(d.grade)
        counts[(label, min(int(d.score * SCORE_BINS), SCORE_BINS - 1))] += 1
        totals[label] += 1
    groups = sorted(totals, key=lambda g: (g == "unjudged", int(g.split()[1]) if g != "unjudged" else 0))
    values = [{"group": f"{g} (n={totals[g]})", "middle": (b + 0.5) / SCORE_BINS, "from": b / SCORE_BINS,
               "to": (b + 1) / SCORE_BINS,
               "share": counts[(g, b)] / totals[g], "pairs": counts[(g, b)]}
              for g in groups for b in range(SCORE_BINS)]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "title": "Calibration: rank1 score distribution per relevance grade" + _first_run(report),
        "width": CHART_WIDTH, "height": 220, "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "middle", "type": "quantitative", "scale": {"domain": [0, 1]},
                  "title": f"score = P(true) / (P(true) + P(false)), in {SCORE_BINS} bins"},
            "y": {"field": "share", "type": "quantitative", "axis": {"format": "%"},
                  "title": "share of the grade's documents"},
            "color": {"field": "group", "type": "nominal", "sort": [f"{g} (n={totals[g]})" for g in groups],
                      "title": "qrels"},
            "tooltip": [{"field": "group"}, {"field": "from", "title": "score from"}, {"field": "to", "title": "to"},
                        {"field": "pairs"}, {"field": "share", "format": ".1%"}],
        },
    }


def _reliability(report: Report) -> dict:
    """The reliability diagram: per score bin, the mean score against the share relevant, the
    diagonal being perfect calibration."""
    found = report.calibration
    runs = short_names(report.run_names)
    calibrations = [report.calibration, *(o.calibration for o in report.others)]
    bins = [{"run": run, "from": b.low, "to": b.high, "score": round(b.mean_score, 4),
             "relevant": round(b.share_relevant, 4), "pairs": b.pairs}
            for run, c in zip(runs, calibrations) if c is not None for b in c.bins if b.pairs]
    if report.others:
        title = "Reliability: share relevant per score bin, per run"
    elif found is None:
        title = "Reliability: share relevant per score bin"
    else:
        title = (f"Reliability: share relevant per score bin (ECE {found.ece:.4f}, Brier {found.brier:.4f}, "
                 f"{found.pairs:,} judged pairs)")
    axis = {"type": "quantitative", "scale": {"domain": [0, 1]}}
    color = {"color": {"field": "run", "type": "nominal", "sort": runs, "title": "run"}} if report.others else {}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "title": title, "width": 420, "height": 300,
        "layer": [
            {"data": {"values": [{"score": 0, "relevant": 0}, {"score": 1, "relevant": 1}]},
             "mark": {"type": "line", "strokeDash": [4, 4], "color": "#999"},
             "encoding": {"x": {"field": "score", **axis}, "y": {"field": "relevant", **axis}}},
            {"data": {"values": bins},
             "mark": {"type": "line", "point": {"filled": True}},
             "encoding": {
                 "x": {"field": "score", **axis, "title": "mean score of the bin"},
                 "y": {"field": "relevant", **axis, "axis": {"format": "%"},
                       "title": f"share relevant (grade >= {report.relevance_level})"},
                 **color,
                 "tooltip": [{"field": "run"}, {"field": "from", "title": "score from"}, {"field": "to", "title": "to"},
                             {"field": "pairs"}, {"field": "score", "title": "mean score"},
                             {"field": "relevant", "title": "share relevant", "format": ".1%"}]}},
        ],
    }


def _length_agreement(report: Report) -> dict:
    level = report.relevance_level
    judged = sorted((d.output_tokens, d.agrees(level)) for d in report.documents if d.agrees(level) is not None)
    # Groups of about equal size that never split one length: each ends at a quantile's length.
    ends = sorted({judged[(g + 1) * len(judged) // AGREEMENT_GROUPS - 1][0]
                   for g in range(AGREEMENT_GROUPS) if (g + 1) * len(judged) // AGREEMENT_GROUPS})
    values = []
    start = 0
    for end in ends:
        stop = bisect.bisect_right(judged, (end, True), lo=start)
        part = judged[start:stop]
        start = stop
        values.append({"median": part[len(part) // 2][0], "from": part[0][0], "to": end, "pairs": len(part),
                       "agreement": sum(a for _, a in part) / len(part)})
    groups = len(values)
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "title": f"Reasoning length against agreement with the qrels (judged pairs in {groups} groups of about equal "
                 f"size){_first_run(report)}",
        "width": CHART_WIDTH, "height": 200, "data": {"values": values},
        "mark": {"type": "line", "point": {"filled": True, "size": 60}},
        "encoding": {
            "x": {"field": "median", "type": "quantitative", "title": "output tokens (median of the group)"},
            "y": {"field": "agreement", "type": "quantitative", "scale": {"domain": [0, 1]},
                  "axis": {"format": "%"}, "title": "verdict agrees with the qrels"},
            "tooltip": [{"field": "from", "title": "tokens from"}, {"field": "to", "title": "tokens to"},
                        {"field": "pairs"}, {"field": "agreement", "format": ".1%"}],
        },
    }


def _deltas(report: Report) -> dict:
    primary = report.primary
    comparison = report.comparison
    position = {qid: i for i, qid in enumerate(comparison.queries)}
    base = comparison.per_query[comparison.baseline][primary]
    judged = [q for q in report.queries if q.judged]
    values = [{"qid": q.qid, "order": i, "name": name, "baseline": round(base[position[q.qid]], 4),
               "run": round(comparison.per_query[run][primary][position[q.qid]], 4),
               "delta": round(comparison.per_query[run][primary][position[q.qid]] - base[position[q.qid]], 4)}
              for i, q in enumerate(judged) for run, name in zip(comparison.runs, short_names(comparison.runs))]
    many = len(judged) > 60
    if report.others:
        names = short_names(comparison.runs)
        by_run = {"xOffset": {"field": "name", "type": "nominal", "sort": names},
                  "color": {"condition": {"test": "datum.qid === current", "value": "#222"},
                            "field": "name", "type": "nominal", "sort": names, "title": "run"}}
    else:
        by_run = {"color": {"condition": {"test": "datum.qid === current", "value": "#222"},
                            "field": "sign", "type": "nominal", "scale": {"domain": ["loss", "tie", "win"],
                                                                          "range": ["#d6604d", "#999", "#4393c3"]},
                            "legend": None}}
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "title": f"{primary} per query: {'each run' if report.others else 'rank1'} minus baseline, sorted by "
                 f"{'the first run' if report.others else 'it'} (click a bar to see the query's documents)",
        "width": CHART_WIDTH, "height": 220, "data": {"values": values},
        "params": [{"name": "current", "value": ""}],
        "mark": {"type": "bar", "cursor": "pointer"},
        "encoding": {
            "x": {"field": "qid", "type": "nominal", "sort": {"field": "order"}, "title": "query",
                  "axis": {"labels": not many, "ticks": not many, "labelAngle": -60}},
            "y": {"field": "delta", "type": "quantitative", "title": f"Δ {primary}"},
            **by_run,
            "tooltip": [{"field": "qid", "title": "query"}, {"field": "name", "title": "run"}, {"field": "baseline"},
                        {"field": "run", "title": "value"},
                        {"field": "delta", "title": "Δ"}],
        },
        "transform": [{"calculate": "datum.delta > 0 ? 'win' : datum.delta < 0 ? 'loss' : 'tie'", "as": "sign"}],
    }


# ---------------------------------------------------------------------------------------------
# The HTML


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[... cut: {len(text):,} characters in all]"


def embedded(report: Report) -> tuple[list[tuple[str, Document]], set[tuple[str, str]], list[tuple[str, Document]]]:
    """(the pairs whose reasoning and passage the report embeds, in order and once each; the
    disagreements among them that the disagreement lists show; the verdict splits between runs
    shown): each query's top `limits.top` of the first run, at most `limits.max_disagreements`
    disagreements with the qrels, the two kinds in turn, then, with other runs, at most
    `limits.max_disagreements` splits, the widest first. Each run's reasoning is embedded for them all."""
    limits = report.limits
    pairs: dict[tuple[str, str], tuple[str, Document]] = {}
    for q in report.queries:
        for doc in q.documents[:limits.top]:
            pairs.setdefault((q.qid, doc.docid), (q.qid, doc))
    relevant_false, nonrelevant_true = report.disagreements()
    turns = [item for pair in zip(relevant_false, nonrelevant_true) for item in pair]
    turns += relevant_false[len(nonrelevant_true):] + nonrelevant_true[len(relevant_false):]
    chosen = turns[:limits.max_disagreements]
    for qid, doc in chosen:
        pairs.setdefault((qid, doc.docid), (qid, doc))
    splits = report.verdict_splits()[:limits.max_disagreements] if report.others else []
    for qid, doc in splits:
        pairs.setdefault((qid, doc.docid), (qid, doc))
    return list(pairs.values()), {(qid, doc.docid) for qid, doc in chosen}, splits


def _page_data(report: Report) -> dict:
    """The JSON the page's script reads: documents per query as rows, embedded reasoning and
    passages by index."""
    limits = report.limits
    pairs, shown, splits = embedded(report)
    relevant_false, nonrelevant_true = report.disagreements()
    texts = report.texts
    reasoning: list[str] = []
    passages: list[str] = []
    passage_index: dict[str, int] = {}
    index: dict[tuple[str, str], tuple[int, int, str]] = {}   # pair -> (reasoning, passage, state)
    for qid, doc in pairs:
        reasoning.append(_cut(doc.reasoning, limits.reasoning_chars))
        where, state = -1, ""
        if texts is not None:
            passage = texts.passages.get(doc.docid)
            seen = texts.seen.get((qid, doc.docid))
            state = passage_state(texts.queries.get(qid), passage, doc, seen)
            if seen is not None:
                passages.append(_cut(seen, limits.passage_chars) + f"\n[the model's passage ends here: cut by tokens to "
                                f"fit the prompt; {len(passage) - len(seen):,} more characters in the collection]")
                where = len(passages) - 1
            elif passage is not None:
                if doc.docid not in passage_index:
                    passage_index[doc.docid] = len(passages)
                    passages.append(_cut(passage, limits.passage_chars))
                where = passage_index[doc.docid]
        index[(qid, doc.docid)] = (len(reasoning) - 1, where, state)
    # The other runs: every document's rank, score and verdict; reasoning for the embedded pairs.
    other_docs = []
    for other in report.others:
        rows: dict[str, dict[str, list]] = {}
        for (qid, docid), d in other.documents.items():
            at = -1
            if (qid, docid) in index:
                reasoning.append(_cut(d.reasoning, limits.reasoning_chars))
                at = len(reasoning) - 1
            rows.setdefault(qid, {})[docid] = [d.new_rank, None if d.score is None else round(d.score, 4), d.verdict,
                                               d.completion, int(d.truncated), at]
        other_docs.append(rows)

    docs = {}
    for q in report.queries:
        docs[q.qid] = [[d.docid, d.new_rank, d.first_stage_rank, d.grade,
                        None if d.score is None else round(d.score, 4), d.verdict, d.completion,
                        d.output_tokens, int(d.truncated), *index.get((q.qid, d.docid), (-1, -1, ""))]
                       for d in q.documents]
    docs_position = {(q.qid, d.docid): i for q in report.queries for i, d in enumerate(q.documents)}
    primary = report.primary
    comparison = report.comparison
    values = comparison.per_query
    names = [comparison.baseline, *comparison.runs]
    position = {qid: i for i, qid in enumerate(comparison.queries)}

    def query_text(qid: str, table: str) -> str | None:
        found = None if texts is None else getattr(texts, table).get(qid)
        return None if found is None else _cut(found, limits.passage_chars)

    return {
        "primary": primary,
        "level": report.relevance_level,
        "top": limits.top,
        "texts": texts is not None,
        "measures": comparison.measures,
        "runs": short_names(report.run_names),
        "queries": [[q.qid, round(q.baseline[primary], 4) if q.judged else None,
                     round(q.run[primary], 4) if q.judged else None, q.unreranked, query_text(q.qid, "queries"),
                     query_text(q.qid, "topics"),
                     [[round(values[name][m][position[q.qid]], 4) for name in names] for m in comparison.measures]
                     if q.judged else None] for q in report.queries],
        "otherDocs": other_docs,
        "splits": {"total": len(report.verdict_splits()) if report.others else 0,
                   "shown": [[qid, docs_position[(qid, d.docid)]] for qid, d in splits]},
        "docs": docs,
        "reasoning": reasoning,
        "passages": passages,
        "disagreements": {
            kind: {"total": len(found),
                   "shown": [[qid, docs_position[(qid, d.docid)]] for qid, d in found if (qid, d.docid) in shown]}
            for kind, found in (("relevantFalse", relevant_false), ("nonrelevantTrue", nonrelevant_true))},
        "charts": {"deltas": _deltas(report), "lengths": _length_histogram(report),
                   "reliability": _reliability(report), "calibration": _calibration(report),
                   "agreement": _length_agreement(report)},
    }


def _script_json(value: Any) -> str:
    """JSON that cannot end its <script> element early: every '<' is written as \\u003c."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _measures_table(report: Report) -> str:
    comparison = report.comparison
    confidence = f"{comparison.confidence:.0%}"
    several = bool(report.others)
    names = dict(zip(comparison.runs, short_names(comparison.runs)))

    def run_cell(i: int, run: str) -> str:
        if not several:
            return ""
        return f"<td>{html.escape(names[run]) if i == 0 or comparison.rows[i - 1].run != run else ''}</td>"

    head = (("<tr><th>run</th>" if several else "<tr>") +
            f"<th>measure</th><th>baseline</th><th>{'run' if several else 'rank1'}</th><th>Δ</th>"
            f"<th>{confidence} CI of Δ</th><th>p</th><th>p ({html.escape(comparison.correction)})</th>"
            "<th title='queries where rank1 is above / equal to / below the baseline'>wins / ties / losses</th>"
            f"<th title=\"{html.escape(EFFECT_SIZE)}\">d<sub>z</sub></th></tr>")
    body = "".join(
        f"<tr>{run_cell(i, r.run)}<td>{html.escape(r.measure)}</td><td>{r.baseline_mean:.4f}</td><td>{r.mean:.4f}</td>"
        f"<td class='{'up' if r.delta > 0 else 'down' if r.delta < 0 else ''}'>{r.delta:+.4f}"
        f"{'*' if r.significant else '&nbsp;'}</td><td>[{r.ci_low:+.4f}, {r.ci_high:+.4f}]</td>"
        f"<td>{format_p(r.p_value)}</td><td>{format_p(r.p_adjusted)}</td><td>{r.wins} / {r.ties} / {r.losses}</td>"
        f"<td>{'—' if r.effect_size is None else f'{r.effect_size:+.3f}'}</td></tr>"
        for i, r in enumerate(comparison.rows))
    lines = [f"* significant: {describe(comparison)}.", f"Effect size d_z: {EFFECT_SIZE}.", *notes(comparison)]
    return f"<table class='measures'>{head}{body}</table><p class='note'>{html.escape(' '.join(lines))}</p>"


def _share(count: int, total: int) -> str:
    return f"{count:,} ({count / total:.1%})" if total else "0"


def _run_summary(model: str, settings: dict[str, Any], docs: Sequence[Document], reranked: int, judged: int,
                 completions: dict[str, int], truncated: int) -> list[tuple[str, str]]:
    e = html.escape
    pairs = len(docs)
    tokens = sorted(d.output_tokens for d in docs)
    shown = ", ".join(f"{k} {v}" for k, v in settings.items()
                      if k in ("engine", "dtype", "max_reasoning_tokens", "max_model_len") and v is not None)
    return [
        ("model", e(model) + (f" <span class='dim'>({e(shown)})</span>" if shown else "")),
        ("queries", f"{reranked:,} reranked, {judged:,} of them judged by the qrels"),
        ("reranked pairs", f"{pairs:,}"),
        *((f"completion: {state}", _share(completions.get(state, 0), pairs)) for state in COMPLETIONS),
        ("truncated passages", _share(truncated, pairs)),
        ("output tokens", f"median {tokens[len(tokens) // 2]:,}, 90th percentile {tokens[int(len(tokens) * 0.9)]:,}, "
                          f"longest {tokens[-1]:,}" if tokens else "none"),
    ]


def _summary(report: Report) -> str:
    judged = {q.qid for q in report.queries if q.judged}
    columns = [_run_summary(report.model, report.settings, report.documents,
                            sum(1 for q in report.queries if q.documents),
                            sum(1 for q in report.queries if q.documents and q.judged),
                            report.completions, report.truncated)]
    for other in report.others:
        docs = list(other.documents.values())
        reranked = {qid for qid, _ in other.documents}
        columns.append(_run_summary(other.model, {}, docs, len(reranked), len(reranked & judged), other.completions,
                                    other.truncated))
    head = ("<tr><th></th>" + "".join(f"<th>{html.escape(n)}</th>" for n in short_names(report.run_names)) + "</tr>"
            if report.others else "")
    rows = "".join(f"<tr><th>{key}</th>" + "".join(f"<td>{column[i][1]}</td>" for column in columns) + "</tr>"
                   for i, (key, _) in enumerate(columns[0]))
    return f"<table class='summary'>{head}{rows}</table>"


def _limits_note(report: Report) -> str:
    limits = report.limits
    return (f"Reasoning is embedded for the top {limits.top} documents of each query's new ranking and for at most "
            f"{limits.max_disagreements:,} disagreements with the qrels (the most confident first, the two kinds in "
            f"turn), each cut to {limits.reasoning_chars:,} characters, with its passage cut to "
            f"{limits.passage_chars:,} characters when the collection is given. Every reranked document's numbers are "
            "embedded. Relevant means a grade of at least "
            f"{report.relevance_level}; unjudged documents and fallbacks count as neither agreement nor disagreement."
            + (f" The disagreements with the qrels are those of the first run, {report.names.run}; with several runs, "
               f"reasoning is embedded too for at most {limits.max_disagreements:,} documents where the runs disagree on "
               "a verdict (the widest spread of scores first), and each run's reasoning for every document embedded."
               if report.others else ""))


def _texts_note(report: Report) -> str:
    texts = report.texts
    if texts is None:
        return ("No query or passage texts: give the collection the rerank read (--dataset, or --queries and "
                "--corpus) to see them beside the reasoning.")
    pairs = embedded(report)[0]
    states = Counter(passage_state(texts.queries.get(qid), texts.passages.get(doc.docid), doc,
                                   texts.seen.get((qid, doc.docid))) for qid, doc in pairs)
    return (f"Query and passage texts from {texts.source}, beside the {len(pairs):,} embedded reasonings, each cut to "
            f"{report.limits.passage_chars:,} characters; the query's words are highlighted in the passage. "
            f"Passages as the model saw them: {states[SEEN]:,} checked (the prompt built from the query and passage "
            f"has the hash in the trace); {states[CUT]:,} truncated and shown up to the cut (the prompt fitted again "
            f"with the model's tokenizer, found locally, has the hash in the trace); {states[TRUNCATED]:,} truncated "
            "where the cut cannot be found (the model saw a beginning of the passage; its tokenizer is not on this "
            f"machine, or the refitted prompt differs); {states[DIFFERS]:,} differ from the prompt "
            f"reranked (another collection, query rewrite or --instructions); {states[ABSENT]:,} not in the collection.")


def _calibration_note(report: Report) -> str:
    found = report.calibration
    if not report.others:
        if found is None:
            return "No scored pair is judged by the qrels: nothing to calibrate."
        return (f"Scores read as the probability of relevance (grade >= {report.relevance_level}), over the "
                f"{found.pairs:,} scored pairs the qrels grade ({found.relevant:,} relevant; unjudged pairs and "
                f"fallbacks left out): expected calibration error {found.ece:.4f}, Brier score {found.brier:.4f}. "
                f"Bins: {found.binning}. ECE = sum over the non-empty bins of (pairs in the bin / pairs) x |mean score "
                "- share relevant|; Brier = mean (score - relevant)².")
    calibrations = [found, *(o.calibration for o in report.others)]
    parts = [f"{name}: nothing judged" if c is None else
             f"{name}: expected calibration error {c.ece:.4f}, Brier score {c.brier:.4f} ({c.pairs:,} judged pairs, "
             f"{c.relevant:,} relevant)" for name, c in zip(short_names(report.run_names), calibrations)]
    binning = next((c.binning for c in calibrations if c is not None), "")
    return (f"Scores read as the probability of relevance (grade >= {report.relevance_level}), over each run's scored "
            f"pairs the qrels grade (unjudged pairs and fallbacks left out): {'; '.join(parts)}. Bins: {binning}. ECE = "
            "sum over the non-empty bins of (pairs in the bin / pairs) x |mean score - share relevant|; Brier = mean "
            "(score - relevant)².")


_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def render_html(report: Report, *, bundle: str | None = None) -> str:
    """The report as one HTML document with its scripts and data inline.

    bundle: the JavaScript of vega, vega-lite and vega-embed (default: vl-convert-python's bundle).
    """
    if bundle is None:
        try:
            import vl_convert
        except ImportError:
            raise InputError("the report's charts need vl-convert-python: pip install 'rank1-cli[report]'") from None
        bundle = vl_convert.javascript_bundle()
    e = html.escape
    names = report.names
    title = f"rank1 report: {', '.join(report.run_names)} against {names.baseline}"
    runs = "".join(f", run <code>{e(o.names.run)}</code> with traces <code>{e(o.names.traces)}</code>"
                   for o in report.others)
    parts = {
        "title": e(title),
        "inputs": (f"run <code>{e(names.run)}</code>, baseline <code>{e(names.baseline)}</code>, "
                   f"qrels <code>{e(names.qrels)}</code>, traces <code>{e(names.traces)}</code>{runs}"),
        "measures": _measures_table(report),
        "summary": _summary(report),
        "limits": e(_limits_note(report)),
        "calibration": e(_calibration_note(report)),
        "texts": e(_texts_note(report)),
        "bundle": bundle,
        "data": _script_json(_page_data(report)),
    }
    template = resources.files("rank1_cli").joinpath("data/report.html").read_text(encoding="utf-8")
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], template)


def write_report(run: str, baseline: str, qrels: str, traces: str, output: str, *,
                 measures: Sequence[str] = DEFAULT_MEASURES, relevance_level: int = 1, test: str = "t",
                 correction: str = "holm", alpha: float = DEFAULT_ALPHA, rounds: int = DEFAULT_ROUNDS,
                 seed: int = DEFAULT_SEED, keep_excluded: bool = False,
                 limits: ReportLimits = ReportLimits(), source: CollectionSource | None = None,
                 others: Sequence[tuple[str, str]] = ()) -> Report:
    """`rank1 report`: read the files, build the report, write the HTML to `output` atomically
    ('-' for stdout). `qrels` is a qrels file or an ir_datasets id; `source`, the collection the
    rerank read, adds the query and passage texts (`read_texts`); `others`, (run, traces) paths of
    further reranks of the baseline, shown beside `run`. Options are checked before any file is read."""
    from ..io.collection import load_qrels
    from ..io.text import atomic_writer, display_name
    from ..io.traces import read_traces
    from ..io.trec import read_run

    _checked_options(measures, relevance_level, test, correction, alpha, rounds)
    names = Names(display_name(run), display_name(baseline), display_name(qrels), display_name(traces))
    more = [(read_run(path), read_traces(traced), Names(display_name(path), names.baseline, names.qrels,
                                                       display_name(traced)))
            for path, traced in others]
    report = build_report(read_run(run), read_run(baseline), load_qrels(qrels), read_traces(traces),
                          measures=measures, relevance_level=relevance_level, test=test, correction=correction,
                          alpha=alpha, rounds=rounds, seed=seed, keep_excluded=keep_excluded, limits=limits,
                          names=names, others=more)
    if source is not None:
        report.texts = read_texts(report, source)
    page = render_html(report)
    with atomic_writer(output) as out:
        out.write(page)
    return report


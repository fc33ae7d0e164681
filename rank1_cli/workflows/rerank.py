"""Reranking a TREC run with a rank1 model: a front end over the scoring core.

The data flows one way: inputs -> pairs -> scorer (store first, engine for the misses) ->
judgements -> ranking -> outputs. `prepare_rerank` runs the stages that need no engine (read
the inputs, size the budget, build the prompts) and raises InputError before any model loads;
`execute_rerank` asks the scorer; `final_ranking` orders the documents.

Usable from Python:

    prepared = prepare_rerank("run.trec", CollectionSource(corpus=..., queries=...), RerankOptions(model="rank1-7b"))
    with Store(default_store_path()) as store:
        scorer = make_scorer(prepared, store)
        try:
            result = execute_rerank(prepared, scorer)
        finally:
            scorer.close()
    write_run("reranked.trec", result.ranking, tag="rank1")
    write_traces("reranked.traces.jsonl", result.traces.values())
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..engines import Engine, engine_module, engine_options
from ..errors import InputError, OptionError
from ..io.collection import CollectionSource, Document, Query
from ..io.traces import TRACE_FORMAT, Trace
from ..io.trec import Run, read_run
from ..reasoning import prompts
from ..reasoning.early_exit import DEFAULT_CONFIDENCE, check_early_exit, judge_with_early_exit
from ..reasoning.fitting import Budget, check_lengths, fit_prompts
from ..reasoning.models import ResolvedModel, resolve_model
from ..reasoning.scorer import ProgressReporter, Scorer, ScoringModel, ScoringStats, load_scoring_model
from ..reasoning.scoring import VerdictTokens
from ..reasoning.store import GenerationKey, Store

log = logging.getLogger(__name__)

DTYPES = ("auto", "float16", "bfloat16", "float32")
REASON_TOP_KEY = "reason_top"      # in a cascade's traces settings: how many pairs per query were reasoned on
EARLY_EXIT_KEY, CONFIDENCE_KEY = "early_exit", "confidence"   # in an early exit's: its budgets and threshold


@dataclass(frozen=True, slots=True)
class RerankOptions:
    """Everything `rank1 rerank` can be told; defaults are the paper's settings."""

    model: str
    backend: str = "vllm"
    top_k: int = 100
    dtype: str | None = None                 # None: float16 on GPUs (the paper), the model's own on CPU
    max_model_len: int = 16000
    max_reasoning_tokens: int = 8192
    prompt: str | None = None                # dataset template name or file
    instructions: str | None = None          # TSV qid -> instruction
    keep_tail: bool = True
    tag: str = "rank1"
    missing: str = "error"                   # "error" | "skip": docids absent from the corpus
    chunk_size: int = 256                    # generations per store commit
    shard: str | None = None                 # "I/N": rerank only this share of the queries (job arrays)
    reason_top: int | None = None            # a cascade: budget 0 for all top-k, reasoning for each query's best N
    early_exit: tuple[int, ...] | None = None   # budgets to stop at when the forced verdict is confident
    confidence: float = DEFAULT_CONFIDENCE     # ... this confident (max of P(true), P(false))
    engine_options: Any = None               # the backend's own Options (engines.engine_options); None: defaults


@dataclass(slots=True)
class Pair:
    qid: str
    docid: str
    first_stage_rank: int
    prompt: str
    prompt_sha256: str
    truncated: bool
    prompt_tokens: int
    untruncated: tuple[str, str] | None = None   # a truncated pair's query and whole passage (to fit again)

    @property
    def key(self) -> tuple[str, str]:
        return self.qid, self.docid


@dataclass(slots=True)
class RerankInputs:
    """What the files said: the run (this shard's queries), query texts, instructions, documents."""

    run: Run
    queries: dict[str, Query]
    instructions: dict[str, str]
    documents: dict[str, Document]
    dropped_missing: int = 0


@dataclass(slots=True)
class PreparedRerank:
    """A validated rerank job: every input read and every prompt built, no model loaded."""

    run: Run
    pairs: list[Pair]
    options: RerankOptions
    scoring: ScoringModel
    settings: dict[str, Any]
    dropped_missing: int = 0

    @property
    def queries(self) -> int:
        return len({p.qid for p in self.pairs})

    @property
    def model(self) -> ResolvedModel:
        return self.scoring.model

    @property
    def tokens(self) -> VerdictTokens:
        return self.scoring.tokens

    @property
    def key(self) -> GenerationKey:
        return self.scoring.key


@dataclass(slots=True)
class RerankStats:
    max_reasoning_tokens: int = 0   # the budget; 0: no reasoning, every verdict forced after the prompt
    pairs: int = 0
    queries: int = 0
    from_store: int = 0             # pairs whose judgement was in the store already
    generated: int = 0              # distinct prompts sent to the engine
    output_tokens: int = 0
    stop: int = 0
    forced: int = 0
    fallback: int = 0
    truncated: int = 0
    reasoned: int | None = None     # a cascade's pairs judged at the full budget (the rest at budget 0)
    exits: dict[int, int] | None = None   # an early exit's pairs per exit budget
    load_seconds: float = 0.0       # starting the engine (not in `elapsed`)
    engine_seconds: float = 0.0
    repair_seconds: float = 0.0
    elapsed: float = 0.0

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.elapsed if self.elapsed else 0.0

    @property
    def tokens_per_second(self) -> float:
        busy = self.engine_seconds + self.repair_seconds
        return self.output_tokens / busy if busy else 0.0

    @property
    def mean_reasoning_tokens(self) -> float:
        return self.output_tokens / self.generated if self.generated else 0.0


@dataclass(slots=True)
class RerankResult:
    ranking: dict[str, list[tuple[str, float]]]
    traces: dict[tuple[str, str], Trace]   # (qid, docid) -> trace, in the order of the output run
    stats: RerankStats


# --- prepare: stages that never touch an engine --------------------------------------------

def _first_few(items, n: int = 5) -> str:
    items = [str(i)[:100] for i in items]
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else f" ({len(items)} in all)")


def check_options(options: RerankOptions) -> None:
    """Every option in range, before any file is read."""
    if options.top_k <= 0:
        raise OptionError(f"{{top_k}} must be a positive number of documents per query, found {options.top_k}")
    if options.missing not in ("error", "skip"):
        raise OptionError(f"{{missing}} must be 'error' or 'skip', found {options.missing[:100]!r}")
    if options.chunk_size <= 0:
        raise OptionError(f"{{chunk_size}} must be positive, found {options.chunk_size}")
    if options.dtype is not None and options.dtype not in DTYPES:
        raise OptionError(f"{{dtype}} must be one of {', '.join(DTYPES)}, found {options.dtype[:100]!r}")
    check_lengths(options.max_model_len, options.max_reasoning_tokens)
    if options.reason_top is not None:
        if options.reason_top < 1:
            raise OptionError(f"{{reason_top}} must be at least 1 pair per query, found {options.reason_top}")
        if options.reason_top > options.top_k:
            raise OptionError(f"{{reason_top}} ({options.reason_top}) cannot exceed {{top_k}} ({options.top_k}): "
                              "a cascade reasons on some of the top-k pairs")
        if options.max_reasoning_tokens == 0:
            raise OptionError("{reason_top} needs a reasoning budget: with {max_reasoning_tokens:0} no pair is "
                              "reasoned on")
    if options.early_exit is not None:
        check_early_exit(options.early_exit, options.max_reasoning_tokens, options.confidence)
        if options.reason_top is not None:
            raise OptionError("{early_exit} and {reason_top} are two policies; choose one")


def backend_options(options: RerankOptions):
    """The backend's Options: those given (checked to be the backend's own), else its defaults."""
    module = engine_module(options.backend)
    if options.engine_options is None:
        return engine_options(options.backend)
    if not isinstance(options.engine_options, module.Options):
        raise OptionError(f"engine_options are {type(options.engine_options).__module__}.Options, not the "
                          f"{options.backend} engine's; make them with engine_options({options.backend!r}, ...)")
    return options.engine_options


def read_inputs(run_path: str, source: CollectionSource, options: RerankOptions) -> RerankInputs:
    """Read the run (this shard's queries), the query texts, instructions and the top-k documents."""
    run = read_run(run_path)
    every_qid = set(run)  # a query of another shard is in the run too
    if options.shard:
        from .shard import parse_shard, shard_queries

        index, count = parse_shard(options.shard)
        mine = shard_queries(list(run), index, count)
        run = {qid: entries for qid, entries in run.items() if qid in mine}
    queries = source.load_queries()
    no_query = [qid for qid in run if qid not in queries]
    if no_query:
        raise InputError(f"{run_path}: {len(no_query)} queries of the run have no query text in "
                         f"{source.describe()}: {_first_few(no_query)}")
    instructions = {}
    if options.instructions:
        from ..io.collection import read_instructions_file

        instructions = read_instructions_file(options.instructions)
        unused = [qid for qid in instructions if qid not in every_qid]
        if unused:
            log.warning("%s: %d of its %d queries are not in the run and their instructions are not used: %s",
                        options.instructions, len(unused), len(instructions), _first_few(unused))

    wanted = {entry.docid for entries in run.values() for entry in entries[: options.top_k]}
    documents = source.load_documents(wanted)
    missing = sorted(wanted - documents.keys())
    if missing and options.missing == "error":
        raise OptionError(f"{len(missing)} documents of the run's top {options.top_k} are not in "
                         f"{source.describe()}: {_first_few(missing)}. Pass {{missing:skip}} to drop them.")
    if missing:
        log.warning("dropping %d documents missing from %s: %s", len(missing), source.describe(), _first_few(missing))
        empty = [qid for qid, entries in run.items()
                 if not any(e.docid in documents for e in entries[: options.top_k])]
        if empty:
            log.warning("%d queries have none of their top %d documents in %s and are left out of the output: %s",
                        len(empty), options.top_k, source.describe(), _first_few(empty))
            run = {qid: entries for qid, entries in run.items() if qid not in set(empty)}
    blank = [docid for docid, doc in documents.items() if not doc.title.strip() and not doc.text.strip()]
    if blank:
        log.warning("%d documents of the run's top %d have no title and no text in %s; they are reranked with an "
                    "empty passage: %s", len(blank), options.top_k, source.corpus or source.dataset, _first_few(blank))
    return RerankInputs(run, queries, instructions, documents, len(missing))


def build_pairs(inputs: RerankInputs, tokenizer, budget: Budget, template, top_k: int) -> list[Pair]:
    """One prompt per (query, top-k document), in run order; passages truncated to the budget."""
    keys: list[tuple[str, int, str]] = []
    query_texts: list[str] = []
    passages: list[str] = []
    for qid, entries in inputs.run.items():
        query = inputs.queries[qid]
        text = prompts.rank1_query(query.text, inputs.instructions.get(qid, query.instruction), template)
        for position, entry in enumerate(entries[:top_k], start=1):
            doc = inputs.documents.get(entry.docid)
            if doc is None:
                continue
            keys.append((qid, position, entry.docid))
            query_texts.append(text)
            passages.append(prompts.passage_text(doc.title, doc.text))
    fitted = fit_prompts(tokenizer, query_texts, passages, budget.prompt_tokens)
    return [Pair(qid, docid, position, fit.prompt, prompts.prompt_sha256(fit.prompt), fit.truncated, fit.tokens,
                 (query, passage) if fit.truncated else None)
            for (qid, position, docid), fit, query, passage in zip(keys, fitted, query_texts, passages)]


def prepare_rerank(run_path: str, source: CollectionSource, options: RerankOptions,
                   scoring: ScoringModel | None = None, store: Store | None = None) -> PreparedRerank:
    """Read and check every input and build every prompt; raises InputError before any model loads.

    `scoring`: the model already set up for these options (a `Rank1`'s), so its tokenizer is not
    loaded and its weights not fingerprinted again. `store`: where a local folder's file digests
    are kept (see `models.folder_fingerprint`).
    """
    check_options(options)
    chosen_engine_options = backend_options(options)
    model = resolve_model(options.model)
    template = prompts.resolve_template(options.prompt)
    inputs = read_inputs(run_path, source, options)
    if scoring is None:
        scoring = load_scoring_model(model, options.backend, chosen_engine_options, dtype=options.dtype,
                                     max_model_len=options.max_model_len,
                                     max_reasoning_tokens=options.max_reasoning_tokens, store=store)
    budget, key = scoring.budget, scoring.key
    pairs = build_pairs(inputs, scoring.tokenizer, budget, template, options.top_k)
    settings = {
        "format": TRACE_FORMAT,
        "model": model.spec,
        "model_revision": key.model_revision,
        "engine": key.engine,
        "prompt_template": template.name if template else None,
        "prompt_template_sha256": prompts.prompt_sha256(template.text) if template else None,
        "max_reasoning_tokens": budget.max_reasoning_tokens,
        "max_model_len": budget.max_model_len,
        "dtype": key.dtype,
    }
    if options.shard:
        from .shard import SHARD_KEY, format_shard, parse_shard

        settings[SHARD_KEY] = format_shard(*parse_shard(options.shard))
    if options.reason_top:
        settings[REASON_TOP_KEY] = options.reason_top
    if options.early_exit:
        settings[EARLY_EXIT_KEY] = list(options.early_exit)
        settings[CONFIDENCE_KEY] = options.confidence
    return PreparedRerank(inputs.run, pairs, options, scoring, settings, inputs.dropped_missing)


def at_budget(prepared: PreparedRerank, budget: int) -> PreparedRerank:
    """The same rerank with a smaller reasoning budget, every pair judged at it (no cascade): the same
    pairs, except that passages truncated to fit the larger budget are fitted again to the room the
    smaller one leaves."""
    largest = prepared.scoring.budget
    if budget > largest.max_reasoning_tokens:
        raise OptionError(f"budget {budget} is larger than the prepared rerank's {largest.max_reasoning_tokens}")
    sized = Budget(largest.max_model_len, budget)
    scoring = dataclasses.replace(prepared.scoring, budget=sized,
                                  key=dataclasses.replace(prepared.key, max_reasoning_tokens=budget))
    pairs = list(prepared.pairs)
    truncated = [i for i, pair in enumerate(pairs) if pair.truncated]
    if truncated:
        query_texts, passages = zip(*(pairs[i].untruncated for i in truncated))
        fitted = fit_prompts(scoring.tokenizer, query_texts, passages, sized.prompt_tokens)
        for i, fit in zip(truncated, fitted):
            pairs[i] = dataclasses.replace(pairs[i], prompt=fit.prompt, prompt_sha256=prompts.prompt_sha256(fit.prompt),
                                           truncated=fit.truncated, prompt_tokens=fit.tokens,
                                           untruncated=pairs[i].untruncated if fit.truncated else None)
    settings = {**prepared.settings, "max_reasoning_tokens": budget}
    options = dataclasses.replace(prepared.options, max_reasoning_tokens=budget, reason_top=None)
    return dataclasses.replace(prepared, pairs=pairs, options=options, scoring=scoring, settings=settings)


def traced_generations(prepared: PreparedRerank) -> set[tuple[GenerationKey, str]]:
    """(configuration, prompt sha256) of every judgement the rerank writes into its traces: of a
    cascade's two stages, of every budget of an early exit."""
    if prepared.options.reason_top:
        screen = at_budget(prepared, 0)
        return ({(prepared.key, pair.prompt_sha256) for pair in prepared.pairs}
                | {(screen.key, pair.prompt_sha256) for pair in screen.pairs})
    keys = [dataclasses.replace(prepared.key, max_reasoning_tokens=b) for b in prepared.options.early_exit or ()]
    return {(key, pair.prompt_sha256) for key in keys or [prepared.key] for pair in prepared.pairs}


# --- execute -------------------------------------------------------------------------------

def make_scorer(prepared: PreparedRerank, store: Store | None, *, recompute: bool = False) -> Scorer:
    """The scorer for a prepared rerank; its engine loads only if some pair is not in the store."""
    return prepared.scoring.scorer(store, chunk_size=prepared.options.chunk_size, recompute=recompute)


def execute_rerank(prepared: PreparedRerank, scorer: Scorer, progress: ProgressReporter | None = None) -> RerankResult:
    """Judge every pair (store first, engine for the rest) and rank; return run and traces.

    With `reason_top` N (a cascade), every top-k pair is judged at budget 0 first, and only each
    query's N best by that score are reasoned on at the full budget; they rank above the other
    k - N, which keep their budget-0 order."""
    if prepared.options.reason_top:
        return _execute_cascade(prepared, scorer, progress)
    started = time.perf_counter()
    before = dataclasses.replace(scorer.stats)       # a scorer (Rank1's) may have judged before
    prompt_list = [pair.prompt for pair in prepared.pairs]
    if prepared.options.early_exit:
        judgements, budgets = judge_with_early_exit(scorer, prompt_list, prepared.options.early_exit,
                                                    prepared.options.confidence, prepared.scoring.tokenizer, progress)
    else:
        judgements, budgets = scorer.judge(prompt_list, progress), None
    traces = _traces(prepared, prepared.pairs, judgements, budgets)
    stats = _stats(prepared, traces, scorer.stats, before)
    if budgets is not None:
        stats.exits = {b: budgets.count(b) for b in prepared.options.early_exit}
    return _result(prepared, traces, stats, started, {})


def _execute_cascade(prepared: PreparedRerank, scorer: Scorer, progress: ProgressReporter | None) -> RerankResult:
    started = time.perf_counter()
    before = dataclasses.replace(scorer.stats)
    screen = at_budget(prepared, 0)
    screener = scorer.sibling(screen.key, recompute=scorer.recompute)
    screened = _traces(screen, screen.pairs, screener.judge([pair.prompt for pair in screen.pairs], progress))
    by_query: dict[str, list[Trace]] = {}
    for trace in screened.values():
        by_query.setdefault(trace.qid, []).append(trace)
    chosen = {trace.key for traces in by_query.values()
              for trace in sorted(traces, key=lambda t: (-t.score, t.first_stage_rank))[:prepared.options.reason_top]}
    to_reason = [pair for pair in prepared.pairs if pair.key in chosen]
    reasoned = _traces(prepared, to_reason, scorer.judge([pair.prompt for pair in to_reason], progress))
    traces = {key: reasoned.get(key, trace) for key, trace in screened.items()}
    stats = _stats(prepared, traces, scorer.stats, before)
    stats.reasoned = len(reasoned)
    return _result(prepared, traces, stats, started, {key: 1 for key in traces if key not in reasoned})


def _traces(prepared: PreparedRerank, pairs: list[Pair], judgements,
            budgets: list[int] | None = None) -> dict[tuple[str, str], Trace]:
    """The traces of judged pairs; `budgets`: the budget each judgement was made at (an early exit's),
    which its settings then name."""
    by_budget = {b: {**prepared.settings, "max_reasoning_tokens": b} for b in set(budgets or ())}
    return {pair.key: Trace(pair.qid, pair.docid, pair.first_stage_rank, judgement.score, judgement.verdict,
                            judgement.reasoning, judgement.logprob_true, judgement.logprob_false, judgement.completion,
                            judgement.output_tokens, pair.truncated, prepared.model.spec, pair.prompt_sha256,
                            by_budget[budgets[i]] if budgets else prepared.settings, judgement.origin)
            for i, (pair, judgement) in enumerate(zip(pairs, judgements))}


def _stats(prepared: PreparedRerank, traces: dict[tuple[str, str], Trace], now: ScoringStats,
           before: ScoringStats) -> RerankStats:
    """The rerank's counts from its traces; engine work from the scorer's stats since `before` (a
    scorer's siblings, the other budgets of a policy, share its stats)."""
    stats = RerankStats(prepared.key.max_reasoning_tokens, pairs=len(traces), queries=prepared.queries)
    for trace in traces.values():
        stats.from_store += trace.origin == "store"
        stats.stop += trace.completion == "stop"
        stats.forced += trace.completion == "forced"
        stats.fallback += trace.completion == "fallback"
        stats.truncated += trace.truncated
    for name in ("generated", "output_tokens", "engine_seconds", "repair_seconds", "load_seconds"):
        setattr(stats, name, getattr(now, name) - getattr(before, name))
    return stats


def _result(prepared: PreparedRerank, traces: dict[tuple[str, str], Trace], stats: RerankStats, started: float,
            tiers: dict[tuple[str, str], int]) -> RerankResult:
    ranking = final_ranking(prepared, traces, tiers)
    ordered = {(qid, docid): traces[(qid, docid)] for qid, docs in ranking.items() for docid, _ in docs
               if (qid, docid) in traces}
    stats.elapsed = time.perf_counter() - started - stats.load_seconds
    return RerankResult(ranking, ordered, stats)


def rerank_with_engine(prepared: PreparedRerank, engine: Engine, store: Store | None = None, *,
                       recompute: bool = False, progress: ProgressReporter | None = None) -> RerankResult:
    """`execute_rerank` with an engine already loaded (the caller keeps it, and closes it)."""
    scorer = Scorer(prepared.key, prepared.tokens, lambda: engine, store=store,
                    chunk_size=prepared.options.chunk_size, recompute=recompute)
    return execute_rerank(prepared, scorer, progress)


# --- final order ---------------------------------------------------------------------------

def final_ranking(prepared: PreparedRerank, traces: dict[tuple[str, str], Trace],
                  tiers: dict[tuple[str, str], int] | None = None) -> dict[str, list[tuple[str, float]]]:
    """Top-k by rank1 score (ties, fallbacks included, by first-stage rank), then the tail in
    first-stage order with lower scores (with keep_tail), so no document of the input is lost.

    `tiers` puts pairs below others whatever their score: a pair of tier t ranks below every pair
    of a smaller tier and is written with score - t (a cascade's budget-0 pairs: tier 1)."""
    tiers = tiers or {}
    top_k = prepared.options.top_k
    ranking: dict[str, list[tuple[str, float]]] = {}
    for qid, entries in prepared.run.items():
        scored = [(tiers.get((qid, e.docid), 0), traces[(qid, e.docid)].score, position, e.docid)
                  for position, e in enumerate(entries[:top_k], start=1) if (qid, e.docid) in traces]
        scored.sort(key=lambda item: (item[0], -item[1], item[2]))
        docs = [(docid, score - tier) for tier, score, _, docid in scored]
        if prepared.options.keep_tail:
            floor = min((score for _, score in docs), default=0.0)
            docs.extend((e.docid, floor - i) for i, e in enumerate(entries[top_k:], start=1))
        ranking[qid] = docs
    return ranking

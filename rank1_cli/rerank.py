"""Reranking a TREC run with a rank1 model: prepare (all validation, no model), execute (engine,
traces journal, repair pass), and the final tie-safe ordering.

Usable from Python:

    prepared = prepare_rerank("run.trec", CollectionSource(corpus=..., queries=...), RerankOptions(model="rank1-7b"))
    engine = load_engine("vllm", prepared.engine_config)
    result = execute_rerank(prepared, engine, TraceJournal("traces.jsonl", prepared.settings))
    write_run("reranked.trec", result.ranking, tag="rank1")
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import prompts
from .collection import CollectionSource, Document
from .engines import Engine, EngineConfig, Generation, GenerationSettings, default_dtype
from .errors import EngineFailure, InputError
from .models import ResolvedModel, resolve_model
from .scoring import (FALLBACK_SCORE, VerdictTokens, relevance_score, repair_prompt, verdict_from_stop,
                      verdict_logprobs)
from .traces import PENDING, Trace, TraceJournal
from .trec import Run, RunEntry, read_run

log = logging.getLogger(__name__)

TRACE_FORMAT = "rank1-cli/1"
# Tokens kept free beyond the reasoning budget: the repair prompt adds "\n" + "\n</think>"
# around the reasoning and then generates one more token.
REPAIR_MARGIN = 8
MIN_PROMPT_TOKENS = 256
TOKENIZE_CHUNK = 1024


@dataclass(frozen=True, slots=True)
class RerankOptions:
    """Everything `rank1 rerank` can be told; defaults are the paper's settings."""

    model: str
    backend: str = "vllm"
    top_k: int = 100
    dtype: str | None = None                 # None: float16 on GPUs (the paper), the model's own on CPU
    max_model_len: int = 16000
    max_reasoning_tokens: int = 8192
    tensor_parallel: int = 1
    data_parallel: int = 1                   # vllm: engine replicas on this node
    gpu_memory_utilization: float | None = None
    prompt: str | None = None                # dataset template name or file
    instructions: str | None = None          # TSV qid -> instruction
    keep_tail: bool = True
    tag: str = "rank1"
    missing: str = "error"                   # "error" | "skip": docids absent from the corpus
    chunk_size: int = 256                    # pairs per durable journal write
    batch_size: int = 16                     # transformers engine only
    device: str | None = None                # transformers engine only
    shard: str | None = None                 # "I/N": rerank only this share of the queries (job arrays)
    engine_options: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Pair:
    qid: str
    docid: str
    first_stage_rank: int
    prompt: str
    prompt_sha256: str
    truncated: bool

    @property
    def key(self) -> tuple[str, str]:
        return self.qid, self.docid


@dataclass(slots=True)
class PreparedRerank:
    """A validated rerank job: every input read and every prompt built, no model loaded."""

    run: Run
    pairs: list[Pair]
    options: RerankOptions
    model: ResolvedModel
    tokens: VerdictTokens
    max_reasoning_tokens: int
    engine_config: EngineConfig
    settings: dict[str, Any]
    dropped_missing: int = 0

    @property
    def queries(self) -> int:
        return len({p.qid for p in self.pairs})


@dataclass(slots=True)
class RerankStats:
    pairs: int = 0
    queries: int = 0
    resumed: int = 0
    generated: int = 0              # distinct prompts sent to the engine
    output_tokens: int = 0
    stop: int = 0
    forced: int = 0
    fallback: int = 0
    truncated: int = 0
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
    traces: dict[tuple[str, str], Trace]
    stats: RerankStats


class ProgressReporter(Protocol):
    def start(self, total: int, completed: int, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def stop(self) -> None: ...


class NoProgress:
    def start(self, total: int, completed: int, description: str) -> None: ...
    def advance(self, n: int) -> None: ...
    def stop(self) -> None: ...


# --- prepare -------------------------------------------------------------------------------

def load_tokenizer(model: ResolvedModel):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model.path)
    except (OSError, ValueError) as exc:
        raise InputError(f"--model {model.spec}: cannot load its tokenizer ({exc})") from None


def model_context(model: ResolvedModel) -> int | None:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model.path)
    except (OSError, ValueError):
        return model.info.context if model.info else None
    return getattr(config, "max_position_embeddings", None)


def fit_prompts(tokenizer, queries: Sequence[str], passages: Sequence[str], budget: int) -> list[tuple[str, bool]]:
    """Build prompts; a prompt over `budget` tokens has its passage (only) cut by tokens to fit."""
    built = [prompts.build_prompt(q, p) for q, p in zip(queries, passages)]
    lengths: list[int] = []
    for start in range(0, len(built), TOKENIZE_CHUNK):  # in chunks: all token ids at once cost GBs
        lengths.extend(len(ids) for ids in tokenizer(built[start:start + TOKENIZE_CHUNK])["input_ids"])
    out = []
    for prompt, length, query, passage in zip(built, lengths, queries, passages):
        if length <= budget:
            out.append((prompt, False))
            continue
        passage_ids = tokenizer(passage, add_special_tokens=False)["input_ids"]
        keep = max(0, len(passage_ids) - (length - budget))
        while True:
            cut = prompts.build_prompt(query, tokenizer.decode(passage_ids[:keep]))
            if len(tokenizer(cut)["input_ids"]) <= budget or keep == 0:
                break
            keep = max(0, keep - 8)
        if len(tokenizer(cut)["input_ids"]) > budget:
            raise InputError(f"query text alone exceeds the prompt budget of {budget} tokens: {query[:80]!r}...; "
                             "raise --max-model-len or lower --max-reasoning-tokens")
        out.append((cut, True))
    return out


def _first_few(items: Iterable[str], n: int = 5) -> str:
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else f" ({len(items)} in all)")


def check_parallelism(options: RerankOptions) -> None:
    """--tensor-parallel and --data-parallel fit the backend and the GPUs (or cores) this process sees."""
    if options.tensor_parallel < 1:
        raise InputError(f"--tensor-parallel must be at least 1, found {options.tensor_parallel}")
    if options.data_parallel < 1:
        raise InputError(f"--data-parallel must be at least 1, found {options.data_parallel}")
    if options.data_parallel == 1:
        return
    if options.backend != "vllm":
        hint = " (give each server its own --base-url instead)" if options.backend == "openai" else ""
        raise InputError(f"--data-parallel is for --backend vllm{hint}")
    from .engines.vllm_replicas import plan_replicas_here

    plan_replicas_here(options.data_parallel, options.tensor_parallel)


def prepare_rerank(run_path: str, source: CollectionSource, options: RerankOptions) -> PreparedRerank:
    """Read and check every input and build every prompt; raises InputError before any model loads."""
    if options.top_k <= 0:
        raise InputError(f"--top-k must be a positive number of documents per query, found {options.top_k}")
    if options.missing not in ("error", "skip"):
        raise InputError(f"--missing must be 'error' or 'skip', found {options.missing!r}")
    if options.chunk_size <= 0:
        raise InputError(f"--chunk-size must be positive, found {options.chunk_size}")
    check_parallelism(options)
    model = resolve_model(options.model)
    template = prompts.resolve_template(options.prompt)
    run = read_run(run_path)
    if options.shard:
        from .shard import SHARD_KEY, format_shard, parse_shard, shard_queries

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
        from .collection import read_instructions_file

        instructions = read_instructions_file(options.instructions)

    wanted = {entry.docid for entries in run.values() for entry in entries[: options.top_k]}
    documents: dict[str, Document] = source.load_documents(wanted)
    missing = sorted(wanted - documents.keys())
    if missing and options.missing == "error":
        raise InputError(f"{len(missing)} documents of the run's top {options.top_k} are not in "
                         f"{source.describe()}: {_first_few(missing)}. Pass --missing skip to drop them.")
    if missing:
        log.warning("dropping %d documents missing from %s: %s", len(missing), source.describe(), _first_few(missing))

    context = model_context(model)
    max_model_len = options.max_model_len
    if context and max_model_len > context:
        log.warning("--max-model-len %d exceeds the model's context of %d tokens; using %d",
                    max_model_len, context, context)
        max_model_len = context
    reasoning = options.max_reasoning_tokens
    if reasoning <= 0:
        raise InputError(f"--max-reasoning-tokens must be positive, found {reasoning}")
    if max_model_len - reasoning - REPAIR_MARGIN < MIN_PROMPT_TOKENS:
        reasoning = max_model_len // 2
        log.warning("--max-reasoning-tokens %d leaves no room for the prompt in %d tokens of context; using %d",
                    options.max_reasoning_tokens, max_model_len, reasoning)
    budget = max_model_len - reasoning - REPAIR_MARGIN

    tokenizer = load_tokenizer(model)
    tokens = VerdictTokens.from_tokenizer(tokenizer)
    if tokens.true_id == tokens.false_id:
        raise InputError(f"--model {model.spec}: ' true' and ' false' start with the same token; not a rank1 model")

    keys: list[tuple[str, int, RunEntry]] = []
    query_texts: list[str] = []
    passages: list[str] = []
    for qid, entries in run.items():
        query = queries[qid]
        text = prompts.rank1_query(query.text, instructions.get(qid, query.instruction), template)
        for position, entry in enumerate(entries[: options.top_k], start=1):
            doc = documents.get(entry.docid)
            if doc is None:
                continue
            keys.append((qid, position, entry))
            query_texts.append(text)
            passages.append(prompts.passage_text(doc.title, doc.text))
    fitted = _fit_unique(tokenizer, query_texts, passages, budget)
    pairs = [Pair(qid, entry.docid, position, prompt, prompts.prompt_sha256(prompt), truncated)
             for (qid, position, entry), (prompt, truncated) in zip(keys, fitted)]

    dtype = options.dtype or default_dtype()
    settings = {
        "format": TRACE_FORMAT,
        "model": model.spec,
        "prompt_template": template.name if template else None,
        "prompt_template_sha256": prompts.prompt_sha256(template.text) if template else None,
        "max_reasoning_tokens": reasoning,
        "max_model_len": max_model_len,
        "dtype": dtype,
    }
    if options.shard:
        settings[SHARD_KEY] = format_shard(index, count)
    engine_config = EngineConfig(
        model=model.path, dtype=dtype, max_model_len=max_model_len, tensor_parallel=options.tensor_parallel,
        data_parallel=options.data_parallel,
        gpu_memory_utilization=options.gpu_memory_utilization or 0.0, device=options.device,
        batch_size=options.batch_size,
    )
    return PreparedRerank(run, pairs, options, model, tokens, reasoning, engine_config, settings, len(missing))


def _fit_unique(tokenizer, queries: list[str], passages: list[str], budget: int) -> list[tuple[str, bool]]:
    """fit_prompts over distinct (query, passage) pairs only."""
    index: dict[tuple[str, str], int] = {}
    for pair in zip(queries, passages):
        index.setdefault(pair, len(index))
    unique = list(index)
    fitted = fit_prompts(tokenizer, [q for q, _ in unique], [p for _, p in unique], budget)
    return [fitted[index[pair]] for pair in zip(queries, passages)]


# --- execute -------------------------------------------------------------------------------

def _trace(prepared: PreparedRerank, pair: Pair, *, score, verdict, reasoning, lt, lf, completion, tokens) -> Trace:
    return Trace(pair.qid, pair.docid, pair.first_stage_rank, score, verdict, reasoning, lt, lf, completion,
                 tokens, pair.truncated, prepared.model.spec, pair.prompt_sha256, prepared.settings)


def trace_from_generation(prepared: PreparedRerank, pair: Pair, generation: Generation) -> Trace:
    """A scored trace when the reasoning finished with usable logprobs, else a pending one."""
    found = verdict_logprobs(generation.last_logprobs, prepared.tokens)
    if found is None:
        return _trace(prepared, pair, score=None, verdict=None, reasoning=generation.text, lt=None, lf=None,
                      completion=PENDING, tokens=generation.output_tokens)
    lt, lf = found
    return _trace(prepared, pair, score=relevance_score(lt, lf), verdict=verdict_from_stop(generation.stop_reason),
                  reasoning=generation.text, lt=lt, lf=lf, completion="stop", tokens=generation.output_tokens)


def execute_rerank(prepared: PreparedRerank, engine: Engine, journal: TraceJournal,
                   progress: ProgressReporter | None = None) -> RerankResult:
    """Generate, repair and score every pair not already in the journal; return the final ranking."""
    progress = progress or NoProgress()
    stats = RerankStats(pairs=len(prepared.pairs), queries=prepared.queries)
    started = time.perf_counter()
    wanted = {pair.key: pair for pair in prepared.pairs}
    stale = [key for key, t in journal.records.items() if key in wanted and t.prompt_sha256 != wanted[key].prompt_sha256]
    if stale:
        raise InputError(f"{journal.path}: {len(stale)} traced pairs were made from other prompts (e.g. "
                         f"{stale[0][0]}/{stale[0][1]}: the query, document or instruction changed). "
                         "Pass --overwrite to start over.")
    done = {key for key, t in journal.finished().items() if key in wanted}
    stats.resumed = len(done)
    pending = {key for key in journal.pending() if key in wanted}
    to_generate = [pair for pair in prepared.pairs if pair.key not in done and pair.key not in pending]

    groups: dict[str, list[Pair]] = {}
    for pair in to_generate:
        groups.setdefault(pair.prompt, []).append(pair)
    unique_prompts = list(groups)
    settings = GenerationSettings(max_tokens=prepared.max_reasoning_tokens, stop=prompts.STOP_STRINGS, logprobs=20)

    progress.start(len(prepared.pairs), len(done), f"reranking with {prepared.model.spec}")
    buffer: list[Trace] = []

    def flush() -> None:
        journal.append(buffer)
        progress.advance(sum(1 for t in buffer if t.completion != PENDING))
        buffer.clear()

    engine_started = time.perf_counter()
    try:
        for index, generation in engine.generate(unique_prompts, settings):
            stats.generated += 1
            stats.output_tokens += generation.output_tokens
            for pair in groups[unique_prompts[index]]:
                buffer.append(trace_from_generation(prepared, pair, generation))
            if len(buffer) >= prepared.options.chunk_size:
                flush()
        flush()
        stats.engine_seconds = time.perf_counter() - engine_started

        repair_started = time.perf_counter()
        progress.advance(_repair(prepared, engine, journal))
        stats.repair_seconds = time.perf_counter() - repair_started
    except KeyboardInterrupt:
        flush()
        raise
    except InputError:
        raise
    except Exception as exc:
        flush()
        saved = len([k for k in journal.finished() if k in wanted])
        where = f" {saved} of {len(wanted)} pairs are saved in {journal.path}; run the same command again to resume." \
            if journal.path else ""
        raise EngineFailure(f"the {engine.name} engine failed: {type(exc).__name__}: {exc}.{where}") from exc
    finally:
        progress.stop()

    traces = {key: t for key, t in journal.records.items() if key in wanted}
    for trace in traces.values():
        stats.stop += trace.completion == "stop"
        stats.forced += trace.completion == "forced"
        stats.fallback += trace.completion == "fallback"
        stats.truncated += trace.truncated
    ranking = final_ranking(prepared, traces)
    journal.finalize(pair.key for pair in ordered_pairs(prepared, ranking))
    stats.elapsed = time.perf_counter() - started
    return RerankResult(ranking, traces, stats)


def _repair(prepared: PreparedRerank, engine: Engine, journal: TraceJournal) -> int:
    """Force a verdict for every pending pair, all in one batched pass (as the reference does)."""
    wanted = {pair.key: pair for pair in prepared.pairs}
    pending = [t for key, t in journal.pending().items() if key in wanted]
    if not pending:
        return 0
    repair_index: dict[str, int] = {}
    slots = [repair_index.setdefault(repair_prompt(wanted[t.key].prompt, t.reasoning), len(repair_index))
             for t in pending]
    verdicts = engine.force_verdict(list(repair_index), prepared.tokens.true_id, prepared.tokens.false_id)
    repaired = []
    for trace, slot in zip(pending, slots):
        found = verdicts[slot]
        lt, lf = found.logprob_true, found.logprob_false
        pair = wanted[trace.key]
        if lt is None or lf is None:
            repaired.append(_trace(prepared, pair, score=FALLBACK_SCORE, verdict=None, reasoning=trace.reasoning,
                                   lt=lt, lf=lf, completion="fallback", tokens=trace.output_tokens))
        else:
            repaired.append(_trace(prepared, pair, score=relevance_score(lt, lf), verdict="true" if lt >= lf else "false",
                                   reasoning=trace.reasoning, lt=lt, lf=lf, completion="forced",
                                   tokens=trace.output_tokens))
    return journal.append(repaired)


# --- final order ---------------------------------------------------------------------------

def final_ranking(prepared: PreparedRerank, traces: dict[tuple[str, str], Trace]) -> dict[str, list[tuple[str, float]]]:
    """Top-k by rank1 score (ties, fallbacks included, by first-stage rank), then the tail in
    first-stage order with lower scores (with keep_tail), so no document of the input is lost."""
    top_k = prepared.options.top_k
    ranking: dict[str, list[tuple[str, float]]] = {}
    for qid, entries in prepared.run.items():
        scored = [(traces[(qid, e.docid)].score, position, e.docid)
                  for position, e in enumerate(entries[:top_k], start=1) if (qid, e.docid) in traces]
        scored.sort(key=lambda item: (-item[0], item[1]))
        docs = [(docid, score) for score, _, docid in scored]
        if prepared.options.keep_tail:
            floor = min((score for score, _, _ in scored), default=0.0)
            docs.extend((e.docid, floor - i) for i, e in enumerate(entries[top_k:], start=1))
        ranking[qid] = docs
    return ranking


def ordered_pairs(prepared: PreparedRerank, ranking: dict[str, list[tuple[str, float]]]) -> list[Pair]:
    """Pairs in the order of the output run (traces are written in this order)."""
    by_key = {pair.key: pair for pair in prepared.pairs}
    return [by_key[(qid, docid)] for qid, docs in ranking.items() for docid, _ in docs if (qid, docid) in by_key]

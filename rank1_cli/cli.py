"""The `rank1` command: parses options and calls the library. Nothing else lives here."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .engines import ENGINES, VLLM_SPECULATIVE_METHODS
from .errors import EngineFailure, InputError, OptionError
from .evaluation.compare import DEFAULT_ALPHA
from .evaluation.compare import FORMATS as COMPARE_FORMATS
from .evaluation.fusion import METHODS as FUSION_METHODS
from .evaluation.fusion import NORMALISATIONS
from .evaluation.significance import (
    CORRECTIONS,
    DEFAULT_ROUNDS,
    DEFAULT_SEED,
    DEFAULT_WILCOXON_METHOD,
    TESTS,
    WILCOXON_METHODS,
)
from .reasoning.store import STORE_ENV, StoreError, store_path

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Rerank TREC runs with the rank1 reasoning rerankers, and evaluate runs like trec_eval.\n\n"
         "Every command reads '-' as stdin and writes '-' to stdout; logs and progress go to stderr.",
)


Backend = Enum("Backend", {name: name for name in ENGINES}, type=str)
BACKEND_HELP = "; ".join(f"{e.name}: {e.help}" for e in ENGINES.values())
Speculative = Enum("Speculative", {name: name for name in VLLM_SPECULATIVE_METHODS}, type=str)


class Missing(str, Enum):
    error = "error"
    skip = "skip"


class StoreFormat(str, Enum):
    table = "table"
    json = "json"


KEEP_EXCLUDED_HELP = ("Keep documents graded -100 in the qrels (ir_datasets' BRIGHT: excluded from evaluation) as trec_eval "
                      "does, as unjudged non-relevant positions. Default: remove them from the runs and qrels first, "
                      "as BRIGHT's own scorer does.")


class OutputFormat(str, Enum):
    table = "table"
    tsv = "tsv"
    json = "json"


# Options shared by `rerank` and `sweep`: declared once, here.
RunArg = Annotated[str, typer.Argument(help="First-stage TREC run to rerank ('-' for stdin, .gz ok).")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="rank1 alias (see `rank1 models`), Hugging Face id, or local model folder.")]
DatasetOpt = Annotated[Optional[str], typer.Option(help="ir_datasets id for queries and documents (documents fetched by id from its docstore).")]
CorpusOpt = Annotated[Optional[str], typer.Option(help="Local corpus: JSONL {doc_id, title, text} or TSV docid<TAB>[title<TAB>]text; .gz ok.")]
QueriesOpt = Annotated[Optional[str], typer.Option(help="Local queries: TSV qid<TAB>text or JSONL {qid, text}.")]
TopKOpt = Annotated[int, typer.Option("--top-k", "-k", help="Rerank the top K documents of each query (the paper: 100).")]
BackendOpt = Annotated[Backend, typer.Option(help=f"Inference engine ({BACKEND_HELP}).")]
DtypeOpt = Annotated[Optional[str], typer.Option(help="Model dtype: float16, bfloat16, float32, auto (the model's own). Default: float16 on GPUs (the paper), auto on CPU.")]
MaxModelLenOpt = Annotated[int, typer.Option(help="Context length for prompt plus reasoning; longer passages are truncated to fit (the paper: 16000).")]
MaxReasoningTokensOpt = Annotated[int, typer.Option(help="Token budget for reasoning; unfinished reasoning gets a forced verdict (the paper: 8192). 0: no reasoning, the verdict is forced right after the prompt (one prefill per pair).")]
TensorParallelOpt = Annotated[Optional[int], typer.Option(help="vllm and ray backends: GPUs per model replica (tensor parallelism). Default 1.")]
DataParallelOpt = Annotated[Optional[int], typer.Option(help="vllm backend: model replicas on this node, each in its own process on its own --tensor-parallel GPUs (on CPU: its own cores); the pairs are shared out as they finish. Default 1.")]
GpuMemoryOpt = Annotated[Optional[float], typer.Option(help="vllm and ray backends: share of GPU memory vLLM may take (default 0.9; 0.3 of RAM on CPU).")]
SpeculativeOpt = Annotated[Optional[Speculative], typer.Option(help="vllm backend: exact speculative decoding, the same tokens and scores (ngram: drafts from the prompt, which rank1's reasoning quotes). Expected faster on GPUs; slower on CPUs. Default: none.")]
RayAddressOpt = Annotated[Optional[str], typer.Option(help="ray backend: the Ray cluster (HOST:PORT of `ray start --head`). Default: $RAY_ADDRESS, else a local Ray started for the run.")]
ReplicasOpt = Annotated[Optional[int], typer.Option(help="ray backend: vLLM replicas across the cluster, each on its own --tensor-parallel GPUs (on CPU: --cpus-per-replica cores). Default 1.")]
CpusPerReplicaOpt = Annotated[Optional[int], typer.Option(help="ray backend: CPUs each replica reserves (on a CPU cluster, the cores it runs on). Default 1.")]
BaseUrlOpt = Annotated[Optional[list[str]], typer.Option("--base-url", help="openai backend: address of a vLLM server (http://HOST:PORT), repeatable; the servers share the pairs, and one that fails is dropped with its pairs moved to the others.")]
ApiKeyEnvOpt = Annotated[Optional[str], typer.Option(help="openai backend: environment variable holding the servers' API key (sent as a Bearer token, never shown). Default OPENAI_API_KEY.")]
ConcurrencyOpt = Annotated[Optional[int], typer.Option(help="openai backend: requests in flight per server. Default 32.")]
ServedModelOpt = Annotated[Optional[str], typer.Option(help="openai backend: the model name the servers serve (default: asked from them).")]
BatchSizeOpt = Annotated[Optional[int], typer.Option(help="transformers backend: sequences generated together. Default 16.")]
DeviceOpt = Annotated[Optional[str], typer.Option(help="transformers backend: cpu, cuda, cuda:1 ... (default: cuda if available).")]
ShardOpt = Annotated[Optional[str], typer.Option(help="Rerank only shard I of N of the queries (1-based: 1/4 ... 4/4), e.g. one per job of an array; join the outputs with `rank1 merge`.")]
PromptOpt = Annotated[Optional[str], typer.Option(help="Dataset prompt (e.g. SciFact, BrightRetrieval_leetcode) or a file containing FILL_QUERY_HERE.")]
InstructionsOpt = Annotated[Optional[str], typer.Option(help="TSV qid<TAB>instruction, appended to each query (FollowIR style).")]
KeepTailOpt = Annotated[bool, typer.Option("--keep-tail/--no-keep-tail", help="Keep documents beyond the top K, in first-stage order below the reranked ones.")]
TagOpt = Annotated[str, typer.Option(help="Run tag (6th column) of the output run.")]
MissingOpt = Annotated[Missing, typer.Option(help="Documents of the run missing from the corpus: error, or skip them with a warning.")]
StoreOpt = Annotated[Optional[str], typer.Option("--store", help=f"The reasoning store (SQLite): every generation is kept there and never made twice; a rerun resumes from it. Default: ${STORE_ENV}, else $XDG_CACHE_HOME/rank1-cli/store.sqlite (~/.cache/...). Use local disk, not a network filesystem.")]
NoStoreOpt = Annotated[bool, typer.Option("--no-store", help="Use no store: nothing is reused, and a crash loses the reasoning done so far.")]
ChunkSizeOpt = Annotated[int, typer.Option(help="Generations per store commit (each committed and fsynced before it counts); the engine itself is never held back.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Recompute every pair, ignoring the store; the new results replace the stored ones.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Read and check every input, build every prompt and consult the store, then print the plan (pairs, prompt tokens, what the store holds, an estimate of tokens and time from earlier runs of the model) without loading the model.")]
PlanFormatOpt = Annotated[StoreFormat, typer.Option("--plan-format", help="With --dry-run: table (for people) or json (for scripts).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, summary or warnings; errors only.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Also show the engine's own logs and warnings (vLLM, torch).")]


# The engine options of rerank and sweep: command-line parameter -> the engines' option name.
ENGINE_PARAMETERS = {"tensor_parallel": "tensor_parallel", "data_parallel": "data_parallel",
                     "gpu_memory_utilization": "gpu_memory_utilization", "speculative": "speculative",
                     "base_url": "base_urls", "ray_address": "ray_address", "replicas": "replicas",
                     "cpus_per_replica": "cpus_per_replica",
                     "api_key_env": "api_key_env", "concurrency": "concurrency", "served_model": "served_model",
                     "batch_size": "batch_size", "device": "device"}


def _engine_given(parameters: dict) -> dict:
    return {option: parameters[name] for name, option in ENGINE_PARAMETERS.items()}


def _engine_keywords(engine_given: dict) -> dict:
    """The engine options given on the command line, as the engines take them."""
    given = {name: value for name, value in engine_given.items() if value is not None}
    if given.get("base_urls"):
        given["base_urls"] = tuple(given["base_urls"])
    if given.get("speculative"):
        given["speculative"] = given["speculative"].value
    return given


def _rerank_options(backend: Backend, engine_given: dict, **fields):
    """RerankOptions from the command line; engine options only for those given."""
    from .engines import engine_options
    from .workflows.rerank import RerankOptions

    options = engine_options(backend.value, **_engine_keywords(engine_given))
    return RerankOptions(backend=backend.value, engine_options=options, **fields)


def _input_files(run: str, corpus, queries, instructions, prompt, store: str | None, no_store: bool) -> list:
    """The files a rerank reads (outputs may name none of them)."""
    from .io.text import check_stdin_once

    check_stdin_once(run, corpus, queries, instructions, prompt)
    inputs = [("first-stage run", run), ("corpus", corpus), ("queries", queries), ("instructions", instructions),
              ("prompt file", prompt if prompt and Path(prompt).is_file() else None)]
    if not no_store:
        inputs.append(("reasoning store", str(store_path(store))))
    return inputs


def _print_plan(prepared, reasoning_store, overwrite: bool, plan_format: StoreFormat,
                budgets: tuple[int, ...] = ()) -> None:
    """--dry-run: the plan on stdout."""
    from .workflows.plan import format_plan, plan_rerank

    plan = plan_rerank(prepared, reasoning_store, recompute=overwrite, budgets=budgets)
    sys.stdout.write(plan.to_json() + "\n" if plan_format is StoreFormat.json else format_plan(plan))


def _with_engine(console, scorer, verbose: bool, work):
    """Run `work()` (which may start the scorer's engine) with the engine's own output sent to a log,
    Ctrl-C turned into exit 130 with what was saved, and the engine closed at the end."""
    from .console import engine_output_captured
    from .signals import watch_interrupts

    with watch_interrupts() as watch, engine_output_captured(console, capture=not verbose) as engine_log:
        try:
            return work()
        except (KeyboardInterrupt, EngineFailure) as exc:
            # Ctrl-C also reaches vLLM's engine processes, so it may surface as "engine dead".
            if isinstance(exc, EngineFailure) and not watch.interrupted:
                if engine_log:
                    engine_log.keep = True
                    raise EngineFailure(f"{exc} The engine's own log: {engine_log.path}") from exc
                raise
            console.print("rank1: interrupted;" + scorer.saved_hint(), markup=False, soft_wrap=True)
            raise typer.Exit(130)
        finally:
            try:
                scorer.close()
            except Exception as exc:  # never let a failing shutdown hide the run's own outcome
                console.print(f"rank1: warning: engine shutdown: {exc}", markup=False, soft_wrap=True)


@app.command()
def rerank(
    run: RunArg,
    model: ModelOpt,
    output: Annotated[str, typer.Option("--output", "-o", help="Reranked TREC run ('-' for stdout). Written only when the rerank completes.")] = "-",
    dataset: DatasetOpt = None,
    corpus: CorpusOpt = None,
    queries: QueriesOpt = None,
    traces: Annotated[Optional[str], typer.Option(help="JSONL of reasoning traces, one line per pair, written when the rerank completes. Default: OUTPUT with .traces.jsonl in place of .gz and .trec (or .run, .txt, .tsv, .res; any other suffix is kept), none for stdout. An existing file there must be rank1 traces; its reasoning is imported into the store before it is replaced.")] = None,
    top_k: TopKOpt = 100,
    backend: BackendOpt = Backend.vllm,
    dtype: DtypeOpt = None,
    max_model_len: MaxModelLenOpt = 16000,
    max_reasoning_tokens: MaxReasoningTokensOpt = 8192,
    reason_top: Annotated[Optional[int], typer.Option(help="A cascade: judge every top-k pair without reasoning (budget 0), then reason at the full budget only on each query's N best by that score; they rank above the other k - N, which keep their budget-0 order. Both stages go into the store. Default: reason on every pair.")] = None,
    early_exit: Annotated[Optional[str], typer.Option(help="Early exit by confidence: increasing budgets B1,B2,...,B ending at --max-reasoning-tokens. Every pair reasons to B1; an unfinished one gets its verdict forced there (as `rank1 sweep` derives budget B1) and stops if that verdict is --confidence sure, else its reasoning goes on to B2 from where it stopped, and so on. Each pair is judged exactly as a rerank at its exit budget judges it, and stored under that budget.")] = None,
    confidence: Annotated[float, typer.Option(help="With --early-exit: the probability of the forced verdict, max(P(true), P(false)), at which a pair stops reasoning; above 0.5 and below 1. The default, 0.95, is the threshold of DEER's published runs (arXiv 2504.15895).")] = 0.95,
    tensor_parallel: TensorParallelOpt = None,
    data_parallel: DataParallelOpt = None,
    gpu_memory_utilization: GpuMemoryOpt = None,
    speculative: SpeculativeOpt = None,
    ray_address: RayAddressOpt = None,
    replicas: ReplicasOpt = None,
    cpus_per_replica: CpusPerReplicaOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    served_model: ServedModelOpt = None,
    shard: ShardOpt = None,
    prompt: PromptOpt = None,
    instructions: InstructionsOpt = None,
    keep_tail: KeepTailOpt = True,
    tag: TagOpt = "rank1",
    missing: MissingOpt = Missing.error,
    store: StoreOpt = None,
    no_store: NoStoreOpt = False,
    chunk_size: ChunkSizeOpt = 256,
    overwrite: OverwriteOpt = False,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = None,
    dry_run: DryRunOpt = False,
    plan_format: PlanFormatOpt = StoreFormat.table,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rerank a TREC run with a rank1 model; write the new run and the reasoning traces.

    Pairs already in the reasoning store (from this run or any earlier one with the same model and
    settings) are not generated again: a rerun after a crash or Ctrl-C resumes, and reranking
    another first-stage run reuses every pair the two share."""
    from .console import RichProgress, print_rerank_summary, setup_logging, stderr_console
    from .io.collection import CollectionSource
    from .io.outputs import check_outputs, check_traces_target, default_traces
    from .io.text import check_writable, stdout_reserved
    from .io.traces import write_traces
    from .io.trec import check_tag, write_run
    from .reasoning.early_exit import parse_early_exit
    from .reasoning.store_admin import keep_replaced_traces
    from .workflows.rerank import execute_rerank, make_scorer, prepare_rerank, traced_generations

    console = stderr_console()
    setup_logging(console, quiet=quiet, verbose=verbose)
    check_writable(output)
    check_tag(tag)
    traces = traces or default_traces(output)
    if traces:
        check_writable(traces)
    inputs = _input_files(run, corpus, queries, instructions, prompt, store, no_store)
    check_outputs([("output run", output), ("traces", traces)], inputs)
    check_traces_target(traces)
    _check_store_choice(store, no_store)
    options = _rerank_options(
        backend, _engine_given(locals()),
        model=model, top_k=top_k, dtype=dtype, max_model_len=max_model_len,
        max_reasoning_tokens=max_reasoning_tokens, prompt=prompt, instructions=instructions, keep_tail=keep_tail,
        tag=tag, missing=missing.value, chunk_size=chunk_size, shard=shard, reason_top=reason_top,
        early_exit=parse_early_exit(early_exit) if early_exit else None, confidence=confidence)
    reasoning_store = _open_store(store, no_store, create=not dry_run)
    try:
        prepared = prepare_rerank(run, CollectionSource(dataset=dataset, corpus=corpus, queries=queries), options,
                                  store=reasoning_store)
        if dry_run:
            _print_plan(prepared, reasoning_store, overwrite, plan_format)
            return
        kept = keep_replaced_traces(traces, reasoning_store, lambda: traced_generations(prepared))
        if kept is not None and kept.added and not quiet:
            console.print(f"store: {kept.added} generations of the traces being replaced ({traces}) imported "
                          f"({kept.already} there already)", markup=False, highlight=False)
        scorer = make_scorer(prepared, reasoning_store, recompute=overwrite)
        with stdout_reserved() as real_stdout:
            result = _with_engine(console, scorer, verbose,
                                  lambda: execute_rerank(prepared, scorer, RichProgress(console, enabled=not quiet)))
            if traces:
                write_traces(traces, result.traces.values())
            write_run(output, result.ranking, tag, stdout=real_stdout)
    finally:
        if reasoning_store is not None:
            reasoning_store.close()
    if not quiet:
        print_rerank_summary(console, result.stats, traces, reasoning_store.path if reasoning_store else None)


def _check_store_choice(path: str | None, no_store: bool) -> None:
    if no_store and path:
        raise InputError("--store and --no-store contradict each other; give one")


def _open_store(path: str | None, no_store: bool, create: bool = True):
    """The store, checked for writing before anything else is; None with --no-store, or when it
    does not exist and is not to be created (a --dry-run)."""
    from .reasoning.store import Store

    if no_store or not create and not store_path(path).exists():
        return None
    return Store(store_path(path), create=create)


@app.command()
def sweep(
    run: RunArg,
    model: ModelOpt,
    budgets: Annotated[str, typer.Option(help="Reasoning budgets in tokens, comma-separated (e.g. 0,256,512,1024; 0: no reasoning). The largest is generated (or taken from the store); each smaller one is derived from it: reasoning that finished within the budget keeps its verdict, the rest is cut at the budget and given a forced verdict, one batched pass per budget.")],
    output_dir: Annotated[str, typer.Option("--output-dir", "-o", help="Folder for budget-B.trec and budget-B.traces.jsonl per budget, and sweep.tsv / sweep.json (the table); created if missing, files in it replaced.")],
    qrels: Annotated[Optional[str], typer.Option("--qrels", help="TREC qrels file or ir_datasets id: the table then has each budget's measures (as `rank1 eval`).")] = None,
    measure: Annotated[Optional[list[str]], typer.Option("--measure", help="With --qrels: measure, repeatable (names as `rank1 eval -m`). Default: nDCG@10.")] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format", "-f", help="The table on stdout: table (for people), tsv, json.")] = OutputFormat.table,
    dataset: DatasetOpt = None,
    corpus: CorpusOpt = None,
    queries: QueriesOpt = None,
    top_k: TopKOpt = 100,
    backend: BackendOpt = Backend.vllm,
    dtype: DtypeOpt = None,
    max_model_len: MaxModelLenOpt = 16000,
    tensor_parallel: TensorParallelOpt = None,
    data_parallel: DataParallelOpt = None,
    gpu_memory_utilization: GpuMemoryOpt = None,
    speculative: SpeculativeOpt = None,
    ray_address: RayAddressOpt = None,
    replicas: ReplicasOpt = None,
    cpus_per_replica: CpusPerReplicaOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: ApiKeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    served_model: ServedModelOpt = None,
    prompt: PromptOpt = None,
    instructions: InstructionsOpt = None,
    keep_tail: KeepTailOpt = True,
    tag: Annotated[str, typer.Option(help="Run tag; each budget's run is tagged TAG-BUDGET.")] = "rank1",
    missing: MissingOpt = Missing.error,
    store: StoreOpt = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Keep the sweep's generations in a temporary store, deleted at the end: nothing is reused later.")] = False,
    chunk_size: ChunkSizeOpt = 256,
    overwrite: Annotated[bool, typer.Option(help="Generate the largest budget again, ignoring the store, and derive the others anew.")] = False,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = None,
    dry_run: DryRunOpt = False,
    plan_format: PlanFormatOpt = StoreFormat.table,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Rerank at several reasoning budgets for the cost of one: generate at the largest, derive the
    others (what `rank1 rerank --max-reasoning-tokens B` gives, pair for pair), and tabulate
    reasoning length, share finished and, with --qrels, the measures per budget."""
    import json
    import tempfile

    from .console import RichProgress, setup_logging, stderr_console
    from .io.collection import CollectionSource, load_qrels
    from .io.outputs import check_outputs
    from .io.text import stdout_reserved
    from .io.trec import check_tag
    from .reasoning.store import Store
    from .workflows.rerank import make_scorer, prepare_rerank
    from .workflows.sweep import check_output_dir, format_tsv, output_files, parse_budgets, write_sweep, write_table
    from .workflows.sweep import sweep as sweep_budgets

    console = stderr_console()
    setup_logging(console, quiet=quiet, verbose=verbose)
    chosen = parse_budgets(budgets)
    check_tag(tag)
    check_output_dir(output_dir)
    inputs = _input_files(run, corpus, queries, instructions, prompt, store, no_store) + [("qrels", qrels)]
    check_outputs(output_files(output_dir, chosen), inputs)
    _check_store_choice(store, no_store)
    options = _rerank_options(
        backend, _engine_given(locals()),
        model=model, top_k=top_k, dtype=dtype, max_model_len=max_model_len, max_reasoning_tokens=max(chosen),
        prompt=prompt, instructions=instructions, keep_tail=keep_tail, tag=tag, missing=missing.value,
        chunk_size=chunk_size)
    judged_by = load_qrels(qrels) if qrels else None
    reasoning_store = _open_store(store, no_store, create=not dry_run)
    with tempfile.TemporaryDirectory(prefix="rank1-sweep-") as scratch:
        try:
            prepared = prepare_rerank(run, CollectionSource(dataset=dataset, corpus=corpus, queries=queries), options,
                                      store=reasoning_store)
            if dry_run:
                _print_plan(prepared, reasoning_store, overwrite, plan_format, budgets=chosen)
                return
            if no_store:
                reasoning_store = Store(Path(scratch) / "store.sqlite")
            scorer = make_scorer(prepared, reasoning_store, recompute=overwrite)
            with stdout_reserved():
                runs = _with_engine(console, scorer, verbose, lambda: sweep_budgets(
                    prepared, chosen, scorer, RichProgress(console, enabled=not quiet)))
        finally:
            if reasoning_store is not None:
                reasoning_store.close()
    rows = write_sweep(runs, output_dir, tag, qrels=judged_by, measures=measure or ["nDCG@10"])
    if output_format is OutputFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif output_format is OutputFormat.tsv:
        sys.stdout.write(format_tsv(rows))
    else:
        write_table(rows, f"reasoning budgets (files in {output_dir})", sys.stdout)


# serve's --api-key-env is the key its own clients send; the openai backend's key takes this flag there.
SERVE_ENGINE_PARAMETERS = {**{name: option for name, option in ENGINE_PARAMETERS.items() if name != "api_key_env"},
                           "openai_api_key_env": "api_key_env"}


@app.command()
def serve(
    model: ModelOpt,
    host: Annotated[str, typer.Option(help="Address to listen on. The default answers this machine only; 0.0.0.0 answers every network the machine is on (then set --api-key-env).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the API key clients must send (Authorization: Bearer KEY); compared in constant time, never logged. Default: no key.")] = None,
    backend: BackendOpt = Backend.vllm,
    dtype: DtypeOpt = None,
    max_model_len: MaxModelLenOpt = 16000,
    max_reasoning_tokens: MaxReasoningTokensOpt = 8192,
    prompt: PromptOpt = None,
    store: StoreOpt = None,
    no_store: NoStoreOpt = False,
    chunk_size: ChunkSizeOpt = 256,
    tensor_parallel: TensorParallelOpt = None,
    data_parallel: DataParallelOpt = None,
    gpu_memory_utilization: GpuMemoryOpt = None,
    speculative: SpeculativeOpt = None,
    ray_address: RayAddressOpt = None,
    replicas: ReplicasOpt = None,
    cpus_per_replica: CpusPerReplicaOpt = None,
    base_url: BaseUrlOpt = None,
    openai_api_key_env: Annotated[Optional[str], typer.Option(help="openai backend: environment variable holding the vLLM servers' API key (sent as a Bearer token, never shown). Default OPENAI_API_KEY.")] = None,
    concurrency: ConcurrencyOpt = None,
    served_model: ServedModelOpt = None,
    batch_size: BatchSizeOpt = None,
    device: DeviceOpt = None,
    max_documents: Annotated[int, typer.Option(help="Most documents one request may send (more: 413).")] = 1000,
    max_document_chars: Annotated[int, typer.Option(help="Longest document, query or instruction a request may send, in characters (longer: 413). Passages too long for the model's context are cut to fit, as in rank1 rerank.")] = 32000,
    max_queued_pairs: Annotated[int, typer.Option(help="Most documents waiting for the engine; a request that would queue more is answered 503 with Retry-After.")] = 4096,
    batch_window: Annotated[float, typer.Option(help="Seconds a request waits for others to join its engine batch (requests that arrive while the engine is busy join the next batch anyway).")] = 0.01,
    request_timeout: Annotated[float, typer.Option(help="Seconds a request may wait for its judgements before it is answered 504 (what was judged stays in the store).")] = 600.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No access log; errors only.")] = False,
) -> None:
    """Serve a rank1 model as a reranking service: POST /v1/rerank (also /rerank, /v2/rerank) as
    Cohere's and vLLM's rerank APIs take it, GET /health, GET /v1/models.

    The model loads once; requests arriving together are judged in one engine batch, through the
    same reasoning store as rank1 rerank, so a pair judged before is answered from it. What the
    engine libraries print goes to stderr, the server's log."""
    from .console import setup_logging, stderr_console
    from .serve import ServeLimits, ServeSettings
    from .serve import serve as run_server

    from .engines import engine_options

    given = locals()
    engine_keywords = _engine_keywords({option: given[name] for name, option in SERVE_ENGINE_PARAMETERS.items()})
    setup_logging(stderr_console(), quiet=quiet)
    _check_store_choice(store, no_store)
    try:
        engine_options(backend.value, **engine_keywords)
    except OptionError as exc:     # the engines call the openai backend's key api_key_env: its flag here differs
        raise OptionError(exc.template.replace("{api_key_env", "{openai_api_key_env")) from None
    limits = ServeLimits(max_documents=max_documents, max_document_chars=max_document_chars,
                         max_queued_pairs=max_queued_pairs, batch_window=batch_window, request_timeout=request_timeout)
    rank1_options = dict(model=model, backend=backend.value, dtype=dtype, max_model_len=max_model_len,
                         max_reasoning_tokens=max_reasoning_tokens, prompt=prompt,
                         store=None if no_store else store_path(store), chunk_size=chunk_size, verbose=True,
                         **engine_keywords)
    run_server(rank1_options, ServeSettings(host=host, port=port, api_key_env=api_key_env, limits=limits,
                                            access_log=not quiet))


@app.command()
def merge(
    runs: Annotated[list[str], typer.Argument(help="The output runs of `rank1 rerank --shard I/N`, one per shard, in any order.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Merged run ('-' for stdout).")] = "-",
    traces: Annotated[Optional[list[str]], typer.Option("--traces", help="The shards' traces, one per RUN in the same order (repeatable). Default: each RUN with .traces.jsonl, as rerank names them.")] = None,
    traces_output: Annotated[Optional[str], typer.Option(help="Merged traces. Default: OUTPUT with .traces.jsonl (none for stdout).")] = None,
    first_stage: Annotated[Optional[str], typer.Option(help="The run that was reranked: queries come out in its order, and each of its queries must be in its shard's output.")] = None,
    store: Annotated[Optional[str], typer.Option("--store", help=f"The reasoning store the shards' generations are imported into (jobs on a cluster each used their own). Default: ${STORE_ENV}, else $XDG_CACHE_HOME/rank1-cli/store.sqlite.")] = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Import nothing into a store.")] = False,
) -> None:
    """Join the outputs of a sharded rerank (--shard I/N) into one run and one traces file,
    after checking that every shard is there, finished, made with the same settings, and that no
    query is in two shards."""
    from .console import setup_logging, stderr_console
    from .io.outputs import check_outputs, check_traces_target, default_traces
    from .io.text import check_stdin_once, check_writable
    from .reasoning.store_admin import check_store
    from .workflows.shard import merge_shards

    console = stderr_console()
    setup_logging(console)
    traces = traces or [default_traces(run) for run in runs]
    if len(traces) != len(runs) or None in traces:
        raise InputError(f"give one --traces per run, in the order of the runs ({len(runs)} runs, {len(traces)} traces)")
    traces_output = traces_output or default_traces(output)
    check_writable(output)
    if traces_output:
        check_writable(traces_output)
    inputs = [(f"shard run {i + 1}", path) for i, path in enumerate(runs)]
    inputs += [(f"shard traces {i + 1}", path) for i, path in enumerate(traces)]
    inputs.append(("first-stage run", first_stage))
    check_stdin_once(runs, traces, first_stage)
    if not no_store:
        inputs.append(("reasoning store", str(store_path(store))))
    check_outputs([("merged run", output), ("merged traces", traces_output)], inputs)
    check_traces_target(traces_output)
    _check_store_choice(store, no_store)
    if not no_store:
        check_store(store)
    summary = merge_shards(runs, traces, output, traces_output, first_stage=first_stage)
    console.print(f"merged {summary.shards} shards ({summary.empty_shards} empty): {summary.queries} queries, "
                  f"{summary.traces} traced pairs" + (f"; traces in {traces_output}" if traces_output else ""),
                  markup=False, highlight=False)
    if no_store:
        return
    from .reasoning.store_admin import import_files

    sources = [traces_output] if traces_output else traces     # the merged traces hold every shard's
    report = import_files(sources, store)       # merge_shards checked every line as the import does
    console.print(f"store: {report.added} new generations imported into {report.store} "
                  f"({report.already} were there already)", markup=False, highlight=False)


store_app = typer.Typer(no_args_is_help=True, help="The reasoning store: what it holds, import and export of traces, pruning.")
app.add_typer(store_app, name="store")
StorePath = Annotated[Optional[str], typer.Option("--store", help=f"The store file. Default: ${STORE_ENV}, else $XDG_CACHE_HOME/rank1-cli/store.sqlite (~/.cache/...).")]


@store_app.command("info")
def store_info(store: StorePath = None, output_format: Annotated[StoreFormat, typer.Option("--format", "-f", help="table (for people) or json.")] = StoreFormat.table) -> None:
    """Size of the store, and how many generations it holds per model and settings."""
    from .reasoning.store_admin import print_info

    print_info(store, output_format.value, sys.stdout)


@store_app.command("import")
def store_import(
    files: Annotated[list[str], typer.Argument(help="Traces files of `rank1 rerank` (any version, any machine) or files of `rank1 store export`; .gz and '-' ok.")],
    store: StorePath = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="For traces of rank1-cli versions that did not record the model's revision or engine: the model they were made with (alias, id or folder).")] = None,
    backend: Annotated[Backend, typer.Option(help="With --model: the engine those traces were made with.")] = Backend.vllm,
) -> None:
    """Load traces into the store (each line checked: prompt hash, settings, verdict), so their
    pairs are never generated again; lines already stored are kept as they are."""
    from .console import setup_logging, stderr_console
    from .reasoning.store_admin import import_files

    console = stderr_console()
    setup_logging(console)
    report = import_files(files, store, model=model, backend=backend.value)
    console.print(f"imported {report.added} new generations from {report.lines} lines of {len(files)} files "
                  f"({report.already} already stored) into {report.store}", markup=False, highlight=False)


@store_app.command("export")
def store_export(
    output: Annotated[str, typer.Option("--output", "-o", help="JSONL file ('-' for stdout, .gz ok): one generation per line, with its settings.")] = "-",
    store: StorePath = None,
) -> None:
    """Write every stored generation as JSONL, for another machine's `rank1 store import`."""
    from .io.outputs import check_outputs
    from .reasoning.store_admin import export_store

    check_outputs([("export", output)], [("store", str(store_path(store)))])
    count = export_store(store, output)
    print(f"exported {count} generations", file=sys.stderr)


@store_app.command("prune")
def store_prune(
    model: Annotated[str, typer.Option("--model", "-m", help="Delete every generation of this model (as `rank1 store info` shows it).")],
    store: StorePath = None,
) -> None:
    """Delete a model's generations from the store and reclaim the space."""
    from .reasoning.store_admin import prune_store

    removed = prune_store(store, model)
    print(f"deleted {removed} generations of {model}", file=sys.stderr)


@app.command(name="eval")
def evaluate(
    runs: Annotated[list[str], typer.Argument(help="TREC runs to evaluate ('-' for stdin, .gz ok).")],
    qrels: Annotated[str, typer.Option("--qrels", help="TREC qrels file or an ir_datasets id.")],
    measure: Annotated[Optional[list[str]], typer.Option("--measure", "-m", help="Measure, repeatable: trec_eval names (ndcg_cut.10, map, P.5, recall.100, all_trec, official) or nDCG@10, AP, P@5, R@100, RR, Judged@10. Default: nDCG@10.")] = None,
    per_query: Annotated[bool, typer.Option("--per-query", "-q", help="Also show each query's values (trec_eval -q).")] = False,
    complete: Annotated[bool, typer.Option("--complete", "-c", help="Average over every query of the qrels; queries missing from the run count as 0 (trec_eval -c).")] = False,
    relevance_level: Annotated[int, typer.Option("--relevance-level", "-l", help="Least grade counted relevant by binary measures (trec_eval -l).")] = 1,
    judged_only: Annotated[bool, typer.Option("--judged-only", "-J", help="Drop unjudged documents from the run first (trec_eval -J).")] = False,
    keep_excluded: Annotated[bool, typer.Option("--keep-excluded", help=KEEP_EXCLUDED_HELP)] = False,
    output_format: Annotated[OutputFormat, typer.Option("--format", "-f", help="table (for people), tsv (exactly trec_eval's layout), json (for scripts).")] = OutputFormat.table,
) -> None:
    """Evaluate runs against qrels with trec_eval's own numbers (pytrec_eval)."""
    from .evaluation.trec_eval import run_eval
    from .io.collection import load_qrels
    from .io.text import check_stdin_once

    _warnings_to_stderr_when_they_come()
    check_stdin_once(runs, qrels)
    run_eval(runs, load_qrels(qrels), measure or ["nDCG@10"], per_query=per_query, complete=complete,
             relevance_level=relevance_level, judged_only=judged_only, keep_excluded=keep_excluded,
             output_format=output_format.value, stdout=sys.stdout)


def _warnings_to_stderr_when_they_come() -> None:
    """Set up rank1's logging on stderr at the first warning: rich is not imported before."""
    import logging

    def first_warning(record: logging.LogRecord) -> None:
        from .console import setup_logging, stderr_console

        setup_logging(stderr_console())
        logging.getLogger("rank1_cli").handle(record)

    pending = logging.Handler(logging.WARNING)
    pending.emit = first_warning  # type: ignore[method-assign]
    logger = logging.getLogger("rank1_cli")
    logger.handlers[:] = [pending]
    logger.setLevel(logging.WARNING)
    logger.propagate = False


SignificanceTest = Enum("SignificanceTest", {name: name for name in TESTS}, type=str)
Correction = Enum("Correction", {name: name for name in CORRECTIONS}, type=str)
WilcoxonMethod = Enum("WilcoxonMethod", {name: name for name in WILCOXON_METHODS}, type=str)
CompareFormat = Enum("CompareFormat", {name: name for name in COMPARE_FORMATS}, type=str)
FusionMethod = Enum("FusionMethod", {name: name for name in FUSION_METHODS}, type=str)
Normalisation = Enum("Normalisation", {name: name for name in NORMALISATIONS}, type=str)


def _choices(table: dict) -> str:
    return "; ".join(f"{name}: {entry.help}" for name, entry in table.items())


@app.command()
def compare(
    baseline: Annotated[str, typer.Argument(help="The baseline run; every RUN is compared with it. A TREC run or MTEB predictions JSON ('-' for stdin, .gz ok).")],
    runs: Annotated[list[str], typer.Argument(help="Runs to compare with the baseline.")],
    qrels: Annotated[str, typer.Option("--qrels", help="TREC qrels file or an ir_datasets id.")],
    measure: Annotated[Optional[list[str]], typer.Option("--measure", "-m", help="Measure, repeatable, as in `rank1 eval` (nDCG@10, AP, P@5, R@100, RR, trec_eval names); only measures averaged over queries can be compared. Default: nDCG@10.")] = None,
    test: Annotated[SignificanceTest, typer.Option(help=f"Paired two-sided significance test per run and measure. {_choices(TESTS)}.")] = SignificanceTest.t,
    correction: Annotated[Correction, typer.Option(help=f"Multiple-testing correction over all runs x measures. {_choices(CORRECTIONS)}.")] = Correction.holm,
    alpha: Annotated[float, typer.Option(help="Significance level: a difference is marked significant when its corrected p-value is below it; the confidence interval of each mean difference is at 1 - alpha.")] = DEFAULT_ALPHA,
    rounds: Annotated[int, typer.Option(help="--test permutation: random sign-flip rounds (exact when 2^queries is at most this).")] = DEFAULT_ROUNDS,
    seed: Annotated[int, typer.Option(help="--test permutation: random seed, so a rerun gives the same p-values.")] = DEFAULT_SEED,
    wilcoxon_method: Annotated[WilcoxonMethod, typer.Option(help=f"--test wilcoxon: how p is found. {_choices(WILCOXON_METHODS)}.")] = WilcoxonMethod(DEFAULT_WILCOXON_METHOD),
    relevance_level: Annotated[int, typer.Option("--relevance-level", "-l", help="Least grade counted relevant by binary measures (trec_eval -l).")] = 1,
    judged_only: Annotated[bool, typer.Option("--judged-only", "-J", help="Drop unjudged documents from the runs first (trec_eval -J).")] = False,
    keep_excluded: Annotated[bool, typer.Option("--keep-excluded", help=KEEP_EXCLUDED_HELP)] = False,
    output_format: Annotated[CompareFormat, typer.Option("--format", "-f", help=f"Output format. {_choices(COMPARE_FORMATS)}.")] = CompareFormat.table,
    per_query: Annotated[bool, typer.Option("--per-query", help="tsv, json: each query's value per run and measure, and beside the p-values the effect size, Cohen's d_z = mean(run - baseline) / sd(run - baseline) (sd with ddof=1) over the per-query values.")] = False,
    traces: Annotated[Optional[list[str]], typer.Option("--traces", help="The traces `rank1 rerank` wrote with each RUN, repeatable, one per RUN in their order: adds each run's calibration (ECE, Brier score, reliability bins: 10 equal-width bins of the score on [0, 1]) over its traced pairs the qrels judge, relevant at --relevance-level, to the json and table formats.")] = None,
) -> None:
    """Compare runs with a baseline: mean and difference per measure, a paired significance test
    corrected over all runs x measures, the confidence interval of the difference, and wins/ties/losses.

    Every query of the qrels counts, and a query missing from a run counts as 0 (trec_eval -c),
    so that the tests pair the same queries."""
    from .evaluation.compare import check_output, compare_runs, write_comparison
    from .io.collection import load_qrels
    from .io.text import check_stdin_once

    _warnings_to_stderr_when_they_come()
    check_stdin_once(baseline, runs, qrels, traces)
    check_output(output_format.value, per_query=per_query, calibration=bool(traces))
    comparison = compare_runs(baseline, runs, load_qrels(qrels), measure or ["nDCG@10"], test=test.value,
                              correction=correction.value, alpha=alpha, rounds=rounds, seed=seed,
                              wilcoxon_method=wilcoxon_method.value, relevance_level=relevance_level,
                              judged_only=judged_only, keep_excluded=keep_excluded, traces=traces)
    write_comparison(comparison, output_format.value, sys.stdout, per_query=per_query)


@app.command()
def fuse(
    runs: Annotated[list[str], typer.Argument(help="Runs to fuse, e.g. the first stage and rank1's rerank of it (TREC runs or MTEB predictions JSON; '-' for stdin, .gz ok).")],
    method: Annotated[FusionMethod, typer.Option(help=f"How to fuse. {_choices(FUSION_METHODS)}.")] = FusionMethod.rrf,
    weights: Annotated[Optional[str], typer.Option(help="One weight per run, in the order of the runs, separated by commas (e.g. 0.3,0.7).")] = None,
    normalise: Annotated[Optional[Normalisation], typer.Option(help=f"--method interpolate: per-query normalisation before interpolating. {_choices(NORMALISATIONS)}. Default: minmax.")] = None,
    rrf_k: Annotated[Optional[float], typer.Option("--rrf-k", help="--method rrf: the k of 1 / (k + rank). Default: 60.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="Fused TREC run ('-' for stdout), scores strictly decreasing as doubles and as C floats, so every evaluator keeps its order.")] = "-",
    tag: Annotated[str, typer.Option(help="Run tag (6th column) of the output run.")] = "fused",
) -> None:
    """Fuse runs into one: reciprocal rank fusion, or interpolation of per-query normalised scores
    (rank1's probabilities bunch near 0 and 1; fusing them with the first stage is the usual remedy).
    Equal fused scores are ordered by the first run's ranking."""
    from .evaluation.fusion import check_options, parse_weights
    from .evaluation.fusion import fuse as fuse_runs
    from .io.outputs import check_outputs
    from .io.text import check_stdin_once, check_writable
    from .io.trec import check_tag, read_run_scores, write_run

    _warnings_to_stderr_when_they_come()
    check_writable(output)
    check_tag(tag)
    check_stdin_once(runs)
    check_outputs([("fused run", output)], [(f"run #{i + 1}", path) for i, path in enumerate(runs)])
    options = {"weights": parse_weights(weights) if weights is not None else None,
               "normalise": normalise.value if normalise else None, "rrf_k": rrf_k}
    check_options(method.value, len(runs), **options)
    ranking = fuse_runs([read_run_scores(path) for path in runs], method.value, **options)
    write_run(output, ranking, tag)


@app.command()
def report(
    runs: Annotated[list[str], typer.Argument(metavar="RUN", help="The reranked runs (`rank1 rerank`'s outputs of the same baseline; .gz ok): the first leads the per-query views, the others are shown beside it in every view.")],
    baseline: Annotated[str, typer.Option(help="The first-stage run that was reranked: the measures are compared with it, and its ranks are the 'first stage' column.")],
    qrels: Annotated[str, typer.Option(help="TREC qrels file or an ir_datasets id.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML report ('-' for stdout): one file, scripts and data inline, opens offline.")],
    traces: Annotated[Optional[list[str]], typer.Option(help="The traces `rank1 rerank` wrote with each RUN, repeatable, one per RUN in their order. Default: each RUN with .traces.jsonl, as rerank names them.")] = None,
    measure: Annotated[Optional[list[str]], typer.Option("--measure", "-m", help="Measure, repeatable, as in `rank1 eval` (means over queries only); the first orders the per-query view. Default: nDCG@10, AP, P@10.")] = None,
    test: Annotated[SignificanceTest, typer.Option(help=f"Paired two-sided significance test against the baseline, as in `rank1 compare`. {_choices(TESTS)}.")] = SignificanceTest.t,
    correction: Annotated[Correction, typer.Option(help=f"Multiple-testing correction over all runs x measures. {_choices(CORRECTIONS)}.")] = Correction.holm,
    alpha: Annotated[float, typer.Option(help="Significance level: a difference is marked '*' when its corrected p-value is below it; the confidence intervals are at 1 - alpha.")] = DEFAULT_ALPHA,
    rounds: Annotated[int, typer.Option(help="--test permutation: random sign-flip rounds (exact when 2^queries is at most this).")] = DEFAULT_ROUNDS,
    seed: Annotated[int, typer.Option(help="--test permutation: random seed, so a rerun gives the same p-values.")] = DEFAULT_SEED,
    relevance_level: Annotated[int, typer.Option("--relevance-level", "-l", help="Least grade counted relevant, by the binary measures and in agreement with the verdicts (trec_eval -l).")] = 1,
    keep_excluded: Annotated[bool, typer.Option("--keep-excluded", help=KEEP_EXCLUDED_HELP)] = False,
    top: Annotated[int, typer.Option(help="Embed the reasoning (each run's) of each query's top N documents of the first run's new ranking.")] = 10,
    max_disagreements: Annotated[int, typer.Option(help="Embed the reasoning of at most N documents whose verdict contradicts the qrels (the most confident first, relevant-judged-false and non-relevant-judged-true in turn), and with several runs of at most N documents they judge otherwise (the widest spread of scores first).")] = 500,
    reasoning_chars: Annotated[int, typer.Option(help="Cut each embedded reasoning text to N characters.")] = 4000,
    dataset: DatasetOpt = None,
    corpus: CorpusOpt = None,
    queries: QueriesOpt = None,
    passage_chars: Annotated[int, typer.Option(help="With --dataset or --corpus/--queries: cut each passage shown beside an embedded reasoning, and each query text, to N characters.")] = 2000,
) -> None:
    """Write an HTML report for the error analysis of one or more reranks of a baseline: the
    measures with significance against the baseline; completion states, truncated passages and
    reasoning lengths; per-query differences, and each query's documents (first-stage rank, new
    rank, grade, score, verdict, reasoning; each run's side by side), with the query and passage
    texts given the collection; the documents where rank1's verdict contradicts the qrels, and
    where the runs disagree; calibration (reliability, ECE, Brier score); CSV downloads.

    The reasoning embedded is bounded by --top, --max-disagreements and --reasoning-chars, so the
    file stays small on large runs (every reranked document's numbers are embedded)."""
    from .io.collection import CollectionSource
    from .io.outputs import check_outputs, default_traces
    from .io.text import check_stdin_once, check_writable
    from .workflows.report import DEFAULT_MEASURES, ReportLimits, write_report

    _warnings_to_stderr_when_they_come()
    if traces and len(traces) != len(runs):
        raise InputError(f"give one --traces per run, in the order of the runs: {len(runs)} runs, {len(traces)} traces")
    traces = traces or [default_traces(run) for run in runs]
    if None in traces:
        raise InputError("the run is read from stdin: give its traces with --traces")
    limits = ReportLimits(top=top, max_disagreements=max_disagreements, reasoning_chars=reasoning_chars,
                          passage_chars=passage_chars)
    source = CollectionSource(dataset=dataset, corpus=corpus, queries=queries) if dataset or corpus or queries else None
    check_stdin_once(runs, baseline, qrels, traces, corpus, queries)
    check_writable(output)
    check_outputs([("report", output)], [*(("run", run) for run in runs), ("baseline", baseline), ("qrels", qrels),
                                         *(("traces", t) for t in traces), ("corpus", corpus), ("queries", queries)])
    result = write_report(runs[0], baseline, qrels, traces[0], output, measures=measure or DEFAULT_MEASURES,
                          relevance_level=relevance_level, test=test.value, correction=correction.value, alpha=alpha,
                          rounds=rounds, seed=seed, keep_excluded=keep_excluded, limits=limits, source=source,
                          others=list(zip(runs[1:], traces[1:])))
    if output != "-":
        print(f"wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB): {len(result.queries):,} queries, "
              f"{len(result.documents):,} reranked pairs", file=sys.stderr)


@app.command()
def models() -> None:
    """List the rank1 model aliases with their base model, size and memory needed."""
    from rich.console import Console
    from rich.table import Table

    from .console import print_table
    from .reasoning.models import MODELS

    table = Table("alias", "Hugging Face id", "base", "params", "weights", "context")
    for info in MODELS.values():
        table.add_row(info.alias, info.hf_id, info.base + (" (AWQ int4)" if info.quantization else ""),
                      f"{info.params_b:g}B", f"~{info.weights_gb:g} GB", f"{info.context}")
    print_table(Console(), table)
    Console(stderr=True).print("Memory is for the weights; vLLM adds KV cache up to --gpu-memory-utilization.")


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(Exit, ClickException, Abort) classes of every click layout typer may use.

    typer up to 0.2x raises click's own exceptions; newer typer vendors click as `typer._click` and
    defines Exit and Abort itself. Both are collected, so a typer upgrade cannot turn usage
    errors back into tracebacks.
    """
    import importlib

    exits: list[type] = [typer.Exit]
    errors: list[type] = []
    aborts: list[type] = [typer.Abort]
    for name in ("typer._click.exceptions", "click.exceptions"):
        if name == "click.exceptions" and "click" not in sys.modules:
            continue  # typer did not import click, so it raises none of click's exceptions
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        exits += [module.Exit] if hasattr(module, "Exit") else []
        errors += [module.ClickException] if hasattr(module, "ClickException") else []
        aborts += [module.Abort] if hasattr(module, "Abort") else []
    return tuple(exits), tuple(errors), tuple(aborts)


def main() -> None:
    exits, click_errors, aborts = _click_exception_types()
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except InputError as exc:
        message = exc.for_command_line() if isinstance(exc, OptionError) else str(exc)
        print(f"rank1: error: {message}", file=sys.stderr)
        sys.exit(2)
    except (EngineFailure, StoreError) as exc:
        print(f"rank1: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except exits as exc:
        sys.exit(exc.exit_code)
    except click_errors as exc:  # usage errors: click prints the usage line and the message
        exc.show()
        sys.exit(exc.exit_code if isinstance(getattr(exc, "exit_code", None), int) else 2)
    except (*aborts, KeyboardInterrupt):
        print("rank1: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)


if __name__ == "__main__":
    main()

"""The `rank1` command: parses options and calls the library. Nothing else lives here."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import EngineFailure, InputError, OptionError
from .engines import ENGINES
from .store import STORE_ENV, StoreError, store_path

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
    help="Rerank TREC runs with the rank1 reasoning rerankers, and evaluate runs like trec_eval.\n\n"
         "Every command reads '-' as stdin and writes '-' to stdout; logs and progress go to stderr.",
)


Backend = Enum("Backend", {name: name for name in ENGINES}, type=str)
BACKEND_HELP = "; ".join(f"{e.name}: {e.help}" for e in ENGINES.values())


class Missing(str, Enum):
    error = "error"
    skip = "skip"


class StoreFormat(str, Enum):
    table = "table"
    json = "json"


class OutputFormat(str, Enum):
    table = "table"
    tsv = "tsv"
    json = "json"


def _default_traces(output: str) -> str | None:
    if output == "-":
        return None
    path = Path(output)
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    stem = stem.rsplit(".", 1)[0] if "." in stem else stem
    return str(path.with_name(stem + ".traces.jsonl"))


@app.command()
def rerank(
    run: Annotated[str, typer.Argument(help="First-stage TREC run to rerank ('-' for stdin, .gz ok).")],
    model: Annotated[str, typer.Option("--model", "-m", help="rank1 alias (see `rank1 models`), Hugging Face id, or local model folder.")],
    output: Annotated[str, typer.Option("--output", "-o", help="Reranked TREC run ('-' for stdout). Written only when the rerank completes.")] = "-",
    dataset: Annotated[Optional[str], typer.Option(help="ir_datasets id for queries and documents (documents fetched by id from its docstore).")] = None,
    corpus: Annotated[Optional[str], typer.Option(help="Local corpus: JSONL {doc_id, title, text} or TSV docid<TAB>[title<TAB>]text; .gz ok.")] = None,
    queries: Annotated[Optional[str], typer.Option(help="Local queries: TSV qid<TAB>text or JSONL {qid, text}.")] = None,
    traces: Annotated[Optional[str], typer.Option(help="JSONL of reasoning traces, one line per pair, written when the rerank completes. Default: OUTPUT with .traces.jsonl (none for stdout). An existing file there must be rank1 traces.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", help="Rerank the top K documents of each query (the paper: 100).")] = 100,
    backend: Annotated[Backend, typer.Option(help=f"Inference engine ({BACKEND_HELP}).")] = Backend.vllm,
    dtype: Annotated[Optional[str], typer.Option(help="Model dtype: float16, bfloat16, float32, auto (the model's own). Default: float16 on GPUs (the paper), auto on CPU.")] = None,
    max_model_len: Annotated[int, typer.Option(help="Context length for prompt plus reasoning; longer passages are truncated to fit (the paper: 16000).")] = 16000,
    max_reasoning_tokens: Annotated[int, typer.Option(help="Token budget for reasoning; unfinished reasoning gets a forced verdict (the paper: 8192).")] = 8192,
    tensor_parallel: Annotated[Optional[int], typer.Option(help="vllm backend: GPUs per model replica (tensor parallelism). Default 1.")] = None,
    data_parallel: Annotated[Optional[int], typer.Option(help="vllm backend: model replicas on this node, each in its own process on its own --tensor-parallel GPUs (on CPU: its own cores); the pairs are shared out as they finish. Default 1.")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option(help="vllm backend: share of GPU memory vLLM may take (default 0.9; 0.3 of RAM on CPU).")] = None,
    base_url: Annotated[Optional[list[str]], typer.Option("--base-url", help="openai backend: address of a vLLM server (http://HOST:PORT), repeatable; the servers share the pairs, and one that fails is dropped with its pairs moved to the others.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option(help="openai backend: environment variable holding the servers' API key (sent as a Bearer token, never shown). Default OPENAI_API_KEY.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="openai backend: requests in flight per server. Default 32.")] = None,
    served_model: Annotated[Optional[str], typer.Option(help="openai backend: the model name the servers serve (default: asked from them).")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Rerank only shard I of N of the queries (1-based: 1/4 ... 4/4), e.g. one per job of an array; join the outputs with `rank1 merge`.")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="Dataset prompt (e.g. SciFact, BrightRetrieval_leetcode) or a file containing FILL_QUERY_HERE.")] = None,
    instructions: Annotated[Optional[str], typer.Option(help="TSV qid<TAB>instruction, appended to each query (FollowIR style).")] = None,
    keep_tail: Annotated[bool, typer.Option("--keep-tail/--no-keep-tail", help="Keep documents beyond the top K, in first-stage order below the reranked ones.")] = True,
    tag: Annotated[str, typer.Option(help="Run tag (6th column) of the output run.")] = "rank1",
    missing: Annotated[Missing, typer.Option(help="Documents of the run missing from the corpus: error, or skip them with a warning.")] = Missing.error,
    store: Annotated[Optional[str], typer.Option("--store", help=f"The reasoning store (SQLite): every generation is kept there and never made twice; a rerun resumes from it. Default: ${STORE_ENV}, else $XDG_CACHE_HOME/rank1-cli/store.sqlite (~/.cache/...). Use local disk, not a network filesystem.")] = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Use no store: nothing is reused, and a crash loses the reasoning done so far.")] = False,
    chunk_size: Annotated[int, typer.Option(help="Generations per store commit (each committed and fsynced before it counts); the engine itself is never held back.")] = 256,
    overwrite: Annotated[bool, typer.Option(help="Recompute every pair, ignoring the store; the new results replace the stored ones.")] = False,
    batch_size: Annotated[Optional[int], typer.Option(help="transformers backend: sequences generated together. Default 16.")] = None,
    device: Annotated[Optional[str], typer.Option(help="transformers backend: cpu, cuda, cuda:1 ... (default: cuda if available).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, summary or warnings; errors only.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show the engine's own logs and warnings (vLLM, torch).")] = False,
) -> None:
    """Rerank a TREC run with a rank1 model; write the new run and the reasoning traces.

    Pairs already in the reasoning store (from this run or any earlier one with the same model and
    settings) are not generated again: a rerun after a crash or Ctrl-C resumes, and reranking
    another first-stage run reuses every pair the two share."""
    from .collection import CollectionSource
    from .engines import engine_options
    from .console import RichProgress, engine_output_captured, print_rerank_summary, setup_logging, stderr_console
    from .outputs import check_outputs, check_traces_target
    from .rerank import RerankOptions, execute_rerank, make_scorer, prepare_rerank
    from .signals import watch_interrupts
    from .textio import check_stdin_once, check_writable, stdout_reserved
    from .traces import write_traces
    from .trec import check_tag, write_run

    console = stderr_console()
    setup_logging(console, quiet=quiet, verbose=verbose)
    check_writable(output)
    check_tag(tag)
    traces = traces or _default_traces(output)
    if traces:
        check_writable(traces)
    inputs = [("first-stage run", run), ("corpus", corpus), ("queries", queries), ("instructions", instructions),
              ("prompt file", prompt if prompt and Path(prompt).is_file() else None)]
    check_stdin_once(run, corpus, queries, instructions, prompt)
    if not no_store:
        inputs.append(("reasoning store", str(store_path(store))))
    check_outputs([("output run", output), ("traces", traces)], inputs)
    check_traces_target(traces)
    _check_store_choice(store, no_store)
    given = {"tensor_parallel": tensor_parallel, "data_parallel": data_parallel,
             "gpu_memory_utilization": gpu_memory_utilization, "base_urls": tuple(base_url) if base_url else None,
             "api_key_env": api_key_env, "concurrency": concurrency, "served_model": served_model,
             "batch_size": batch_size, "device": device}
    chosen = engine_options(backend.value, **{name: value for name, value in given.items() if value is not None})
    options = RerankOptions(
        model=model, backend=backend.value, top_k=top_k, dtype=dtype, max_model_len=max_model_len,
        max_reasoning_tokens=max_reasoning_tokens, prompt=prompt, instructions=instructions,
        keep_tail=keep_tail, tag=tag, missing=missing.value, chunk_size=chunk_size, engine_options=chosen,
        shard=shard,
    )
    source = CollectionSource(dataset=dataset, corpus=corpus, queries=queries)
    prepared = prepare_rerank(run, source, options)
    reasoning_store = _open_store(store, no_store)
    scorer = make_scorer(prepared, reasoning_store, recompute=overwrite)
    try:
        with stdout_reserved() as real_stdout, watch_interrupts() as watch, \
                engine_output_captured(console, capture=not verbose) as engine_log:
            try:
                result = execute_rerank(prepared, scorer, RichProgress(console, enabled=not quiet))
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


def _open_store(path: str | None, no_store: bool):
    from .store import Store

    return None if no_store else Store(store_path(path))


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
    from .outputs import check_outputs, check_traces_target
    from .shard import merge_shards
    from .textio import check_stdin_once, check_writable

    console = stderr_console()
    setup_logging(console)
    traces = traces or [_default_traces(run) for run in runs]
    if len(traces) != len(runs) or None in traces:
        raise InputError(f"give one --traces per run, in the order of the runs ({len(runs)} runs, {len(traces)} traces)")
    traces_output = traces_output or _default_traces(output)
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
    summary = merge_shards(runs, traces, output, traces_output, first_stage=first_stage)
    console.print(f"merged {summary.shards} shards ({summary.empty_shards} empty): {summary.queries} queries, "
                  f"{summary.traces} traced pairs" + (f"; traces in {traces_output}" if traces_output else ""),
                  markup=False, highlight=False)
    if no_store:
        return
    from .store_admin import import_files

    sources = [traces_output] if traces_output else traces     # the merged traces hold every shard's
    try:
        report = import_files(sources, store)
    except InputError as exc:     # traces of an older rank1-cli: the merge itself is done
        message = exc.for_command_line() if isinstance(exc, OptionError) else str(exc)
        console.print(f"rank1: warning: the shards' reasoning was not imported into the store: {message}. "
                      "Use `rank1 store import --model ...`", markup=False, soft_wrap=True)
        return
    console.print(f"store: {report.added} new generations imported into {report.store} "
                  f"({report.already} were there already)", markup=False, highlight=False)


store_app = typer.Typer(no_args_is_help=True, help="The reasoning store: what it holds, import and export of traces, pruning.")
app.add_typer(store_app, name="store")
StorePath = Annotated[Optional[str], typer.Option("--store", help=f"The store file. Default: ${STORE_ENV}, else $XDG_CACHE_HOME/rank1-cli/store.sqlite (~/.cache/...).")]


@store_app.command("info")
def store_info(store: StorePath = None, output_format: Annotated[StoreFormat, typer.Option("--format", "-f", help="table (for people) or json.")] = StoreFormat.table) -> None:
    """Size of the store, and how many generations it holds per model and settings."""
    from .store_admin import print_info

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
    from .store_admin import import_files

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
    from .store_admin import export_store

    from .outputs import check_outputs

    check_outputs([("export", output)], [("store", str(store_path(store)))])
    count = export_store(store, output)
    print(f"exported {count} generations", file=sys.stderr)


@store_app.command("prune")
def store_prune(
    model: Annotated[str, typer.Option("--model", "-m", help="Delete every generation of this model (as `rank1 store info` shows it).")],
    store: StorePath = None,
) -> None:
    """Delete a model's generations from the store and reclaim the space."""
    from .store_admin import prune_store

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
    output_format: Annotated[OutputFormat, typer.Option("--format", "-f", help="table (for people), tsv (exactly trec_eval's layout), json (for scripts).")] = OutputFormat.table,
) -> None:
    """Evaluate runs against qrels with trec_eval's own numbers (pytrec_eval)."""
    import logging

    from .collection import load_qrels
    from .evaluate import run_eval
    from .textio import check_stdin_once

    def first_warning(record: logging.LogRecord) -> None:
        """Set up rank1's logging on stderr when a warning comes: rich is not imported before."""
        from .console import setup_logging, stderr_console

        setup_logging(stderr_console())
        logging.getLogger("rank1_cli").handle(record)

    pending = logging.Handler(logging.WARNING)
    pending.emit = first_warning  # type: ignore[method-assign]
    logger = logging.getLogger("rank1_cli")
    logger.handlers[:] = [pending]
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    check_stdin_once(runs, qrels)
    run_eval(runs, load_qrels(qrels), measure or ["nDCG@10"], per_query=per_query, complete=complete,
             relevance_level=relevance_level, judged_only=judged_only, output_format=output_format.value,
             stdout=sys.stdout)


from .significance import CORRECTIONS, DEFAULT_ROUNDS, DEFAULT_SEED, TESTS  # noqa: E402  (names and help only; scipy loads when a test runs)


@app.command()
def report(
    run: Annotated[str, typer.Argument(help="The reranked run (`rank1 rerank`'s output; .gz ok).")],
    baseline: Annotated[str, typer.Option(help="The first-stage run that was reranked: the measures are compared with it, and its ranks are the 'first stage' column.")],
    qrels: Annotated[str, typer.Option(help="TREC qrels file or an ir_datasets id.")],
    output: Annotated[str, typer.Option("--output", "-o", help="The HTML report ('-' for stdout): one file, scripts and data inline, opens offline.")],
    traces: Annotated[Optional[str], typer.Option(help="The traces `rank1 rerank` wrote with RUN. Default: RUN with .traces.jsonl, as rerank names them.")] = None,
    measure: Annotated[Optional[list[str]], typer.Option("--measure", "-m", help="Measure, repeatable, as in `rank1 eval` (means over queries only); the first orders the per-query view. Default: nDCG@10, AP, P@10.")] = None,
    test: Annotated[str, typer.Option(help="Significance test against the baseline: " + "; ".join(f"{t.name}: {t.help}" for t in TESTS.values()) + ".")] = "t",
    correction: Annotated[str, typer.Option(help="Correction of the p-values over the measures: " + "; ".join(f"{c.name}: {c.help}" for c in CORRECTIONS.values()) + ".")] = "holm",
    alpha: Annotated[float, typer.Option(help="Significance level (a '*' in the table); the confidence intervals are at 1 - alpha.")] = 0.05,
    rounds: Annotated[int, typer.Option(help="permutation test: random sign flips.")] = DEFAULT_ROUNDS,
    seed: Annotated[int, typer.Option(help="permutation test: random seed (the same seed, the same p-values).")] = DEFAULT_SEED,
    relevance_level: Annotated[int, typer.Option("--relevance-level", "-l", help="Least grade counted relevant, by the binary measures and in agreement with the verdicts (trec_eval -l).")] = 1,
    top: Annotated[int, typer.Option(help="Embed the reasoning of each query's top N documents of the new ranking.")] = 10,
    max_disagreements: Annotated[int, typer.Option(help="Embed the reasoning of at most N documents whose verdict contradicts the qrels (the most confident first, relevant-judged-false and non-relevant-judged-true in turn).")] = 500,
    reasoning_chars: Annotated[int, typer.Option(help="Cut each embedded reasoning text to N characters.")] = 4000,
) -> None:
    """Write an HTML report for the error analysis of a rerank: the measures with significance
    against the baseline; completion states, truncated passages and reasoning lengths; per-query
    differences, and each query's documents (first-stage rank, new rank, grade, score, verdict,
    reasoning); the documents where rank1's verdict contradicts the qrels; calibration.

    The reasoning embedded is bounded by --top, --max-disagreements and --reasoning-chars, so the
    file stays small on large runs (every reranked document's numbers are embedded)."""
    from .console import setup_logging, stderr_console
    from .outputs import check_outputs
    from .report import DEFAULT_MEASURES, ReportLimits, write_report
    from .textio import check_stdin_once, check_writable

    setup_logging(stderr_console())
    traces = traces or _default_traces(run)
    if traces is None:
        raise InputError("the run is read from stdin: give its traces with --traces")
    limits = ReportLimits(top=top, max_disagreements=max_disagreements, reasoning_chars=reasoning_chars)
    check_stdin_once(run, baseline, qrels, traces)
    check_writable(output)
    check_outputs([("report", output)], [("run", run), ("baseline", baseline), ("qrels", qrels), ("traces", traces)])
    result = write_report(run, baseline, qrels, traces, output, measures=measure or DEFAULT_MEASURES,
                          relevance_level=relevance_level, test=test, correction=correction, alpha=alpha, rounds=rounds,
                          seed=seed, limits=limits)
    if output != "-":
        print(f"wrote {output} ({Path(output).stat().st_size / 1e6:.1f} MB): {len(result.queries):,} queries, "
              f"{len(result.documents):,} reranked pairs", file=sys.stderr)


@app.command()
def models() -> None:
    """List the rank1 model aliases with their base model, size and memory needed."""
    from rich.console import Console
    from rich.table import Table

    from .models import MODELS

    table = Table("alias", "Hugging Face id", "base", "params", "weights", "context")
    for info in MODELS.values():
        table.add_row(info.alias, info.hf_id, info.base + (" (AWQ int4)" if info.quantization else ""),
                      f"{info.params_b:g}B", f"~{info.weights_gb:g} GB", f"{info.context}")
    Console().print(table)
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

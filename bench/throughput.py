#!/usr/bin/env python
"""Throughput of rank1-cli against the usual ways of calling vLLM, on the same pairs, in one process.

    .venv/bin/python bench/throughput.py --workload quick          # sample_data, 500 pairs (make bench-quick)
    .venv/bin/python bench/throughput.py --workload large          # 200 queries x 100 docs (make bench)
    .venv/bin/python bench/throughput.py --workload large --max-queries 20 --rounds 3
    .venv/bin/python bench/throughput.py --workload scale          # no model: run/corpus reading at scale

The engine is loaded once (load time excluded) and the same prompts go through each mode, the
modes interleaved (round r starts at the r-th mode) and repeated; the medians are reported.

  bare       one LLM.generate over all prompts with the reference sampling settings, scores read
             from the top-20 logprobs at the last position: the engine's own limit (no repair)
  rank1      rank1-cli end to end once the engine is loaded: prepare_rerank (reads the inputs,
             loads the tokenizer, builds and length-checks the prompts), the scorer with a new
             reasoning store in a temp dir (engine + store commits + repair pass), the run and
             traces written
  per_query  one LLM.generate per query, same settings (how query-by-query wrappers call it; no repair)
  reference  the reference implementation's way: a second engine with prefix caching off, one
             generate over all pairs (no dedup), one repair generate (max_tokens 1,
             allowed_token_ids [true, false], logprobs 20) for outputs missing either token

vLLM keeps its prefix cache across calls, so the main engine's cache is reset
(LLM.reset_prefix_cache) before every mode: no mode profits from an earlier one's cache.

Results: bench/results/<workload>.json (see bench/README.md for the fields).
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# vLLM 0.32 with torch >= 2.10 saves an AOT-compiled model but fails to load it back ("'function' object
# has no attribute 'finalize_loading'") and compiles again at every start; the older compile cache
# works, so the second engine (and the next run) starts in about half the time. Load time only: it is
# excluded from every figure, and both engines get the same setting.
os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib import command_line, machine_info, write_json_atomic  # noqa: E402  (bench/ is the script's folder)

# rank1-cli's own score and clean-up (pure functions, no heavy imports), so every mode scores alike.
from rank1_cli.reasoning.scoring import VerdictTokens, clean_unfinished, relevance_score, verdict_logprobs  # noqa: E402

RESULTS = HERE / "results"
TINY_MODEL = REPO / "sample_data" / "tiny-rank1"
MODES = ("bare", "rank1", "per_query", "reference")
STOP = ["</think> true", "</think> false"]
TARGETS = {"rank1_over_bare_max": 1.10, "rank1_over_reference_max": 1.0, "per_query_over_rank1_min": 1.5}
AGREEMENT_TOLERANCE = 1e-3


# --- workloads -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Workload:
    name: str
    run: Path
    corpus: Path
    queries: Path
    top_k: int
    budget: int                      # max reasoning tokens
    description: str


def workload(name: str) -> Workload:
    if name == "quick":
        sample = REPO / "sample_data"
        return Workload("quick", sample / "run.bm25.trec", sample / "corpus.jsonl", sample / "queries.tsv",
                        top_k=20, budget=64, description="sample_data: 25 queries, top 20 of run.bm25.trec")
    if name == "large":
        folder = HERE / "workload-large"
        sys.path.insert(0, str(HERE))
        import make_workload

        if not make_workload.is_current(folder):
            print(f"writing the synthetic workload into {folder} (bench/make_workload.py)", file=sys.stderr)
            make_workload.generate(folder)
        return Workload("large", folder / "run.trec", folder / "corpus.jsonl", folder / "queries.tsv",
                        top_k=100, budget=64,
                        description="bench/make_workload.py (seeded): 200 queries x 100 docs, ~200-word passages")
    raise SystemExit(f"unknown workload {name!r}")


def first_queries(run_path: Path, n: int, out: Path) -> Path:
    """A copy of the run with its first `n` queries (in file order)."""
    kept: list[str] = []
    seen: list[str] = []
    with open(run_path, encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            if not fields:
                continue
            if fields[0] not in seen:
                if len(seen) == n:
                    continue
                seen.append(fields[0])
            if fields[0] in seen:
                kept.append(line if line.endswith("\n") else line + "\n")
    out.write_text("".join(kept), encoding="utf-8")
    return out


# --- pure helpers (tested in tests/test_bench.py) ------------------------------------------

def score_from_logprobs(last: dict[int, float] | None, true_id: int, false_id: int) -> float | None:
    """P(true) over {true, false} from the last position's top logprobs; None if either is missing."""
    found = verdict_logprobs(last, VerdictTokens(true_id, false_id))
    return relevance_score(*found) if found else None


def rotated(modes: Sequence[str], round_index: int) -> list[str]:
    """Round r starts at the r-th mode, so no mode always runs first (or right after another)."""
    if not modes:
        return []
    k = round_index % len(modes)
    return list(modes[k:]) + list(modes[:k])


def median(values: Sequence[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """Mean, median, 90th percentile and max of the generated tokens per pair (the spread is what
    makes per-query calls wait for their slowest pair)."""
    ordered = sorted(lengths)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return {"mean": round(statistics.mean(ordered), 1), "median": statistics.median(ordered), "p90": p90,
            "max": ordered[-1]}


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def agreement(scores: Sequence[float | None], baseline: Sequence[float | None],
              tolerance: float = AGREEMENT_TOLERANCE) -> dict[str, Any]:
    """How closely one mode's scores match another's, pair by pair (both scored)."""
    both = [(a, b) for a, b in zip(scores, baseline) if a is not None and b is not None]
    if not both:
        return {"compared": 0, "within_tolerance": 0, "max_abs_diff": None}
    diffs = [abs(a - b) for a, b in both]
    return {"compared": len(both), "within_tolerance": sum(d <= tolerance for d in diffs),
            "max_abs_diff": max(diffs)}


def summarize(rounds: list[dict[str, dict[str, Any]]], pairs: int) -> dict[str, Any]:
    """Medians over rounds, rates and ratios. `rounds`: [{mode: {"seconds", "output_tokens", ...}}]."""
    modes = [m for m in MODES if any(m in r for r in rounds)]
    seconds = {m: median([r[m]["seconds"] for r in rounds if m in r]) for m in modes}
    tokens = {m: median([r[m]["output_tokens"] for r in rounds if m in r]) for m in modes}
    summary: dict[str, Any] = {"pairs": pairs}
    for m in MODES:
        summary[f"{m}_s"] = _round(seconds.get(m))
    cpu = {m: median([r[m].get("cpu_s") for r in rounds if m in r]) for m in modes}
    summary["cpu_s"] = {m: _round(cpu[m]) for m in modes}
    summary["cpu_main_process_s"] = {m: _round(median([r[m].get("cpu_main_s") for r in rounds if m in r]))
                                     for m in modes}
    summary["min_s"] = {m: _round(min(r[m]["seconds"] for r in rounds if m in r)) for m in modes}
    summary["rates"] = {m: {"pairs_per_s": _round(ratio(pairs, seconds[m])),
                            "generated_tokens_per_s": _round(ratio(tokens[m], seconds[m]))} for m in modes}
    ratios = {
        "rank1_over_bare": ratio(seconds.get("rank1"), seconds.get("bare")),
        "rank1_over_reference": ratio(seconds.get("rank1"), seconds.get("reference")),
        "per_query_over_rank1": ratio(seconds.get("per_query"), seconds.get("rank1")),
    }
    if "rank1" in modes:
        split_keys = ("prepare_s", "engine_s", "repair_s", "finalize_s", "write_s")
        split = {k: median([r["rank1"]["split"][k] for r in rounds if "rank1" in r]) for k in split_keys}
        summary["rank1_split"] = {k: _round(v) for k, v in split.items()}
        engine_only = (split["engine_s"] or 0) + (split["repair_s"] or 0)
        ratios["rank1_engine_and_repair_over_bare"] = ratio(engine_only, seconds.get("bare"))
    # Per-round ratios too: with a noisy machine the spread says how far to trust the medians.
    per_round = {}
    for name, (a, b) in {"rank1_over_bare": ("rank1", "bare"), "rank1_over_reference": ("rank1", "reference"),
                         "per_query_over_rank1": ("per_query", "rank1")}.items():
        values = [r[a]["seconds"] / r[b]["seconds"] for r in rounds if a in r and b in r and r[b]["seconds"]]
        if values:
            per_round[name] = [_round(v) for v in values]
            ratios[f"{name}_median_of_rounds"] = median(values)
    ratios["cpu_rank1_over_bare"] = ratio(cpu.get("rank1"), cpu.get("bare"))
    ratios["cpu_rank1_over_reference"] = ratio(cpu.get("rank1"), cpu.get("reference"))
    ratios["cpu_per_query_over_rank1"] = ratio(cpu.get("per_query"), cpu.get("rank1"))
    summary["ratios"] = {k: _round(v) for k, v in ratios.items()}
    summary["ratios_per_round"] = per_round
    summary["targets"] = {
        "rank1_over_bare": _target(ratios["rank1_over_bare"], "<=", TARGETS["rank1_over_bare_max"]),
        "rank1_over_reference": _target(ratios["rank1_over_reference"], "<=", TARGETS["rank1_over_reference_max"]),
        "per_query_over_rank1": _target(ratios["per_query_over_rank1"], ">=", TARGETS["per_query_over_rank1_min"]),
    }
    return summary


def _target(value: float | None, op: str, limit: float) -> dict[str, Any]:
    met = None if value is None else (value <= limit if op == "<=" else value >= limit)
    return {"value": _round(value), "target": f"{op} {limit}", "met": met}


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def _display_path(path: str | Path) -> str:
    """Relative to the repository when inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# --- the modes -----------------------------------------------------------------------------

@dataclass
class Bench:
    workload: Workload
    run_path: Path                   # the run actually reranked (maybe cut to --max-queries)
    model: str
    engine: Any                      # rank1_cli VllmEngine around the main LLM (prefix caching on)
    llm: Any                         # the main vllm.LLM
    ref_llm: Any                     # the reference's vllm.LLM (prefix caching off), or None
    prompts: list[str]
    keys: list[tuple[str, str]]      # (qid, docid) of each prompt
    true_id: int
    false_id: int
    tmp: Path
    memory: float

    def params(self):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, max_tokens=self.workload.budget, logprobs=20, stop=list(STOP),
                              skip_special_tokens=False)

    def repair_params(self):
        from vllm import SamplingParams

        return SamplingParams(temperature=0.0, max_tokens=1, logprobs=20,
                              allowed_token_ids=[self.true_id, self.false_id], skip_special_tokens=False)


def _last_logprobs(output) -> dict[int, float] | None:
    completion = output.outputs[0]
    if not completion.logprobs:
        return None
    return {token_id: lp.logprob for token_id, lp in completion.logprobs[-1].items()}


def _score_outputs(bench: Bench, outputs) -> tuple[list[float | None], int]:
    scores = [score_from_logprobs(_last_logprobs(o), bench.true_id, bench.false_id) for o in outputs]
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    return scores, tokens


def run_bare(bench: Bench) -> dict[str, Any]:
    started = time.perf_counter()
    outputs = bench.llm.generate(bench.prompts, bench.params(), use_tqdm=False)
    scores, tokens = _score_outputs(bench, outputs)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "output_tokens": tokens, "incomplete": sum(s is None for s in scores),
            "scores": scores, "lengths": [len(o.outputs[0].token_ids) for o in outputs]}


def run_per_query(bench: Bench) -> dict[str, Any]:
    started = time.perf_counter()
    by_query: dict[str, list[int]] = {}
    for index, (qid, _) in enumerate(bench.keys):
        by_query.setdefault(qid, []).append(index)
    params = bench.params()
    scores: list[float | None] = [None] * len(bench.prompts)
    tokens = 0
    for indices in by_query.values():
        outputs = bench.llm.generate([bench.prompts[i] for i in indices], params, use_tqdm=False)
        got, n = _score_outputs(bench, outputs)
        tokens += n
        for i, s in zip(indices, got):
            scores[i] = s
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "output_tokens": tokens, "incomplete": sum(s is None for s in scores),
            "calls": len(by_query), "scores": scores}


def run_reference(bench: Bench) -> dict[str, Any]:
    started = time.perf_counter()
    outputs = bench.ref_llm.generate(bench.prompts, bench.params(), use_tqdm=False)
    scores, tokens = _score_outputs(bench, outputs)
    incomplete = [i for i, s in enumerate(scores) if s is None]
    fallback = 0
    if incomplete:
        repair = [bench.prompts[i] + "\n" + clean_unfinished(outputs[i].outputs[0].text) + "\n</think>"
                  for i in incomplete]
        repaired = bench.ref_llm.generate(repair, bench.repair_params(), use_tqdm=False)
        for i, out in zip(incomplete, repaired):
            score = score_from_logprobs(_last_logprobs(out), bench.true_id, bench.false_id)
            if score is None:
                score, fallback = 0.5, fallback + 1
            scores[i] = score
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "output_tokens": tokens, "incomplete": len(incomplete), "fallback": fallback,
            "scores": scores}


def run_rank1(bench: Bench) -> dict[str, Any]:
    from rank1_cli.engines import engine_options
    from rank1_cli.io.collection import CollectionSource
    from rank1_cli.io.traces import write_traces
    from rank1_cli.io.trec import write_run
    from rank1_cli.reasoning.store import Store
    from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank, rerank_with_engine

    w = bench.workload
    store_path = bench.tmp / "rank1.store.sqlite"
    for stale in bench.tmp.glob("rank1.store.sqlite*"):   # every round generates every pair
        stale.unlink()
    run_out = bench.tmp / "rank1.trec"
    started = time.perf_counter()
    source = CollectionSource(corpus=str(w.corpus), queries=str(w.queries))
    options = RerankOptions(model=bench.model, top_k=w.top_k, dtype="float32", max_model_len=4096,
                            max_reasoning_tokens=w.budget,
                            engine_options=engine_options("vllm", gpu_memory_utilization=bench.memory))
    prepared = prepare_rerank(str(bench.run_path), source, options)
    prepared_at = time.perf_counter()
    with Store(store_path) as store:
        result = rerank_with_engine(prepared, bench.engine, store)
    executed_at = time.perf_counter()
    write_run(run_out, result.ranking, tag=options.tag)
    write_traces(bench.tmp / "rank1.traces.jsonl", result.traces.values())
    finished = time.perf_counter()

    stats = result.stats
    execute_s = executed_at - prepared_at
    traced = {key: t.score for key, t in result.traces.items()}
    return {
        "seconds": finished - started,
        "output_tokens": stats.output_tokens,
        "incomplete": stats.forced + stats.fallback,
        "fallback": stats.fallback,
        "generated": stats.generated,
        "split": {
            "prepare_s": prepared_at - started,
            "engine_s": stats.engine_seconds,          # generate loop, store commits included
            "repair_s": stats.repair_seconds,
            "finalize_s": execute_s - stats.engine_seconds - stats.repair_seconds,  # store look-up, ranking
            "write_s": finished - executed_at,        # run and traces
        },
        "scores": [traced.get(key) for key in bench.keys],
    }


RUNNERS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "bare": run_bare, "rank1": run_rank1, "per_query": run_per_query, "reference": run_reference,
}


# --- engines -------------------------------------------------------------------------------

def load_main_engine(model: str, memory: float):
    from rank1_cli.engines import EngineConfig
    from rank1_cli.engines.vllm_engine import Options, VllmEngine

    engine = VllmEngine(EngineConfig(model=model, dtype="float32", max_model_len=4096, enable_prefix_caching=True),
                        Options(gpu_memory_utilization=memory))
    return engine, engine.llm


def load_reference_llm(model: str, memory: float):
    from vllm import LLM

    return LLM(model=model, dtype="float32", max_model_len=4096, tensor_parallel_size=1,
               gpu_memory_utilization=memory, enable_prefix_caching=False, seed=0)


def close_llm(llm) -> None:
    if llm is None:
        return
    engine = llm.llm_engine
    shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
    if shutdown:
        shutdown()
    gc.collect()


def warm_up(bench: Bench, llm) -> None:
    """A small generate and a small repair-style generate, so no mode pays first-call costs."""
    sample = bench.prompts[: min(32, len(bench.prompts))]
    llm.generate(sample, bench.params(), use_tqdm=False)
    llm.generate([p + "\nok.\n</think>" for p in sample[:4]], bench.repair_params(), use_tqdm=False)
    llm.reset_prefix_cache()


def block_size(llm) -> int | None:
    try:
        return llm.llm_engine.vllm_config.cache_config.block_size
    except AttributeError:
        return None


# --- main ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=("quick", "large", "scale"), default="quick")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of every mode (default 3)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--max-queries", type=int, default=None, help="rerank only the run's first N queries")
    parser.add_argument("--model", default=str(TINY_MODEL))
    parser.add_argument("--memory", type=float, default=0.1,
                        help="gpu_memory_utilization of each engine (on CPU: share of RAM for the KV cache)")
    parser.add_argument("--kv-cache-gib", type=int, default=1,
                        help="CPU only: KV cache of each engine in GiB (VLLM_CPU_KVCACHE_SPACE; 0: vLLM's auto size)")
    parser.add_argument("--reference-phase", choices=("together", "separate"), default="together",
                        help="together: both engines loaded, reference interleaved with the others; separate: "
                             "the reference runs after the main engine is closed (half the memory)")
    parser.add_argument("--profile", action="store_true",
                        help="after the rounds, one more rank1 run under cProfile (top functions to results/)")
    parser.add_argument("--out", type=Path, default=None, help="JSON output (default bench/results/<workload>.json)")
    args, rest = parser.parse_known_args(argv)

    if args.workload == "scale":
        sys.path.insert(0, str(HERE))
        import scale

        return scale.main(rest + (["--out", str(args.out)] if args.out else []))
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown or not modes:
        parser.error(f"--modes: unknown {unknown}; choose from {', '.join(MODES)}")
    if not (Path(args.model) / "model.safetensors").exists() and Path(args.model).is_dir():
        raise SystemExit(f"{args.model}: no model.safetensors (build it: python sample_data/build_tiny_rank1.py)")

    # On CPU, vLLM sizes the KV cache from the RAM free when it starts (minus what the worker already
    # holds), so two engines started a minute apart on a shared machine get different caches, hence
    # different batch sizes. A fixed size makes the engines equal (ignored on GPU).
    if args.kv_cache_gib:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_cache_gib)
    wall_started = time.perf_counter()
    w = workload(args.workload)
    out_path = args.out or RESULTS / f"{args.workload}.json"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rank1-bench-") as tmp_name:
        tmp = Path(tmp_name)
        run_path = first_queries(w.run, args.max_queries, tmp / "run.trec") if args.max_queries else w.run

        log(f"loading the main engine ({args.model}, prefix caching on)")
        t = time.perf_counter()
        engine, llm = load_main_engine(args.model, args.memory)
        load_s = {"main": time.perf_counter() - t}
        main_block = block_size(llm)
        ref_llm = None
        if "reference" in modes and args.reference_phase == "together":
            log("loading the reference engine (prefix caching off)")
            t = time.perf_counter()
            ref_llm = load_reference_llm(args.model, args.memory)
            load_s["reference"] = time.perf_counter() - t

        # The pairs, built once by rank1-cli itself (untimed), so every mode runs the same prompts.
        from rank1_cli.io.collection import CollectionSource
        from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank

        prepared = prepare_rerank(str(run_path), CollectionSource(corpus=str(w.corpus), queries=str(w.queries)),
                                  RerankOptions(model=args.model, top_k=w.top_k, dtype="float32", max_model_len=4096,
                                                max_reasoning_tokens=w.budget))
        prompts_ = [p.prompt for p in prepared.pairs]
        tokenizer = llm.get_tokenizer()
        prompt_tokens = [len(ids) for ids in tokenizer(prompts_)["input_ids"]]
        bench = Bench(w, run_path, args.model, engine, llm, ref_llm, prompts_, [p.key for p in prepared.pairs],
                      prepared.tokens.true_id, prepared.tokens.false_id, tmp, args.memory)
        n_pairs = len(prompts_)
        log(f"{n_pairs} pairs, {prepared.queries} queries, mean prompt {statistics.mean(prompt_tokens):.0f} tokens; "
            f"warming up")
        warm_up(bench, llm)
        if ref_llm is not None:
            warm_up(bench, ref_llm)

        main_modes = [m for m in modes if m != "reference" or args.reference_phase == "together"]
        rounds: list[dict[str, dict[str, Any]]] = [{} for _ in range(args.rounds)]
        order_log = []
        for r in range(args.rounds):
            order = rotated(main_modes, r)
            order_log.append(order)
            for mode in order:
                _run_mode(bench, mode, rounds[r], r)

        if "reference" in modes and args.reference_phase == "separate":
            engine.close()
            bench.engine = bench.llm = None
            log("main engine closed; loading the reference engine (prefix caching off)")
            t = time.perf_counter()
            bench.ref_llm = ref_llm = load_reference_llm(args.model, args.memory)
            load_s["reference"] = time.perf_counter() - t
            warm_up(bench, ref_llm)
            for r in range(args.rounds):
                order_log[r].append("reference")
                _run_mode(bench, "reference", rounds[r], r)

        profile_file = None
        if args.profile and bench.engine is not None and "rank1" in modes:
            profile_file = _profile_rank1(bench, out_path)

        if bench.engine is not None:
            engine.close()
        close_llm(ref_llm)

    # Agreement of every mode's scores with bare's, round by round (same pairs, same greedy settings).
    agree = {}
    for mode in modes:
        if mode == "bare" or "bare" not in modes:
            continue
        per = [agreement(r[mode]["scores"], r["bare"]["scores"]) for r in rounds]
        agree[mode] = {"compared": per[0]["compared"],
                       "within_tolerance_min": min(p["within_tolerance"] for p in per),
                       "max_abs_diff": max((p["max_abs_diff"] or 0.0) for p in per)}
    lengths = next((r["bare"]["lengths"] for r in rounds if "bare" in r), None)
    for r in rounds:
        for result in r.values():
            result.pop("scores", None)
            result.pop("lengths", None)

    summary = summarize(rounds, n_pairs)
    report = {
        "benchmark": "bench/throughput.py",
        "command": command_line(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "workload": {
            "name": w.name,
            "description": w.description,
            "run": _display_path(w.run),
            "max_queries": args.max_queries,
            "queries": prepared.queries,
            "docs_per_query": w.top_k,
            "pairs": n_pairs,
            "distinct_prompts": len(set(prompts_)),
            "truncated_prompts": sum(p.truncated for p in prepared.pairs),
            "mean_prompt_tokens": round(statistics.mean(prompt_tokens), 1),
            "max_prompt_tokens": max(prompt_tokens),
            "reasoning_budget": w.budget,
            "generated_tokens_per_pair": length_stats(lengths) if lengths else None,
        },
        "engine": {
            "model": _display_path(args.model),
            "dtype": "float32", "max_model_len": 4096, "gpu_memory_utilization": args.memory,
            "cpu_kv_cache_gib": int(os.environ.get("VLLM_CPU_KVCACHE_SPACE") or 0) or None,
            "vllm_use_aot_compile": os.environ.get("VLLM_USE_AOT_COMPILE"),
            "prefix_caching": {"main": True, "reference": False},
            "prefix_cache_reset_before_each_mode": True,
            "block_size": main_block,
            "reference_phase": args.reference_phase,
            "load_s": {k: _round(v, 2) for k, v in load_s.items()},
            "sampling": {"temperature": 0, "max_tokens": w.budget, "logprobs": 20, "stop": STOP,
                         "skip_special_tokens": False},
        },
        "rounds": args.rounds,
        "modes": modes,
        "order": order_log,
        **summary,
        "agreement_with_bare": {"tolerance": AGREEMENT_TOLERANCE, **agree},
        "per_round": [{m: {k: (_round(v) if isinstance(v, float) else
                               {kk: _round(vv) for kk, vv in v.items()} if isinstance(v, dict) else v)
                           for k, v in res.items()} for m, res in r.items()} for r in rounds],
        "profile": _display_path(profile_file) if profile_file else None,
        "wall_s": round(time.perf_counter() - wall_started, 1),
    }
    write_json_atomic(out_path, report)
    print_table(report)
    log(f"wrote {out_path}")
    return 0


def _run_mode(bench: Bench, mode: str, into: dict[str, dict[str, Any]], r: int) -> None:
    for llm in (bench.llm, bench.ref_llm):
        if llm is not None and not llm.reset_prefix_cache():
            log("warning: the prefix cache could not be reset (requests still running?)")
    gc.collect()
    main_before, engine_before = process_tree_cpu_seconds()
    result = RUNNERS[mode](bench)
    main_after, engine_after = process_tree_cpu_seconds()
    result["cpu_main_s"] = main_after - main_before
    result["cpu_s"] = result["cpu_main_s"] + engine_after - engine_before
    into[mode] = result
    log(f"round {r + 1} {mode:<9} {result['seconds']:8.2f} s  {len(bench.prompts) / result['seconds']:8.1f} pairs/s"
        f"  cpu {result['cpu_s']:7.2f} s (this process {result['cpu_main_s']:6.2f})  "
        f"incomplete {result['incomplete']}")


def process_tree_cpu_seconds() -> tuple[float, float]:
    """User + system CPU seconds of (this process, its children: vLLM's engine core and workers).

    A second view of each mode's cost, less sensitive than wall time to other jobs on a shared
    machine (though busy-waiting and cache contention still show in it). This process is where
    rank1-cli runs, and vLLM's front end (input processing, output processing, detokenizing)."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    main = t.user + t.system
    children = 0.0
    for proc in me.children(recursive=True):
        try:
            t = proc.cpu_times()
            children += t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return main, children


def _profile_rank1(bench: Bench, out_path: Path) -> Path:
    import cProfile
    import io
    import pstats

    bench.llm.reset_prefix_cache()
    gc.collect()
    profiler = cProfile.Profile()
    profiler.enable()
    run_rank1(bench)
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).sort_stats("cumulative")
    stats.print_stats(45)
    stats.sort_stats("tottime").print_stats(30)
    path = out_path.with_name(out_path.stem + ".rank1-profile.txt")
    path.write_text(text.getvalue(), encoding="utf-8")
    log(f"cProfile of one rank1 run (main process only; the engine core is another process): {path}")
    return path


def print_table(report: dict[str, Any]) -> None:
    pairs = report["pairs"]
    lines = [f"{report['workload']['name']}: {pairs} pairs, {report['rounds']} rounds, medians "
             f"({report['machine']['cpu_model']}, {report['machine']['cores']} cores, vllm "
             f"{report['machine']['vllm_version']})",
             f"{'mode':<10} {'seconds':>9} {'pairs/s':>9} {'gen tok/s':>10} {'cpu s':>9}"]
    for mode in report["modes"]:
        rate = report["rates"][mode]
        cpu = report["cpu_s"].get(mode)
        lines.append(f"{mode:<10} {report[mode + '_s']:>9.2f} {rate['pairs_per_s']:>9.1f} "
                     f"{rate['generated_tokens_per_s']:>10.1f} {cpu if cpu is not None else float('nan'):>9.2f}")
    for name, target in report["targets"].items():
        if target["value"] is not None:
            lines.append(f"{name:<22} {target['value']:>7.3f}  target {target['target']}  "
                         f"{'met' if target['met'] else 'MISSED'}")
    if "rank1_split" in report:
        lines.append("rank1 split (s): " + ", ".join(f"{k[:-2]} {v:.3f}" for k, v in report["rank1_split"].items()))
    print("\n".join(lines))


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""rank1-cli's inputs at scale, no model involved: wall time and peak memory of reading a 1M-line
TREC run and of looking documents up in a 100k-document corpus.

    .venv/bin/python bench/scale.py                     # writes bench/results/scale.json
    .venv/bin/python bench/throughput.py --workload scale   # the same

Synthetic data (seeded, written to a temp dir unless --dir): a run of 1,000 queries x 1,000
documents (1M lines) drawn from a 100k-document JSONL corpus, a 10k-document corpus (the first
10k documents of the big one), and queries.tsv. Each measurement runs in a fresh subprocess
that reports its own wall time (the operation only; interpreter start and imports excluded) and
its peak resident memory (VmHWM from /proc/self/status). A baseline process (the same imports,
no work) gives the memory every measurement starts from.

Measurements:
  read_run             rank1_cli.io.trec.read_run on the 1M-line run
  corpus_lookup        rank1_cli.io.collection.read_corpus_docs with 1k / 100k ids of the 100k corpus,
                       and 1k ids of the 10k corpus (memory follows the ids asked for, not the corpus)
  irds_build           the ir_datasets docstore of the 100k corpus built once (JsonlDocs, in the temp dir)
  irds_lookup          rank1_cli.io.collection.dataset_docs (docstore get_many) with 1k / 100k ids
  fit_prompts          rank1_cli.reasoning.fitting.fit_prompts (prepare's tokenizing step) on 100k prompts at
                       once, and in chunks of 1024 (what a chunked fit_prompts would need)
  prepare              rank1_cli.workflows.rerank.prepare_rerank on the whole 1M-line run with --top-k 10 and
                       100 (10k / 100k pairs; tokenizer of sample_data/tiny-rank1), when that model exists;
                       imports and one tokenizer load happen before the clock
  store_fill           100k generations written into a new reasoning store in commits of 256 (as a
                       rerank does), each with 400 reasoning tokens (1,800 characters and their token
                       ids, about what rank1-7b writes); reports the store's bytes per pair
  store_lookup         the scorer's look-up of all 100k prompt hashes in that store
  dry_run              the whole `rank1 rerank --dry-run` command (a fresh process: imports, tokenizer,
                       model fingerprint, inputs, 100k prompts built and counted, store consulted) on the
                       top-100 of the 1M-line run, against a store holding half of its prompts (filled
                       before the clock); wall time and peak memory of that process
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
for path in (str(REPO), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

SEED = 77
TINY_MODEL = REPO / "sample_data" / "tiny-rank1"
DATASET_ID = "rank1-cli-bench-scale"


# --- data ----------------------------------------------------------------------------------

def write_data(folder: Path, *, queries: int = 1000, docs_per_query: int = 1000, corpus_docs: int = 100_000,
               small_corpus_docs: int = 10_000, passage_words: int = 50, seed: int = SEED) -> dict[str, Any]:
    import make_workload

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    topics = sorted(make_workload.TOPIC_WORDS)
    small_corpus_docs = min(small_corpus_docs, corpus_docs)
    ids = [f"D{i:07d}" for i in range(1, corpus_docs + 1)]
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as big, \
            open(folder / "corpus-small.jsonl", "w", encoding="utf-8") as small:
        for i, doc_id in enumerate(ids):
            title, text = make_workload.make_passage(rng, rng.sample(topics, 2), passage_words)
            line = json.dumps({"doc_id": doc_id, "title": title, "text": text}) + "\n"
            big.write(line)
            if i < small_corpus_docs:
                small.write(line)
    with open(folder / "queries.tsv", "w", encoding="utf-8") as out:
        for q in range(1, queries + 1):
            out.write(f"Q{q:04d}\t{make_workload.make_query(rng, topics[q % len(topics)])}\n")
    with open(folder / "run.trec", "w", encoding="utf-8") as out:
        for q in range(1, queries + 1):
            score = 50.0
            lines = []
            for rank, doc_id in enumerate(rng.sample(ids, docs_per_query), start=1):
                lines.append(f"Q{q:04d} Q0 {doc_id} {rank} {score:.4f} synthetic\n")
                score -= 0.001 + rng.random() * 0.04
            out.writelines(lines)
    # Lookup sets: the first 1k of a fixed shuffle (all inside the small corpus too) and all 100k.
    small_ids = ids[:small_corpus_docs]
    rng.shuffle(small_ids)
    (folder / "ids-1k.txt").write_text("\n".join(small_ids[:1000]) + "\n", encoding="utf-8")
    (folder / "ids-all.txt").write_text("\n".join(ids) + "\n", encoding="utf-8")
    sizes = {name: os.path.getsize(folder / name) for name in ("run.trec", "corpus.jsonl", "corpus-small.jsonl")}
    return {"queries": queries, "docs_per_query": docs_per_query, "run_lines": queries * docs_per_query,
            "corpus_docs": corpus_docs, "small_corpus_docs": small_corpus_docs, "passage_words": passage_words,
            "seed": seed, "bytes": sizes}


# --- one measurement (child process) -------------------------------------------------------

def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def register_irds(folder: Path):
    import ir_datasets
    from ir_datasets.datasets.base import Dataset
    from ir_datasets.formats import JsonlDocs
    from ir_datasets.util import LocalDownload

    sys.path.insert(0, str(REPO / "tests"))
    from irds_sample import TitledDoc  # the same doc class the tests register sample_data with

    if DATASET_ID not in ir_datasets.registry:
        docs = JsonlDocs(LocalDownload(folder / "corpus.jsonl"), doc_cls=TitledDoc,
                         mapping={"doc_id": "doc_id", "title": "title", "text": "text"}, namespace=DATASET_ID,
                         lang="en", docstore_path=str(folder / "irds" / "corpus.pklz4"))
        ir_datasets.registry.register(DATASET_ID, Dataset(docs))
    return DATASET_ID


def measure(kind: str, folder: Path, arg: str | None, model: str = str(TINY_MODEL)) -> dict[str, Any]:
    """Run one operation; imports happen before the clock starts."""
    from rank1_cli.io import collection, trec

    ids_file = {"1k": "ids-1k.txt", "all": "ids-all.txt"}
    if kind.startswith("irds"):
        os.environ.setdefault("IR_DATASETS_HOME", str(folder / "irds-home"))
        register_irds(folder)
    if kind in ("prepare", "fit_prompts"):
        # Imports (transformers pulls in torch: ~400 MB) and a first tokenizer load before the clock,
        # so the growth measured is prepare's own: the run, the documents, the prompts.
        from transformers import AutoTokenizer

        from rank1_cli.workflows import rerank  # noqa: F401

        AutoTokenizer.from_pretrained(model)
    baseline = peak_rss_mb()
    started = time.perf_counter()
    count: int | None = None
    if kind in ("baseline", "irds_baseline"):
        count = 0
    elif kind == "read_run":
        run = trec.read_run(folder / "run.trec")
        count = sum(len(v) for v in run.values())
    elif kind == "corpus_lookup":
        corpus, which = arg.split(":")
        wanted = set((folder / ids_file[which]).read_text().split())
        count = len(collection.read_corpus_docs(folder / corpus, wanted))
    elif kind == "irds_build":
        dataset = collection.load_ir_dataset(DATASET_ID)
        store = dataset.docs_store()
        store.build()
        count = store.count() if hasattr(store, "count") else None
    elif kind == "irds_lookup":
        wanted = set((folder / ids_file[arg]).read_text().split())
        count = len(collection.dataset_docs(collection.load_ir_dataset(DATASET_ID), wanted))
    elif kind == "prepare":
        from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank

        source = collection.CollectionSource(corpus=str(folder / "corpus.jsonl"), queries=str(folder / "queries.tsv"))
        prepared = prepare_rerank(str(folder / "run.trec"), source,
                                  RerankOptions(model=model, top_k=int(arg), max_model_len=4096,
                                                max_reasoning_tokens=64))
        count = len(prepared.pairs)
    elif kind == "fit_prompts":
        # fit_prompts (the tokenizing step of prepare) on 100k prompts: in one call as prepare does,
        # or in chunks of `arg` prompts (the same results; what a chunked fit_prompts would hold).
        from transformers import AutoTokenizer

        from rank1_cli.reasoning import prompts
        from rank1_cli.reasoning.fitting import fit_prompts

        tokenizer = AutoTokenizer.from_pretrained(model)
        docs = collection.read_corpus_docs(folder / "corpus.jsonl", set((folder / ids_file["all"]).read_text().split()))
        queries = ["what is the effect of planet orbit on comet"] * len(docs)
        passages = [prompts.passage_text(d.title, d.text) for d in docs.values()]
        baseline = peak_rss_mb()
        started = time.perf_counter()
        step = len(passages) if arg == "all" else int(arg)
        fitted = []
        for i in range(0, len(passages), step):
            fitted += fit_prompts(tokenizer, queries[i:i + step], passages[i:i + step], 4096 - 64 - 8)
        count = len(fitted)
    elif kind in ("store_fill", "store_lookup"):
        from rank1_cli.reasoning.store import Store

        path, pairs = folder / "store.sqlite", int(arg)
        key, hashes = _store_key(), [f"{i:064x}" for i in range(pairs)]
        if kind == "store_fill":
            for stale in folder.glob("store.sqlite*"):
                stale.unlink()
            with Store(path) as store:
                for start in range(0, pairs, 256):
                    store.put_many(key, [_stored(h) for h in hashes[start:start + 256]])
            count = pairs
        else:
            with Store(path) as store:
                count = len(store.get_many(key, hashes))
        wall = time.perf_counter() - started
        size = sum(p.stat().st_size for p in folder.glob("store.sqlite*"))
        return {"wall_s": round(wall, 3), "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(baseline, 1),
                "items": count, "store_bytes": size, "store_bytes_per_pair": round(size / pairs)}
    elif kind == "dry_run":
        return _dry_run(folder, int(arg), model)
    else:
        raise SystemExit(f"unknown measurement {kind}")
    wall = time.perf_counter() - started
    return {"wall_s": round(wall, 3), "peak_rss_mb": round(peak_rss_mb(), 1),
            "rss_before_mb": round(baseline, 1), "items": count}


def _dry_run(folder: Path, top_k: int, model: str) -> dict[str, Any]:
    import resource

    from rank1_cli.io import collection
    from rank1_cli.reasoning.store import Store
    from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank

    store = folder / f"plan-store-{top_k}.sqlite"
    cmd = [sys.executable, "-m", "rank1_cli.cli", "rerank", str(folder / "run.trec"), "--model", model,
           "--corpus", str(folder / "corpus.jsonl"), "--queries", str(folder / "queries.tsv"), "--top-k", str(top_k),
           "--max-model-len", "4096", "--max-reasoning-tokens", "64", "--store", str(store), "--dry-run",
           "--plan-format", "json"]
    if not store.exists():
        source = collection.CollectionSource(corpus=str(folder / "corpus.jsonl"), queries=str(folder / "queries.tsv"))
        prepared = prepare_rerank(str(folder / "run.trec"), source, RerankOptions(
            model=model, top_k=top_k, max_model_len=4096, max_reasoning_tokens=64))
        hashes = list(dict.fromkeys(p.prompt_sha256 for p in prepared.pairs))
        with Store(store) as filled:
            for start in range(0, len(hashes) // 2, 256):
                filled.put_many(prepared.key, [_stored(h) for h in hashes[start:min(start + 256, len(hashes) // 2)]])
            filled.record_engine_run(prepared.key, len(hashes) // 2, 400 * (len(hashes) // 2), 600.0)
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    plan = json.loads(done.stdout)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": round(wall, 3), "peak_rss_mb": round(peak, 1), "rss_before_mb": 0.0, "items": plan["pairs"],
            "store_in_plan": plan["stored"]}


def _store_key():
    from rank1_cli.reasoning.store import GenerationKey

    return GenerationKey("rank1-7b", "hf:bench", "vllm", "float16", 8192, 16000)


def _stored(sha: str):
    from rank1_cli.reasoning.store import StoredGeneration

    words = (sha[:8] + " considers whether the passage answers the query. ") * 36
    return StoredGeneration(sha, "stop", "true", -0.05, -3.1, 400, words[:1800], tuple(range(1000, 1400)))


def run_child(kind: str, folder: Path, arg: str | None = None, model: str = str(TINY_MODEL)) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", kind, "--dir", str(folder), "--model", model]
    if arg is not None:
        cmd += ["--arg", arg]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "true"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- driver --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="data folder (default: a temp dir, removed after)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each timed measurement (median wall time)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--docs-per-query", type=int, default=1000)
    parser.add_argument("--corpus-docs", type=int, default=100_000)
    parser.add_argument("--no-prepare", action="store_true", help="skip the prepare_rerank measurements")
    parser.add_argument("--model", default=str(TINY_MODEL), help="tokenizer for the prepare_rerank measurements")
    parser.add_argument("--only", help="comma-separated measurement kinds to run (e.g. prepare,fit_prompts)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--arg", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        print(json.dumps(measure(args.measure, args.dir, args.arg, args.model)))
        return 0

    import benchlib

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rank1-scale-") as tmp:
        folder = args.dir or Path(tmp)
        t = time.perf_counter()
        if (folder / "ids-all.txt").exists():
            data = json.loads((folder / "DATA.json").read_text())
        else:
            data = write_data(folder, queries=args.queries, docs_per_query=args.docs_per_query,
                              corpus_docs=args.corpus_docs)
            (folder / "DATA.json").write_text(json.dumps(data))
        log(f"data in {folder} ({time.perf_counter() - t:.0f} s): {data['run_lines']} run lines, "
            f"{data['corpus_docs']} docs")

        lines, big, small = _n(data["run_lines"]), _n(data["corpus_docs"]), _n(data["small_corpus_docs"])
        few = _n(min(1000, data["small_corpus_docs"]))
        plan: list[tuple[str, str, str | None, int]] = [
            ("baseline (imports only)", "baseline", None, 1),
            (f"read_run {lines} lines", "read_run", None, args.repeat),
            (f"read_corpus_docs {few} ids / {big}-doc corpus", "corpus_lookup", "corpus.jsonl:1k", args.repeat),
            (f"read_corpus_docs {few} ids / {small}-doc corpus", "corpus_lookup", "corpus-small.jsonl:1k",
             args.repeat),
            (f"read_corpus_docs {big} ids / {big}-doc corpus", "corpus_lookup", "corpus.jsonl:all", args.repeat),
            ("baseline ir_datasets (imports + registration)", "irds_baseline", None, 1),
            (f"ir_datasets docstore build, {big} docs (once)", "irds_build", None, 1),
            (f"dataset_docs {few} ids (docstore)", "irds_lookup", "1k", args.repeat),
            (f"dataset_docs {big} ids (docstore)", "irds_lookup", "all", args.repeat),
            ("reasoning store: write 100k generations", "store_fill", "100000", 1),
            ("reasoning store: look up 100k pairs", "store_lookup", "100000", args.repeat),
        ]
        have_model = (Path(args.model) / "tokenizer.json").exists()
        if have_model and not args.no_prepare:
            for k in (10, 100):
                pairs = _n(data["queries"] * min(k, data["docs_per_query"]))
                plan.append((f"prepare_rerank top-{k} of the {lines}-line run ({pairs} pairs)", "prepare", str(k), 1))
            plan.append((f"rank1 rerank --dry-run, top-100 of the {lines}-line run (whole command)", "dry_run",
                         "100", args.repeat))
            plan += [(f"fit_prompts on {big} prompts in one call (as prepare_rerank does)", "fit_prompts", "all", 1),
                     (f"fit_prompts on {big} prompts in chunks of 1024", "fit_prompts", "1024", 1)]
        if args.only:
            wanted = set(args.only.split(","))
            plan = [item for item in plan if item[1] in wanted]
        results = []
        for label, kind, arg, repeat in plan:
            runs = [run_child(kind, folder, arg, args.model) for _ in range(max(1, repeat))]
            entry = {"measurement": label, "kind": kind, "arg": arg, "runs": len(runs),
                     "wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
                     "wall_s_all": [r["wall_s"] for r in runs],
                     "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                     "rss_before_mb": max(r["rss_before_mb"] for r in runs),
                     "items": runs[0]["items"]}
            entry.update({k: v for k, v in runs[0].items() if k.startswith("store_")})
            entry["peak_growth_mb"] = round(entry["peak_rss_mb"] - entry["rss_before_mb"], 1)
            results.append(entry)
            log(f"{label:<58} {entry['wall_s']:8.2f} s  peak {entry['peak_rss_mb']:7.1f} MB "
                f"(+{entry['peak_growth_mb']:.1f} over its start)")

    report = {
        "benchmark": "bench/scale.py",
        "command": benchlib.command_line(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": benchlib.machine_info(),
        "data": data,
        "measurements": results,
        "notes": ["wall_s: the operation only (median of runs), in a fresh process per run",
                  "peak_rss_mb: VmHWM of that process (imports included); peak_growth_mb: over its RSS "
                  "just before the operation"],
        "wall_s": round(time.perf_counter() - started, 1),
    }
    benchlib.write_json_atomic(args.out, report)
    log(f"wrote {args.out}")
    return 0


def _n(count: int) -> str:
    """1000000 -> 1M, 100000 -> 100k, 1500 -> 1500."""
    for size, suffix in ((1_000_000, "M"), (1000, "k")):
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return str(count)


def log(message: str) -> None:
    print(f"[scale] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())

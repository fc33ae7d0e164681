#!/usr/bin/env python
"""Size and build time of `rank1 report` on a synthetic rerank (no model needed).

    python bench/report_size.py                                   # 200 queries x 100 docs, ~1,500-char reasoning
    python bench/report_size.py --queries 1000 --docs 100 --keep /tmp/report100k
    python bench/report_size.py --texts                           # with query and passage texts
    python bench/report_size.py --runs 2 --texts                  # two reranks of one baseline, side by side
    python bench/report_size.py --runs 2 --texts --queries 1000   # 100k pairs per run

`generate` writes a first-stage run, a reranked run, its traces (rank1_cli.io.traces' own writer, so
the format is real) and qrels; the tests use it too. Deterministic for a seed. Printed: the time to
generate the inputs, the time of `write_report` (reading, joining, rendering, writing) and the
HTML's size, with the part that is the inline chart scripts.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rank1_cli.io.traces import TRACE_FORMAT, Trace, write_traces  # noqa: E402
from rank1_cli.io.trec import write_run  # noqa: E402
from rank1_cli.reasoning.prompts import build_prompt, passage_text, prompt_sha256  # noqa: E402

SEED = 20261124
WORDS = ("the passage mentions query terms but the context differs so it is probably not what the user "
         "needs; however it describes the main concept directly and gives a concrete answer").split()


@dataclass(frozen=True)
class Files:
    baseline: Path
    run: Path
    traces: Path
    qrels: Path
    queries: Path   # TSV qid<TAB>text, as `rerank --queries` reads
    corpus: Path    # JSONL {doc_id, title, text}, as `rerank --corpus` reads


def _reasoning(rng: random.Random, chars: int) -> str:
    words: list[str] = []
    length = 0
    while length < chars:
        word = rng.choice(WORDS)
        words.append(word)
        length += len(word) + 1
    return "\n" + " ".join(words)[:chars] + ".\n"


def generate(folder: Path, *, queries: int = 200, docs: int = 100, reasoning_chars: int = 1500,
             top_k: int | None = None, seed: int = SEED, passage_chars: int = 600) -> Files:
    """Write baseline.trec, run.trec, run.traces.jsonl, qrels.txt, queries.tsv and corpus.jsonl into `folder`.

    Each query has `docs` first-stage documents; the top `top_k` (default all) are "reranked": a
    relevant document tends to get a high P(true). About 3% of pairs are forced, 1% fallbacks,
    2% truncated; grades are 0-2, about a third of the documents judged. Each untruncated trace
    has the hash of the prompt built from its query and passage, as a real rerank's.
    """
    rng = random.Random(seed)
    texts = random.Random(seed + 1)  # its own stream: the runs and traces stay those of the seed
    top_k = docs if top_k is None else top_k
    folder.mkdir(parents=True, exist_ok=True)
    files = Files(folder / "baseline.trec", folder / "run.trec", folder / "run.traces.jsonl", folder / "qrels.txt",
                  folder / "queries.tsv", folder / "corpus.jsonl")
    query_lines: list[str] = []
    corpus_lines: list[str] = []
    baseline: dict[str, list[tuple[str, float]]] = {}
    reranked: dict[str, list[tuple[str, float]]] = {}
    traces: list[Trace] = []
    qrels_lines: list[str] = []
    settings = {"format": TRACE_FORMAT, "model": "synthetic", "engine": "vllm", "max_reasoning_tokens": 8192,
                "max_model_len": 16000, "dtype": "float16"}
    for q in range(1, queries + 1):
        qid = f"q{q:04d}"
        ids = [f"d{q:04d}-{i:03d}" for i in range(docs)]
        query = " ".join(texts.choice(WORDS) for _ in range(6))
        query_lines.append(f"{qid}\t{query}\n")
        passages = {}
        for docid in ids:
            title = f"Document {docid}"
            text = _reasoning(texts, passage_chars).strip()
            passages[docid] = passage_text(title, text)
            corpus_lines.append(json.dumps({"doc_id": docid, "title": title, "text": text}) + "\n")
        baseline[qid] = [(docid, round(30.0 - 0.1 * i, 3)) for i, docid in enumerate(ids)]
        grades = {}
        for i, docid in enumerate(ids):
            if rng.random() < 0.35:
                grades[docid] = rng.choices((0, 1, 2), weights=(5, 3, 1 + 2 * (i < 10)))[0]
                qrels_lines.append(f"{qid} 0 {docid} {grades[docid]}\n")
        scored = []
        for rank, docid in enumerate(ids[:top_k], start=1):
            lean = 1.2 * grades.get(docid, 0) - 0.8 + rng.gauss(0, 1.5)
            p_true = 1 / (1 + math.exp(-2 * lean))
            lt, lf = math.log(max(p_true, 1e-9)), math.log(max(1 - p_true, 1e-9))
            roll = rng.random()
            completion = "fallback" if roll < 0.01 else "forced" if roll < 0.04 else "stop"
            tokens = max(8, int(rng.gauss(reasoning_chars / 4, reasoning_chars / 12)))
            if completion == "fallback":
                score, verdict, lt, lf = 0.5, None, None, None
            else:
                score, verdict = p_true, "true" if p_true >= 0.5 else "false"
            if completion != "stop":
                tokens = settings["max_reasoning_tokens"]
            truncated, random_hash = rng.random() < 0.02, f"{rng.getrandbits(256):064x}"
            prompt_hash = random_hash if truncated else prompt_sha256(build_prompt(query, passages[docid]))
            traces.append(Trace(qid, docid, rank, score, verdict, _reasoning(rng, reasoning_chars), lt, lf, completion,
                                tokens, truncated, "synthetic", prompt_hash, settings, "engine"))
            scored.append((-score, rank, docid))
        scored.sort()
        order = [docid for _, _, docid in scored] + ids[top_k:]
        reranked[qid] = [(docid, float(len(order) - i)) for i, docid in enumerate(order)]
    write_run(files.baseline, baseline, "bm25")
    write_run(files.run, reranked, "rank1")
    write_traces(files.traces, traces)
    files.qrels.write_text("".join(qrels_lines), encoding="utf-8")
    files.queries.write_text("".join(query_lines), encoding="utf-8")
    files.corpus.write_text("".join(corpus_lines), encoding="utf-8")
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--docs", type=int, default=100, help="documents per query, all reranked")
    parser.add_argument("--reasoning-chars", type=int, default=1500)
    parser.add_argument("--runs", type=int, default=1, help="reranks of the one baseline in the report (each its own "
                        "traces, drawn with another seed)")
    parser.add_argument("--texts", action="store_true",
                        help="give the report the queries and corpus (--queries, --corpus): passages beside the reasoning")
    parser.add_argument("--keep", type=Path, help="write the inputs and report.html here (default: a temporary folder)")
    args = parser.parse_args()

    from rank1_cli.io.collection import CollectionSource
    from rank1_cli.workflows.report import write_report

    with tempfile.TemporaryDirectory(prefix="rank1-report-bench-") as scratch:
        folder = args.keep or Path(scratch)
        started = time.perf_counter()
        files = generate(folder, queries=args.queries, docs=args.docs, reasoning_chars=args.reasoning_chars)
        more = [generate(folder / f"run{k + 2}", queries=args.queries, docs=args.docs,
                         reasoning_chars=args.reasoning_chars, seed=SEED + k + 1) for k in range(args.runs - 1)]
        generated = time.perf_counter() - started
        output = folder / "report.html"
        started = time.perf_counter()
        source = CollectionSource(corpus=str(files.corpus), queries=str(files.queries)) if args.texts else None
        write_report(str(files.run), str(files.baseline), str(files.qrels), str(files.traces), str(output),
                     source=source, others=[(str(f.run), str(f.traces)) for f in more])
        built = time.perf_counter() - started
        import vl_convert

        size, scripts = output.stat().st_size, len(vl_convert.javascript_bundle().encode())
        print(f"{args.queries} queries x {args.docs} documents = {args.queries * args.docs:,} pairs per run, "
              f"{args.runs} run{'s' if args.runs > 1 else ''}, ~{args.reasoning_chars:,}-character reasoning; traces "
              f"{sum(f.traces.stat().st_size for f in (files, *more)) / 1e6:.1f} MB in all"
              + ("; with query and passage texts" if args.texts else ""))
        print(f"inputs generated in {generated:.1f} s; report written in {built:.1f} s")
        print(f"report.html: {size / 1e6:.2f} MB ({scripts / 1e6:.2f} MB of it the vega/vega-lite/vega-embed bundle)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Deterministic Okapi BM25 baseline for the sample collection.

Reads corpus.jsonl and queries.tsv from this script's folder and writes
run.bm25.trec next to them: the top 50 documents per query, one line each,
``qid Q0 docid rank score bm25``.

Scoring: k1=0.9, b=0.4, Lucene-style idf log(1 + (N - df + 0.5) / (df + 0.5)),
document text = title + " " + text, lowercased and split on non-alphanumeric
characters, a small English stopword list removed. Query terms are weighted by
how often they occur in the query. Documents are ranked by score (highest
first) with ties broken by doc_id ascending; every document is a candidate, so
each query always gets 50 lines. Standard library only (Python >= 3.10).

Usage: python sample_data/bm25.py
       python sample_data/bm25.py --no-title --k1 1.2 --b 0.75 --tag bm25-notitle
           (a second first-stage run, run.bm25-notitle.trec: text only, Robertson's k1 and b;
           it shares part of its top 20 with run.bm25.trec, for trying the reasoning store's reuse)
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter
from pathlib import Path

K1 = 0.9
B = 0.4
DEPTH = 50
RUN_TAG = "bm25"

STOPWORDS = frozenset(
    """
    a an and are as at be but by do does for from has have how i if in into is
    it its of on or s so such t that the their then there these they this to
    was were what when where which who why will with you your
    """.split()
)

_TOKEN_RE = re.compile(r"[^0-9a-z]+")

HERE = Path(__file__).resolve().parent


def tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN_RE.split(text.lower()) if t and t not in STOPWORDS]


def load_corpus(path: Path, with_title: bool = True) -> list[tuple[str, list[str]]]:
    docs = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = json.loads(line)
            title = obj.get("title", "") if with_title else ""
            docs.append((obj["doc_id"], tokenize(title + " " + obj["text"])))
    return docs


def load_queries(path: Path) -> list[tuple[str, str]]:
    queries = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip():
                continue
            qid, text = line.split("\t", 1)
            queries.append((qid, text))
    return queries


def main() -> None:
    parser = argparse.ArgumentParser(description="Deterministic BM25 run for the sample collection.")
    parser.add_argument("--k1", type=float, default=K1)
    parser.add_argument("--b", type=float, default=B)
    parser.add_argument("--no-title", action="store_true", help="index the text only")
    parser.add_argument("--tag", default=RUN_TAG, help="run tag; the output is run.TAG.trec")
    args = parser.parse_args()
    k1, b = args.k1, args.b
    docs = load_corpus(HERE / "corpus.jsonl", with_title=not args.no_title)
    queries = load_queries(HERE / "queries.tsv")

    n_docs = len(docs)
    avgdl = sum(len(toks) for _, toks in docs) / n_docs
    tfs = [(doc_id, Counter(toks), len(toks)) for doc_id, toks in docs]
    df: Counter[str] = Counter()
    for _, tf, _ in tfs:
        df.update(tf.keys())

    def idf(term: str) -> float:
        d = df.get(term, 0)
        return math.log(1.0 + (n_docs - d + 0.5) / (d + 0.5))

    lines = []
    for qid, qtext in queries:
        qtf = Counter(tokenize(qtext))
        qterms = sorted(qtf)  # fixed summation order for reproducibility
        weights = {t: idf(t) * qtf[t] for t in qterms}
        scored = []
        for doc_id, tf, dl in tfs:
            norm = k1 * (1.0 - b + b * dl / avgdl)
            score = 0.0
            for t in qterms:
                f = tf.get(t, 0)
                if f:
                    score += weights[t] * f * (k1 + 1.0) / (f + norm)
            scored.append((-score, doc_id))
        scored.sort()
        for rank, (neg, doc_id) in enumerate(scored[:DEPTH], 1):
            lines.append(f"{qid} Q0 {doc_id} {rank} {-neg:.4f} {args.tag}\n")

    with (HERE / f"run.{args.tag}.trec").open("w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(lines)


if __name__ == "__main__":
    main()

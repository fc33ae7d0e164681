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
"""

from __future__ import annotations

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


def load_corpus(path: Path) -> list[tuple[str, list[str]]]:
    docs = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            obj = json.loads(line)
            docs.append((obj["doc_id"], tokenize(obj.get("title", "") + " " + obj["text"])))
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
    docs = load_corpus(HERE / "corpus.jsonl")
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
            norm = K1 * (1.0 - B + B * dl / avgdl)
            score = 0.0
            for t in qterms:
                f = tf.get(t, 0)
                if f:
                    score += weights[t] * f * (K1 + 1.0) / (f + norm)
            scored.append((-score, doc_id))
        scored.sort()
        for rank, (neg, doc_id) in enumerate(scored[:DEPTH], 1):
            lines.append(f"{qid} Q0 {doc_id} {rank} {-neg:.4f} {RUN_TAG}\n")

    with (HERE / "run.bm25.trec").open("w", encoding="utf-8", newline="\n") as fh:
        fh.writelines(lines)


if __name__ == "__main__":
    main()

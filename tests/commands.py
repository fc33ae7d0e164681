"""Running `rank1` as a user does, in a subprocess: shared by the CLI, rerank and replica tests."""

import sqlite3
import subprocess
import sys
import time

from conftest import RANK1, REPO, SAMPLE, TINY_MODEL

CORPUS = ["--corpus", str(SAMPLE / "corpus.jsonl"), "--queries", str(SAMPLE / "queries.tsv")]


def rank1(*args, stdin=None, timeout=120, env=None):
    started = time.perf_counter()
    proc = subprocess.run([*RANK1, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env=env)
    return proc, time.perf_counter() - started


TOP_K = 20
PAIRS = 25 * TOP_K


def rerank_command(output, traces, store, *extra):
    return [sys.executable, "-m", "rank1_cli.cli", "rerank", str(SAMPLE / "run.bm25.trec"), "--model", str(TINY_MODEL),
            "--corpus", str(SAMPLE / "corpus.jsonl"), "--queries", str(SAMPLE / "queries.tsv"),
            "--top-k", str(TOP_K), "--dtype", "float32", "--max-model-len", "4096", "--max-reasoning-tokens", "64",
            "--gpu-memory-utilization", "0.1", "--traces", str(traces), "--store", str(store), "-o", str(output), *extra]


def stored(store):
    """Generations committed to the store so far (read-only, as another process sees them)."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]
    except sqlite3.Error:          # not created yet
        return 0


def wait_for_store(store, count, proc, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if stored(store) >= count:
            return
        assert proc.poll() is None, "rerank ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("the store did not grow")

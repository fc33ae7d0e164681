#!/usr/bin/env python
"""`rank1 serve` under load: N requests from C concurrent clients on loopback, bounded in count and time.

    .venv/bin/python bench/serve_load.py                      # 200 requests, 20 clients -> bench/results/serve.json
    .venv/bin/python bench/serve_load.py --backend vllm --max-reasoning-tokens 256

The server is started as a user starts it (`rank1 serve`, a subprocess on a free 127.0.0.1 port,
a new empty store unless --store), on tiny-rank1 by default. Each request is one sample_data query
with its first --documents documents of run.bm25.trec, the queries taken in turn, so requests for
the same query repeat as in a RAG service and the store answers the repeats. The clients stop when
every request is answered or --time-limit has passed. Reported: requests answered, failed (by
status) and lost (no answer), latency p50/p95/max, requests and documents per second, and from the
server's /health the batches that served them (and how many of those the engine had work in) and
the pairs generated or taken from the store; and the machine's load average, since a busy machine's
latencies say little.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from benchlib import REPO, command_line, machine_info, write_json_atomic

SAMPLE = REPO / "sample_data"


def workload(documents: int) -> list[dict]:
    """One request body per sample query: the query and its first `documents` BM25 documents."""
    queries = dict(line.split("\t", 1) for line in (SAMPLE / "queries.tsv").read_text().splitlines())
    corpus = {d["doc_id"]: d for d in map(json.loads, (SAMPLE / "corpus.jsonl").read_text().splitlines())}
    ranked: dict[str, list[str]] = {}
    for line in (SAMPLE / "run.bm25.trec").read_text().splitlines():
        qid, _, docid, rank, _, _ = line.split()
        if int(rank) <= documents:
            doc = corpus[docid]
            ranked.setdefault(qid, []).append(f"{doc['title']} {doc['text']}".strip())
    return [{"query": queries[qid], "documents": texts, "top_n": 3} for qid, texts in ranked.items()]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile: the smallest value at least `share` of the values are at most."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--documents", type=int, default=10, help="documents per request")
    parser.add_argument("--time-limit", type=float, default=600, help="seconds; requests not sent by then are not sent")
    parser.add_argument("--model", default=str(SAMPLE / "tiny-rank1"))
    parser.add_argument("--backend", default="transformers")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-reasoning-tokens", type=int, default=48)
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--batch-window", type=float, default=0.01)
    parser.add_argument("--store", help="default: a new empty store, deleted afterwards")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.json")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    bodies = workload(args.documents)
    scratch = tempfile.TemporaryDirectory(prefix="rank1-serve-bench-")
    store = args.store or str(Path(scratch.name) / "store.sqlite")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path(scratch.name) / "serve.log"
    command = [sys.executable, "-m", "rank1_cli.cli", "serve", "--model", args.model, "--backend", args.backend,
               "--dtype", args.dtype, "--max-reasoning-tokens", str(args.max_reasoning_tokens), "--max-model-len",
               str(args.max_model_len), "--batch-window", str(args.batch_window), "--store", store,
               "--port", str(port), "--quiet"]
    with open(log, "w") as out:
        server = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        before = httpx.get(f"{url}/health").json()

        numbers = itertools.count()
        lock = threading.Lock()
        latencies: list[float] = []
        statuses: dict[str, int] = {}
        stop_at = time.monotonic() + args.time_limit

        def client() -> None:
            with httpx.Client(base_url=url, timeout=args.time_limit) as http:
                while time.monotonic() < stop_at:
                    with lock:
                        n = next(numbers)
                    if n >= args.requests:
                        return
                    started = time.perf_counter()
                    try:
                        status = str(http.post("/v1/rerank", json=bodies[n % len(bodies)]).status_code)
                    except httpx.HTTPError as exc:
                        status = f"lost: {type(exc).__name__}"
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
                        if status == "200":
                            latencies.append(time.perf_counter() - started)

        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        after = httpx.get(f"{url}/health").json()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
        scratch.cleanup()

    answered = statuses.get("200", 0)
    result = {
        "machine": machine_info(), "command": command_line(), "server_command": " ".join(command[2:]),
        "settings": {**{k: v for k, v in vars(args).items() if k != "out"}, "distinct_requests": len(bodies)},
        "requests_sent": sum(statuses.values()), "answered": answered, "statuses": statuses,
        "lost_or_failed": sum(statuses.values()) - answered,
        "not_sent": args.requests - sum(statuses.values()),
        "seconds": round(elapsed, 3),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],   # others' work too
        "latency_seconds": {"p50": round(percentile(latencies, 0.5), 4), "p95": round(percentile(latencies, 0.95), 4),
                            "max": round(max(latencies), 4), "mean": round(statistics.fmean(latencies), 4)}
        if latencies else None,
        "requests_per_second": round(answered / elapsed, 2),
        "documents_per_second": round(answered * args.documents / elapsed, 2),
        "store_answered": after["store_answered"] - before["store_answered"],    # at once, without waiting
        "batches": after["batches"] - before["batches"],
        "engine_batches": after["engine_batches"] - before["engine_batches"],
        "pairs_generated": after["generated"] - before["generated"],
        "pairs_from_store": after["from_store"] - before["from_store"],
    }
    write_json_atomic(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""What the reasoning store saves: rerank run B after run A, against B on an empty store.

    .venv/bin/python bench/store_reuse.py --rounds 3

sample_data's two first-stage runs (run.bm25.trec = A, run.bm25-notitle.trec = B) share most of
their top 20. Each round, through the command line as a user runs it (tiny-rank1, vLLM, the
settings of `make demo`): A on a new store, then B on that store ("warm B"), and B on another
new store ("cold B"); the order of the two B runs alternates between rounds. Reported per run:
pairs generated, pairs from the store, the rerank's own seconds (engine start excluded, as the
summary prints it) and the wall time of the whole command (engine start included). Medians and
the median of the per-round warm/cold ratios go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
RUN_A, RUN_B = SAMPLE / "run.bm25.trec", SAMPLE / "run.bm25-notitle.trec"


def top_pairs(path: Path, k: int) -> set[tuple[str, str]]:
    pairs = set()
    for line in path.read_text().splitlines():
        qid, _, docid, rank, _, _ = line.split()
        if int(rank) <= k:
            pairs.add((qid, docid))
    return pairs


def rerank(run: Path, store: Path, output: Path, top_k: int) -> dict:
    command = [sys.executable, "-m", "rank1_cli.cli", "rerank", str(run), "--model", str(SAMPLE / "tiny-rank1"),
               "--dtype", "float32", "--corpus", str(SAMPLE / "corpus.jsonl"), "--queries", str(SAMPLE / "queries.tsv"),
               "--top-k", str(top_k), "--max-model-len", "4096", "--max-reasoning-tokens", "64",
               "--store", str(store), "-o", str(output)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    text = " ".join(done.stderr.split())
    return {"wall_s": round(wall, 2),
            "rerank_s": float(re.search(r"queries in ([\d.]+)s", text).group(1)),
            "generated": int(re.search(r"for (\d+) distinct prompts", text).group(1)),
            "from_store": int(re.search(r"store: (\d+) pairs from", text).group(1))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=20)
    args = parser.parse_args()
    a, b = top_pairs(RUN_A, args.top_k), top_pairs(RUN_B, args.top_k)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="rank1-store-reuse-") as tmp:
        for r in range(args.rounds):
            folder = Path(tmp) / f"round{r}"
            folder.mkdir()
            result = {"A": rerank(RUN_A, folder / "warm.sqlite", folder / "a.trec", args.top_k)}
            order = ("warm_B", "cold_B") if r % 2 == 0 else ("cold_B", "warm_B")
            for name in order:
                store = folder / ("warm.sqlite" if name == "warm_B" else "cold.sqlite")
                result[name] = rerank(RUN_B, store, folder / f"{name}.trec", args.top_k)
            if (folder / "warm_B.trec").read_bytes() != (folder / "cold_B.trec").read_bytes():
                raise SystemExit("warm and cold B wrote different runs")
            rounds.append(result)
            print(f"round {r + 1}: " + json.dumps(result), file=sys.stderr, flush=True)

    def median(name: str, field: str) -> float:
        return round(statistics.median(r[name][field] for r in rounds), 2)

    report = {
        "pairs_B": len(b), "shared_with_A": len(a & b), "shared_pct": round(100 * len(a & b) / len(b), 1),
        "median": {name: {f: median(name, f) for f in ("wall_s", "rerank_s", "generated", "from_store")}
                   for name in ("A", "warm_B", "cold_B")},
        "warm_over_cold_median_ratio": {
            f: round(statistics.median(r["warm_B"][f] / r["cold_B"][f] for r in rounds), 3)
            for f in ("wall_s", "rerank_s")},
        "rounds": rounds,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""What a budget sweep costs against real reruns at each budget, and how closely it agrees.

    .venv/bin/python bench/sweep_cost.py --rounds 3

Through the command line as a user runs it (tiny-rank1, vLLM, the settings of `make demo`, top
20 of sample_data/run.bm25.trec = 500 pairs), each round on fresh stores:
  sweep    `rank1 sweep --budgets 8,16,32,64` (one engine start, one generation at 64, three
           one-token repair passes)
  reruns   `rank1 rerank --max-reasoning-tokens B` for B = 8, 16, 32, 64, each its own command
           (four engine starts, four generations)
The order of the two alternates between rounds. Reported: wall time of each (engine starts
included: that is what a user waits for), the median of the per-round sweep/reruns ratios, and the
agreement of each swept budget with its rerun (pairs whose scores differ by more than 1e-4).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
BUDGETS = (8, 16, 32, 64)
COMMON = ["--model", str(SAMPLE / "tiny-rank1"), "--dtype", "float32", "--corpus", str(SAMPLE / "corpus.jsonl"),
          "--queries", str(SAMPLE / "queries.tsv"), "--top-k", "20", "--max-model-len", "4096", "-q"]
RANK1 = [sys.executable, "-m", "rank1_cli.cli"]


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def sweep(folder: Path) -> float:
    return timed([*RANK1, "sweep", str(SAMPLE / "run.bm25.trec"), *COMMON, "--budgets", ",".join(map(str, BUDGETS)),
                  "-o", str(folder / "sweep"), "--store", str(folder / "sweep.sqlite"), "-f", "tsv"])


def reruns(folder: Path) -> float:
    return sum(timed([*RANK1, "rerank", str(SAMPLE / "run.bm25.trec"), *COMMON, "--max-reasoning-tokens", str(b),
                      "--store", str(folder / f"rerun-{b}.sqlite"), "-o", str(folder / f"rerun-{b}.trec")])
               for b in BUDGETS)


def agreement(folder: Path) -> dict[str, int]:
    """Per budget: pairs whose swept score differs from the rerun's by more than 1e-4."""
    differing = {}
    for b in BUDGETS:
        def scores(path: Path) -> dict[tuple[str, str], float]:
            return {(t["qid"], t["docid"]): t["score"] for t in map(json.loads, path.read_text().splitlines())}

        swept = scores(folder / "sweep" / f"budget-{b}.traces.jsonl")
        real = scores(folder / f"rerun-{b}.traces.jsonl")
        assert swept.keys() == real.keys()
        differing[str(b)] = sum(abs(swept[k] - real[k]) > 1e-4 for k in real)
    return differing


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "sweep-cost.json")
    args = parser.parse_args()
    rounds = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="rank1-sweep-bench-") as tmp:
            folder = Path(tmp)
            order = ("sweep", "reruns") if i % 2 == 0 else ("reruns", "sweep")
            result = {name: (sweep if name == "sweep" else reruns)(folder) for name in order}
            result["ratio"] = result["sweep"] / result["reruns"]
            result["pairs_over_1e-4"] = agreement(folder)
            rounds.append(result)
            print(f"round {i + 1}: sweep {result['sweep']:.1f} s, reruns {result['reruns']:.1f} s, "
                  f"ratio {result['ratio']:.3f}, differing {result['pairs_over_1e-4']}", file=sys.stderr)
    summary = {"benchmark": "bench/sweep_cost.py", "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pairs": 500,
               "budgets": BUDGETS, "rounds": rounds,
               "median_sweep_s": statistics.median(r["sweep"] for r in rounds),
               "median_reruns_s": statistics.median(r["reruns"] for r in rounds),
               "median_ratio": statistics.median(r["ratio"] for r in rounds)}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Time `rank1 eval` against a trec_eval binary on the same 1M-line run, in paired rounds.

    python bench/eval_speed.py --trec-eval /path/to/trec_eval            # 5 pairs, 1,000 x 1,000
    python bench/eval_speed.py --trec-eval ./trec_eval --rounds 9 --keep /tmp/evalspeed

The run (qid Q0 docid rank score tag, `--queries` x `--docs` lines) and the qrels (`--judged`
documents per query, half of them retrieved) are written deterministically into a temporary
folder (or --keep). Each round times both commands once, in alternating order, as fresh processes
(start-up included, as a user sees it); both must print the same bytes (`rank1 eval -f tsv` is
trec_eval's layout). Printed: each round, the median of each, and the median of the per-round
ratios rank1 / trec_eval, in wall time and in CPU time (user + system, which other jobs on the
machine disturb less). Build trec_eval 10.0 from https://github.com/usnistgov/trec_eval
(`make` in a clone gives ./trec_eval).
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEED = 20251124
MEASURES = ("ndcg_cut.10", "map", "P.10")


def write_inputs(folder: Path, queries: int, docs: int, judged: int) -> tuple[Path, Path]:
    """A run and qrels, the same bytes for the same arguments."""
    rng = random.Random(SEED)
    run_path, qrels_path = folder / "run.trec", folder / "qrels.txt"
    with open(run_path, "w") as run, open(qrels_path, "w") as qrels:
        for q in range(1, queries + 1):
            qid = str(q)
            docids = [f"D{n:07d}" for n in rng.sample(range(10_000_000), docs)]
            scores = sorted((rng.uniform(0.0, 30.0) for _ in range(docs)), reverse=True)
            run.writelines(f"{qid} Q0 {d} {r} {s:.6f} bench\n"
                           for r, (d, s) in enumerate(zip(docids, scores), start=1))
            pooled = rng.sample(docids, judged // 2) + [f"U{q:04d}{n:05d}" for n in range(judged - judged // 2)]
            qrels.writelines(f"{qid} 0 {d} {rng.choice((0, 0, 1, 2, 3))}\n" for d in sorted(pooled))
    return run_path, qrels_path


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, stdout) of one run of `command`."""
    cpu = cpu_of_children()
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{command[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, cpu_of_children() - cpu, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trec-eval", required=True, help="path of a trec_eval binary (10.0 for the target)")
    parser.add_argument("--rounds", type=int, default=5, help="paired rounds (default 5)")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--docs", type=int, default=1000, help="documents per query")
    parser.add_argument("--judged", type=int, default=100, help="qrels lines per query")
    parser.add_argument("--keep", type=Path, help="write the inputs here (kept) instead of a temporary folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="eval-speed-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        run, qrels = write_inputs(folder, args.queries, args.docs, args.judged)
        measures = [arg for m in MEASURES for arg in ("-m", m)]
        rank1 = [sys.executable, "-m", "rank1_cli.cli", "eval", str(run), "--qrels", str(qrels), *measures, "-f", "tsv"]
        trec_eval = [args.trec_eval, *measures, str(qrels), str(run)]
        print(f"{args.queries * args.docs} run lines, {args.queries * args.judged} qrels lines, measures "
              f"{' '.join(MEASURES)}; {args.rounds} paired rounds")
        pairs = []
        for i in range(args.rounds):
            order = (rank1, trec_eval) if i % 2 == 0 else (trec_eval, rank1)
            results = {id(c): timed(c) for c in order}
            (ours, ours_cpu, ours_out), (theirs, theirs_cpu, theirs_out) = results[id(rank1)], results[id(trec_eval)]
            if ours_out != theirs_out:
                sys.exit(f"outputs differ:\nrank1:\n{ours_out}\ntrec_eval:\n{theirs_out}")
            pairs.append((ours, theirs, ours_cpu, theirs_cpu))
            print(f"round {i + 1}: rank1 eval {ours:.3f} s, trec_eval {theirs:.3f} s, ratio {ours / theirs:.2f} "
                  f"(CPU {ours_cpu:.3f} s / {theirs_cpu:.3f} s)")
        print(f"median: rank1 eval {statistics.median(p[0] for p in pairs):.3f} s, "
              f"trec_eval {statistics.median(p[1] for p in pairs):.3f} s, "
              f"median paired ratio {statistics.median(p[0] / p[1] for p in pairs):.2f} "
              f"(CPU time: {statistics.median(p[2] for p in pairs):.3f} s / "
              f"{statistics.median(p[3] for p in pairs):.3f} s, "
              f"ratio {statistics.median(p[2] / p[3] for p in pairs):.2f}; less sensitive to other jobs)")


if __name__ == "__main__":
    main()

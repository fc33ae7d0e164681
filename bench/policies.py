#!/usr/bin/env python
"""What each way of spending reasoning costs, and how far its ranking moves from the fixed budget.

    .venv/bin/python bench/policies.py --rounds 3 [--budgets 64,256] [--top-k 20]

tiny-rank1 on one vLLM engine (started once; its start is not in the figures), the top 20 of
sample_data/run.bm25.trec (500 pairs), each policy on a fresh store in every round, the order of
the policies rotating between rounds:
  fixed        --max-reasoning-tokens B
  budget-0     --max-reasoning-tokens 0 (no reasoning)
  reason-top-5 --reason-top 5 (budget 0 for all, reasoning at B for each query's best 5)
  early-exit   --early-exit B/4,B --confidence 0.95 (the default), and early-exit-0.75 at 0.75
Reported per policy and budget, medians over the rounds: output tokens, engine seconds (generation
and repair passes), wall seconds of the rerank, nDCG@10 against sample_data/qrels.txt, and the
mean over queries of Kendall's tau between its top-k order and the fixed budget's; and the paired
ratios (per round) of tokens and wall time to the fixed budget's.

The tiny model's quality means nothing (it is a test model): nDCG here only shows that the policies
run. To learn whether reasoning pays on your data, sweep it: `rank1 sweep --budgets 0,...` and
`rank1 compare`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from throughput import rotated  # noqa: E402  (bench/ is the script's folder)

SAMPLE = REPO / "sample_data"


def policies(budget: int) -> dict[str, dict]:
    return {"fixed": {"max_reasoning_tokens": budget},
            "budget-0": {"max_reasoning_tokens": 0},
            "reason-top-5": {"max_reasoning_tokens": budget, "reason_top": 5},
            "early-exit": {"max_reasoning_tokens": budget, "early_exit": (budget // 4, budget), "confidence": 0.95},
            "early-exit-0.75": {"max_reasoning_tokens": budget, "early_exit": (budget // 4, budget),
                                "confidence": 0.75}}


def mean_kendall_tau(ranking: dict, reference: dict, top_k: int) -> float:
    from scipy.stats import kendalltau

    taus = []
    for qid, docs in reference.items():
        order = [d for d, _ in docs[:top_k]]
        position = {d: i for i, (d, _) in enumerate(ranking[qid][:top_k])}
        tau = kendalltau(range(len(order)), [position[d] for d in order]).statistic
        taus.append(1.0 if tau != tau else tau)       # one document: nothing to disagree on
    return statistics.fmean(taus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--budgets", default="64,256")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "policies.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from rank1_cli.engines import EngineConfig, engine_options, load_engine
    from rank1_cli.evaluation.trec_eval import evaluate_run
    from rank1_cli.io.collection import CollectionSource, read_qrels_file
    from rank1_cli.reasoning.store import Store
    from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank, rerank_with_engine

    budgets = [int(b) for b in args.budgets.split(",")]
    qrels = read_qrels_file(str(SAMPLE / "qrels.txt"))
    source = CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv"))
    engine = load_engine("vllm", EngineConfig(model=str(SAMPLE / "tiny-rank1"), dtype="float32", max_model_len=4096),
                         engine_options("vllm", gpu_memory_utilization=0.1))
    rows: list[dict] = []
    try:
        for round_ in range(args.rounds):
            for budget in budgets:
                options_of = policies(budget)
                results = {}
                for name in rotated(list(options_of), round_):
                    options = options_of[name]
                    prepared = prepare_rerank(str(SAMPLE / "run.bm25.trec"), source,
                                              RerankOptions(model=str(SAMPLE / "tiny-rank1"), top_k=args.top_k,
                                                            dtype="float32", max_model_len=4096, **options))
                    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "store.sqlite") as store:
                        started = time.perf_counter()
                        result = rerank_with_engine(prepared, engine, store)
                        wall = time.perf_counter() - started
                    results[name] = (result, wall)
                fixed_ranking = results["fixed"][0].ranking
                for name, (result, wall) in results.items():
                    scores = {qid: dict(docs) for qid, docs in result.ranking.items()}
                    ndcg = evaluate_run(scores, qrels, ["nDCG@10"]).value("nDCG@10")
                    rows.append({"round": round_, "budget": budget, "policy": name,
                                 "output_tokens": result.stats.output_tokens,
                                 "engine_seconds": round(result.stats.engine_seconds + result.stats.repair_seconds, 3),
                                 "wall_seconds": round(wall, 3), "nDCG@10": round(ndcg, 4),
                                 "kendall_tau": round(mean_kendall_tau(result.ranking, fixed_ranking, args.top_k), 4),
                                 "exits": {str(b): n for b, n in (result.stats.exits or {}).items()},
                                 "reasoned": result.stats.reasoned})
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        engine.close()

    summary = []
    for budget in budgets:
        fixed = {r["round"]: r for r in rows if r["budget"] == budget and r["policy"] == "fixed"}
        for name in policies(budget):
            mine = [r for r in rows if r["budget"] == budget and r["policy"] == name]
            summary.append({
                "budget": budget, "policy": name,
                **{f"median_{k}": statistics.median(r[k] for r in mine)
                   for k in ("output_tokens", "engine_seconds", "wall_seconds", "nDCG@10", "kendall_tau")},
                "median_token_ratio": statistics.median(r["output_tokens"] / fixed[r["round"]]["output_tokens"]
                                                        for r in mine),
                "median_wall_ratio": statistics.median(r["wall_seconds"] / fixed[r["round"]]["wall_seconds"]
                                                       for r in mine),
            })
    Path(args.out).write_text(json.dumps({"rounds": rows, "summary": summary}, indent=2) + "\n")
    print(f"{'budget':>6} {'policy':<15} {'tokens':>7} {'engine s':>8} {'wall s':>7} {'nDCG@10':>7} {'tau':>6} "
          f"{'tokens/fixed':>12} {'wall/fixed':>10}")
    for s in summary:
        print(f"{s['budget']:>6} {s['policy']:<15} {s['median_output_tokens']:>7.0f} {s['median_engine_seconds']:>8.2f} "
              f"{s['median_wall_seconds']:>7.2f} {s['median_nDCG@10']:>7.4f} {s['median_kendall_tau']:>6.3f} "
              f"{s['median_token_ratio']:>12.3f} {s['median_wall_ratio']:>10.3f}")


if __name__ == "__main__":
    main()

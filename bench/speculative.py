#!/usr/bin/env python
"""n-gram speculative decoding (`--speculative ngram`) against plain decoding: same outputs? faster?

    .venv/bin/python bench/speculative.py --rounds 3

Each run is a fresh process with one vLLM engine on tiny-rank1 (float32, context 4096), reasoning
the top 4 of sample_data/run.bm25.trec (100 prompts) at 64 tokens; plain and speculative runs
alternate (A B A B ...). Reported: generation seconds (the engine start excluded), their paired
ratios speculative/plain, and whether every run wrote the same token ids, stop strings and
last-position logprobs as the first plain run (the largest logprob difference).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"


def one_run(speculative: bool) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    from rank1_cli.engines import EngineConfig, GenerationSettings, engine_options, load_engine
    from rank1_cli.io.collection import CollectionSource
    from rank1_cli.reasoning import prompts
    from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank

    job = prepare_rerank(str(SAMPLE / "run.bm25.trec"),
                         CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv")),
                         RerankOptions(model=str(SAMPLE / "tiny-rank1"), top_k=4, dtype="float32", max_model_len=4096,
                                       max_reasoning_tokens=64))
    prompt_list = list(dict.fromkeys(p.prompt for p in job.pairs))
    options = engine_options("vllm", gpu_memory_utilization=0.1, speculative="ngram" if speculative else None)
    engine = load_engine("vllm", EngineConfig(model=str(SAMPLE / "tiny-rank1"), dtype="float32", max_model_len=4096),
                         options)
    try:
        started = time.perf_counter()
        made = dict(engine.generate(prompt_list, GenerationSettings(64, prompts.STOP_STRINGS, 20)))
        seconds = time.perf_counter() - started
    finally:
        engine.close()
    return {"seconds": seconds, "outputs": [
        {"ids": list(g.token_ids), "stop": g.stop_reason, "last": {str(k): v for k, v in (g.last_logprobs or {}).items()}}
        for _, g in sorted(made.items())]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", choices=["plain", "speculative"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "speculative.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one == "speculative")))
        return
    runs = []
    for round_ in range(args.rounds):
        for kind in ("plain", "speculative"):
            proc = subprocess.run([sys.executable, __file__, "--one", kind], capture_output=True, text=True, check=True)
            runs.append({"round": round_, "kind": kind, **json.loads(proc.stdout.splitlines()[-1])})
            print(f"round {round_} {kind}: {runs[-1]['seconds']:.2f} s", flush=True)
    reference = runs[0]["outputs"]
    largest = 0.0
    same = True
    for run in runs:
        for a, b in zip(reference, run["outputs"]):
            same &= a["ids"] == b["ids"] and a["stop"] == b["stop"] and a["last"].keys() == b["last"].keys()
            largest = max([largest, *(abs(a["last"][k] - b["last"][k]) for k in a["last"].keys() & b["last"].keys())])
    seconds = {kind: [r["seconds"] for r in runs if r["kind"] == kind] for kind in ("plain", "speculative")}
    ratios = [s / p for p, s in zip(seconds["plain"], seconds["speculative"])]
    summary = {"plain_median_s": statistics.median(seconds["plain"]),
               "speculative_median_s": statistics.median(seconds["speculative"]),
               "paired_ratios": ratios, "median_ratio": statistics.median(ratios),
               "same_tokens_and_stops": same, "largest_logprob_difference": largest}
    Path(args.out).write_text(json.dumps({"summary": summary, "seconds": seconds}, indent=2) + "\n")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

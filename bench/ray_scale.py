#!/usr/bin/env python
"""Ray's overhead on one machine: one vLLM engine, `--data-parallel 2` (the process pool) and
`--backend ray --replicas 2` (Ray actors), pairs per second, in paired rounds.

    .venv/bin/python bench/ray_scale.py --rounds 3                 # writes bench/results/ray.json
    .venv/bin/python bench/ray_scale.py --rounds 3 --top-k 100 --model PATH --dtype float16 \\
        --max-model-len 16000 --max-reasoning-tokens 8192 --gpu-memory-utilization 0   # a GPU machine

Each run is a fresh process that loads its engine (Ray: a local Ray started for the run, its
replicas on half of the machine each, like the pool's), then generates every distinct prompt of
the top K of sample_data/run.bm25.trec through the Engine interface, as a rerank does. Reported per
mode: generation seconds and pairs/s (the engine start excluded, reported apart), median over the
rounds; the modes rotate within each round (round r starts at the r-th mode) so that a slow spell of
the machine falls on every mode. The ratios are paired (per round): Ray/pool and Ray/one engine, of
generation seconds. Every run must write the same token ids and stop strings as the first run of
the one engine (checked, reported as same_outputs).
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLE = REPO / "sample_data"
MODES = {
    "one": ("vllm", {}),
    "data_parallel_2": ("vllm", {"data_parallel": 2}),
    "ray_2": ("ray", {"replicas": 2}),
}


def one_run(mode: str, args: argparse.Namespace) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))
    from rank1_cli.engines import EngineConfig, GenerationSettings, engine_options, load_engine
    from rank1_cli.io.collection import CollectionSource
    from rank1_cli.reasoning import prompts
    from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank

    job = prepare_rerank(args.run, CollectionSource(corpus=args.corpus, queries=args.queries),
                         RerankOptions(model=args.model, top_k=args.top_k, dtype=args.dtype,
                                       max_model_len=args.max_model_len, max_reasoning_tokens=args.max_reasoning_tokens))
    prompt_list = list(dict.fromkeys(p.prompt for p in job.pairs))
    backend, extra = MODES[mode]
    if backend == "ray":
        # Each replica on half the machine's cores, like the pool's placement.
        extra = {**extra, "cpus_per_replica": max(1, (os.cpu_count() or 2) // 2)} if not _gpus() else extra
    options = engine_options(backend, gpu_memory_utilization=args.gpu_memory_utilization, **extra)
    started = time.perf_counter()
    engine = load_engine(backend, EngineConfig(model=args.model, dtype=args.dtype, max_model_len=args.max_model_len),
                         options)
    start_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        made = dict(engine.generate(prompt_list, GenerationSettings(args.max_reasoning_tokens, prompts.STOP_STRINGS, 20)))
        seconds = time.perf_counter() - started
    finally:
        engine.close()
    return {"seconds": seconds, "start_s": start_s, "pairs": len(prompt_list),
            "output_tokens": sum(g.output_tokens for g in made.values()),
            "outputs": [[list(g.token_ids or ()), g.stop_reason] for _, g in sorted(made.items())]}


def _gpus() -> bool:
    from rank1_cli.engines import visible_gpus

    return visible_gpus() is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, of: " + ", ".join(MODES))
    parser.add_argument("--run", default=str(SAMPLE / "run.bm25.trec"))
    parser.add_argument("--corpus", default=str(SAMPLE / "corpus.jsonl"))
    parser.add_argument("--queries", default=str(SAMPLE / "queries.tsv"))
    parser.add_argument("--model", default=str(SAMPLE / "tiny-rank1"))
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--max-reasoning-tokens", type=int, default=64)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.1)
    parser.add_argument("--one", choices=list(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(HERE / "results" / "ray.json"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args)))
        return
    from benchlib import command_line, machine_info, write_json_atomic

    modes = args.modes.split(",")
    passed = [a for a in sys.argv[1:]]
    runs = []
    for round_ in range(args.rounds):
        for mode in modes[round_ % len(modes):] + modes[:round_ % len(modes)]:
            proc = subprocess.run([sys.executable, __file__, *passed, "--one", mode], capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            run = {"round": round_, "mode": mode, **json.loads(proc.stdout.splitlines()[-1])}
            runs.append(run)
            print(f"round {round_} {mode}: {run['seconds']:.2f} s ({run['pairs'] / run['seconds']:.1f} pairs/s), "
                  f"start {run['start_s']:.1f} s", flush=True)
    reference = next(r["outputs"] for r in runs if r["mode"] == modes[0])
    same = all(r["outputs"] == reference for r in runs)
    summary: dict = {"same_outputs": same}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        summary[mode] = {"seconds_median": statistics.median(r["seconds"] for r in mine),
                         "pairs_per_s_median": statistics.median(r["pairs"] / r["seconds"] for r in mine),
                         "start_s_median": statistics.median(r["start_s"] for r in mine)}

    def paired(a: str, b: str) -> list[float]:
        by_round = {(r["round"], r["mode"]): r["seconds"] for r in runs}
        return [by_round[(i, a)] / by_round[(i, b)] for i in range(args.rounds)
                if (i, a) in by_round and (i, b) in by_round]

    for a, b in (("ray_2", "data_parallel_2"), ("ray_2", "one"), ("data_parallel_2", "one")):
        if a in modes and b in modes:
            ratios = paired(a, b)
            summary[f"{a}/{b}"] = {"paired_ratios": ratios, "median": statistics.median(ratios)}
    write_json_atomic(Path(args.out), {
        "command": command_line(), "machine": machine_info(), "summary": summary,
        "runs": [{k: v for k, v in r.items() if k != "outputs"} for r in runs]})
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""How long the vLLM engine takes to start on tiny-rank1, and whether a change keeps its outputs.

    .venv/bin/python bench/engine_start.py                         # 3 starts of this tree's code
    .venv/bin/python bench/engine_start.py --before /work/main --rounds 3
    .venv/bin/python bench/engine_start.py --once --log            # one start, vLLM's INFO log on stderr
    .venv/bin/python bench/engine_start.py --before /work/main --cold  # each start with empty compile caches

Each start is its own process (nothing stays warm in memory between starts; vLLM's and torch's
on-disk caches do, as they would for a user, unless `--cold` gives each start empty ones, as on a
new machine or a CI runner): the tests' engine (`load_engine("vllm", EngineConfig(tiny-rank1,
float32, max_model_len 4096), gpu_memory_utilization 0.1)`), then 10 sample_data pairs reasoned
at 64 tokens (`generate`) and the verdict forced after each one's reasoning (`force_verdict`).
Timed: imports, the engine start, generate, force_verdict, close, and the whole process.

With `--before TREE`, the rounds alternate TREE's code and this tree's (A B A B ...) and the
per-round ratios are reported. Every run's outputs (token ids, text, top-20 logprobs of the last
position, the forced verdicts' logprobs) are compared with the first run's: the token ids and text
must be identical, and the largest logprob difference is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
PAIRS = 10
BUDGET = 64


def sample_prompts() -> list[str]:
    """The first PAIRS (query, top document) pairs of sample_data's BM25 run, as rank1 prompts."""
    from rank1_cli.reasoning.prompts import build_prompt, passage_text

    queries = dict(line.rstrip("\n").split("\t", 1) for line in (SAMPLE / "queries.tsv").open())
    docs = {}
    for line in (SAMPLE / "corpus.jsonl").open():
        doc = json.loads(line)
        docs[doc["doc_id"]] = passage_text(doc.get("title"), doc["text"])
    prompts = []
    for line in (SAMPLE / "run.bm25.trec").open():
        qid, _, doc_id, *_ = line.split()
        prompts.append(build_prompt(queries[qid], docs[doc_id]))
        if len(prompts) == PAIRS:
            break
    return prompts


def one_start(out: Path) -> None:
    """Start the engine, run the sample, write timings and outputs to `out` (JSON)."""
    started = time.perf_counter()
    from rank1_cli.engines import EngineConfig, engine_options, load_engine
    from rank1_cli.engines.base import GenerationSettings
    from rank1_cli.reasoning.prompts import STOP_STRINGS
    from rank1_cli.reasoning.scoring import VerdictTokens, repair_prompt

    prompts = sample_prompts()
    imported = time.perf_counter()
    engine = load_engine("vllm", EngineConfig(model=str(SAMPLE / "tiny-rank1"), dtype="float32", max_model_len=4096),
                         engine_options("vllm", gpu_memory_utilization=0.1))
    loaded = time.perf_counter()
    generations = dict(engine.generate(prompts, GenerationSettings(max_tokens=BUDGET, stop=STOP_STRINGS)))
    generated = time.perf_counter()
    tokens = VerdictTokens.from_tokenizer(engine.tokenizer)
    repairs = [repair_prompt(prompts[i], generations[i].text) for i in range(len(prompts))]
    verdicts = engine.force_verdict(repairs, tokens.true_id, tokens.false_id)
    forced = time.perf_counter()
    engine.close()
    closed = time.perf_counter()
    outputs = [{"token_ids": list(generations[i].token_ids), "text": generations[i].text,
                "last_logprobs": {str(k): v for k, v in sorted((generations[i].last_logprobs or {}).items())},
                "verdict": [verdicts[i].logprob_true, verdicts[i].logprob_false]}
               for i in range(len(prompts))]
    out.write_text(json.dumps({
        "seconds": {"imports": imported - started, "engine_start": loaded - imported,
                    "generate": generated - loaded, "force_verdict": forced - generated, "close": closed - forced},
        "outputs": outputs,
    }))


def run_child(tree: Path, log: bool, cold: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        if cold:
            env.update(VLLM_CACHE_ROOT=str(Path(tmp) / "vllm-cache"), TORCHINDUCTOR_CACHE_DIR=str(Path(tmp) / "inductor"))
        if log:
            env["VLLM_LOGGING_LEVEL"] = "INFO"
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(out)], env=env, check=True,
                       stderr=None if log else subprocess.DEVNULL, cwd=tmp)
        result = json.loads(out.read_text())
        result["seconds"]["process"] = time.perf_counter() - started
        result["load_average_1min"] = [load_before, os.getloadavg()[0]]
        return result


def differences(reference: list[dict], outputs: list[dict]) -> dict:
    """Whether the tokens and text are identical, and the largest logprob difference."""
    same_tokens = all(a["token_ids"] == b["token_ids"] and a["text"] == b["text"] for a, b in zip(reference, outputs))
    largest = 0.0
    for a, b in zip(reference, outputs):
        if a["last_logprobs"].keys() != b["last_logprobs"].keys():
            same_tokens = False
            continue
        largest = max([largest, *(abs(a["last_logprobs"][k] - b["last_logprobs"][k]) for k in a["last_logprobs"])])
        largest = max([largest, *(abs(x - y) for x, y in zip(a["verdict"], b["verdict"]))])
    return {"same_tokens_and_text": same_tokens, "max_logprob_difference": largest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another tree (its rank1_cli) to alternate with this one")
    parser.add_argument("--once", action="store_true", help="one start of this tree, its outputs printed")
    parser.add_argument("--log", action="store_true", help="vLLM's INFO log on stderr")
    parser.add_argument("--cold", action="store_true", help="every start with empty vLLM and inductor caches")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_start(args.child)
        return

    trees = {"before": args.before, "after": REPO} if args.before else {"this": REPO}
    rounds = 1 if args.once else args.rounds
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    reference = None
    for r in range(rounds):
        for name, tree in trees.items():
            result = run_child(tree, args.log, args.cold)
            reference = reference or result["outputs"]
            result["versus_first_run"] = differences(reference, result["outputs"])
            runs[name].append(result)
            print(f"round {r + 1} {name}: " + ", ".join(f"{k} {v:.1f}s" for k, v in result["seconds"].items())
                  + f"; load {result['load_average_1min'][0]:.1f}; {result['versus_first_run']}", flush=True)
    if args.once:
        for output in reference:
            print(json.dumps(output))
    summary = {name: {phase: {"median": statistics.median(r["seconds"][phase] for r in results),
                              "min": min(r["seconds"][phase] for r in results),
                              "max": max(r["seconds"][phase] for r in results)}
                      for phase in results[0]["seconds"]}
               for name, results in runs.items()}
    if args.before:
        for phase in ("engine_start", "process"):
            ratios = [a["seconds"][phase] / b["seconds"][phase] for a, b in zip(runs["after"], runs["before"])]
            summary[f"after_over_before_{phase}"] = {"per_round": ratios, "median": statistics.median(ratios)}
    print(json.dumps(summary, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "runs": runs,
                                        "command": [sys.executable, *sys.argv]}, indent=1))


if __name__ == "__main__":
    main()

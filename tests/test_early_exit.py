"""Early exit by confidence: every pair judged exactly as a fixed-budget rerank at its exit budget."""

import dataclasses

import pytest

from rank1_cli.collection import CollectionSource
from rank1_cli.early_exit import (check_early_exit, confident, continuable, continued, ends_in_a_stop_prefix,
                                  parse_early_exit)
from rank1_cli.engines import EngineConfig, Generation, engine_options, load_engine
from rank1_cli.errors import OptionError
from rank1_cli.rerank import RerankOptions, prepare_rerank, rerank_with_engine
from rank1_cli.scorer import Judgement
from rank1_cli.scoring import VerdictTokens
from rank1_cli.store import PENDING, Store, StoredGeneration

from conftest import SAMPLE, TINY_MODEL


@pytest.mark.parametrize("text, message", [
    ("16", r"needs at least two budgets \(an exit and the last\), found \[16\]"),
    ("16,8,64", r"budgets must increase from at least 1 token, found 16,8,64"),
    ("16,16,64", r"budgets must increase from at least 1 token, found 16,16,64"),
    ("0,16,64", r"budgets must increase from at least 1 token, found 0,16,64"),
    ("16,32", r"the last early_exit budget \(32\) must be max_reasoning_tokens \(64\)"),
])
def test_early_exit_budgets_are_checked(text, message):
    with pytest.raises(OptionError, match=message):
        check_early_exit(parse_early_exit(text), 64, 0.95)


def test_confidence_and_unreadable_budgets_are_refused():
    for bad in (0.5, 1.0, 0.2, 1.5):
        with pytest.raises(OptionError, match=rf"confidence must be above 0.5 and below 1, found {bad}"):
            check_early_exit((16, 64), 64, bad)
    with pytest.raises(OptionError, match=r"early_exit must be comma-separated token counts such as 512,2048,8192, "
                                          r"found '16;64'"):
        parse_early_exit("16;64")
    assert parse_early_exit("16, 32,64") == (16, 32, 64)


def judgement(score, completion="forced"):
    return Judgement("ab" * 32, score, "true", "", None, None, completion, 8, "engine")


def test_a_verdict_is_confident_on_either_side_and_a_fallback_never():
    assert confident(judgement(0.95), 0.95) and confident(judgement(0.05), 0.95)
    assert not confident(judgement(0.9499), 0.95) and not confident(judgement(0.0501), 0.95)
    assert not confident(judgement(0.5, "fallback"), 0.51)


@pytest.mark.parametrize("text, cut", [
    ("It is about tides.", False), ("The answer is near <", True), ("So </think", True), ("So </think>", True),
    ("So </think> ", True), ("So </think> t", True), ("So </think> fals", True), ("a < b and c", False),
])
def test_reasoning_that_ends_with_the_start_of_a_stop_string_is_not_continued(text, cut):
    assert ends_in_a_stop_prefix(text) is cut
    record = StoredGeneration("cd" * 32, "forced", "true", -0.1, -2.0, 3, text, (1, 2, 3))
    assert continuable(record, 3) is not cut


def test_only_reasoning_cut_at_the_budget_with_its_token_ids_is_continued():
    def record(tokens, ids):
        return StoredGeneration("cd" * 32, "forced", "true", -0.1, -2.0, tokens, "Tides.", ids)
    assert continuable(record(3, (1, 2, 3)), 3)
    assert not continuable(record(3, None), 3)              # imported traces: generated afresh
    assert not continuable(record(2, (1, 2)), 3)             # ended before the budget (EOS)


def test_a_continued_generation_appends_its_tokens_and_decodes_them_whole(tiny_tokenizer):
    tokens = VerdictTokens.from_tokenizer(tiny_tokenizer)
    ids = tuple(tiny_tokenizer("The passage is about tides. It explains", add_special_tokens=False)["input_ids"])
    more = tuple(tiny_tokenizer(" the moon.</think> true", add_special_tokens=False)["input_ids"])
    before = StoredGeneration("ef" * 32, PENDING, None, None, None, len(ids), "The passage ...", ids)
    finished = continued(before, Generation(" the moon.", len(more), "stop", "</think> true",
                                            {tokens.true_id: -0.2, tokens.false_id: -1.8}, more), tokens, tiny_tokenizer)
    assert finished.completion == "stop" and finished.verdict == "true"
    assert finished.output_tokens == len(ids) + len(more) and finished.token_ids == ids + more
    assert finished.reasoning == "The passage is about tides. It explains the moon."
    unfinished = continued(before, Generation(" the moon", 2, "length", None, None, more[:2]), tokens, tiny_tokenizer)
    assert unfinished.completion == PENDING and unfinished.output_tokens == len(ids) + 2
    assert unfinished.reasoning == tiny_tokenizer.decode(list(ids + more[:2]))


def sample_job(budget, backend="transformers", top_k=2, max_model_len=1024, **options):
    source = CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv"))
    return prepare_rerank(str(SAMPLE / "run.bm25.trec"), source,
                          RerankOptions(model=str(TINY_MODEL), backend=backend, top_k=top_k, dtype="float32",
                                        max_model_len=max_model_len, max_reasoning_tokens=budget, **options))


@pytest.fixture(scope="module")
def transformers_engine():
    engine = load_engine("transformers", EngineConfig(model=str(TINY_MODEL), dtype="float32", max_model_len=1024),
                         engine_options("transformers", device="cpu"))
    yield engine
    engine.close()


def test_every_pair_equals_a_fixed_budget_rerank_at_its_exit_budget(transformers_engine, tmp_path):
    """Budgets 8, 16, 48 at confidence 0.9 on the transformers engine: some pairs exit at each
    budget, each is judged exactly (score within 1e-4, same completion, length and reasoning) as a
    rerank at that budget; all of it is stored under those budgets, so a second run generates nothing."""
    job = sample_job(48, early_exit=(8, 16, 48), confidence=0.9)
    with Store(tmp_path / "store.sqlite") as store:
        result = rerank_with_engine(job, transformers_engine, store)
        exits = result.stats.exits
        assert sum(exits.values()) == 50 and all(exits[b] > 0 for b in (8, 16, 48)), exits
        fixed = {b: rerank_with_engine(sample_job(b), transformers_engine) for b in (8, 16, 48)}
        assert result.stats.output_tokens < fixed[48].stats.output_tokens
        # every stage's tokens are counted (reasoning goes on, so each pair's length is its cost)
        assert result.stats.output_tokens >= sum(t.output_tokens for t in result.traces.values())
        for key, trace in result.traces.items():
            budget = trace.settings["max_reasoning_tokens"]
            assert trace.settings["early_exit"] == [8, 16, 48] and trace.settings["confidence"] == 0.9
            same = fixed[budget].traces[key]
            assert (trace.completion, trace.output_tokens, trace.reasoning) == \
                   (same.completion, same.output_tokens, same.reasoning), key
            assert trace.score == pytest.approx(same.score, abs=1e-4)
            if budget < 48:
                assert trace.completion == "stop" or max(trace.score, 1 - trace.score) >= 0.9
        for budget in (8, 16):
            key = dataclasses.replace(job.key, max_reasoning_tokens=budget)
            assert store.count(key) >= exits[budget]
        again = rerank_with_engine(job, transformers_engine, store)
        assert again.stats.generated == 0 and again.stats.from_store == 50 and again.ranking == result.ranking


def test_early_exit_options_are_checked_before_any_model_loads():
    with pytest.raises(OptionError, match=r"early_exit and reason_top are two policies; choose one"):
        sample_job(48, early_exit=(8, 48), reason_top=1)
    with pytest.raises(OptionError, match=r"the last early_exit budget \(32\) must be max_reasoning_tokens \(48\)"):
        sample_job(48, early_exit=(8, 32))


def test_with_vllm_every_pair_is_within_1e4_of_a_fixed_budget_rerank_at_its_exit_budget(vllm_engine, tmp_path):
    """vLLM is not batch-invariant: the same completion state and length for every pair, the score
    within 1e-4 for at least 99% of them."""
    def job(budget, **options):
        return sample_job(budget, backend="vllm", top_k=5, max_model_len=4096, **options)
    with Store(tmp_path / "store.sqlite") as store:
        result = rerank_with_engine(job(64, early_exit=(8, 16, 64), confidence=0.9), vllm_engine, store)
    assert sum(result.stats.exits.values()) == 125 and result.stats.exits[8] > 0 and result.stats.exits[64] > 0
    fixed = {b: rerank_with_engine(job(b), vllm_engine) for b in (8, 16, 64)}
    close = 0
    for key, trace in result.traces.items():
        same = fixed[trace.settings["max_reasoning_tokens"]].traces[key]
        assert (trace.completion, trace.output_tokens) == (same.completion, same.output_tokens), key
        close += abs(trace.score - same.score) <= 1e-4
    assert close >= 0.99 * len(result.traces)

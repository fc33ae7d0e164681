"""Early exit by confidence: every pair judged exactly as a fixed-budget rerank at its exit budget."""

import dataclasses

import pytest
from conftest import SAMPLE, TINY_MODEL

from rank1_cli.engines import EngineConfig, Generation, engine_options, load_engine
from rank1_cli.errors import OptionError
from rank1_cli.io.collection import CollectionSource
from rank1_cli.reasoning.early_exit import (
    check_early_exit,
    confident,
    continuable,
    continued,
    ends_in_a_stop_prefix,
    parse_early_exit,
)
from rank1_cli.reasoning.scorer import Judgement
from rank1_cli.reasoning.scoring import VerdictTokens
from rank1_cli.reasoning.store import PENDING, Store, StoredGeneration
from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank, rerank_with_engine


@pytest.mark.parametrize("text, message", [
    ("16", r"needs at least two budgets \(an exit and the last\), found \[16\]"),
    ("16,8,64", r"budgets must increase from at least 1 token, found 16,8,64"),
    ("16,16,64", r"budgets must increase from at least 1 token, found 16,16,64"),
    ("0,16,64", r"budgets must increase from at least 1 token, found 0,16,64"),
    ("16,32", r"the last early_exit budget \(32\) must be max_reasoning_tokens \(64\)"),
    ("8,16,32", r"the last early_exit budget \(32\) must be max_reasoning_tokens \(64\)"),
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
    check_early_exit((1, 64), 64, 0.51)           # one token is a budget; any confidence above 0.5
    check_early_exit((1, 2, 64), 64, 0.99)


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


# --- the stages, with a scripted model (fast; mutation testing reaches judge_with_early_exit here) ---------

class CharTokenizer:
    """One token per character: ids are code points, so a cut at b tokens is a cut at b characters."""

    def __call__(self, text, **_):
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids, **_):
        return "".join(map(chr, ids))


STOP = "</think> true"


class ScriptedReasoner:
    """Greedy 'reasoning' that is a fixed text per prompt, to be generated one character per token,
    ending with the stop string ("stop"), at EOS ("eos") or never (None); a verdict forced after n
    characters of it has P(true) = confidence(n). Continuations (token ids) go on where they stopped."""

    name = "scripted"

    def __init__(self, scripts, tokens):
        self.scripts, self.tokens = scripts, tokens       # prompt -> (text, end, confidence)
        self.calls: list[tuple[str, int, int]] = []       # (text or ids, characters before, max_tokens)

    def _split(self, prompt):
        text = prompt if isinstance(prompt, str) else "".join(map(chr, prompt))
        original = max((p for p in self.scripts if text.startswith(p)), key=len)
        return original, text[len(original):]

    def generate(self, prompts, settings):
        for i, prompt in enumerate(prompts):
            original, before = self._split(prompt)
            text, end, _ = self.scripts[original]
            whole = text + (STOP if end == "stop" else "")
            assert whole.startswith(before)
            new = whole[len(before):][:settings.max_tokens]
            self.calls.append(("ids" if not isinstance(prompt, str) else "text", len(before), settings.max_tokens))
            if STOP in new:
                cut = new.index(STOP) + len(STOP)
                yield i, Generation(new[:new.index(STOP)], cut, "stop", STOP,
                                    {self.tokens.true_id: -0.1, self.tokens.false_id: -2.5}, tuple(map(ord, new[:cut])))
            else:
                finished = end == "eos" and len(before) + len(new) == len(whole)
                yield i, Generation(new, len(new), "stop" if finished else "length", None, None, tuple(map(ord, new)))

    def force_verdict(self, prompts, true_id, false_id):
        import math

        from rank1_cli.engines import VerdictLogprobs

        out = []
        for prompt in prompts:
            original = max((p for p in self.scripts if prompt.startswith(p)), key=len)
            reasoning = prompt[len(original) + 1:-len("\n</think>")]
            p = self.scripts[original][2](len(reasoning))
            out.append(VerdictLogprobs(math.log(p), math.log(1 - p)))
        return out

    def close(self):
        pass


def test_each_stage_exits_the_sure_the_finished_and_the_ended_and_goes_on_from_token_ids(tmp_path):
    from rank1_cli.reasoning.early_exit import judge_with_early_exit
    from rank1_cli.reasoning.scorer import Scorer
    from rank1_cli.reasoning.store import GenerationKey

    key = GenerationKey("m", "blake2b:x", "scripted", "float32", 40, 1024)
    tokens = VerdictTokens(1, 2)
    scripts = {
        "P-finishes": ("abc", "stop", lambda n: 0.5),                     # its own verdict within 16
        "P-sure-at-24": ("x" * 60, None, lambda n: 0.97 if n >= 24 else 0.6),   # forced at 16 (0.6), sure at 24
        "P-never-sure": ("y" * 60, None, lambda n: 0.7),                  # forced at 16, 24, then judged at 40
        "P-eos-at-20": ("z" * 20, "eos", lambda n: 0.6),                  # goes on at 16, ends at 20: decided at 24
        "P-stop-prefix": ("a" * 14, "stop", lambda n: 0.6),               # "...a</" at 16: its stop unseen
    }
    engine = ScriptedReasoner(scripts, tokens)
    with Store(tmp_path / "s.sqlite") as store:
        scorer = Scorer(key, tokens, lambda: engine, store=store)
        prompt_list = list(scripts)
        judged, budgets = judge_with_early_exit(scorer, prompt_list, (16, 24, 40), 0.95, CharTokenizer())
        outcome = {p: (j.completion, j.output_tokens, j.reasoning, b) for p, j, b in zip(prompt_list, judged, budgets)}
        assert outcome == {
            "P-finishes": ("stop", 16, "abc", 16),
            "P-sure-at-24": ("forced", 24, "x" * 24, 24),
            "P-never-sure": ("forced", 40, "y" * 40, 40),
            "P-eos-at-20": ("forced", 20, "z" * 20, 24),
            "P-stop-prefix": ("stop", 27, "a" * 14, 40),
        }
        assert [j.score for j in judged[1:3]] == pytest.approx([0.97, 0.7])
        # stage 1 from the text; then continuations of what 16 cut (8 more tokens each), except the stop
        # prefix, generated afresh at 24 ("...a</think> t": again) and at 40
        assert sorted(engine.calls) == sorted([("text", 0, 16)] * 5 + [("ids", 16, 8)] * 3 + [("text", 0, 24)]
                                              + [("ids", 24, 16)] + [("text", 0, 40)])
        assert scorer.stats.output_tokens == 5 * 16 + (8 + 8 + 4 + 24) + (16 + 27)
        # every stage's judgements are stored under its budget: a second run generates nothing
        for budget, count in ((16, 5), (24, 4), (40, 2)):
            assert store.count(dataclasses.replace(key, max_reasoning_tokens=budget)) == count
        engine.calls.clear()
        again, again_budgets = judge_with_early_exit(Scorer(key, tokens, lambda: engine, store=store), prompt_list,
                                                     (16, 24, 40), 0.95, CharTokenizer())
        assert engine.calls == [] and again_budgets == budgets
        assert [j.score for j in again] == [j.score for j in judged] and {j.origin for j in again} == {"store"}

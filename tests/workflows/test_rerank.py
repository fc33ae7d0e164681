"""The rerank pipeline around the engine: ordering, tail, dedup, repair, the store (resume and reuse).

A scripted engine stands in for the model here so each path is hit on purpose; the real vLLM
runs are in test_vllm_engine.py and test_cli_rerank.py.
"""

import dataclasses
import math

import pytest
from conftest import SAMPLE, TINY_MODEL

from rank1_cli.engines import Generation, VerdictLogprobs
from rank1_cli.errors import EngineFailure, InputError
from rank1_cli.io.collection import CollectionSource
from rank1_cli.reasoning.fitting import fit_prompts
from rank1_cli.reasoning.store import Store
from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank, rerank_with_engine


class ScriptedEngine:
    """Answers from a function of the prompt; records what it was asked."""

    name = "scripted"

    def __init__(self, answer, verdict=None, fail_after=None):
        self.answer, self.verdict, self.fail_after = answer, verdict, fail_after
        self.generated: list[str] = []
        self.forced: list[str] = []
        self.force_calls = 0

    def generate(self, prompts, settings):
        for i, prompt in enumerate(prompts):
            if self.fail_after is not None and len(self.generated) >= self.fail_after:
                raise RuntimeError("CUDA error: device lost")
            self.generated.append(prompt)
            yield i, self.answer(prompt)

    def force_verdict(self, prompts, true_id, false_id):
        self.force_calls += 1
        self.forced.extend(prompts)
        return [self.verdict(p) if self.verdict else VerdictLogprobs(math.log(0.3), math.log(0.1)) for p in prompts]

    def close(self):
        pass


def write_run(tmp_path, lines):
    path = tmp_path / "run.trec"
    path.write_text("".join(f"{q} Q0 {d} {r} {s} bm25\n" for q, d, r, s in lines))
    return str(path)


def prepared(tmp_path, run_lines, **options):
    opts = dict(model=str(TINY_MODEL), top_k=3, max_model_len=4096, max_reasoning_tokens=64, chunk_size=2)
    opts.update(options)
    source = CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv"))
    return prepare_rerank(write_run(tmp_path, run_lines), source, RerankOptions(**opts))


def finished(prepared_job, score_of):
    """A generation that ends with `</think> true|false` and the given P(true)."""
    true_id, false_id = prepared_job.tokens.true_id, prepared_job.tokens.false_id

    def answer(prompt):
        p = score_of(prompt)
        lt, lf = math.log(p), math.log(1 - p)
        return Generation("Some reasoning.", 12, "stop", "</think> true" if p >= 0.5 else "</think> false",
                          {true_id: lt, false_id: lf, 99: -5.0})
    return answer


RUN = [("q01", "d001", 1, 9.0), ("q01", "d002", 2, 8.0), ("q01", "d003", 3, 7.0), ("q01", "d004", 4, 6.0),
       ("q02", "d005", 1, 5.0), ("q02", "d006", 2, 4.0)]


def test_top_k_reranked_ties_by_first_stage_rank_and_tail_kept(tmp_path):
    job = prepared(tmp_path, RUN)
    scores = {"d001": 0.2, "d002": 0.9, "d003": 0.2, "d005": 0.5, "d006": 0.5}
    by_prompt = {pair.prompt: scores[pair.docid] for pair in job.pairs}
    result = rerank_with_engine(job, ScriptedEngine(finished(job, by_prompt.get)))
    q1 = result.ranking["q01"]
    assert [d for d, _ in q1] == ["d002", "d001", "d003", "d004"]  # d001/d003 tie: first-stage order
    assert q1[3][1] < q1[2][1]                                        # tail below every reranked doc
    assert [d for d, _ in result.ranking["q02"]] == ["d005", "d006"]
    assert result.stats.stop == 5 and result.stats.forced == 0


def test_no_keep_tail_drops_documents_beyond_top_k(tmp_path):
    job = prepared(tmp_path, RUN, keep_tail=False)
    result = rerank_with_engine(job, ScriptedEngine(finished(job, lambda p: 0.7)))
    assert [d for d, _ in result.ranking["q01"]] == ["d001", "d002", "d003"]


def test_identical_prompts_are_generated_once(tmp_path):
    # Two qids with the same text retrieving the same document make the same prompt.
    queries = tmp_path / "queries.tsv"
    queries.write_text("a\tsame question\nb\tsame question\n")
    run = write_run(tmp_path, [("a", "d001", 1, 2.0), ("b", "d001", 1, 2.0), ("b", "d002", 2, 1.0)])
    job = prepare_rerank(run, CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(queries)),
                         RerankOptions(model=str(TINY_MODEL), max_model_len=4096, max_reasoning_tokens=64))
    engine = ScriptedEngine(finished(job, lambda p: 0.8))
    result = rerank_with_engine(job, engine)
    assert len(engine.generated) == 2 and len(result.traces) == 3


def test_unfinished_reasoning_is_repaired_in_one_batch(tmp_path):
    job = prepared(tmp_path, RUN)

    def answer(prompt):
        return Generation("It mentions colds. Then it goes on and on", 64, "length", None, None)

    def verdict(repair_prompt):
        assert repair_prompt.endswith("\nIt mentions colds.\n</think>")
        return VerdictLogprobs(-0.5, -2.0)

    engine = ScriptedEngine(answer, verdict)
    result = rerank_with_engine(job, engine)
    assert len(engine.forced) == 5 and engine.force_calls == 1
    traces = list(result.traces.values())
    assert {t.completion for t in traces} == {"forced"}
    assert all(t.score == pytest.approx(1 / (1 + math.exp(-1.5))) and t.verdict == "true" for t in traces)
    assert result.stats.forced == 5


def test_fallback_is_flagged_counted_and_ordered_by_first_stage_rank(tmp_path):
    job = prepared(tmp_path, RUN)
    engine = ScriptedEngine(lambda p: Generation("unfinished", 64, "length", None, None),
                            verdict=lambda p: VerdictLogprobs(None, None))
    result = rerank_with_engine(job, engine)
    assert result.stats.fallback == 5
    assert [d for d, _ in result.ranking["q01"]] == ["d001", "d002", "d003", "d004"]
    assert all(t.completion == "fallback" and t.score == 0.5 and t.verdict is None for t in result.traces.values())


def test_traces_are_one_per_pair_in_the_order_of_the_output_run(tmp_path):
    job = prepared(tmp_path, RUN)
    scores = {"d001": 0.1, "d002": 0.9, "d003": 0.5, "d005": 0.3, "d006": 0.6}
    by_prompt = {pair.prompt: scores[pair.docid] for pair in job.pairs}
    result = rerank_with_engine(job, ScriptedEngine(finished(job, by_prompt.get)))
    traces = list(result.traces.values())
    assert [t.key for t in traces] == [
        ("q01", "d002"), ("q01", "d003"), ("q01", "d001"), ("q02", "d006"), ("q02", "d005")]
    first = traces[0]
    assert first.first_stage_rank == 2 and first.verdict == "true" and first.completion == "stop"
    assert first.score == pytest.approx(0.9) and first.model == str(TINY_MODEL) and first.origin == "engine"
    assert len(first.prompt_sha256) == 64 and first.reasoning == "Some reasoning."


# --- the store: resume and reuse -----------------------------------------------------------

def test_a_failed_engine_keeps_what_was_committed_and_a_rerun_generates_only_the_rest(tmp_path):
    job = prepared(tmp_path, RUN)            # chunk_size=2
    with Store(tmp_path / "store.sqlite") as store:
        broken = ScriptedEngine(finished(job, lambda p: 0.7), fail_after=3)
        with pytest.raises(EngineFailure, match=r"holds 3 generations .* run the same command again to resume"):
            rerank_with_engine(job, broken, store)
        again = ScriptedEngine(finished(job, lambda p: 0.7))
        result = rerank_with_engine(job, again, store)
    # The generations finished before the failure are saved (the last, half-full chunk too).
    assert len(again.generated) == 2 and result.stats.from_store == 3
    assert [t.origin for t in result.traces.values()].count("store") == 3


def test_a_second_run_reuses_every_shared_pair_across_runs_and_depths(tmp_path):
    job_a = prepared(tmp_path, RUN, top_k=2)
    run_b = RUN[:1] + [("q01", "d009", 2, 8.5)] + RUN[1:]      # shares part of A's top pairs
    with Store(tmp_path / "store.sqlite") as store:
        rerank_with_engine(job_a, ScriptedEngine(finished(job_a, lambda p: 0.7)), store)
        job_b = prepared(tmp_path, run_b, top_k=3)
        engine = ScriptedEngine(finished(job_b, lambda p: 0.7))
        result = rerank_with_engine(job_b, engine, store)
    shared = {p.prompt_sha256 for p in job_a.pairs} & {p.prompt_sha256 for p in job_b.pairs}
    assert len(shared) == 4 and len(job_b.pairs) == 5          # d001, d002, d005, d006; d009 is new
    assert len(engine.generated) == 1 and result.stats.from_store == 4
    assert {t.key for t in result.traces.values() if t.origin == "store"} == {
        p.key for p in job_b.pairs if p.prompt_sha256 in shared}


def test_a_finished_rerun_never_loads_an_engine(tmp_path):
    job = prepared(tmp_path, RUN)
    with Store(tmp_path / "store.sqlite") as store:
        first = rerank_with_engine(job, ScriptedEngine(finished(job, lambda p: 0.7)), store)
        from rank1_cli.reasoning.scorer import Scorer
        from rank1_cli.workflows.rerank import execute_rerank

        def no_engine():
            raise AssertionError("an engine was loaded although every pair is stored")

        scorer = Scorer(job.key, job.tokens, no_engine, store=store)
        second = execute_rerank(job, scorer)
    assert second.ranking == first.ranking
    assert [t.score for t in second.traces.values()] == [t.score for t in first.traces.values()]


def test_other_settings_never_reuse_stored_generations(tmp_path):
    job = prepared(tmp_path, RUN)
    with Store(tmp_path / "store.sqlite") as store:
        rerank_with_engine(job, ScriptedEngine(finished(job, lambda p: 0.7)), store)
        other = prepared(tmp_path, RUN, max_reasoning_tokens=128)
        engine = ScriptedEngine(finished(other, lambda p: 0.7))
        result = rerank_with_engine(other, engine, store)
    assert len(engine.generated) == 5 and result.stats.from_store == 0


def test_unfinished_reasoning_in_the_store_is_repaired_without_generating_again(tmp_path):
    job = prepared(tmp_path, RUN)
    unfinished = ScriptedEngine(lambda p: Generation("It mentions colds. And", 64, "length", None, None),
                                verdict=lambda p: (_ for _ in ()).throw(RuntimeError("killed in the repair")))
    with Store(tmp_path / "store.sqlite") as store:
        with pytest.raises(EngineFailure, match="repair pass"):
            rerank_with_engine(job, unfinished, store)
        assert store.count(job.key) == 5                     # stored as pending
        engine = ScriptedEngine(finished(job, lambda p: 0.7))
        result = rerank_with_engine(job, engine, store)
    assert engine.generated == [] and len(engine.forced) == 5
    assert {t.completion for t in result.traces.values()} == {"forced"}


def test_recompute_ignores_the_store_and_replaces_its_results(tmp_path):
    job = prepared(tmp_path, RUN)
    with Store(tmp_path / "store.sqlite") as store:
        rerank_with_engine(job, ScriptedEngine(finished(job, lambda p: 0.2)), store)
        engine = ScriptedEngine(finished(job, lambda p: 0.9))
        rerank_with_engine(job, engine, store, recompute=True)
        assert len(engine.generated) == 5
        again = rerank_with_engine(job, ScriptedEngine(finished(job, lambda p: 0.5)), store)
    assert all(t.score == pytest.approx(0.9) and t.origin == "store" for t in again.traces.values())


# --- prompts and inputs --------------------------------------------------------------------

def test_long_passages_are_truncated_never_the_query(tiny_tokenizer):
    passage = "word " * 3000
    [(prompt, truncated, _)] = fit_prompts(tiny_tokenizer, ["what is a tide"], [passage], budget=300)
    assert truncated
    assert len(tiny_tokenizer(prompt)["input_ids"]) <= 300
    assert prompt.startswith("Determine if") and "\nQuery: what is a tide\nPassage: word" in prompt
    assert prompt.endswith("\n<think>")
    [(short, cut, _)] = fit_prompts(tiny_tokenizer, ["q"], ["short passage"], budget=300)
    assert not cut and short.endswith("short passage\n<think>")


def test_bad_inputs_fail_before_any_model_loads(tmp_path):
    with pytest.raises(InputError, match="top_k must be a positive"):
        prepared(tmp_path, RUN, top_k=0)
    with pytest.raises(InputError, match=r"Did you mean rank1-7b"):
        prepared(tmp_path, RUN, model="rank1-7")
    with pytest.raises(InputError, match=r"1 queries of the run have no query text .*: qX"):
        prepared(tmp_path, RUN + [("qX", "d001", 1, 1.0)])
    with pytest.raises(InputError, match=r"2 documents of the run's top 3 are not in .*: nope1, nope2 \(2 in all\)"):
        prepared(tmp_path, RUN + [("q03", "nope1", 1, 1.0), ("q03", "nope2", 2, 1.0)])
    with pytest.raises(InputError, match=r"dtype must be one of auto, float16, bfloat16, float32, found 'nonsense'"):
        prepared(tmp_path, RUN, dtype="nonsense")
    for length in (1, -5):
        with pytest.raises(InputError, match=rf"max_model_len must be at least 265 tokens.*found {length}"):
            prepared(tmp_path, RUN, max_model_len=length)
    with pytest.raises(InputError, match=r"max_reasoning_tokens must be at least 0 \(0: no reasoning.*found -1"):
        prepared(tmp_path, RUN, max_reasoning_tokens=-1)
    job = prepared(tmp_path, RUN + [("q03", "nope1", 1, 1.0), ("q03", "d010", 2, 1.0)], missing="skip")
    assert [p.docid for p in job.pairs if p.qid == "q03"] == ["d010"]


def test_skipping_missing_documents_leaves_out_a_query_with_none_left(tmp_path, caplog):
    job = prepared(tmp_path, RUN + [("q03", "nope1", 1, 1.0), ("q03", "nope2", 2, 1.0), ("q03", "d010", 4, 0.5)],
                   missing="skip", top_k=2)
    assert "q03" not in job.run and all(p.qid != "q03" for p in job.pairs)
    assert "1 queries have none of their top 2 documents" in caplog.text and "q03" in caplog.text


def test_reasoning_cut_by_the_budget_is_repaired_even_when_both_verdict_tokens_are_listed(tmp_path):
    # The reference scored such outputs as they were (its finish_reason went unchecked).
    job = prepared(tmp_path, RUN)
    true_id, false_id = job.tokens.true_id, job.tokens.false_id
    cut = ScriptedEngine(lambda p: Generation("It weighs. So the passage is", 64, "length", None,
                                              {true_id: -1.2, false_id: -0.9}),
                         verdict=lambda p: VerdictLogprobs(-0.2, -3.0))
    result = rerank_with_engine(job, cut)
    assert len(cut.forced) == 5
    assert {(t.completion, t.verdict) for t in result.traces.values()} == {("forced", "true")}


def test_the_prompts_prepare_rerank_builds_are_rank1s_byte_for_byte(tmp_path):
    # A title joins its text with one space; no title (empty or absent) is the text alone; the
    # query's own spacing is kept; an instruction follows the query after one space.
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"doc_id": "t", "title": "A Title", "text": "Body  text."}\n'
                      '{"doc_id": "e", "title": "", "text": "Empty title."}\n'
                      '{"doc_id": "n", "text": "No title."}\n')
    queries = tmp_path / "queries.tsv"
    queries.write_text("a\twhat  is it\nb\tsecond\n")
    instructions = tmp_path / "instructions.tsv"
    instructions.write_text("b\tBe strict.\n")
    run = write_run(tmp_path, [("a", "t", 1, 3.0), ("a", "e", 2, 2.0), ("a", "n", 3, 1.0), ("b", "t", 1, 1.0)])
    job = prepare_rerank(run, CollectionSource(corpus=str(corpus), queries=str(queries)),
                         RerankOptions(model=str(TINY_MODEL), max_model_len=4096, max_reasoning_tokens=64,
                                       instructions=str(instructions)))
    head = "Determine if the following passage is relevant to the query. Answer only with 'true' or 'false'.\nQuery: "
    assert [(p.qid, p.docid, p.first_stage_rank, p.prompt) for p in job.pairs] == [
        ("a", "t", 1, head + "what  is it\nPassage: A Title Body  text.\n<think>"),
        ("a", "e", 2, head + "what  is it\nPassage: Empty title.\n<think>"),
        ("a", "n", 3, head + "what  is it\nPassage: No title.\n<think>"),
        ("b", "t", 1, head + "second Be strict.\nPassage: A Title Body  text.\n<think>"),
    ]
    assert not any(p.truncated for p in job.pairs)


def test_a_context_beyond_the_models_is_clamped_to_it_with_a_warning(tmp_path, caplog):
    # tiny-rank1's config says 32768 positions
    with caplog.at_level("WARNING", logger="rank1_cli"):
        job = prepared(tmp_path, RUN, max_model_len=40000, max_reasoning_tokens=8192)
    assert job.settings["max_model_len"] == 32768 and job.settings["max_reasoning_tokens"] == 8192
    assert "max_model_len 40000 exceeds the model's context of 32768 tokens; using 32768" in caplog.text
    # a reasoning budget that leaves no room for a prompt is cut down to leave it
    caplog.clear()
    with caplog.at_level("WARNING", logger="rank1_cli"):
        small = prepared(tmp_path, RUN, max_model_len=1024, max_reasoning_tokens=4096)
    assert small.settings["max_model_len"] == 1024 and small.settings["max_reasoning_tokens"] < 1024
    assert "max_reasoning_tokens 4096 leaves no room for a prompt in 1024 tokens of context" in caplog.text
    prompt_tokens = max(len(small.scoring.tokenizer(p.prompt)["input_ids"]) for p in small.pairs)
    assert prompt_tokens + small.settings["max_reasoning_tokens"] < 1024


def _inputs(tmp_path, corpus_lines, instructions=None, **options):
    """read_inputs over a small corpus file (no model)."""
    from rank1_cli.workflows.rerank import read_inputs

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(line + "\n" for line in corpus_lines))
    source = CollectionSource(corpus=str(corpus), queries=str(SAMPLE / "queries.tsv"))
    if instructions is not None:
        path = tmp_path / "instructions.tsv"
        path.write_text("".join(f"{q}\t{t}\n" for q, t in instructions))
        options["instructions"] = str(path)
    return read_inputs(write_run(tmp_path, RUN), source, RerankOptions(model=str(TINY_MODEL), top_k=3, **options))


FULL_CORPUS = [f'{{"doc_id": "d00{i}", "text": "passage {i}"}}' for i in range(1, 7)]


def test_documents_without_title_or_text_are_reranked_with_one_warning(tmp_path, caplog):
    corpus = FULL_CORPUS[:2] + ['{"doc_id": "d003", "title": "", "text": " "}', '{"doc_id": "d005", "text": ""}',
                                '{"doc_id": "d006", "title": "A title alone", "text": ""}']
    with caplog.at_level("WARNING", logger="rank1_cli"):
        inputs = _inputs(tmp_path, corpus)
    assert {"d003", "d005"} <= inputs.documents.keys()
    assert caplog.messages == [f"2 documents of the run's top 3 have no title and no text in {tmp_path}/corpus.jsonl; "
                               "they are reranked with an empty passage: d003, d005 (2 in all)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="rank1_cli"):
        _inputs(tmp_path, FULL_CORPUS)
    assert caplog.messages == []


def test_instructions_for_queries_not_in_the_run_are_named_in_one_warning(tmp_path, caplog):
    instructions = [("q01", "only recent work"), ("q09", "x"), ("q07", "y")]
    with caplog.at_level("WARNING", logger="rank1_cli"):
        inputs = _inputs(tmp_path, FULL_CORPUS, instructions)
    assert inputs.instructions["q01"] == "only recent work"
    assert caplog.messages == [f"{tmp_path}/instructions.tsv: 2 of its 3 queries are not in the run and their "
                               "instructions are not used: q09, q07 (2 in all)"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="rank1_cli"):
        _inputs(tmp_path, FULL_CORPUS, instructions[:1], shard="1/2")  # q01 in shard 2
    assert caplog.messages == []


def test_budget_0_forces_every_verdict_after_an_empty_reasoning_and_generates_nothing(tmp_path):
    """No reasoning: the reference's repair of an empty reasoning, the prompt then `\n\n</think>`,
    one forced token per distinct prompt, all in one batch; stored under budget 0."""
    job = prepared(tmp_path, RUN, max_reasoning_tokens=0)
    assert job.key.max_reasoning_tokens == 0 and job.settings["max_reasoning_tokens"] == 0
    engine = ScriptedEngine(lambda prompt: pytest.fail("budget 0 generates nothing"),
                            verdict=lambda p: VerdictLogprobs(math.log(0.2), math.log(0.6)))
    with Store(tmp_path / "store.sqlite") as store:
        result = rerank_with_engine(job, engine, store)
        assert engine.generated == [] and engine.force_calls == 1
        assert engine.forced == [pair.prompt + "\n\n</think>" for pair in job.pairs]
        assert result.stats.generated == 0 and result.stats.output_tokens == 0 and result.stats.forced == len(job.pairs)
        for trace in result.traces.values():
            assert (trace.completion, trace.output_tokens, trace.reasoning, trace.verdict) == ("forced", 0, "", "false")
            assert trace.score == pytest.approx(0.25)
        assert store.count(job.key) == len(job.pairs)

        again = rerank_with_engine(job, ScriptedEngine(lambda p: pytest.fail("stored"),
                                                       verdict=lambda p: pytest.fail("stored")), store)
        assert again.stats.from_store == len(job.pairs) and again.ranking == result.ranking


def test_a_cascade_reasons_only_on_each_querys_best_by_budget_0_and_ranks_them_first(tmp_path):
    """--reason-top 1 of top 3: budget 0 for all, reasoning for the best of each query; the reasoned
    pair ranks first whatever its new score, the rest keep their budget-0 order below it."""
    job = prepared(tmp_path, RUN, reason_top=1)
    zero = {"d001": 0.3, "d002": 0.8, "d003": 0.6, "d005": 0.4, "d006": 0.4}
    reasoned = {"d002": 0.1, "d005": 0.9}
    docid_of = {}
    for pair in job.pairs:
        docid_of[pair.prompt + "\n\n</think>"] = pair.docid
        docid_of[pair.prompt] = pair.docid

    def verdict(prompt):
        p = zero[docid_of[prompt]]
        return VerdictLogprobs(math.log(p), math.log(1 - p))
    engine = ScriptedEngine(finished(job, lambda prompt: reasoned[docid_of[prompt]]), verdict=verdict)
    with Store(tmp_path / "store.sqlite") as store:
        result = rerank_with_engine(job, engine, store)
        # d002 is q01's best at budget 0; q02's tie goes to the better first-stage rank, d005
        assert [docid_of[p] for p in engine.generated] == ["d002", "d005"]
        assert [d for d, _ in result.ranking["q01"]] == ["d002", "d003", "d001", "d004"]   # the tail last
        assert [s for _, s in result.ranking["q01"][:3]] == pytest.approx([0.1, 0.6 - 1, 0.3 - 1])
        assert [d for d, _ in result.ranking["q02"]] == ["d005", "d006"]
        assert [s for _, s in result.ranking["q02"]] == pytest.approx([0.9, 0.4 - 1])
        assert result.stats.reasoned == 2 and result.stats.generated == 2 and result.stats.pairs == 5
        budgets = {key: trace.settings["max_reasoning_tokens"] for key, trace in result.traces.items()}
        assert budgets == {("q01", "d002"): 64, ("q01", "d003"): 0, ("q01", "d001"): 0, ("q02", "d005"): 64,
                           ("q02", "d006"): 0}
        assert {trace.settings["reason_top"] for trace in result.traces.values()} == {1}
        assert result.traces[("q01", "d002")].score == pytest.approx(0.1)       # the reasoned score, not budget 0's
        assert store.count(job.key) == 2 and store.count(dataclasses.replace(job.key, max_reasoning_tokens=0)) == 5

        refuse = ScriptedEngine(lambda p: pytest.fail("stored"), verdict=lambda p: pytest.fail("stored"))
        again = rerank_with_engine(job, refuse, store)
        assert again.ranking == result.ranking and again.stats.from_store == 5


def test_cascade_options_are_checked_before_any_model_loads(tmp_path):
    with pytest.raises(InputError, match=r"reason_top \(4\) cannot exceed top_k \(3\)"):
        prepared(tmp_path, RUN, reason_top=4)
    with pytest.raises(InputError, match=r"reason_top must be at least 1 pair per query, found 0"):
        prepared(tmp_path, RUN, reason_top=0)
    with pytest.raises(InputError, match=r"reason_top needs a reasoning budget: with max_reasoning_tokens='0'"):
        prepared(tmp_path, RUN, reason_top=2, max_reasoning_tokens=0)


def test_the_generations_a_policy_traces_are_those_of_each_of_its_budgets(tmp_path):
    """What a rerun with --no-store may replace in its own traces file: a cascade's budget-0 and
    full-budget judgements, an early exit's at every budget."""
    from rank1_cli.workflows.rerank import traced_generations

    def at(job, budget):
        return dataclasses.replace(job.key, max_reasoning_tokens=budget)
    fixed = prepared(tmp_path, RUN)
    shas = {pair.prompt_sha256 for pair in fixed.pairs}
    assert traced_generations(fixed) == {(fixed.key, sha) for sha in shas}
    cascade = prepared(tmp_path, RUN, reason_top=1)
    assert traced_generations(cascade) == {(at(cascade, b), sha) for b in (0, 64) for sha in shas}
    early = prepared(tmp_path, RUN, early_exit=(16, 64))
    assert traced_generations(early) == {(at(early, b), sha) for b in (16, 64) for sha in shas}

"""`rank1 rerank --dry-run`: the plan of a rerank, with no model loaded."""

import dataclasses
import json
import subprocess

import pytest
from conftest import RANK1, SAMPLE, TINY_MODEL

from rank1_cli.io.collection import CollectionSource
from rank1_cli.reasoning.store import PENDING, Store, StoredGeneration
from rank1_cli.workflows.plan import format_plan, plan_rerank
from rank1_cli.workflows.rerank import RerankOptions, prepare_rerank


def sample_job(top_k=4, reasoning=64, max_model_len=4096):
    source = CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv"))
    return prepare_rerank(str(SAMPLE / "run.bm25.trec"), source,
                          RerankOptions(model=str(TINY_MODEL), top_k=top_k, dtype="float32",
                                        max_model_len=max_model_len, max_reasoning_tokens=reasoning))


def stored(sha, completion="stop", tokens=40):
    verdict = None if completion == PENDING else "true"
    lp = (None, None) if completion == PENDING else (-0.1, -2.5)
    return StoredGeneration(sha, completion, verdict, *lp, tokens, "reasoning")


def test_counts_come_from_the_prompts_themselves(tiny_tokenizer):
    job = sample_job(top_k=4, reasoning=400, max_model_len=680)      # room for few passages: some truncated
    plan = plan_rerank(job, None)
    distinct = {p.prompt_sha256: p.prompt for p in job.pairs}
    assert (plan.queries, plan.pairs, plan.distinct_prompts) == (25, 100, len(distinct))
    assert plan.prompt_tokens == sum(len(tiny_tokenizer(p)["input_ids"]) for p in distinct.values())
    assert plan.truncated == sum(p.truncated for p in job.pairs) > 0
    assert (plan.stored, plan.pending, plan.to_generate) == (0, 0, plan.distinct_prompts)
    assert plan.prompt_tokens_to_generate == plan.prompt_tokens
    assert plan.estimate is None and plan.store is None
    assert "none: the store has no earlier generation of this model" in format_plan(plan)


def test_the_store_says_what_is_done_and_how_fast_the_model_went(tmp_path):
    job = sample_job()
    shas = list(dict.fromkeys(p.prompt_sha256 for p in job.pairs))
    tokens = {p.prompt_sha256: p.prompt_tokens for p in job.pairs}
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(job.key, [stored(s, tokens=30) for s in shas[:30]] + [stored(s, PENDING, 64) for s in shas[30:40]])
        store.record_engine_run(job.key, 40, 1000, 4.0)
        store.record_engine_run(job.key, 10, 200, 0.8)      # 1200 tokens in 4.8 s: 250 tokens/s
        plan = plan_rerank(job, store)
        assert (plan.stored, plan.pending, plan.to_generate) == (30, 10, len(shas) - 40)
        assert plan.prompt_tokens_to_generate == sum(tokens[s] for s in shas[40:])
        mean = (30 * 30 + 10 * 64) / 40
        assert plan.estimate.mean_output_tokens == pytest.approx(mean)
        assert plan.estimate.output_tokens == round((len(shas) - 40) * mean)
        assert plan.estimate.seconds == pytest.approx(plan.estimate.output_tokens / 250)
        assert "40 stored generations of these settings" in plan.estimate.basis
        assert "2 timed engine runs (250.0 output tokens/s" in plan.estimate.basis
        assert plan_rerank(job, store, recompute=True).to_generate == len(shas)

        # another budget of the same model: reasoning lengths capped at the new budget
        smaller = dataclasses.replace(job.scoring, key=dataclasses.replace(job.key, max_reasoning_tokens=32))
        other = plan_rerank(dataclasses.replace(job, scoring=smaller), store)
        assert other.stored == 0 and other.estimate.mean_output_tokens == pytest.approx(30 * 30 / 40 + 10 * 32 / 40)
        assert "this model and engine under other settings" in other.estimate.basis


def test_an_estimate_from_reasoning_cut_at_a_smaller_budget_is_a_lower_bound(tmp_path):
    """Generations forced at budget 32 would have reasoned longer at 64: their lengths only bound
    the estimate from below, and the plan says so; finished ones are exact."""
    job = sample_job(reasoning=64)
    shas = list(dict.fromkeys(p.prompt_sha256 for p in job.pairs))
    smaller = dataclasses.replace(job.key, max_reasoning_tokens=32)
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(smaller, [stored(s, tokens=20) for s in shas[:10]])
        finished = plan_rerank(job, store)
        store.put_many(smaller, [stored(s, "forced", tokens=32) for s in shas[10:12]])
        store.record_engine_run(smaller, 12, 264, 2.0)
        cut = plan_rerank(job, store)
    assert finished.estimate.is_lower_bound is False and "at least" not in format_plan(finished)
    assert cut.estimate.is_lower_bound is True and json.loads(cut.to_json())["estimate"]["is_lower_bound"] is True
    line = next(line for line in format_plan(cut).splitlines() if line.startswith("estimate"))
    assert line.startswith(f"estimate        at least {cut.estimate.output_tokens} output tokens") and \
        "at least " + f"{cut.estimate.seconds:.0f} s of engine time" in line
    assert "2 of them reasoning cut short at a smaller budget" in line


def test_no_timed_run_means_tokens_without_time(tmp_path):
    job = sample_job(top_k=1)
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(job.key, [stored(job.pairs[0].prompt_sha256)])
        plan = plan_rerank(job, store)
    assert plan.estimate.seconds is None and "no timed run, so no time" in plan.estimate.basis
    assert "of engine time" not in format_plan(plan)


def test_dry_run_through_the_cli_loads_no_model_and_creates_no_store(tmp_path):
    store = tmp_path / "never.sqlite"
    out = subprocess.run([*RANK1, "rerank", str(SAMPLE / "run.bm25.trec"), "--model", str(TINY_MODEL),
                          "--corpus", str(SAMPLE / "corpus.jsonl"), "--queries", str(SAMPLE / "queries.tsv"),
                          "--top-k", "3", "--max-model-len", "4096", "--max-reasoning-tokens", "64", "--dtype",
                          "float32", "--store", str(store), "--dry-run", "--plan-format", "json",
                          "-o", str(tmp_path / "run.trec")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert (plan["queries"], plan["pairs"], plan["to_generate"]) == (25, 75, plan["distinct_prompts"])
    assert plan["store"] is None and plan["estimate"] is None
    assert not store.exists() and not (tmp_path / "run.trec").exists()
    assert "vllm" not in out.stderr.lower()

    table = subprocess.run([*RANK1, "rerank", str(SAMPLE / "run.bm25.trec"), "--model", str(TINY_MODEL),
                            "--corpus", str(SAMPLE / "corpus.jsonl"), "--queries", str(SAMPLE / "queries.tsv"),
                            "--top-k", "3", "--max-model-len", "4096", "--max-reasoning-tokens", "64", "--dry-run"],
                           capture_output=True, text=True, timeout=120)
    assert table.returncode == 0, table.stderr
    assert "pairs           75" in table.stdout and "to generate" in table.stdout


def test_dry_run_still_refuses_bad_input(tmp_path):
    bad = tmp_path / "run.trec"
    bad.write_text("q1 Q0 d1 1 not-a-score tag\n")
    out = subprocess.run([*RANK1, "rerank", str(bad), "--model", str(TINY_MODEL), "--corpus",
                          str(SAMPLE / "corpus.jsonl"), "--queries", str(SAMPLE / "queries.tsv"), "--dry-run"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and f"{bad}:1: score" in out.stderr and "Traceback" not in out.stderr


def test_a_budget_0_plan_needs_no_stored_generation_and_estimates_no_output_tokens():
    plan = plan_rerank(sample_job(top_k=2, reasoning=0), None)
    assert plan.max_reasoning_tokens == 0 and plan.to_generate == plan.distinct_prompts == 50
    assert (plan.estimate.output_tokens, plan.estimate.mean_output_tokens, plan.estimate.seconds) == (0, 0.0, None)
    text = format_plan(plan)
    assert "to judge        50 prompts, no reasoning: one forced verdict token each" in text
    assert "estimate        about 0 output tokens" in text and "none: the store" not in text


def test_a_cascade_plan_counts_its_budget_0_stage_and_bounds_its_reasoning(tmp_path):
    job = dataclasses.replace(sample_job(top_k=3), options=dataclasses.replace(sample_job(top_k=3).options,
                                                                               reason_top=2))
    zero_key = dataclasses.replace(job.key, max_reasoning_tokens=0)
    shas = list(dict.fromkeys(p.prompt_sha256 for p in job.pairs))
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(job.key, [stored(sha, tokens=30) for sha in shas[:10]])
        store.put_many(zero_key, [stored(sha, "forced", tokens=0) for sha in shas[:4]])
        plan = plan_rerank(job, store)
    assert plan.cascade.reason_top == 2 and plan.cascade.screen_to_judge == 75 - 4
    assert plan.cascade.reasoned_at_most == 50 and plan.cascade.output_tokens_at_most == 50 * 30
    assert ("cascade         budget 0 first (71 prompts to judge, one token each), then reasoning on at most 50 "
            "pairs (2 per query") in format_plan(plan)
    assert json.loads(plan.to_json())["cascade"]["reasoned_at_most"] == 50


def test_an_early_exit_plan_bounds_its_tokens_between_the_first_budget_and_the_whole(tmp_path):
    job = sample_job(top_k=2)
    job = dataclasses.replace(job, options=dataclasses.replace(job.options, early_exit=(8, 64), confidence=0.9))
    shas = list(dict.fromkeys(p.prompt_sha256 for p in job.pairs))
    with Store(tmp_path / "s.sqlite") as store:
        store.put_many(job.key, [stored(sha, tokens=40) for sha in shas[:10]])
        plan = plan_rerank(job, store)
    assert plan.early_exit == (8, 64) and plan.confidence == 0.9 and plan.estimate.output_tokens == 40 * 40
    assert ("early exit      at 8, 64 tokens when the forced verdict is 0.9 sure: between 320 (every pair stops at "
            "8) and the estimate above (none stops early)") in format_plan(plan)

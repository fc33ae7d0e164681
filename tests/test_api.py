"""rank1 from Python (`rank1_cli.Rank1`): the same judgements as `rank1 rerank`, through the store."""

import json
import subprocess
import sys

import pytest

from rank1_cli import Rank1
from rank1_cli.errors import InputError

from conftest import REPO, SAMPLE, TINY_MODEL

SETTINGS = dict(backend="transformers", dtype="float32", max_model_len=1024, max_reasoning_tokens=48, device="cpu")


def sample_pairs(k=2):
    queries = dict(line.split("\t", 1) for line in (SAMPLE / "queries.tsv").read_text().splitlines())
    docs = {d["doc_id"]: d for d in map(json.loads, (SAMPLE / "corpus.jsonl").read_text().splitlines())}
    pairs = []
    for line in (SAMPLE / "run.bm25.trec").read_text().splitlines():
        qid, _, docid, rank, _, _ = line.split()
        if int(rank) <= k:
            doc = docs[docid]
            passage = f"{doc['title']} {doc['text']}" if doc["title"] else doc["text"]
            pairs.append((qid, docid, queries[qid], passage))
    return pairs


@pytest.fixture(scope="module")
def from_cli(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    proc = subprocess.run([sys.executable, "-m", "rank1_cli.cli", "rerank", str(SAMPLE / "run.bm25.trec"), "--model",
                           str(TINY_MODEL), "--corpus", str(SAMPLE / "corpus.jsonl"), "--queries",
                           str(SAMPLE / "queries.tsv"), "--top-k", "2", "--backend", "transformers", "--device", "cpu",
                           "--dtype", "float32", "--max-model-len", "1024", "--max-reasoning-tokens", "48",
                           "--no-store", "-o", str(tmp / "run.trec")], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return {(t["qid"], t["docid"]): t for t in map(json.loads, (tmp / "run.traces.jsonl").read_text().splitlines())}


def test_python_scores_equal_the_command_lines_and_the_store_answers_the_second_time(from_cli, tmp_path):
    pairs = sample_pairs()
    with Rank1(str(TINY_MODEL), store=tmp_path / "store.sqlite", **SETTINGS) as rank1:
        judged = rank1.score([(query, passage) for _, _, query, passage in pairs])
        again = rank1.score([(query, passage) for _, _, query, passage in pairs])
    for (qid, docid, _, _), j in zip(pairs, judged):
        trace = from_cli[(qid, docid)]
        assert j.score == pytest.approx(trace["score"], abs=1e-5) and j.reasoning == trace["reasoning"]
        assert j.completion == trace["completion"] and j.verdict == trace["verdict"] and j.origin == "engine"
    assert [j.score for j in again] == [j.score for j in judged] and {j.origin for j in again} == {"store"}


def test_rerank_orders_a_querys_documents_and_rerank_run_equals_the_cli(from_cli, tmp_path):
    with Rank1(str(TINY_MODEL), store=None, **SETTINGS) as rank1:
        ranked = rank1.rerank("how do vaccines train the immune system",
                              {"a": "Vaccines expose the immune system to a harmless antigen.", "b": "Bread needs yeast."})
        result = rank1.rerank_run(SAMPLE / "run.bm25.trec", corpus=str(SAMPLE / "corpus.jsonl"),
                                  queries=str(SAMPLE / "queries.tsv"), top_k=2)
    assert [docid for docid, _ in ranked] in (["a", "b"], ["b", "a"])
    assert ranked[0][1].score >= ranked[1][1].score
    assert result.traces.keys() == from_cli.keys()
    assert result.stats.generated == 50 and result.stats.elapsed > 0     # this call's work only
    assert all(t.score == pytest.approx(from_cli[key]["score"], abs=1e-5) for key, t in result.traces.items())


def test_options_are_checked_when_the_model_is_made():
    with pytest.raises(InputError, match=r"the transformers engine has no option tensor_parallel"):
        Rank1(str(TINY_MODEL), backend="transformers", tensor_parallel=2)
    with pytest.raises(InputError, match=r"dtype must be one of"):
        Rank1(str(TINY_MODEL), backend="transformers", dtype="float8")


def test_budget_0_from_python_judges_without_reasoning(tmp_path):
    pairs = [(query, passage) for _, _, query, passage in sample_pairs(k=1)[:3]]
    with Rank1(str(TINY_MODEL), store=tmp_path / "store.sqlite", **{**SETTINGS, "max_reasoning_tokens": 0}) as rank1:
        judged = rank1.score(pairs)
        again = rank1.score(pairs)
    assert [(j.completion, j.output_tokens, j.reasoning, j.origin) for j in judged] == [("forced", 0, "", "engine")] * 3
    assert all(0 < j.score < 1 and j.verdict in ("true", "false") for j in judged)
    assert [j.score for j in again] == [j.score for j in judged] and {j.origin for j in again} == {"store"}


def test_a_store_that_is_no_store_is_refused_before_the_model_loads(tmp_path):
    unloadable = tmp_path / "model"             # a config and no tokenizer: loading it would fail
    unloadable.mkdir()
    (unloadable / "config.json").write_text((TINY_MODEL / "config.json").read_text())
    (tmp_path / "notes.txt").write_text("my notes\n")
    with pytest.raises(InputError, match=f"^{tmp_path / 'notes.txt'}: not a rank1 store"):
        Rank1(str(unloadable), store=tmp_path / "notes.txt", **SETTINGS)

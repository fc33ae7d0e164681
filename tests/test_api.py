"""rank1 from Python (`rank1_cli.Rank1`): the same judgements as `rank1 rerank`, through the store."""

import json
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLE, TINY_MODEL

from rank1_cli import Rank1
from rank1_cli.errors import EngineFailure, InputError

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


# --- what the API refuses, before any engine starts -------------------------------------------

@pytest.fixture(scope="module")
def no_engine_yet():
    rank1 = Rank1(str(TINY_MODEL), store=None, **SETTINGS)
    yield rank1
    rank1.close()


@pytest.mark.parametrize("pairs, message", [
    ("what causes tides", "pairs is a str, not a list of (query, passage) pairs: give [(query, passage), ...]"),
    (("what causes tides", "The moon."), "pairs[0] is a str, not a (query, passage) pair; to score one pair, "
                                         "pass a list of one: [(query, passage)]"),
    ({"what causes tides": "The moon."}, "pairs is a dict, not a list of (query, passage) pairs"),
    (None, "pairs is None, not a list of (query, passage) pairs"),
    ([("q", "p"), ("q", "p"), ("q", "p"), ("q", None)],
     r"pairs[3][1] (passage) is None: each pair is (query, passage) or (query, passage, instruction) of strings"),
    ([(None, "p")], "pairs[0][0] (query) is None"),
    ([("q", 7)], "pairs[0][1] (passage) is an int (7)"),
    ([("q", "p", 3.5)], "pairs[0][2] (instruction) is a float (3.5): each pair"),
    ([("q",)], "pairs[0] has 1 item: each pair is (query, passage) or (query, passage, instruction)"),
    ([("q", "p", None, "x")], "pairs[0] has 4 items"),
    ([("q", "p"), 5], "pairs[1] is an int, not a (query, passage) pair"),
])
def test_score_names_the_pair_and_field_at_fault_before_the_engine_starts(no_engine_yet, pairs, message):
    with pytest.raises(InputError) as raised:
        no_engine_yet.score(pairs)
    assert message in str(raised.value)
    assert no_engine_yet.scorer._engine is None


@pytest.mark.parametrize("query, documents, instruction, message", [
    ("q", "Vaccines train the immune system.", None,
     "documents is a str, not a list of texts or a {docid: text} dict"),
    ("q", None, None, "documents is None, not a list of texts or a {docid: text} dict"),
    ("q", ["a", None, "c"], None, "documents[1] is None: each document is a string"),
    ("q", {"d1": "a", "d2": b"bytes"}, None, "documents['d2'] is a bytes (b'bytes'): each document is a string"),
    (None, ["a"], None, "query is None: the query is a string"),
    ("q", ["a"], 3, "instruction is an int (3): the instruction is a string or None"),
])
def test_rerank_names_the_document_at_fault_before_the_engine_starts(no_engine_yet, query, documents, instruction,
                                                                      message):
    with pytest.raises(InputError) as raised:
        no_engine_yet.rerank(query, documents, instruction=instruction)
    assert message in str(raised.value)
    assert no_engine_yet.scorer._engine is None


def test_score_takes_pairs_as_lists_and_from_a_generator_and_rerank_a_tuple_of_texts(no_engine_yet):
    no_engine_yet.scorer._engine_factory = lambda: pytest.fail("no engine for an empty input")
    assert no_engine_yet.score(pair for pair in []) == []
    assert no_engine_yet.rerank("q", ()) == [] and no_engine_yet.rerank("q", {}) == []


# --- what the libraries print ------------------------------------------------------------------

@pytest.mark.parametrize("verbose", [False, True])
def test_library_output_goes_to_the_engine_log_unless_verbose(capfd, verbose):
    """transformers' warning about a passage longer than the model's maximum (rank1 cuts it to its
    budget anyway) and its progress bar while loading the weights."""
    with Rank1(str(TINY_MODEL), store=None, verbose=verbose, **{**SETTINGS, "max_reasoning_tokens": 4}) as rank1:
        [judgement] = rank1.score([("what causes tides", "The moon pulls on the oceans. " * 6000)])
        assert judgement.completion in ("stop", "forced")
        log = rank1.engine_log
        if not verbose:
            assert "Loading weights" in log.read_text()
    err = capfd.readouterr().err
    assert "Token indices sequence length" not in err
    if verbose:
        assert log is None and "Loading weights" in err
    else:
        assert err == "" and not log.exists()


def test_an_engine_failure_names_the_engine_log_and_keeps_it(monkeypatch, capfd):
    def failing_engine(*args):
        print("CUDA out of memory, in the engine's own words", file=sys.stderr)
        raise RuntimeError("out of memory")

    monkeypatch.setattr("rank1_cli.api.load_engine", failing_engine)
    rank1 = Rank1(str(TINY_MODEL), store=None, **SETTINGS)
    with pytest.raises(EngineFailure, match=r"could not start: RuntimeError: out of memory The engine's own log: "):
        rank1.score([("q", "p")])
    rank1.close()
    assert "CUDA out of memory, in the engine's own words" in rank1.engine_log.read_text()
    assert capfd.readouterr().err == ""
    rank1.engine_log.unlink()

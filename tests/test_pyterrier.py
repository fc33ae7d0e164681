"""rank1 in PyTerrier (no Java): Rank1Reranker reranks a results frame in one batch and works
in pt.Experiment."""

import json

import pandas as pd
import pyterrier as pt
import pytest
from conftest import SAMPLE, TINY_MODEL

from rank1_cli import Rank1
from rank1_cli.evaluation.measures import parse_measures
from rank1_cli.evaluation.trec_eval import evaluate_run
from rank1_cli.io.trec import read_qrels_file
from rank1_cli.pyterrier import Rank1Reranker

QIDS = ["q01", "q02", "q03", "q04"]


@pytest.fixture(scope="module")
def frames():
    queries = dict(line.split("\t", 1) for line in (SAMPLE / "queries.tsv").read_text().splitlines())
    docs = {d["doc_id"]: d for d in map(json.loads, (SAMPLE / "corpus.jsonl").read_text().splitlines())}
    rows = []
    for line in (SAMPLE / "run.bm25.trec").read_text().splitlines():
        qid, _, docno, rank, score, _ = line.split()
        if qid in QIDS and int(rank) <= 3:
            doc = docs[docno]
            text = f"{doc['title']} {doc['text']}" if doc["title"] else doc["text"]
            rows.append({"qid": qid, "query": queries[qid], "docno": docno, "text": text, "score": float(score),
                         "rank": int(rank) - 1})
    results = pd.DataFrame(rows)
    topics = results[["qid", "query"]].drop_duplicates().reset_index(drop=True)
    qrels = pd.DataFrame([{"qid": q, "docno": d, "label": g} for q, ds in read_qrels_file(SAMPLE / "qrels.txt").items()
                          if q in QIDS for d, g in ds.items()])
    return results, topics, qrels


@pytest.fixture(scope="module")
def rank1():
    with Rank1(str(TINY_MODEL), backend="transformers", device="cpu", dtype="float32", max_model_len=1024,
               max_reasoning_tokens=48, store=None) as model:
        yield model


def test_reranks_every_query_in_one_batch_and_keeps_the_reasoning(frames, rank1):
    results, topics, _ = frames
    calls = []
    judge = rank1.scorer.judge
    rank1.scorer.judge = lambda prompts, progress=None: calls.append(len(prompts)) or judge(prompts, progress)
    try:
        out = (pt.Transformer.from_df(results) >> Rank1Reranker(rank1)).transform(topics)
    finally:
        del rank1.scorer.judge
    assert calls == [len(results)]                                  # all queries together
    expected = {(r.qid, r.docno): j.score for r, j in zip(results.itertuples(),
                                                          rank1.score(list(zip(results["query"], results["text"]))))}
    assert {(r.qid, r.docno): r.score for r in out.itertuples()} == pytest.approx(expected)
    assert set(out["completion"]) <= {"stop", "forced", "fallback"} and all(out["reasoning"].str.len() > 0)
    for _, group in out.groupby("qid"):                             # ranks follow the new scores
        ordered = group.sort_values("rank")
        assert list(ordered["rank"]) == [0, 1, 2] and list(ordered["score"]) == sorted(ordered["score"], reverse=True)


def test_usable_in_pt_experiment_with_rank1_evals_numbers(frames, rank1):
    results, topics, qrels = frames
    first = pt.Transformer.from_df(results)
    reranked = first >> Rank1Reranker(rank1)
    table = pt.Experiment([first, reranked], topics, qrels, eval_metrics=["ndcg_cut_10"], names=["bm25", "rank1"])
    out = reranked.transform(topics)
    run = {qid: dict(zip(g["docno"], g["score"])) for qid, g in out.groupby("qid")}
    ours = evaluate_run(run, read_qrels_file(SAMPLE / "qrels.txt"), parse_measures(["ndcg_cut.10"]))
    assert table.set_index("name").loc["rank1", "ndcg_cut_10"] == pytest.approx(ours.summary["ndcg_cut_10"])


def test_a_frame_without_text_says_how_to_add_it(rank1):
    with pytest.raises(ValueError, match=r"missing: text \(add the text with pt.text.get_text\)"):
        Rank1Reranker(rank1).transform(pd.DataFrame([{"qid": "q1", "query": "x", "docno": "d1"}]))

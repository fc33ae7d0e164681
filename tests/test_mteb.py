"""rank1 as an MTEB 2.x reranker, evaluated end to end offline on a task built from sample_data."""

import json

import mteb
import pytest
from conftest import SAMPLE, TINY_MODEL
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata

from rank1_cli import Rank1
from rank1_cli.evaluation.measures import parse_measures
from rank1_cli.evaluation.trec_eval import evaluate_run
from rank1_cli.mteb import Rank1MTEB, dataset_prompt
from rank1_cli.reasoning import prompts

QIDS = ["q01", "q02", "q03", "q04", "q05"]
QUERIES = dict(line.split("\t", 1) for line in (SAMPLE / "queries.tsv").read_text().splitlines())
DOCS = {d["doc_id"]: d for d in map(json.loads, (SAMPLE / "corpus.jsonl").read_text().splitlines())}
TOP = {}
for _line in (SAMPLE / "run.bm25.trec").read_text().splitlines():
    _q, _, _d, _r, _, _ = _line.split()
    if _q in QIDS and int(_r) <= 3:
        TOP.setdefault(_q, []).append(_d)
QRELS = {}
for _line in (SAMPLE / "qrels.txt").read_text().splitlines():
    _q, _, _d, _g = _line.split()
    if _q in QIDS:
        QRELS.setdefault(_q, {})[_d] = int(_g)


class SampleReranking(AbsTaskRetrieval):
    """sample_data as an MTEB reranking task: BM25's top 3 of five queries are the candidates."""

    metadata = TaskMetadata(
        name="Rank1SampleReranking", description="sample_data's BM25 top 3, reranked", reference="https://example.org",
        dataset={"path": "NA", "revision": "NA"}, type="Reranking", category="t2t", eval_splits=["test"],
        eval_langs=["eng-Latn"], main_score="ndcg_at_10", date=("2025-01-01", "2025-01-01"), dialect=["Written"],
        domains=[], task_subtypes=[], license="mit", annotations_creators="derived", modalities=["text"],
        sample_creation="found", bibtex_citation="")

    with_candidates = True

    def load_data(self, num_proc=None, **kwargs):
        ids = sorted({d for ds in TOP.values() for d in ds} | {d for ds in QRELS.values() for d in ds})
        self.dataset = {"default": {"test": RetrievalSplitData(
            queries=Dataset.from_list([{"id": q, "text": QUERIES[q]} for q in QIDS]),
            corpus=Dataset.from_list([{"id": d, "text": DOCS[d]["text"], "title": DOCS[d]["title"]} for d in ids]),
            relevant_docs=QRELS, top_ranked=TOP if self.with_candidates else None)}}
        self.data_loaded = True


def previous_results(tmp_path):
    """The task without candidates, given BM25's scores as a previous run (the paper's route)."""
    scores = {}
    for line in (SAMPLE / "run.bm25.trec").read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        if qid in QIDS and docid in {d for ds in TOP.values() for d in ds} | {d for ds in QRELS.values() for d in ds}:
            scores.setdefault(qid, {})[docid] = float(score)
    path = tmp_path / "bm25_predictions.json"
    path.write_text(json.dumps({"mteb_model_meta": {"name": "bm25"}, "default": {"test": scores}}))
    task = SampleReranking()
    task.with_candidates = False
    return task.convert_to_reranking(path, top_k=3)


@pytest.mark.parametrize("first_stage", ["the task's candidates", "a previous run"])
def test_mteb_evaluates_rank1_and_its_ndcg_equals_rank1_evals(tmp_path, first_stage):
    task = SampleReranking() if first_stage == "the task's candidates" else previous_results(tmp_path)
    with Rank1(str(TINY_MODEL), backend="transformers", device="cpu", dtype="float32", max_model_len=1024,
               max_reasoning_tokens=48, store=tmp_path / "store.sqlite") as rank1:
        model = Rank1MTEB(str(TINY_MODEL), rank1=rank1)
        result = mteb.evaluate(model, task, cache=None)
        pairs = [(q, d) for q in QIDS for d in TOP[q]]
        judged = rank1.score([(QUERIES[q], prompts.passage_text(DOCS[d]["title"], DOCS[d]["text"])) for q, d in pairs])
    assert {j.origin for j in judged} == {"store"}                  # MTEB's pairs, the same prompts
    run = {}
    for (q, d), j in zip(pairs, judged):
        run.setdefault(q, {})[d] = j.score
    ours = evaluate_run(run, QRELS, parse_measures(["ndcg_cut.10"])).summary["ndcg_cut_10"]
    [scores] = result.task_results[0].scores["test"]
    assert scores["ndcg_at_10"] == pytest.approx(ours, abs=1e-5)
    assert model.mteb_model_meta.revision == rank1.scoring.key.model_revision


def test_the_reference_dataset_prompt_is_chosen_per_task_and_bright_subset():
    assert dataset_prompt("SciFact", "default") == "SciFact"
    assert dataset_prompt("BrightRetrieval", "leetcode") == "BrightRetrieval_leetcode"
    assert dataset_prompt("BrightRetrieval", "biology") == "BrightRetrieval"
    assert dataset_prompt("Rank1SampleReranking", "default") is None


def test_model_metadata_names_the_published_model():
    class Stub:
        class scoring:
            class key:
                model_revision = "hf:abc"

            class budget:
                max_model_len = 16000

    meta = Rank1MTEB("rank1-7b", rank1=Stub()).mteb_model_meta
    assert meta.name == "jhu-clsp/rank1-7b" and meta.revision == "hf:abc" and meta.n_parameters == 7_620_000_000

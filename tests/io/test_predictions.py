"""MTEB predictions JSON ({qid: {docid: score}}, the published rank1 run files) as a run format."""

import json
import subprocess
import sys

import pytest
from conftest import REPO, SAMPLE, TINY_MODEL

from rank1_cli.errors import InputError
from rank1_cli.io.trec import read_run, read_run_scores

RANK1 = [sys.executable, "-m", "rank1_cli.cli"]


def as_predictions(trec_path):
    """{qid: {docid: score}} with each query's documents in the run's rank order."""
    run = {}
    for line in trec_path.read_text().splitlines():
        qid, _, docid, _, score, _ = line.split()
        run.setdefault(qid, {})[docid] = float(score)
    return run


@pytest.fixture
def json_run(tmp_path):
    path = tmp_path / "run.bm25.json"
    path.write_text(json.dumps(as_predictions(SAMPLE / "run.bm25.trec"), indent=1))
    return path


def evaluate(run, *extra):
    proc = subprocess.run([*RANK1, "eval", str(run), "--qrels", str(SAMPLE / "qrels.txt"), "-f", "tsv", "-q",
                           "-m", "ndcg_cut.10", "-m", "map", "-m", "P.5", "-m", "recall.20", *extra],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_eval_of_predictions_equals_eval_of_the_trec_run(json_run):
    assert evaluate(json_run) == evaluate(SAMPLE / "run.bm25.trec")


def test_mteb_2_predictions_with_a_subset_and_a_split_read_like_the_plain_form(json_run, tmp_path):
    nested = tmp_path / "NFCorpus_default_predictions.json"
    nested.write_text(json.dumps({"mteb_model_meta": {"name": "bm25"},
                                  "default": {"test": json.loads(json_run.read_text())}}))
    assert read_run_scores(nested) == read_run_scores(json_run) == read_run_scores(SAMPLE / "run.bm25.trec")


def test_the_order_in_the_file_breaks_score_ties(tmp_path):
    path = tmp_path / "ties.json"
    path.write_text('{"q1": {"z": 1.0, "a": 1.0, "m": 2}}')
    assert [(e.docid, e.rank) for e in read_run(path)["q1"]] == [("m", 3), ("z", 1), ("a", 2)]


@pytest.mark.parametrize("text, message", [
    ('{"q1": {"d1": "0.5"}}', r"query 'q1', document 'd1': the score must be a finite number, found '\"0.5\"'"),
    ('{"q1": {"d1": true}}', r"the score must be a finite number, found 'true'"),
    ('{"q1": {"d1": NaN}}', r"NaN is not a score"),
    ('{"q1": {"d1": 1e999}}', r"the score must be a finite number"),
    ("{}", r"the run is empty"),
    ('{"q1": {}}', r"query 'q1' has no documents"),
    ('{"q1": [["d1", 0.5]]}', r"query 'q1': expected an object \{docid: score\}, found list"),
    ('{"q1": {"d1": 1, "d1": 2}}', r"the key 'd1' is given twice"),
    ('{"q1": {"d 1": 1}}', r"document id of query 'q1' 'd 1' is empty or has white space"),
    ('{"q1": {"d1": 1},\n "q2": {"d1": 2,}}', r"run.json:2: invalid JSON \(.* at column \d+\)"),
    ('{"mteb_model_meta": {}, "default": {"dev": {"q1": {"d1": 1}}, "test": {"q1": {"d1": 1}}}}',
     r"MTEB predictions with 2 splits \('dev', 'test'\)"),
])
def test_malformed_predictions_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "run.json"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        read_run_scores(path)
    proc = subprocess.run([*RANK1, "eval", str(path), "--qrels", str(SAMPLE / "qrels.txt")], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_rerank_of_predictions_writes_the_same_run_as_of_the_trec_run(json_run, tmp_path):
    outputs = []
    for run in (SAMPLE / "run.bm25.trec", json_run):
        out = tmp_path / f"{run.stem}.reranked.trec"
        proc = subprocess.run([*RANK1, "rerank", str(run), "--model", str(TINY_MODEL), "--corpus",
                               str(SAMPLE / "corpus.jsonl"), "--queries", str(SAMPLE / "queries.tsv"), "--top-k", "2",
                               "--backend", "transformers", "--device", "cpu", "--dtype", "float32",
                               "--max-model-len", "1024", "--max-reasoning-tokens", "48",
                               "--store", str(tmp_path / "store.sqlite"), "-o", str(out)],
                              cwd=REPO, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]

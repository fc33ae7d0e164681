import json

import pytest

from rank1_cli import collection
from rank1_cli.collection import CollectionSource
from rank1_cli.errors import InputError

from conftest import SAMPLE


def test_local_jsonl_corpus_returns_only_the_asked_ids():
    docs = collection.read_corpus_docs(SAMPLE / "corpus.jsonl", {"d001", "d002", "absent"})
    assert set(docs) == {"d001", "d002"}
    assert docs["d001"].title == "Python list comprehensions"


def test_tsv_corpus_with_and_without_titles(tmp_path):
    path = tmp_path / "corpus.tsv"
    path.write_text("a\tTitle A\tText A\nb\tText B only\n")
    docs = collection.read_corpus_docs(path, {"a", "b"})
    assert (docs["a"].title, docs["a"].text) == ("Title A", "Text A")
    assert (docs["b"].title, docs["b"].text) == ("", "Text B only")


def test_bad_jsonl_line_names_the_line(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"doc_id": "a", "text": "x"}) + "\n{broken\n")
    with pytest.raises(InputError, match=r"corpus.jsonl:2: invalid JSON"):
        collection.read_corpus_docs(path, {"a"})


def test_queries_tsv_and_jsonl(tmp_path):
    queries = collection.read_queries_file(SAMPLE / "queries.tsv")
    assert len(queries) == 25 and queries["q01"].text == "does vitamin C prevent colds"
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"qid": "1", "text": "cats", "instruction": "only lions"}) + "\n")
    assert collection.read_queries_file(path)["1"].instruction == "only lions"
    bad = tmp_path / "q.tsv"
    bad.write_text("q1 no tab here\n")
    with pytest.raises(InputError, match="q.tsv:1: expected 'qid<TAB>query text'"):
        collection.read_queries_file(bad)


def test_source_needs_a_dataset_or_both_files():
    with pytest.raises(InputError, match="--dataset"):
        CollectionSource(corpus="c.jsonl")


def test_ir_datasets_path_uses_the_docstore(sample_dataset):
    source = CollectionSource(dataset=sample_dataset)
    queries = source.load_queries()
    assert len(queries) == 25
    docs = source.load_documents({"d001", "d050", "nope"})
    local = collection.read_corpus_docs(SAMPLE / "corpus.jsonl", {"d001", "d050"})
    assert docs == local
    qrels = collection.load_qrels(sample_dataset)
    assert qrels == collection.load_qrels(str(SAMPLE / "qrels.txt"))


def test_unknown_dataset_id_is_an_input_error():
    with pytest.raises(InputError, match="unknown ir_datasets id"):
        collection.load_ir_dataset("msmarco-pasage/dev")
    with pytest.raises(InputError, match="not an ir_datasets id"):
        collection.load_qrels("no/such/qrels")

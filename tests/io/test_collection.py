import json

import pytest
from conftest import SAMPLE

from rank1_cli.errors import InputError
from rank1_cli.io import collection
from rank1_cli.io.collection import CollectionSource


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


def write(path, text):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize("text, message", [
    # a third column (TREC topics' narrative) would end up in the prompt as '\t<narrative>'
    ("q1\tcats\tonly lions count\n", r"q.tsv:1: expected 'qid<TAB>query text', found 3 tab-separated fields"),
    ("q1\tcats\nq2\tdogs\nq1\tlions\n", r"q.tsv:3: query 'q1' is given twice with different texts \(first at line 1\)"),
    ("q1\tcats\nq2\t  \n", r"q.tsv:2: query 'q2' has an empty text"),
    ("\tcats\n", r"q.tsv:1: empty query id"),
])
def test_malformed_queries_tsv_are_errors_naming_the_line(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        collection.read_queries_file(write(tmp_path / "q.tsv", text))


@pytest.mark.parametrize("records, message", [
    ([{"qid": "1", "text": "cats"}, {"qid": "1", "text": "dogs"}], r"q.jsonl:2: query '1' is given twice"),
    ([{"qid": "1", "text": ""}], r"q.jsonl:1: query '1' has an empty text"),
    ([{"qid": "1", "text": ["cats"]}], r"q.jsonl:1: 'text' must be a string, found a list"),
    ([{"qid": "1", "text": None}], r"q.jsonl:1: 'text' is null; expected a string"),
    ([{"qid": None, "text": "cats"}], r"q.jsonl:1: 'qid' is null; expected a string"),
])
def test_malformed_queries_jsonl_are_errors_naming_the_line(tmp_path, records, message):
    path = write(tmp_path / "q.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(InputError, match=message):
        collection.read_queries_file(path)


@pytest.mark.parametrize("record, message", [
    ({"doc_id": "a", "text": None}, r"c.jsonl:1: 'text' is null; expected a string"),
    ({"doc_id": None, "text": "cats"}, r"c.jsonl:1: 'doc_id' is null; expected a string"),
])
def test_a_null_id_or_text_in_a_jsonl_corpus_is_an_error_saying_null(tmp_path, record, message):
    path = write(tmp_path / "c.jsonl", json.dumps(record) + "\n")
    with pytest.raises(InputError, match=message):
        collection.read_corpus_docs(path, {"a"})


def test_a_null_title_or_instruction_is_none(tmp_path):
    corpus = write(tmp_path / "c.jsonl", json.dumps({"doc_id": "a", "title": None, "text": "cats"}) + "\n")
    assert collection.read_corpus_docs(corpus, {"a"})["a"].title == ""
    queries = write(tmp_path / "q.jsonl", json.dumps({"qid": "1", "text": "cats", "instruction": None}) + "\n")
    assert collection.read_queries_file(queries)["1"].instruction is None


@pytest.mark.parametrize("read, name, text, message", [
    (collection.read_queries_file, "q.txt", '{"qid": "1", "text": "cats"}\n',
     r"q.txt:1: this looks like JSONL; name the file \.jsonl"),
    (collection.read_queries_file, "q.tsv", 'q1\tcats\n{"qid": "2", "text": "dogs"}\n',
     r"q.tsv:2: this looks like JSONL; name the file \.jsonl"),
    (lambda path: collection.read_corpus_docs(path, {"a"}), "c.tsv", '{"doc_id": "a", "text": "x"}\n',
     r"c.tsv:1: this looks like JSONL; name the file \.jsonl"),
    (collection.read_instructions_file, "i.jsonl", '{"qid": "1", "instruction": "x"}\n',
     r"i.jsonl:1: this looks like JSONL, but instructions are read as TSV only \(qid<TAB>instruction\)"),
    (collection.read_queries_file, "q.jsonl", "q1\tcats\n",
     r"q.jsonl:1: invalid JSON; this looks like TSV \(tab-separated\); name the file \.tsv"),
    (lambda path: collection.read_corpus_docs(path, {"a"}), "c.jsonl.gz", "a\tA title\tA text\n",
     r"c.jsonl.gz:1: invalid JSON; this looks like TSV \(tab-separated\); name the file \.tsv"),
])
def test_jsonl_in_a_tsv_name_and_tsv_in_a_jsonl_name_say_which_name_fits(tmp_path, read, name, text, message):
    content = text.encode()
    if name.endswith(".gz"):
        import gzip

        content = gzip.compress(content)
    with pytest.raises(InputError, match=message):
        read(write(tmp_path / name, content))


def test_queries_with_a_bom_crlf_and_an_identical_repeat_are_read(tmp_path):
    path = write(tmp_path / "q.tsv", b"\xef\xbb\xbfq01\tcats\r\nq02\tdogs\r\nq01\tcats\r\n")
    queries = collection.read_queries_file(path)
    assert {q.qid: q.text for q in queries.values()} == {"q01": "cats", "q02": "dogs"}
    instructions = write(tmp_path / "i.tsv", b"\xef\xbb\xbfq01\tonly lions\r\n")
    assert collection.read_instructions_file(instructions) == {"q01": "only lions"}


@pytest.mark.parametrize("text, message", [
    ("q1\tonly lions\nq1\tonly tigers\n", r"i.tsv:2: query 'q1' is given twice with different instructions"),
    ("q1\tonly\tlions\n", r"i.tsv:1: expected 'qid<TAB>instruction', found 3 tab-separated fields"),
    ("q1\t\n", r"i.tsv:1: query 'q1' has an empty instruction"),
])
def test_malformed_instructions_are_errors_naming_the_line(tmp_path, text, message):
    with pytest.raises(InputError, match=message):
        collection.read_instructions_file(write(tmp_path / "i.tsv", text))


@pytest.mark.parametrize("name, text", [
    ("c.tsv", "a\tfirst text\nb\tother\na\tsecond text\n"),
    ("c.jsonl", '{"doc_id": "a", "text": "first text"}\n{"doc_id": "b", "text": "other"}\n'
                '{"doc_id": "a", "text": "second text"}\n'),
])
def test_a_document_id_twice_with_different_texts_is_an_error(tmp_path, name, text):
    path = write(tmp_path / name, text)
    with pytest.raises(InputError, match=rf"{name}:3: document 'a' is given twice with different texts "
                                         rf"\(first at line 1\)"):
        collection.read_corpus_docs(path, {"a", "b"})
    assert set(collection.read_corpus_docs(path, {"b"})) == {"b"}  # ids not asked for are not compared


def test_an_identical_repeated_document_and_a_bom_are_fine(tmp_path):
    path = write(tmp_path / "c.tsv", b"\xef\xbb\xbfa\tsame\r\na\tsame\r\n")
    assert collection.read_corpus_docs(path, {"a"})["a"].text == "same"


def test_a_long_id_is_quoted_short(tmp_path):
    path = write(tmp_path / "q.tsv", f"{'x' * 1_000_000}\tcats\n{'x' * 1_000_000}\tdogs\n")
    with pytest.raises(InputError) as error:
        collection.read_queries_file(path)
    assert "1000000 characters" in str(error.value) and len(str(error.value)) < 400


@pytest.fixture(scope="module")
def offline_dataset(tmp_path_factory):
    import irds_offline

    return irds_offline.register(tmp_path_factory.mktemp("irds-offline"))


def test_a_dataset_whose_files_cannot_be_downloaded_is_one_clear_error(offline_dataset):
    import logging

    seen: list[str] = []
    keep = logging.Handler()
    keep.emit = lambda record: seen.append(record.getMessage())
    irds_logger = logging.getLogger("ir_datasets")
    irds_logger.addHandler(keep)
    source = CollectionSource(dataset=offline_dataset)
    for load, what in ((lambda: collection.load_qrels(offline_dataset), "qrels"), (source.load_queries, "queries"),
                       (lambda: source.load_documents({"d1"}), "documents")):
        with pytest.raises(InputError, match=rf"ir_datasets 'rank1-cli-offline': cannot get its {what} "
                                             r"\(ConnectionError: .*\)\. .*offline") as error:
            load()
        assert "\n" not in str(error.value) and len(str(error.value)) < 600
    irds_logger.removeHandler(keep)
    # ir_datasets' own "Download failed" warning repeats the cause: left out; its other records stay
    assert seen and not any(message.startswith("Download failed") for message in seen), seen


def test_rank1_eval_with_an_offline_dataset_prints_one_line_and_exits_2(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    run = write(tmp_path / "run", "1 Q0 d1 1 1.0 t\n")
    code = ("import sys, pathlib; sys.path.insert(0, 'tests'); import irds_offline\n"
            f"irds_offline.register(pathlib.Path({str(tmp_path)!r}))\n"
            "from rank1_cli import cli\n"
            f"sys.argv = ['rank1', 'eval', {str(run)!r}, '--qrels', irds_offline.DATASET_ID]\n"
            "cli.main()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("rank1: error: ir_datasets 'rank1-cli-offline': cannot get its qrels")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr and proc.stdout == ""


# --- ir_datasets records of every shape (stand-in datasets: the fields are what matters) ------

class _Query:
    def __init__(self, query_id, **fields):
        self.query_id = query_id
        self.__dict__.update(fields)

    def default_text(self):
        return f"default text of {self.query_id}"


class _Dataset:
    def __init__(self, queries=(), docs=None):
        self.queries, self.docs = list(queries), docs or {}

    def queries_iter(self):
        return iter(self.queries)

    def docs_store(self):
        docs = self.docs

        class Store:
            def get_many(self, ids):
                return {i: docs[i] for i in ids if i in docs}
        return Store()


def test_dataset_queries_take_text_instruction_or_the_default_text():
    queries = collection.dataset_queries(_Dataset([
        _Query("q1", text="plain query"),
        _Query("q2", text="followir query", instruction="Only recent documents."),
        _Query("q3", text="empty instruction", instruction=""),
        _Query("q4", title="no text field", description="a description"),
    ]))
    assert queries == {
        "q1": collection.Query("q1", "plain query", None),
        "q2": collection.Query("q2", "followir query", "Only recent documents."),
        "q3": collection.Query("q3", "empty instruction", None),
        "q4": collection.Query("q4", "default text of q4", None),
    }


def test_dataset_documents_take_title_and_text_or_the_default_text():
    class Doc:
        def __init__(self, **fields):
            self.__dict__.update(fields)

        def default_text(self):
            return "the default text"

    dataset = _Dataset(docs={"a": Doc(title="A title", text="body"), "b": Doc(title=None, text="untitled"),
                             "c": Doc(title="ignored", body="no text field"), "d": Doc(text="no title field")})
    assert collection.dataset_docs(dataset, {"a", "b", "c", "d", "missing"}) == {
        "a": collection.Document("a", "A title", "body"), "b": collection.Document("b", "", "untitled"),
        "c": collection.Document("c", "", "the default text"), "d": collection.Document("d", "", "no title field")}


def test_the_sample_dataset_gives_the_local_files_queries_and_qrels(sample_dataset):
    local = CollectionSource(corpus=str(SAMPLE / "corpus.jsonl"), queries=str(SAMPLE / "queries.tsv"))
    assert CollectionSource(dataset=sample_dataset).load_queries() == local.load_queries()
    assert CollectionSource(dataset=sample_dataset).describe() == sample_dataset
    assert local.describe() == f"{SAMPLE / 'corpus.jsonl'} + {SAMPLE / 'queries.tsv'}"


def test_an_unknown_dataset_gets_close_ids_and_an_unknown_qrels_spec_says_both_readings():
    with pytest.raises(InputError) as error:
        collection.load_ir_dataset("beir/scifakt/test")
    assert str(error.value) == ("'beir/scifakt/test': unknown ir_datasets id. Did you mean beir/scifact/test or "
                                "beir/fiqa/test or beir/scifact? See https://ir-datasets.com")   # the 3 closest
    with pytest.raises(InputError) as error:
        collection.load_ir_dataset("zzzzzzzz")
    assert str(error.value) == "'zzzzzzzz': unknown ir_datasets id. See https://ir-datasets.com"
    with pytest.raises(InputError) as error:
        collection.load_qrels("no/such/qrels")
    assert str(error.value) == "qrels 'no/such/qrels': no such file, and not an ir_datasets id"


def test_qrels_from_stdin(monkeypatch):
    import io
    import sys

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"q1 0 a 2\n")))
    assert collection.load_qrels("-") == {"q1": {"a": 2}}


def test_blank_lines_between_instructions_are_skipped(tmp_path):
    path = write(tmp_path / "instructions.tsv", "q1\tfirst\n\n   \nq2\tsecond\n")
    assert collection.read_instructions_file(str(path)) == {"q1": "first", "q2": "second"}


def write_maybe_gzipped(path, text):
    import gzip

    path.write_bytes(gzip.compress(text.encode()) if path.name.endswith(".gz") else text.encode())
    return path


READERS = {"q": collection.read_queries_file, "c": lambda path: collection.read_corpus_docs(path, {"a"})}


@pytest.mark.parametrize("name, text, message", [
    # queries (q.*)
    ("q.json", '{"qid": "1", "text": "cats"}\n[1, 2]\n', "q.json:2: expected a JSON object per line"),
    ("q.ndjson", '{"qid": 5, "text": true}\n', "q.ndjson:1: 'text' must be a string, found a bool"),
    ("q.jsonl.gz", '\n{"text": "cats"}\n', "q.jsonl.gz:2: expected keys 'qid' and 'text' in each query object"),
    ("q.jsonl", '\n\n{"qid": "1", "text": "cats", "instruction": [1]}\n',
     "q.jsonl:3: 'instruction' must be a string, found a list"),
    ("q.jsonl", "\n\n", "q.jsonl: no queries in the file"),
    ("q.tsv", "q1 no tab here\n", "q.tsv:1: expected 'qid<TAB>query text', found no tab: 'q1 no tab here'"),
    ("q.tsv", "q1\tcats\tonly lions\n",
     "q.tsv:1: expected 'qid<TAB>query text', found 3 tab-separated fields: 'q1\\tcats\\tonly lions'"),
    # corpora (c.*)
    ("c.json", "[1]\n", "c.json:1: expected a JSON object per line"),
    ("c.jsonl", '\n{"doc_id": "a", "text": {"x": 1}}\n', "c.jsonl:2: 'text' must be a string, found a dict"),
    ("c.jsonl", '{"text": "x"}\n', "c.jsonl:1: expected a 'doc_id' key in each document object"),
    ("c.jsonl", '{"doc_id": "a"}\n', "c.jsonl:1: document 'a' has no 'text' key"),
    ("c.jsonl", '{"doc_id": ["a"], "text": "x"}\n', "c.jsonl:1: 'doc_id' must be a string, found a list"),
    ("c.jsonl", '\n{"doc_id": "a", "title": 1.5, "text": "x"}\n', "c.jsonl:2: 'title' must be a string, found a float"),
    ("c.tsv", "a\tb\tc\td\n",
     "c.tsv:1: expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text', found 4 tab-separated fields"),
])
def test_every_malformed_queries_file_or_corpus_gets_the_whole_message(tmp_path, name, text, message):
    with pytest.raises(InputError) as error:
        READERS[name[0]](write_maybe_gzipped(tmp_path / name, text))
    assert str(error.value) == f"{tmp_path}/{message}"


@pytest.mark.parametrize("path", [SAMPLE / "queries.tsv", "jsonl"])
def test_a_query_without_an_instruction_has_none(tmp_path, path):
    if path == "jsonl":
        path = write_maybe_gzipped(tmp_path / "q.jsonl", '{"qid": "1", "text": "cats"}\n')
    assert all(q.instruction is None for q in collection.read_queries_file(path).values())


def test_a_gzipped_ndjson_corpus_after_blank_lines_is_read(tmp_path):
    path = write_maybe_gzipped(tmp_path / "c.ndjson.gz", '\n\n{"doc_id": "a", "title": "T", "text": "x"}\n')
    assert collection.read_corpus_docs(path, {"a"}) == {"a": collection.Document("a", "T", "x")}


def test_a_source_needs_a_dataset_or_both_files_and_says_so_in_python_or_on_the_command_line():
    from rank1_cli.errors import OptionError

    for partial in ({"corpus": "c.jsonl"}, {"queries": "q.tsv"}, {}):
        with pytest.raises(OptionError) as error:
            CollectionSource(**partial)
        assert str(error.value) == "give dataset ID (ir_datasets), or both corpus FILE and queries FILE"
        assert error.value.for_command_line() == \
            "give --dataset ID (ir_datasets), or both --corpus FILE and --queries FILE"
    # A dataset may have its queries or its corpus replaced by a local file.
    assert CollectionSource(dataset="d", queries="q.tsv").describe() == "d"
    assert CollectionSource(dataset="d", corpus="c.jsonl", queries="q.tsv").queries == "q.tsv"

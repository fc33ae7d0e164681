"""Queries, documents and qrels: from local files or an ir_datasets id.

Documents are looked up by id (ir_datasets' docstore, or one streaming pass over a local
corpus keeping only the ids asked for), so memory follows the pairs reranked, not the corpus.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, OptionError, quote
from .text import display_name, iter_lines
from .trec import Qrels, read_qrels_file

log = logging.getLogger(__name__)

DOC_ID_KEYS = ("doc_id", "docid", "_id", "id", "docno")
DOC_TEXT_KEYS = ("text", "contents", "body", "passage")
QUERY_ID_KEYS = ("qid", "query_id", "_id", "id")
QUERY_TEXT_KEYS = ("text", "query", "title")


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True, slots=True)
class Query:
    qid: str
    text: str
    instruction: str | None = None


def load_ir_dataset(dataset_id: str) -> Any:
    """An ir_datasets dataset; unknown ids are an InputError with close matches."""
    import ir_datasets

    try:
        return ir_datasets.load(dataset_id)
    except KeyError:
        import difflib

        near = difflib.get_close_matches(dataset_id, list(ir_datasets.registry), n=3, cutoff=0.6)
        hint = f" Did you mean {' or '.join(near)}?" if near else ""
        raise InputError(f"{quote(dataset_id)}: unknown ir_datasets id.{hint} See https://ir-datasets.com") from None


def _drop_download_failed(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Download failed")


@contextlib.contextmanager
def dataset_files(dataset_id: str, what: str) -> Iterator[None]:
    """Turn a failure to get an ir_datasets dataset's files into one InputError line.

    Files that are not downloaded, on a machine without network, otherwise end in a long
    traceback from requests; ir_datasets' own 'Download failed' warning, which repeats the
    cause, is left out.
    """
    irds_logger = logging.getLogger("ir_datasets")
    irds_logger.addFilter(_drop_download_failed)
    try:
        yield
    except (InputError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        cause = str(exc) or type(exc).__name__
        cause = cause if len(cause) <= 200 else cause[:200] + "..."
        raise InputError(
            f"ir_datasets {dataset_id!r}: cannot get its {what} ({type(exc).__name__}: {cause}). "
            "Its files are not on this machine and could not be downloaded (offline?): fetch them once "
            "where the network is reachable (see https://ir-datasets.com), or use local files"
        ) from None
    finally:
        irds_logger.removeFilter(_drop_download_failed)


def _is_jsonl(path: str) -> bool:
    name = path[:-3] if path.endswith(".gz") else path
    return name.endswith((".jsonl", ".json", ".ndjson"))


JSONL_IN_TSV = "this looks like JSONL; name the file .jsonl"


def _looks_like_json(line: str) -> bool:
    return line.lstrip().startswith("{")


def _json_record(name: str, lineno: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        if "\t" in line and not _looks_like_json(line):
            raise InputError(f"{name}:{lineno}: invalid JSON; this looks like TSV (tab-separated); "
                             "name the file .tsv") from None
        raise InputError(f"{name}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise InputError(f"{name}:{lineno}: expected a JSON object per line")
    return record


# --- queries -------------------------------------------------------------------------------

def _string(name: str, lineno: int, record: dict, keys: Iterable[str], *, nullable: bool = False) -> str | None:
    """The first of `keys` in a JSON object, which must be a string (or a number, for ids); None when
    no key is there, or (if `nullable`) when its value is null."""
    for key in keys:
        if key in record:
            value = record[key]
            if value is None:
                if nullable:
                    return None
                raise InputError(f"{name}:{lineno}: {key!r} is null; expected a string")
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise InputError(f"{name}:{lineno}: {key!r} must be a string, found a {type(value).__name__}")
            return str(value)
    return None


def _tab_fields(name: str, lineno: int, line: str, expected: str, json_hint: str = JSONL_IN_TSV) -> tuple[str, str]:
    """`id<TAB>text` of a two-column TSV line; a third column is an error, not part of the text.
    `json_hint` says what to do with a line that is a JSON object."""
    fields = line.split("\t")
    if len(fields) != 2:
        if _looks_like_json(line):
            raise InputError(f"{name}:{lineno}: {json_hint}")
        found = "no tab" if len(fields) == 1 else f"{len(fields)} tab-separated fields"
        raise InputError(f"{name}:{lineno}: expected {expected!r}, found {found}: {quote(line)}")
    return fields[0].strip(), fields[1]


class _Unique:
    """id -> value of one file, refusing an id given again with a different value (file:line of both)."""

    def __init__(self, name: str, what: str, values: str):
        self.name, self.what, self.values = name, what, values
        self.items: dict[str, Any] = {}
        self.lines: dict[str, int] = {}

    def add(self, lineno: int, key: str, value: Any) -> None:
        if not key:
            raise InputError(f"{self.name}:{lineno}: empty {self.what} id")
        if key in self.items:
            if self.items[key] != value:
                raise InputError(f"{self.name}:{lineno}: {self.what} {quote(key)} is given twice with different "
                                 f"{self.values} (first at line {self.lines[key]})")
            return
        self.items[key] = value
        self.lines[key] = lineno


def read_queries_file(path: str | os.PathLike) -> dict[str, Query]:
    """Queries from TSV (`qid<TAB>text`) or JSONL (`{"qid", "text", "instruction"?}`).

    Errors (file:line): a third TSV column, an empty id or text, a qid given twice with different
    texts (an identical repeat is fine).
    """
    name = display_name(path)
    queries = _Unique(name, "query", "texts")
    jsonl = _is_jsonl(str(path))
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        if jsonl:
            record = _json_record(name, lineno, line)
            qid = _string(name, lineno, record, QUERY_ID_KEYS)
            text = _string(name, lineno, record, QUERY_TEXT_KEYS)
            if qid is None or text is None:
                raise InputError(f"{name}:{lineno}: expected keys 'qid' and 'text' in each query object")
            instruction = _string(name, lineno, record, ("instruction",), nullable=True)
            qid = qid.strip()
        else:
            qid, text = _tab_fields(name, lineno, line, "qid<TAB>query text")
            instruction = None
        if not text.strip():
            raise InputError(f"{name}:{lineno}: query {quote(qid)} has an empty text")
        queries.add(lineno, qid, Query(qid, text, instruction or None))
    if not queries.items:
        raise InputError(f"{name}: no queries in the file")
    return queries.items


def read_instructions_file(path: str | os.PathLike) -> dict[str, str]:
    """FollowIR-style instructions, `qid<TAB>instruction` per line (same checks as queries)."""
    name = display_name(path)
    instructions = _Unique(name, "query", "instructions")
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        qid, text = _tab_fields(name, lineno, line, "qid<TAB>instruction",
                                "this looks like JSONL, but instructions are read as TSV only (qid<TAB>instruction); "
                                "put them in the queries file instead, as JSONL with an 'instruction' key")
        if not text.strip():
            raise InputError(f"{name}:{lineno}: query {quote(qid)} has an empty instruction")
        instructions.add(lineno, qid, text)
    return instructions.items


def dataset_queries(dataset: Any) -> dict[str, Query]:
    queries: dict[str, Query] = {}
    for query in dataset.queries_iter():
        text = getattr(query, "text", None)
        if text is None:
            text = query.default_text()
        instruction = getattr(query, "instruction", None)
        queries[query.query_id] = Query(query.query_id, text, instruction or None)
    return queries


# --- documents -----------------------------------------------------------------------------

def read_corpus_docs(path: str | os.PathLike, doc_ids: set[str]) -> dict[str, Document]:
    """The documents with the given ids from a JSONL or TSV corpus, in one streaming pass.

    JSONL: {"doc_id", "title"?, "text"} per line (also _id/docid/id and contents/body).
    TSV: `docid<TAB>text` or `docid<TAB>title<TAB>text`.
    One of these ids given twice with different title or text is an error (file:line of both).
    """
    name = display_name(path)
    found = _Unique(name, "document", "texts")
    jsonl = _is_jsonl(str(path))
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        if jsonl:
            record = _json_record(name, lineno, line)
            doc_id = _string(name, lineno, record, DOC_ID_KEYS)
            if doc_id is None:
                raise InputError(f"{name}:{lineno}: expected a 'doc_id' key in each document object")
            if doc_id not in doc_ids:
                continue
            text = _string(name, lineno, record, DOC_TEXT_KEYS)
            if text is None:
                raise InputError(f"{name}:{lineno}: document {quote(doc_id)} has no 'text' key")
            title = _string(name, lineno, record, ("title",), nullable=True) or ""
        else:
            fields = line.split("\t")
            if len(fields) not in (2, 3):
                if _looks_like_json(line):
                    raise InputError(f"{name}:{lineno}: {JSONL_IN_TSV}")
                raise InputError(
                    f"{name}:{lineno}: expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text', "
                    f"found {len(fields)} tab-separated fields"
                )
            doc_id = fields[0]
            if doc_id not in doc_ids:
                continue
            title, text = (fields[1], fields[2]) if len(fields) == 3 else ("", fields[1])
        found.add(lineno, doc_id, Document(doc_id, title, text))
    return found.items


def dataset_docs(dataset: Any, doc_ids: set[str]) -> dict[str, Document]:
    """Documents by id through the dataset's docstore (never iterating the corpus)."""
    store = dataset.docs_store()
    found: dict[str, Document] = {}
    for doc_id, doc in store.get_many(doc_ids).items():
        text = getattr(doc, "text", None)
        title = getattr(doc, "title", None) or ""
        if text is None:
            text = doc.default_text()
            title = ""
        found[doc_id] = Document(doc_id, title, text)
    return found


# --- qrels ---------------------------------------------------------------------------------

def load_qrels(spec: str) -> Qrels:
    """A TREC qrels file, `-`, or an ir_datasets id."""
    if spec == "-" or Path(spec).exists():
        return read_qrels_file(spec)
    import ir_datasets

    if spec not in ir_datasets.registry:
        raise InputError(f"qrels {quote(spec)}: no such file, and not an ir_datasets id")
    dataset = load_ir_dataset(spec)
    if not dataset.has_qrels():
        raise InputError(f"ir_datasets {spec!r}: the dataset has no qrels")
    qrels: Qrels = {}
    with dataset_files(spec, "qrels"):
        for qrel in dataset.qrels_iter():
            qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
    return qrels


# --- the pieces a rerank needs -------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CollectionSource:
    """Where queries and documents come from: an ir_datasets id, or local files."""

    dataset: str | None = None
    corpus: str | None = None
    queries: str | None = None

    def __post_init__(self) -> None:
        # With a dataset, local files may override part of it (its queries, its corpus).
        if not self.dataset and not (self.corpus and self.queries):
            raise OptionError("give {dataset} ID (ir_datasets), or both {corpus} FILE and {queries} FILE")

    def describe(self) -> str:
        return self.dataset or f"{self.corpus} + {self.queries}"

    def load_queries(self) -> dict[str, Query]:
        if self.queries:
            return read_queries_file(self.queries)
        with dataset_files(self.dataset, "queries"):
            return dataset_queries(load_ir_dataset(self.dataset))

    def load_documents(self, doc_ids: set[str]) -> dict[str, Document]:
        if self.corpus:
            return read_corpus_docs(self.corpus, doc_ids)
        with dataset_files(self.dataset, "documents"):
            return dataset_docs(load_ir_dataset(self.dataset), doc_ids)

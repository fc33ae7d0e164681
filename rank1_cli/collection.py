"""Queries, documents and qrels: from local files or an ir_datasets id.

Documents are looked up by id (ir_datasets' docstore, or one streaming pass over a local
corpus keeping only the ids asked for), so memory follows the pairs reranked, not the corpus.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .textio import display_name, iter_lines
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
        raise InputError(f"--dataset {dataset_id!r}: unknown ir_datasets id.{hint} See https://ir-datasets.com") from None


def _is_jsonl(path: str) -> bool:
    name = path[:-3] if path.endswith(".gz") else path
    return name.endswith((".jsonl", ".json", ".ndjson"))


def _first_key(record: dict, keys: Iterable[str]) -> Any:
    for key in keys:
        if key in record:
            return record[key]
    return None


def _json_record(name: str, lineno: int, line: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(record, dict):
        raise InputError(f"{name}:{lineno}: expected a JSON object per line")
    return record


# --- queries -------------------------------------------------------------------------------

def read_queries_file(path: str | os.PathLike) -> dict[str, Query]:
    """Queries from TSV (`qid<TAB>text`) or JSONL (`{"qid", "text", "instruction"?}`)."""
    name = display_name(path)
    queries: dict[str, Query] = {}
    jsonl = _is_jsonl(str(path))
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        if jsonl:
            record = _json_record(name, lineno, line)
            qid, text = _first_key(record, QUERY_ID_KEYS), _first_key(record, QUERY_TEXT_KEYS)
            if qid is None or text is None:
                raise InputError(f"{name}:{lineno}: expected keys 'qid' and 'text' in each query object")
            instruction = record.get("instruction")
            queries[str(qid)] = Query(str(qid), str(text), str(instruction) if instruction else None)
        else:
            qid, sep, text = line.partition("\t")
            if not sep:
                raise InputError(f"{name}:{lineno}: expected 'qid<TAB>query text', found no tab: {line[:120]!r}")
            queries[qid.strip()] = Query(qid.strip(), text)
    if not queries:
        raise InputError(f"{name}: no queries in the file")
    return queries


def read_instructions_file(path: str | os.PathLike) -> dict[str, str]:
    """FollowIR-style instructions, `qid<TAB>instruction` per line."""
    name = display_name(path)
    instructions: dict[str, str] = {}
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        qid, sep, text = line.partition("\t")
        if not sep:
            raise InputError(f"{name}:{lineno}: expected 'qid<TAB>instruction', found no tab")
        instructions[qid.strip()] = text
    return instructions


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
    """
    name = display_name(path)
    found: dict[str, Document] = {}
    jsonl = _is_jsonl(str(path))
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        if jsonl:
            record = _json_record(name, lineno, line)
            doc_id = _first_key(record, DOC_ID_KEYS)
            if doc_id is None:
                raise InputError(f"{name}:{lineno}: expected a 'doc_id' key in each document object")
            doc_id = str(doc_id)
            if doc_id not in doc_ids:
                continue
            text = _first_key(record, DOC_TEXT_KEYS)
            if text is None:
                raise InputError(f"{name}:{lineno}: document {doc_id} has no 'text' key")
            found[doc_id] = Document(doc_id, str(record.get("title") or ""), str(text))
        else:
            fields = line.split("\t")
            if len(fields) not in (2, 3):
                raise InputError(
                    f"{name}:{lineno}: expected 'docid<TAB>text' or 'docid<TAB>title<TAB>text', "
                    f"found {len(fields)} tab-separated fields"
                )
            if fields[0] not in doc_ids:
                continue
            title, text = (fields[1], fields[2]) if len(fields) == 3 else ("", fields[1])
            found[fields[0]] = Document(fields[0], title, text)
    return found


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
        raise InputError(f"--qrels {spec}: no such file, and not an ir_datasets id")
    dataset = load_ir_dataset(spec)
    if not dataset.has_qrels():
        raise InputError(f"--qrels {spec}: the ir_datasets dataset has no qrels")
    qrels: Qrels = {}
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
        if self.dataset and (self.corpus or self.queries):
            if not (self.corpus and self.queries):
                return  # local files may override part of a dataset
        if not self.dataset and not (self.corpus and self.queries):
            raise InputError("give --dataset ID (ir_datasets), or both --corpus FILE and --queries FILE")

    def describe(self) -> str:
        return self.dataset or f"{self.corpus} + {self.queries}"

    def load_queries(self) -> dict[str, Query]:
        if self.queries:
            return read_queries_file(self.queries)
        return dataset_queries(load_ir_dataset(self.dataset))

    def load_documents(self, doc_ids: set[str]) -> dict[str, Document]:
        if self.corpus:
            return read_corpus_docs(self.corpus, doc_ids)
        return dataset_docs(load_ir_dataset(self.dataset), doc_ids)

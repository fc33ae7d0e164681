"""MTEB predictions JSON as a run format: `{qid: {docid: score}}`, the format of the published
rank1 run files (and of MTEB 2.x's saved predictions, whose scores sit under a subset and a
split beside an "mteb_model_meta" entry).

Read as strictly as a TREC run: invalid JSON, wrong nesting, a query without documents, a score
that is not a finite number, an id a TREC run cannot hold, or a key given twice is an error.
The order of a query's documents in the file is their first-stage rank (used to break score ties).
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import InputError, quote

META_KEY = "mteb_model_meta"


def looks_like_json(first_chunk: bytes) -> bool:
    return first_chunk.lstrip()[:1] == b"{"


def _no_duplicate_keys(name: str):
    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise InputError(f"{name}: the key {quote(key)} is given twice in one object; trec_eval refuses "
                                 "a run with a document twice in a query, and a JSON reader would keep one silently")
            result[key] = value
        return result
    return hook


def _reject_constant(value: str) -> float:
    raise ValueError(value)


def _scores_level(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """The {qid: {docid: score}} object: the top level, or under MTEB's subset and split."""
    if META_KEY in data:
        data = {key: value for key, value in data.items() if key != META_KEY}
        for level in ("subset", "split"):
            if len(data) != 1 or not isinstance(next(iter(data.values()), None), dict):
                found = ", ".join(quote(k) for k in list(data)[:5]) or "none"
                raise InputError(f"{name}: MTEB predictions with {len(data)} {level}s ({found}); a run file holds "
                                 f"the predictions of one {level}: keep one")
            data = next(iter(data.values()))
    return data


def read_predictions(name: str, text: bytes, with_rank: bool) -> dict[str, dict[str, Any]]:
    """qid -> docid -> score (or (score, rank) with_rank), queries in file order."""
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys(name), parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{name}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}: not valid UTF-8 (byte {exc.object[exc.start]:#04x})") from None
    except ValueError as exc:
        raise InputError(f"{name}: {exc} is not a score: scores must be finite numbers") from None
    if not isinstance(data, dict):
        raise InputError(f"{name}: expected a JSON object {{qid: {{docid: score}}}}, found a {type(data).__name__}")
    data = _scores_level(name, data)
    run: dict[str, dict[str, Any]] = {}
    for qid, docs in data.items():
        _check_id(name, "query id", qid)
        if not isinstance(docs, dict):
            raise InputError(f"{name}: query {quote(qid)}: expected an object {{docid: score}}, found "
                             f"{type(docs).__name__} {quote(json.dumps(docs)[:100])}")
        if not docs:
            raise InputError(f"{name}: query {quote(qid)} has no documents")
        table: dict[str, Any] = {}
        for rank, (docid, score) in enumerate(docs.items(), start=1):
            _check_id(name, f"document id of query {quote(qid)}", docid)
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise InputError(f"{name}: query {quote(qid)}, document {quote(docid)}: the score must be a finite "
                                 f"number, found {quote(json.dumps(score))}")
            table[docid] = (float(score), rank) if with_rank else float(score)
        run[qid] = table
    if not run:
        raise InputError(f"{name}: the run is empty (an object with no queries)")
    return run


def _check_id(name: str, what: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise InputError(f"{name}: {what} {quote(value)} is empty or has white space, which a TREC run cannot hold")

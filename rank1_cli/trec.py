"""TREC run and qrels files: strict, streaming readers and a tie-safe, atomic run writer."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TypeVar

from .errors import InputError
from .textio import atomic_writer, display_name, iter_lines

log = logging.getLogger(__name__)
T = TypeVar("T")

RUN_COLUMNS = "'qid Q0 docid rank score tag'"


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One retrieved document of one query, as the first stage ranked it."""

    docid: str
    score: float
    rank: int


Run = dict[str, list[RunEntry]]
"""qid -> entries ordered by score (descending), then rank (ascending)."""

Qrels = dict[str, dict[str, int]]
"""qid -> docid -> relevance grade."""


def iter_run_lines(path: str | os.PathLike) -> Iterator[tuple[str, str, int, float]]:
    """Yield (qid, docid, rank, score) for each line of a TREC run, validating as it goes."""
    name = display_name(path)
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 6:
            raise InputError(
                f"{name}:{lineno}: expected 6 whitespace-separated columns {RUN_COLUMNS}, "
                f"found {len(fields)}: {line[:120]!r}"
            )
        # Like trec_eval, words after the tag are ignored (its own test data has them).
        qid, _, docid, rank, score = fields[:5]
        try:
            rank_value = int(rank)
        except ValueError:
            raise InputError(f"{name}:{lineno}: rank (column 4) must be an integer, found {rank!r}") from None
        try:
            score_value = float(score)
        except ValueError:
            raise InputError(f"{name}:{lineno}: score (column 5) must be a number, found {score!r}") from None
        if not math.isfinite(score_value):
            raise InputError(f"{name}:{lineno}: score (column 5) must be finite, found {score!r}")
        yield qid, docid, rank_value, score_value


def _first_of_each(path: str | os.PathLike, value: Callable[[str, float, int], T]) -> dict[str, dict[str, T]]:
    """qid -> docid -> value(docid, score, rank), keeping the first line of each (qid, docid)."""
    run: dict[str, dict[str, T]] = {}
    duplicates = 0
    for qid, docid, rank, score in iter_run_lines(path):
        docs = run.get(qid)
        if docs is None:
            docs = run[qid] = {}
        if docid in docs:
            duplicates += 1
            continue
        docs[docid] = value(docid, score, rank)
    if duplicates:
        log.warning("%s: %d duplicate (qid, docid) lines ignored (the first of each was kept)",
                    display_name(path), duplicates)
    if not run:
        raise InputError(f"{display_name(path)}: the run is empty (no lines of the form {RUN_COLUMNS})")
    return run


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run; duplicates of (qid, docid) keep their first line, with one warning."""
    run = _first_of_each(path, RunEntry)
    return {qid: sorted(docs.values(), key=lambda e: (-e.score, e.rank)) for qid, docs in run.items()}


def read_run_scores(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run as qid -> docid -> score, the shape evaluators want (first duplicate wins)."""
    return _first_of_each(path, lambda docid, score, rank: score)


def read_qrels_file(path: str | os.PathLike) -> Qrels:
    """Read TREC qrels (`qid iter docid grade`). Non-integer grades are truncated, with a warning."""
    name = display_name(path)
    qrels: Qrels = {}
    non_integer = 0
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 4:
            raise InputError(
                f"{name}:{lineno}: expected 4 whitespace-separated columns 'qid iter docid grade', "
                f"found {len(fields)}: {line[:120]!r}"
            )
        qid, _, docid, grade = fields
        try:
            value = int(grade)
        except ValueError:
            try:
                value = int(float(grade))
            except ValueError:
                raise InputError(f"{name}:{lineno}: grade (column 4) must be a number, found {grade!r}") from None
            non_integer += 1
        qrels.setdefault(qid, {})[docid] = value
    if non_integer:
        log.warning("%s: %d non-integer relevance grades truncated to integers (trec_eval does the same)",
                    name, non_integer)
    if not qrels:
        raise InputError(f"{name}: the qrels file is empty")
    return qrels


def strictly_decreasing(scores: Sequence[float]) -> list[float]:
    """Nudge scores down by the smallest float step where needed so they strictly decrease.

    trec_eval sorts by score and breaks ties by docid, which would silently reorder a ranking
    with tied scores; this keeps the order that was decided and changes no score more than
    needed.
    """
    out: list[float] = []
    for score in scores:
        if out and score >= out[-1]:
            score = math.nextafter(out[-1], -math.inf)
        out.append(score)
    return out


def format_run_lines(ranking: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> Iterable[str]:
    """TREC lines for rankings given in their final order (scores made strictly decreasing)."""
    for qid, docs in ranking.items():
        scores = strictly_decreasing([score for _, score in docs])
        for rank, ((docid, _), score) in enumerate(zip(docs, scores), start=1):
            yield f"{qid} Q0 {docid} {rank} {score!r} {tag}\n"


def check_tag(tag: str) -> None:
    if not tag or any(c.isspace() for c in tag):
        raise InputError(f"--tag must be one word without spaces, found {tag!r}")


def write_run(path: str | os.PathLike, ranking: Mapping[str, Sequence[tuple[str, float]]], tag: str,
              stdout: IO[str] | None = None) -> None:
    """Write rankings (qid -> [(docid, score)] in final order) atomically; `-` is stdout."""
    check_tag(tag)
    with atomic_writer(path, stdout) as out:
        out.writelines(format_run_lines(ranking, tag))

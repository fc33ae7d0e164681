"""TREC run and qrels files: strict, streaming readers and a tie-safe, atomic run writer."""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import re
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby, islice
from typing import IO, TypeVar

from ..errors import InputError, quote
from .predictions import looks_like_json, read_predictions
from .text import atomic_writer, display_name, iter_chunks, utf8_error

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


# Numbers as trec_eval 10.0 writes them and C's strtod reads them whole. Python's float() also
# takes '2_0' (as 20.0), 'nan', 'infinity' and non-ASCII digits; trec_eval's atof reads '2_0' as
# 2.0. Neither is a silent answer here: anything else is an error naming the line.
_DECIMAL = re.compile(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(rb"[+-]?[0-9]+")


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: readers make millions of objects, none in cycles, and
    the collector would otherwise walk them again and again (it doubled the time to read a run)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _text(field: bytes) -> str:
    return field.decode("utf-8", errors="replace")


def _check_utf8(name: str, first: int, chunk: bytes) -> None:
    """Raise the InputError of the first line of `chunk` that is not valid UTF-8."""
    if chunk.isascii():
        return
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        for i, raw in enumerate(chunk.split(b"\n")):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(utf8_error(name, first + i, raw, exc)) from None


def _is_comment(fields: list[bytes]) -> bool:
    return fields[0].startswith(b"#")  # trec_eval 10.0 skips lines starting with '#'


def _score(name: str, lineno: int, field: bytes) -> float:
    if not _DECIMAL.fullmatch(field):
        kind = field.lstrip(b"+-").lower()
        if kind in (b"nan", b"inf", b"infinity"):
            raise InputError(f"{name}:{lineno}: score (column 5) must be finite, found {quote(_text(field))}")
        raise InputError(f"{name}:{lineno}: score (column 5) must be a number written in decimal "
                         f"(like 12.5 or -3.1e-2), found {quote(_text(field))}")
    value = float(field)
    if not math.isfinite(value):
        raise InputError(f"{name}:{lineno}: score (column 5) must be finite, found {quote(_text(field))}")
    return value


def _run_rows_slow(name: str, first: int, chunk: bytes,
                   with_rank: bool = True) -> Iterator[tuple[int, str, str, int, float]]:
    """(line, qid, docid, rank, score) per line of a chunk, with the error of the first bad line.

    Without with_rank the rank column is not read (0), as trec_eval ignores it.
    """
    _check_utf8(name, first, chunk)
    for i, raw in enumerate(chunk.split(b"\n")[:-1]):
        lineno = first + i
        # bytes.split() splits at C's isspace, as trec_eval does (str.split also splits at NBSP ...).
        fields = raw.split()
        if not fields or _is_comment(fields):
            continue
        if len(fields) < 6:
            raise InputError(
                f"{name}:{lineno}: expected 6 whitespace-separated columns {RUN_COLUMNS}, "
                f"found {len(fields)}: {quote(_text(raw))}"
            )
        # Like trec_eval, words after the tag are ignored (its own test data has them).
        qid, _, docid, rank, score = fields[:5]
        if with_rank and not _INTEGER.fullmatch(rank):
            raise InputError(f"{name}:{lineno}: rank (column 4) must be an integer, found {quote(_text(rank))}")
        yield lineno, qid.decode(), docid.decode(), int(rank) if with_rank else 0, _score(name, lineno, score)


_SPACES = bytes.maketrans(b"\t\r\v\f", b"    ")  # C's isspace, as trec_eval splits columns


def _words_by_line(text: bytes, columns: int) -> list[str] | None:
    """Words of `text` (single spaces, \\n line ends) followed by a "\\n" word per line, if every
    line has exactly `columns` non-empty words; else None."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "#" in decoded and (decoded.startswith("#") or "\n#" in decoded):  # comment lines ('#': memchr)
        return None
    marked = decoded.replace("\n", " \n ")
    if "  " in marked or marked.startswith(" "):  # an empty word: runs of spaces, blank lines ...
        return None
    lines = decoded.count("\n")
    words = marked.split(" ")
    words.pop()  # the empty word after the last newline
    # Each line has `columns` words exactly when the newlines sit every columns + 1 words.
    if len(words) != lines * (columns + 1) or words[columns::columns + 1].count("\n") != lines:
        return None
    return words


def _bulk_tokens(chunk: bytes, columns: int) -> list[str] | None:
    """The words of a chunk whose non-blank lines all have exactly `columns` words, or None.

    Line after line of words, with a "\\n" word closing each line. Whitespace is C's (space, tab,
    CR, VT, FF), as in trec_eval. None also for bad UTF-8 and for comment lines ('#'): the caller
    then goes line by line, which accepts the same input.
    """
    text = chunk
    if b"\t" in text or b"\r" in text or b"\x0b" in text or b"\x0c" in text:  # memchr: cheaper than translate
        text = text.translate(_SPACES)
    words = _words_by_line(text, columns)
    if words is None:  # runs of spaces, CRLF line ends, blank lines: tidy up, and try again
        while b"  " in text:
            text = text.replace(b"    ", b" ").replace(b"  ", b" ")
        text = text.replace(b" \n", b"\n").replace(b"\n ", b"\n").lstrip(b" ")
        while b"\n\n" in text:
            text = text.replace(b"\n\n", b"\n")
        words = _words_by_line(text.lstrip(b"\n"), columns)
    return words


def _run_rows_fast(chunk: bytes, with_rank: bool) -> tuple[Iterable[str], Sequence[str], Sequence[str],
                                                          list[float]] | None:
    """Columns (qids, docids, ranks, scores) of a chunk of plain 6-column lines, parsed in bulk.

    None if anything is unusual (other column counts, comments, ranks other than ASCII digits,
    scores float() would read differently from strtod, bad UTF-8): the caller then parses line by
    line, which accepts the same inputs and words the error.
    """
    words = _bulk_tokens(chunk, 6)
    if words is None:
        return None
    ranks: Sequence[str] = ()
    if with_rank:
        ranks = words[3::7]
        ranks_text = "".join(ranks)
        if ranks and not (ranks_text.isdigit() and ranks_text.isascii()):
            return None
    if b"_" in chunk or not chunk.isascii():  # float() takes '2_0' and non-ASCII digits; strtod not
        scores_text = "".join(islice(words, 4, None, 7))
        if "_" in scores_text or not scores_text.isascii():
            return None
    try:
        values = list(map(float, islice(words, 4, None, 7)))
    except ValueError:
        return None
    if not math.isfinite(sum(values)):  # nan or inf somewhere (or a huge sum): line by line decides
        return None
    return islice(words, 0, None, 7), words[2::7], ranks, values


def _duplicate_error(path: str | os.PathLike, qid: str, docid: str, advice: str) -> InputError:
    """The error for a (qid, docid) given twice, with both line numbers (found by reading again)."""
    name = display_name(path)
    lines: list[int] = []
    if str(path) != "-":
        want = (qid.encode(), docid.encode())
        for first, chunk in iter_chunks(path):
            for i, raw in enumerate(chunk.split(b"\n")[:-1]):
                fields = raw.split()
                if len(fields) > 2 and (fields[0], fields[2]) == want:
                    lines.append(first + i)
            if len(lines) >= 2:
                break
    place = f"{name}:{lines[1]}" if len(lines) >= 2 else name
    earlier = f" (first at line {lines[0]})" if len(lines) >= 2 else ""
    return InputError(f"{place}: document {quote(docid)} is given twice for query {quote(qid)}{earlier}; "
                      f"{advice}")


RUN_DUPLICATE = ("trec_eval refuses a run with a duplicate document in a query; keep one line "
                 "per (qid, docid)")


def _read_run_table(path: str | os.PathLike, with_rank: bool) -> dict[str, dict[str, T]]:
    """qid -> docid -> score, or -> (score, rank) with_rank; queries in file order.

    A file whose first character is `{` is MTEB predictions JSON (see `predictions`).
    """
    name = display_name(path)
    run: dict[str, dict] = {}
    chunks = iter_chunks(path)
    with gc_paused():
        for first, chunk in chunks:
            if first == 1 and looks_like_json(chunk):
                return read_predictions(name, chunk + b"".join(rest for _, rest in chunks), with_rank)
            _add_run_chunk(run, path, name, first, chunk, with_rank)
    if not run:
        raise InputError(f"{name}: the run is empty (no lines of the form {RUN_COLUMNS})")
    return run


def _add_run_chunk(run: dict[str, dict], path: str | os.PathLike, name: str, first: int, chunk: bytes,
                   with_rank: bool) -> None:
    """Add one chunk's lines to `run`; a (qid, docid) seen before is an error."""
    columns = _run_rows_fast(chunk, with_rank)
    if columns is None:  # line by line: the same result, or the error of the first bad line
        rows = list(_run_rows_slow(name, first, chunk, with_rank))
        columns = ([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows])
    qids, docids, ranks, scores = columns
    values: Sequence = list(zip(scores, map(int, ranks))) if with_rank else scores
    _add_groups(run, path, qids, docids, values, RUN_DUPLICATE)


def _add_groups(table: dict[str, dict], path: str | os.PathLike, qids: Iterable[str], docids: Sequence[str],
                values: Sequence, advice: str) -> None:
    """table[qid][docid] = value for parallel columns, a query's consecutive lines at once.

    A (qid, docid) already in the table, or twice in the columns, is an error naming both lines.
    """
    start = 0
    pairs = zip(docids, values)
    for qid, group in groupby(qids):
        count = len(list(group))
        end = start + count
        docs = dict(islice(pairs, count))
        if len(docs) != count:
            raise _duplicate_error(path, qid, _first_repeat(docids[start:end]), advice)
        known = table.get(qid)
        if known is None:
            table[qid] = docs
        else:  # the query's lines are not contiguous, or span two chunks
            if not known.keys().isdisjoint(docs):
                again = next(docid for docid in docs if docid in known)
                raise _duplicate_error(path, qid, again, advice)
            known.update(docs)
        start = end


def _first_repeat(items: Iterable[str]) -> str:
    seen: set[str] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return ""


def iter_run_lines(path: str | os.PathLike) -> Iterator[tuple[str, str, int, float]]:
    """Yield (qid, docid, rank, score) for each line of a TREC run, validating as it goes."""
    name = display_name(path)
    for first, chunk in iter_chunks(path):
        for _, qid, docid, rank, score in _run_rows_slow(name, first, chunk):
            yield qid, docid, rank, score


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run; a (qid, docid) given twice is an error, as in trec_eval."""
    run = _read_run_table(path, with_rank=True)
    return {qid: sorted((RunEntry(docid, score, rank) for docid, (score, rank) in docs.items()),
                        key=lambda e: (-e.score, e.rank))
            for qid, docs in run.items()}


def read_run_scores(path: str | os.PathLike) -> dict[str, dict[str, float]]:
    """Read a TREC run as qid -> docid -> score, the shape evaluators want."""
    return _read_run_table(path, with_rank=False)


QRELS_DUPLICATE = "trec_eval refuses qrels with two lines for one (qid, docid); keep one"


def _qrels_grade(name: str, lineno: int, field: bytes) -> tuple[int, bool]:
    """(grade, was it written as a non-integer) the way trec_eval's atol reads it."""
    if _INTEGER.fullmatch(field):
        return int(field), False
    if _DECIMAL.fullmatch(field):  # atol: the leading integer ('1.7' -> 1, '2e1' -> 2, '.5' -> 0)
        digits = _INTEGER.match(field)
        return (int(digits.group()) if digits else 0), True
    raise InputError(f"{name}:{lineno}: grade (column 4) must be a number, found {quote(_text(field))}")


def _qrels_rows_slow(name: str, first: int, chunk: bytes) -> tuple[list[str], list[str], list[int], int]:
    """Columns (qids, docids, grades) of a chunk line by line, and how many grades were not integers."""
    _check_utf8(name, first, chunk)
    qids: list[str] = []
    docids: list[str] = []
    grades: list[int] = []
    non_integer = 0
    for i, raw in enumerate(chunk.split(b"\n")[:-1]):
        lineno = first + i
        fields = raw.split()
        if not fields or _is_comment(fields):
            continue
        if len(fields) != 4:
            raise InputError(
                f"{name}:{lineno}: expected 4 whitespace-separated columns 'qid iter docid grade', "
                f"found {len(fields)}: {quote(_text(raw))}"
            )
        qid, _, docid, grade = fields
        value, truncated = _qrels_grade(name, lineno, grade)
        non_integer += truncated
        qids.append(qid.decode())
        docids.append(docid.decode())
        grades.append(value)
    return qids, docids, grades, non_integer


def _qrels_rows_fast(chunk: bytes) -> tuple[Sequence[str], Sequence[str], list[int]] | None:
    """Columns (qids, docids, grades) of a chunk of plain 4-column lines with integer grades, or None."""
    words = _bulk_tokens(chunk, 4)
    if words is None:
        return None
    grades = words[3::5]
    text = "".join(grades)
    if grades and not (text.isascii() and text.replace("-", "").isdigit()):
        return None
    try:
        values = list(map(int, grades))
    except ValueError:
        return None
    return words[0::5], words[2::5], values


def read_qrels_file(path: str | os.PathLike) -> Qrels:
    """Read TREC qrels (`qid iter docid grade`).

    Non-integer grades are cut to their integer part as trec_eval reads them, with a warning;
    a (qid, docid) given twice is an error, as in trec_eval. Lines starting with '#' are skipped.
    """
    name = display_name(path)
    qrels: Qrels = {}
    non_integer = 0
    with gc_paused():
        for first, chunk in iter_chunks(path):
            columns = _qrels_rows_fast(chunk)
            if columns is None:
                *columns, truncated = _qrels_rows_slow(name, first, chunk)
                non_integer += truncated
            _add_groups(qrels, path, *columns, QRELS_DUPLICATE)
    if non_integer:
        log.warning("%s: %d non-integer relevance grades cut to their integer part (trec_eval reads them "
                    "the same way)", name, non_integer)
    if not qrels:
        raise InputError(f"{name}: the qrels file is empty")
    return qrels


def _as_float32(x: float) -> float:
    """x rounded to a C float (what pytrec_eval, trec_eval 9 and ir_measures read), as a double."""
    try:
        return struct.unpack("<f", struct.pack("<f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _float32_below(x: float) -> float:
    """The next C float below x, itself a C float (-inf below the lowest)."""
    if x == 0:
        bits = 0x80000001  # the negative float closest to zero
    else:
        bits = struct.unpack("<I", struct.pack("<f", x))[0]
        bits = bits - 1 if x > 0 else bits + 1
    return struct.unpack("<f", struct.pack("<I", bits))[0]


def strictly_decreasing(scores: Sequence[float]) -> list[float]:
    """Lower scores where needed so they strictly decrease as doubles and as C floats.

    trec_eval sorts by score and breaks ties by docid, which would silently reorder a ranking
    with tied scores; readers of C floats (pytrec_eval, ir_measures) also tie scores closer than
    a float step (6e-8 near 1.0). A score that is not below the previous one in both senses becomes
    the next C float below the previous score (the smallest step a float reader sees); the others
    are kept as they are.
    """
    out: list[float] = []
    previous32 = math.inf
    for score in scores:
        score32 = _as_float32(score)
        if out and not (score < out[-1] and score32 < previous32):
            lower = _float32_below(previous32) if math.isfinite(previous32) else -math.inf
            # beyond the float range only the double can decrease
            score = lower if math.isfinite(lower) and lower < out[-1] else math.nextafter(out[-1], -math.inf)
            score32 = _as_float32(score)
        out.append(score)
        previous32 = score32
    return out


def format_run_lines(ranking: Mapping[str, Sequence[tuple[str, float]]], tag: str) -> Iterable[str]:
    """TREC lines for rankings given in their final order (scores made strictly decreasing)."""
    for qid, docs in ranking.items():
        scores = strictly_decreasing([score for _, score in docs])
        for rank, ((docid, _), score) in enumerate(zip(docs, scores), start=1):
            yield f"{qid} Q0 {docid} {rank} {score!r} {tag}\n"


def check_tag(tag: str) -> None:
    if not tag or any(c.isspace() for c in tag):
        raise InputError(f"the run tag (column 6) must be one word without spaces, found {quote(tag)}")


def write_run(path: str | os.PathLike, ranking: Mapping[str, Sequence[tuple[str, float]]], tag: str,
              stdout: IO[str] | None = None) -> None:
    """Write rankings (qid -> [(docid, score)] in final order) atomically; `-` is stdout."""
    check_tag(tag)
    with atomic_writer(path, stdout) as out:
        out.writelines(format_run_lines(ranking, tag))

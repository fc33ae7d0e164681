"""Splitting a rerank by query for job arrays (`rank1 rerank --shard I/N`), and merging the shards
back into one run and one traces file (`rank1 merge`).

Shards are numbered 1..N ("--shard 1/4" ... "--shard 4/4"; with a 0-based array index write
`--shard $((SLURM_ARRAY_TASK_ID + 1))/4`). A query belongs to shard 1 + (the first 8 bytes of
sha1(qid in UTF-8), big-endian) mod N: the same on every machine and every Python run, and
independent of the other queries, so any shard's output can be checked on its own.

A sharded rerank reranks only its queries and records "shard": "I/N" in the settings of every
trace line. `merge_shards` reads that back to check that the shards given are exactly 1..N of
one split, each finished (no pending traces; its run written), none holding a query of another,
all made with the same settings, every traces line one `rank1 store import` accepts; it writes the queries' runs and traces together, the "shard"
entry dropped, so the result is what one unsharded rerank would have written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, OptionError
from ..io.text import atomic_writer, display_name, iter_lines
from ..io.traces import Trace, settings_difference
from ..io.trec import RUN_COLUMNS, Run, read_run
from ..reasoning.store import PENDING
from ..reasoning.store_admin import trace_line_generation

SHARD_KEY = "shard"
_SHARD_RE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def shard_of(qid: str, count: int) -> int:
    """The shard (1..count) that query `qid` belongs to."""
    if count < 1:
        raise ValueError(f"shard count must be at least 1, found {count}")
    digest = hashlib.sha1(qid.encode("utf-8")).digest()
    return 1 + int.from_bytes(digest[:8], "big") % count


def shard_queries(qids: Sequence[str], index: int, count: int) -> set[str]:
    """The queries of shard `index` of `count` (1-based: index in 1..count)."""
    check_shard(index, count)
    return {qid for qid in qids if shard_of(qid, count) == index}


def check_shard(index: int, count: int) -> None:
    if count < 1:
        raise OptionError(f"{{shard}} {index}/{count}: the number of shards must be at least 1")
    if not 1 <= index <= count:
        hint = f"; shards are numbered from 1: use 1/{count} ... {count}/{count}" if index == 0 else ""
        raise OptionError(f"{{shard}} {index}/{count}: the shard must be between 1 and {count}{hint}")


def parse_shard(spec: str) -> tuple[int, int]:
    """'I/N' -> (I, N), 1 <= I <= N."""
    match = _SHARD_RE.fullmatch(spec or "")
    if not match:
        raise OptionError(f"{{shard}} {spec!r}: expected I/N, e.g. 2/8 for the second of eight shards (numbered from 1)")
    index, count = int(match.group(1)), int(match.group(2))
    check_shard(index, count)
    return index, count


def format_shard(index: int, count: int) -> str:
    return f"{index}/{count}"


# --- merge ---------------------------------------------------------------------------------

@dataclass(slots=True)
class _Shard:
    run_path: str
    traces_path: str
    index: int | None = None                     # None: an empty shard (no queries, no traces)
    count: int | None = None
    settings: dict[str, Any] | None = None
    run_lines: dict[str, list[str]] = field(default_factory=dict)   # qid -> lines, in file order
    tags: set[str] = field(default_factory=set)
    traces: list[Trace] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{format_shard(self.index, self.count)} ({self.run_path})" if self.index else self.run_path


@dataclass(slots=True)
class MergeSummary:
    shards: int
    queries: int
    run_lines: int
    traces: int
    empty_shards: int = 0


def _read_run_lines(path: str) -> tuple[dict[str, list[str]], set[str]]:
    name = display_name(path)
    lines: dict[str, list[str]] = {}
    tags: set[str] = set()
    last_qid = None
    for lineno, line in iter_lines(path):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 6:
            raise InputError(f"{name}:{lineno}: expected 6 whitespace-separated columns {RUN_COLUMNS}, "
                             f"found {len(fields)}: {line[:120]!r}")
        qid = fields[0]
        if qid in lines and qid != last_qid:
            raise InputError(f"{name}:{lineno}: the lines of query {qid} are not together; "
                             "this is not a run written by rank1 rerank")
        lines.setdefault(qid, []).append(line.rstrip() + "\n")
        tags.add(fields[5])
        last_qid = qid
    return lines, tags


def _read_trace_file(path: str) -> list[Trace]:
    traces = []
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{lineno}: not a trace record (a torn line: the rerank of this shard "
                             "did not finish; run it again to finish it)") from None
        trace_line_generation(record, f"{path}:{lineno}", None)   # what the store would refuse, refused here
        traces.append(Trace.from_dict(record))
    return traces


def _load_shard(run_path: str, traces_path: str) -> _Shard:
    shard = _Shard(str(run_path), str(traces_path))
    if not Path(traces_path).is_file():
        raise InputError(f"{traces_path}: no such traces file (the traces of shard run {run_path}); "
                         "pass each shard's traces with --traces, in the order of the runs")
    shard.run_lines, shard.tags = _read_run_lines(run_path)
    shard.traces = _read_trace_file(traces_path)
    if not shard.traces:
        if shard.run_lines:
            raise InputError(f"{traces_path} is empty but {run_path} is not: not the traces of that run")
        return shard                                   # an empty shard: no query fell into it
    labels = {json.dumps(t.settings.get(SHARD_KEY)) for t in shard.traces}
    if len(labels) > 1:
        raise InputError(f"{traces_path} mixes traces of several shards ({', '.join(sorted(labels))})")
    label = shard.traces[0].settings.get(SHARD_KEY)
    if label is None:
        raise InputError(f"{traces_path} was not written by a sharded rerank (its settings have no "
                         f"{SHARD_KEY!r}); merge takes the outputs of rank1 rerank --shard I/N")
    try:
        shard.index, shard.count = parse_shard(str(label))
    except InputError:
        raise InputError(f"{traces_path}: bad shard label {label!r} in its settings") from None
    shard.settings = {k: v for k, v in shard.traces[0].settings.items() if k != SHARD_KEY}
    pending = sum(t.completion == PENDING for t in shard.traces)
    if pending:
        raise InputError(f"{traces_path}: shard {format_shard(shard.index, shard.count)} is unfinished "
                         f"({pending} pairs still pending); run its rerank again to finish it")
    if not shard.run_lines:
        raise InputError(f"{run_path} is empty but {traces_path} holds {len(shard.traces)} traces: the rerank "
                         f"of shard {format_shard(shard.index, shard.count)} did not finish (its run is written last)")
    run_docs = {(qid, line.split()[2]) for qid, lines in shard.run_lines.items() for line in lines}
    strangers = [t for t in shard.traces if t.key not in run_docs]
    if strangers:
        t = strangers[0]
        raise InputError(f"{traces_path}: {len(strangers)} traced pairs (e.g. {t.qid}/{t.docid}) are not in "
                         f"{run_path}; the run and the traces come from different reranks")
    return shard


def _check_assignment(shard: _Shard) -> None:
    for qid in list(shard.run_lines) + [t.qid for t in shard.traces]:
        if shard_of(qid, shard.count) != shard.index:
            raise InputError(f"{shard.run_path}: query {qid} belongs to shard "
                             f"{format_shard(shard_of(qid, shard.count), shard.count)}, not "
                             f"{format_shard(shard.index, shard.count)}: the files were not made by one "
                             "split of the same run")


def _check_complete(shard: _Shard, first_stage_run: Run, first_stage: str | os.PathLike) -> None:
    """Every query of the shard has every document of the first stage that its rerank kept: the top k
    (k: the deepest first-stage rank traced), and the rest too where the run kept the tail."""
    top_k = max(t.first_stage_rank for t in shard.traces)
    traced: dict[str, int] = {}
    for trace in shard.traces:
        traced[trace.qid] = traced.get(trace.qid, 0) + 1
    kept_tail = any(len(lines) > traced.get(qid, 0) for qid, lines in shard.run_lines.items())
    for qid, lines in shard.run_lines.items():
        entries = first_stage_run[qid] if kept_tail else first_stage_run[qid][:top_k]
        present = {line.split()[2] for line in lines}
        lacking = sum(entry.docid not in present for entry in entries)
        if lacking:
            raise InputError(f"{shard.run_path}: query {qid} of shard {format_shard(shard.index, shard.count)} "
                             f"lacks {lacking} of its {len(entries)} documents in {first_stage}: the run was cut "
                             "short or made from another first-stage run (or with --missing skip); rerank that "
                             "shard again")


def merge_shards(run_paths: Sequence[str | os.PathLike], traces_paths: Sequence[str | os.PathLike],
                 out_run: str | os.PathLike, out_traces: str | os.PathLike | None, *,
                 first_stage: str | os.PathLike | None = None) -> MergeSummary:
    """Check the shard outputs (see the module docstring) and write the merged run and traces.

    run_paths[i] and traces_paths[i] are one shard's output run and traces. Queries come out in
    shard order (1..N, each in its file's order), or in the order of `first_stage` (the run that
    was reranked) when given; then every query of that run must also be in its shard's output,
    with every document of that run its rerank kept. Nothing is written unless every check passes.
    `out_traces` None writes no traces (they are still checked).
    """
    if not run_paths:
        raise InputError("merge needs the output runs of the shards")
    if len(run_paths) != len(traces_paths):
        raise InputError(f"merge got {len(run_paths)} runs but {len(traces_paths)} traces files; "
                         "give one traces file per run, in the same order")
    seen_paths: set[str] = set()
    for path in [*run_paths, *traces_paths]:
        key = os.path.realpath(path)
        if key in seen_paths:
            raise InputError(f"{path} is given twice")
        seen_paths.add(key)
    shards = [_load_shard(str(r), str(t)) for r, t in zip(run_paths, traces_paths)]
    labelled = [s for s in shards if s.index is not None]
    empty = [s for s in shards if s.index is None]
    if not labelled:
        raise InputError("every shard given is empty: nothing to merge")

    counts = {s.count for s in labelled}
    if len(counts) > 1:
        detail = ", ".join(s.label for s in labelled)
        raise InputError(f"the shards come from different splits: {detail}")
    count = counts.pop()
    by_index: dict[int, _Shard] = {}
    for shard in labelled:
        if shard.index in by_index:
            raise InputError(f"shard {format_shard(shard.index, count)} is given twice: "
                             f"{by_index[shard.index].run_path} and {shard.run_path}")
        by_index[shard.index] = shard
    reference = labelled[0]
    for shard in labelled[1:]:
        if shard.settings != reference.settings:
            diff = "; ".join(settings_difference(reference.settings, shard.settings))
            raise InputError(f"shard {shard.label} was made with other settings than shard {reference.label}: {diff}")
    tags = set().union(*(s.tags for s in shards))
    if len(tags) > 1:
        raise InputError(f"the shard runs have different tags ({', '.join(sorted(tags))}); rerank every shard "
                         "with the same --tag")

    owner: dict[str, _Shard] = {}
    for shard in shards:
        for qid in shard.run_lines:
            if qid in owner:
                raise InputError(f"query {qid} is in two shards: {owner[qid].label} and {shard.label}")
            owner[qid] = shard
    for shard in labelled:
        _check_assignment(shard)

    missing = sorted(set(range(1, count + 1)) - by_index.keys())
    expected_queries: list[str] | None = None
    if first_stage is not None:
        first_stage_run = read_run(first_stage)
        expected_queries = list(first_stage_run)
        absent = [qid for qid in expected_queries if qid not in owner]
        if absent:
            where = sorted({shard_of(q, count) for q in absent})
            unresolved = [i for i in where if i in by_index]
            if unresolved:
                raise InputError(f"{len(absent)} queries of {first_stage} are in no shard's output (e.g. {absent[0]} "
                                 f"of shard {format_shard(shard_of(absent[0], count), count)}); "
                                 "were the shards made from another run?")
            raise InputError(f"shard{'s' if len(where) > 1 else ''} "
                             f"{', '.join(format_shard(i, count) for i in where)} "
                             f"{'are' if len(where) > 1 else 'is'} missing: "
                             f"{len(absent)} queries of {first_stage} belong to {'them' if len(where) > 1 else 'it'}")
        strangers = [qid for qid in owner if qid not in set(expected_queries)]
        if strangers:
            raise InputError(f"query {strangers[0]} of {owner[strangers[0]].label} is not in {first_stage}")
    if len(missing) > len(empty):
        shown = ", ".join(format_shard(i, count) for i in missing)
        raise InputError(f"shard{'s' if len(missing) > 1 else ''} {shown} "
                         f"{'are' if len(missing) > 1 else 'is'} missing; merge needs the output of every shard")
    if len(shards) > count:
        raise InputError(f"merge got {len(shards)} shards but the split has {count}")
    if first_stage is not None:
        for shard in labelled:
            _check_complete(shard, first_stage_run, first_stage)

    if expected_queries is not None:
        order = [qid for qid in expected_queries if qid in owner]
    else:
        order = [qid for i in sorted(by_index) for qid in by_index[i].run_lines]
    traces_by_query: dict[str, list[Trace]] = {}
    for shard in labelled:
        for trace in shard.traces:
            traces_by_query.setdefault(trace.qid, []).append(trace)

    lines = 0
    with atomic_writer(out_run) as out:
        for qid in order:
            out.writelines(owner[qid].run_lines[qid])
            lines += len(owner[qid].run_lines[qid])
    written = 0
    if out_traces is not None:
        with atomic_writer(out_traces) as out:
            for qid in order:
                for trace in traces_by_query.get(qid, []):
                    trace.settings = {k: v for k, v in trace.settings.items() if k != SHARD_KEY}
                    out.write(trace.to_json() + "\n")
                    written += 1
    else:
        written = sum(len(s.traces) for s in labelled)
    return MergeSummary(shards=len(shards), queries=len(order), run_lines=lines, traces=written,
                        empty_shards=len(empty))


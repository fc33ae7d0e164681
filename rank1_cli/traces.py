"""Reasoning traces: one JSON line per scored pair, written as a crash-safe journal.

During a rerank the traces file is an append-only journal: finished pairs (and pairs whose
reasoning did not finish, marked "pending" until the repair pass) are appended in chunks, each
flushed and fsynced. A later invocation with the same settings resumes from it. At the end
the journal is rewritten atomically as the final traces: one line per pair, in run order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .textio import atomic_writer

PENDING = "pending"


@dataclass(slots=True)
class Trace:
    qid: str
    docid: str
    first_stage_rank: int
    score: float | None
    verdict: str | None            # "true" / "false" / None
    reasoning: str                 # the text the model wrote inside <think>...</think>
    logprob_true: float | None
    logprob_false: float | None
    completion: str                # "stop" | "forced" | "fallback" | "pending"
    output_tokens: int
    truncated: bool
    model: str
    prompt_sha256: str
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.qid, self.docid

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "Trace":
        return cls(**{name: record[name] for name in cls.__dataclass_fields__ if name in record})


def settings_difference(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{key}: {old.get(key)!r} in the file, {new.get(key)!r} now"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


class TraceJournal:
    """The traces file while a rerank runs; see the module docstring."""

    def __init__(self, path: str | os.PathLike | None, settings: dict[str, Any], *, overwrite: bool = False) -> None:
        """`path` None keeps the traces in memory only (nothing to resume from)."""
        self.path = Path(path) if path is not None else None
        self.settings = settings
        self.records: dict[tuple[str, str], Trace] = {}
        self.torn_lines = 0
        self._handle = None
        if self.path is None:
            return
        if self.path.exists() and not overwrite:
            self._load()
        else:
            self.path.write_text("", encoding="utf-8")
        self._handle = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        good_end = 0
        position = 0
        for lineno, raw in enumerate(data.splitlines(keepends=True), start=1):
            position += len(raw)
            if not raw.endswith(b"\n"):
                break  # torn last line from a crash mid-write: dropped and rewritten
            try:
                record = json.loads(raw)
                trace = Trace.from_dict(record)
            except (json.JSONDecodeError, TypeError, UnicodeDecodeError):
                if position == len(data):
                    break
                raise InputError(f"{self.path}:{lineno}: not a trace record; "
                                 "pass --overwrite to start over or choose another --traces file") from None
            if not self.records and trace.settings != self.settings:
                diff = "; ".join(settings_difference(trace.settings, self.settings))
                raise InputError(
                    f"{self.path} was written with other settings ({diff}). Pass --overwrite to start "
                    "over, or --traces with another file to keep it."
                )
            self.records[trace.key] = trace
            good_end = position
        if good_end < len(data):
            self.torn_lines = 1
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                handle.flush()
                os.fsync(handle.fileno())

    def finished(self) -> dict[tuple[str, str], Trace]:
        return {key: t for key, t in self.records.items() if t.completion != PENDING}

    def pending(self) -> dict[tuple[str, str], Trace]:
        return {key: t for key, t in self.records.items() if t.completion == PENDING}

    def append(self, traces: Iterable[Trace]) -> int:
        """Append and make durable (flush + fsync) before returning."""
        lines = []
        for trace in traces:
            self.records[trace.key] = trace
            lines.append(trace.to_json() + "\n")
        if lines and self._handle is not None:
            self._handle.write("".join(lines))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        return len(lines)

    def finalize(self, order: Iterable[tuple[str, str]]) -> None:
        """Rewrite as the final traces: one line per pair in `order`, pending records dropped."""
        self.close()
        if self.path is None:
            return
        with atomic_writer(self.path) as out:
            for key in order:
                trace = self.records.get(key)
                if trace is not None and trace.completion != PENDING:
                    out.write(trace.to_json() + "\n")

    def close(self) -> None:
        if self._handle is not None and not self._handle.closed:
            self._handle.close()


def read_traces(path: str | os.PathLike) -> list[Trace]:
    traces = []
    with open(path, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    traces.append(Trace.from_dict(json.loads(line)))
                except (json.JSONDecodeError, TypeError):
                    raise InputError(f"{path}:{lineno}: not a trace record") from None
    return traces

"""What the CLI shows a person: logging, the progress bar, the closing summary on stderr; tables."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.segment import Segments
from rich.table import Table


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


def setup_logging(console: Console, quiet: bool = False, verbose: bool = False) -> None:
    level = logging.ERROR if quiet else logging.INFO if verbose else logging.WARNING
    handler = RichHandler(console=console, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("rank1_cli")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def print_table(console: Console, table: Table, abbreviations: Mapping[str, str] | None = None) -> None:
    """Print `table` with every cell whole, however narrow the output.

    Rich, short of room, crops cells (wins/ties/losses 15/1/0 as `15/1/`). Here, while the table
    does not fit: headers wrap at spaces; columns whose overflow is "fold" (run names) fold down to
    their min_width, every character kept; headers take their `abbreviations` (header -> short
    form), with a legend below; and a table that still does not fit is printed wider than the output.
    """
    columns = table.columns
    wide = console.options.update_width(1_000_000)

    def measure(renderable) -> Measurement:
        return Measurement.get(console, wide, renderable)

    values = [max((measure(cell).maximum for cell in column.cells), default=0) for column in columns]
    folds = [column.overflow == "fold" for column in columns]
    for column in columns:
        column.width = 0
    overhead = measure(table).maximum

    def headers() -> tuple[list[int], list[int]]:
        found = [measure(column.header) for column in columns]
        return [max(v, h.maximum) for v, h in zip(values, found)], [h.minimum for h in found]

    def fitted(natural: list[int], shortest_header: list[int], fold: bool) -> list[int]:
        widths = [n if f else max(v, h) for n, f, v, h in zip(natural, folds, values, shortest_header)]
        if fold and sum(widths) + overhead > console.width:
            room = (console.width - overhead - sum(w for w, f in zip(widths, folds) if not f)) // max(1, sum(folds))
            widths = [max(column.min_width or 1, h, min(n, room)) if f else w
                      for column, w, n, h, f in zip(columns, widths, natural, shortest_header, folds)]
        return widths

    natural, shortest_header = headers()
    widths = natural
    legend = []
    for fold in (False, True):
        if sum(widths) + overhead > console.width:
            widths = fitted(natural, shortest_header, fold)
    if sum(widths) + overhead > console.width and abbreviations:
        for column in columns:
            if column.header in abbreviations:
                legend.append(f"{abbreviations[column.header]} = {column.header}")
                column.header = abbreviations[column.header]
        natural, shortest_header = headers()
        widths = fitted(natural, shortest_header, True)
    for column, width in zip(columns, widths):
        column.width, column.no_wrap = width, False      # wide enough for its values: only headers wrap
    total = sum(widths) + overhead
    if total <= console.width:
        console.print(table)
    else:
        console.print(Segments(console.render(table, console.options.update_width(total))), soft_wrap=True, end="")
    if legend:
        console.print("; ".join(legend), markup=False, highlight=False)


class RichProgress:
    """A progress bar on stderr; silent when stderr is not a terminal or when asked to be."""

    def __init__(self, console: Console, enabled: bool = True) -> None:
        self.enabled = enabled and console.is_terminal
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("pairs"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        ) if self.enabled else None
        self._task = None

    def start(self, total: int, completed: int, description: str) -> None:
        if self._progress:
            self._progress.start()
            self._task = self._progress.add_task(description, total=total, completed=completed)

    def advance(self, n: int) -> None:
        if self._progress and self._task is not None and n:
            self._progress.advance(self._task, n)

    def stop(self) -> None:
        if self._progress:
            self._progress.stop()


def print_rerank_summary(console: Console, stats, traces_path: str | None, store_path=None) -> None:
    lines = [
        f"reranked {stats.pairs} pairs of {stats.queries} queries in {stats.elapsed:.1f}s "
        f"({stats.pairs_per_second:.2f} pairs/s" + (f"; engine start {stats.load_seconds:.1f}s more)"
                                                   if stats.load_seconds else ")"),
        f"generated {stats.output_tokens} tokens for {stats.generated} distinct prompts "
        f"({stats.tokens_per_second:.1f} tokens/s, mean reasoning {stats.mean_reasoning_tokens:.1f} tokens)"
        if stats.max_reasoning_tokens else
        "no reasoning (budget 0): every verdict forced right after the prompt, nothing generated",
        f"completions: {stats.stop} finished, {stats.forced} forced, {stats.fallback} fallback (0.5); "
        f"{stats.truncated} passages truncated",
        *([f"cascade: reasoned on {stats.reasoned} of {stats.pairs} pairs (each query's best by its budget-0 score); "
           f"the other {stats.pairs - stats.reasoned} keep their budget-0 judgement, ranked below"]
          if stats.reasoned is not None else []),
        *(["early exit: " + ", ".join(f"{n} pairs at {b}" for b, n in stats.exits.items())
           + " reasoning tokens (each judged as a rerank at that budget judges it)"] if stats.exits else []),
        f"store: {stats.from_store} pairs from {store_path}" if store_path
        else "store: none (nothing reused or kept for a rerun)",
        f"traces: {traces_path}" if traces_path else "traces: not saved (pass --traces FILE to keep them)",
    ]
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)


@dataclass(slots=True)
class EngineLog:
    """Where the engine's own output went; it is deleted at the end unless `keep` is set."""

    path: Path
    keep: bool = False


@contextlib.contextmanager
def engine_output_captured(console: Console, capture: bool = True) -> Iterator[EngineLog | None]:
    """Send everything the engine libraries print (vLLM, torch, their C code and worker
    processes: anything written to file descriptors 1 and 2) to a log file, while `console`
    keeps writing to the real stderr. Yields the log (None without `capture`); set its `keep`
    to leave the file for a message that names it. Wrap it in `textio.stdout_reserved` to keep
    stdout for data.
    """
    if not capture:
        yield None
        return
    sys.stdout.flush()
    sys.stderr.flush()
    fd, name = tempfile.mkstemp(prefix="rank1-engine-", suffix=".log")
    log_file = EngineLog(Path(name))
    saved = {1: os.dup(1), 2: os.dup(2)}
    real_stderr = open(os.dup(saved[2]), "w", encoding="utf-8", errors="replace")
    previous = console.file
    console.file = real_stderr
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        yield log_file
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for target, copy in saved.items():
            os.dup2(copy, target)
            os.close(copy)
        console.file = previous
        real_stderr.close()
        if not log_file.keep:
            with contextlib.suppress(OSError):
                os.unlink(name)

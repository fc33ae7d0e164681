"""What the CLI shows a person on stderr: logging, the progress bar, the closing summary."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


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


def print_rerank_summary(console: Console, stats, traces_path: str | None) -> None:
    lines = [
        f"reranked {stats.pairs} pairs of {stats.queries} queries in {stats.elapsed:.1f}s "
        f"({stats.pairs_per_second:.2f} pairs/s)",
        f"generated {stats.output_tokens} tokens for {stats.generated} distinct prompts "
        f"({stats.tokens_per_second:.1f} tokens/s, mean reasoning {stats.mean_reasoning_tokens:.1f} tokens)",
        f"completions: {stats.stop} finished, {stats.forced} forced, {stats.fallback} fallback (0.5); "
        f"{stats.truncated} passages truncated; {stats.resumed} resumed from traces",
        f"traces: {traces_path}" if traces_path else "traces: not saved (pass --traces FILE to keep them and resume)",
    ]
    for line in lines:
        console.print(line, markup=False, soft_wrap=True)

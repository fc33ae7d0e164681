"""Knowing that Ctrl-C was pressed, even when an engine reports the interrupt as its own failure."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InterruptWatch:
    interrupted: bool = False


@contextmanager
def watch_interrupts() -> Iterator[InterruptWatch]:
    """Record SIGINT (then raise KeyboardInterrupt as Python does) while the block runs.

    A terminal sends Ctrl-C to the whole process group, so vLLM's engine processes stop at the same
    moment, and the main process may first see "engine dead" rather than KeyboardInterrupt. The
    caller checks `interrupted` to report what the user did, not what followed from it.
    """
    watch = InterruptWatch()
    if threading.current_thread() is not threading.main_thread():
        yield watch
        return

    def on_interrupt(signum, frame):
        watch.interrupted = True
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield watch
    finally:
        signal.signal(signal.SIGINT, previous)

"""Ctrl-C is remembered even when what the program sees first is an engine failing because of it."""

import os
import signal
import time

import pytest

from rank1_cli.signals import watch_interrupts


def test_ctrl_c_raises_as_usual_and_is_remembered():
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with watch_interrupts() as watch:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)   # the handler runs here
    assert watch.interrupted
    assert signal.getsignal(signal.SIGINT) is before


def test_an_engine_failing_on_its_own_is_not_taken_for_ctrl_c():
    # rank1 reports an EngineFailure as "interrupted" only when the watch saw SIGINT; an engine
    # that dies by itself must stay an error (exit 1 with its log), not a silent exit 130.
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError):
        with watch_interrupts() as watch:
            assert signal.getsignal(signal.SIGINT) is not before    # the watch is listening
            raise RuntimeError("engine dead")
    assert not watch.interrupted
    assert signal.getsignal(signal.SIGINT) is before

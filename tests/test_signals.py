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


def test_no_ctrl_c_no_flag():
    with watch_interrupts() as watch:
        pass
    assert not watch.interrupted

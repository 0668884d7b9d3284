"""`slotlab qemu` notes Ctrl-C, SIGTERM and SIGHUP and stops QEMU at its next poll: a
KeyboardInterrupt raised wherever the signal landed could land inside Popen.poll() while it
holds the child's waitpid lock, and stopping QEMU would then wait on that lock for ever."""

from __future__ import annotations

import os
import signal

import pytest

from engine.importers.live import stop_signals


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_is_noted_not_raised_and_the_old_handler_comes_back(
    signum: signal.Signals,
) -> None:
    before = signal.getsignal(signum)
    with stop_signals() as stop:
        os.kill(os.getpid(), signum)  # the handler runs before kill() returns to Python
        assert stop.signum == signum
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.signum == signum  # the first one is the reason
    assert signal.getsignal(signum) == before

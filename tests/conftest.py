"""Hygiene every test keeps: the process's signal handlers are as it found them.

A handler left behind changes what later tests in the same worker see (trio installs its
Ctrl-C handling only over Python's default one), so a leak shows up as a failure somewhere
else, in whichever test xdist happens to schedule next. Here it fails the test that leaked.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

WATCHED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture(autouse=True)
def _signal_handlers_restored() -> Iterator[None]:
    before = {sig: signal.getsignal(sig) for sig in WATCHED}
    yield
    leaked = [sig.name for sig in WATCHED if signal.getsignal(sig) != before[sig]]
    for sig, handler in before.items():
        signal.signal(sig, handler)
    assert not leaked, f"the test left handlers installed for {', '.join(leaked)}"

"""SIGTERM and SIGHUP end the TUI the way `q` does, so the terminal is restored.

By default both signals kill the process at once: the terminal stays in the alternate
screen, with mouse tracking on and the cursor hidden, because only Textual's driver knows how
to undo that (``LinuxDriver.stop_application_mode``). Here they become a normal exit through
the app's own message loop (asyncio's ``add_signal_handler`` runs the handler on the loop,
between messages), so the driver restores the terminal and trio finishes its run first.
The status is the shell's convention for death by signal: 128 + the signal number.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

# SIGINT too: in raw mode Ctrl-C is a key, but `kill -INT` still arrives as a signal.
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ExitSignals:
    """Installed while the app runs, removed (previous handlers back) when it stops."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in SIGNALS:
            previous = signal.getsignal(sig)
            try:
                loop.add_signal_handler(sig, self._on_signal, int(sig))
            except (NotImplementedError, RuntimeError, ValueError):
                continue  # not the main thread, or no signals here: leave it be
            self._previous[int(sig)] = previous
        self._loop = loop

    def remove(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        for sig, previous in self._previous.items():
            with contextlib.suppress(RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
                # remove_signal_handler leaves SIG_DFL: put back what was there before.
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

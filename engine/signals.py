"""SIGINT and SIGTERM end a run the way its duration would: at the next hand-over.

A signal does not cancel the session's tasks (that tears them down mid-update, and trio may
deliver KeyboardInterrupt to any of them); it asks the session to stop, the session finishes
its log with an `interrupted` verdict carrying the counters so far, and the command line then
says `slotlab: interrupted` and exits 128 + the signal's number (130, 143), as a shell does.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import TypeVar

INTERRUPTED = "interrupted"
SIGNALS = (signal.SIGINT, signal.SIGTERM)

T = TypeVar("T")


class Interrupted(Exception):
    """The run was stopped by a signal; its log (if any) is complete up to the stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def explanation(signum: int, virtual_ns: int) -> str:
    name = signal.Signals(signum).name
    return f"{name} stopped the run at {virtual_ns} ns, before its verdict: the counters are the run so far"


async def run_interruptible(run: Callable[[], Awaitable[T]], interrupt: Callable[[int], None]) -> T:
    """Await ``run()``; the first SIGINT or SIGTERM calls ``interrupt(signum)``, which must
    make ``run()`` return soon. Raises Interrupted afterwards. Signals can only be received
    on the main thread: elsewhere (a compare worker) this is just ``run()``."""
    if threading.current_thread() is not threading.main_thread():
        return await run()
    import trio  # here, not at the top: the command line imports this before it knows it will run

    received: list[int] = []
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            with trio.open_signal_receiver(*SIGNALS) as signals:
                async for signum in signals:
                    if not received:
                        received.append(signum)
                        interrupt(signum)

        nursery.start_soon(watch)
        result = await run()
        nursery.cancel_scope.cancel()
    if received:
        raise Interrupted(received[0])
    return result


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Outside a run (loading, printing), SIGTERM ends the command like Ctrl-C does. The
    previous handler comes back afterwards: main() also runs inside tests and other programs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

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


class Interrupted(BaseException):
    """The run was stopped by a signal; its log (if any) is complete up to the stop.

    A BaseException, as KeyboardInterrupt is: the `except Exception` that turns a failed run
    into a report (compare's, a worker pool's, Dask's) must let a stop through."""

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
    on the main thread, and a worker process leaves stopping to its parent
    (leave_stopping_to_parent): in either, this is just ``run()``."""
    if threading.current_thread() is not threading.main_thread() or _parent_decides:
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


_parent_decides = False


def leave_stopping_to_parent() -> None:
    """For a worker process (engine/procpool.py): a terminal's Ctrl-C reaches the whole
    process group, so SIGINT is ignored here, and runs install no handlers; the parent stops
    the work, and the worker with it. Set explicitly: a process that merely started with
    SIGINT ignored (`nohup`, a shell script's `&`) still stops a run cleanly on SIGTERM."""
    global _parent_decides
    _parent_decides = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


_noted: list[int] = []
"""Signals a deferred() block has noted and nothing has acted on yet (signals are per process)."""


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGINT and SIGTERM only noted while the body runs: it calls raise_if_noted() where
    stopping is safe, and leaving the block raises Interrupted too. For code that shares the
    main thread with a library's own machinery (a Dask client and LocalCluster, their GC
    callbacks), where a KeyboardInterrupt raised at any bytecode was swallowed, or left a
    half-started cluster failing its own assertions."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def note(signum: int, frame: FrameType | None) -> None:
        _noted.append(signum)

    previous = {s: signal.signal(s, note) for s in SIGNALS}
    try:
        yield
    except Exception:
        if not _noted:
            raise
        # It failed because of the signal (a worker that took it died): that is the news.
        raise Interrupted(_noted[0]) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        first = _noted[:1]
        _noted.clear()
    if first:
        raise Interrupted(first[0])


def raise_if_noted() -> None:
    """Inside a deferred() block, where stopping is safe: Interrupted once a signal came."""
    if _noted:
        signum = _noted[0]
        _noted.clear()
        raise Interrupted(signum)


@contextlib.contextmanager
def workers_ignore_ctrl_c() -> Iterator[None]:
    """SIGINT ignored while the body starts worker processes, which keep ignoring it (an
    ignored signal stays ignored across exec): a terminal's Ctrl-C reaches the whole process
    group, and LocalCluster workers that took it died mid-start, a traceback each, taking
    the cluster down. The parent decides instead, as engine/procpool.py's workers let it. A
    Ctrl-C during the body itself is lost: the cluster's start, a few seconds."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)

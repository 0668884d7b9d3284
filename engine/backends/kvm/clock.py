"""Time on the real machine: the bus that stamps events with it, and the Clock.

An event happened at an instant in ns of time.monotonic_ns() since the run started, taken in
the thread that saw it happen:

- a memslot ioctl's IoctlEnter and its result (MemslotChange, IoctlExit) are stamped in the
  thread that makes the syscall, just before and just after it (StampedCall);
- a vCPU exit is stamped in the vCPU's thread the instant KVM_RUN returned, and one the thread
  served itself waits in the inbox (inbox.py) until the event loop emits it, or anything
  stamped later;
- everything else (the VMM's transactions, the kick) when the event loop emits it.

``seq`` stays the order in which the VMM's event loop learned of each event, and that instant is
monotonic per thread but not along ``seq``: an exit that happened before a transaction began
may reach the event loop after it. So, as on the model (events.OrderedBus), ``t`` is the time
at which the event entered the log and never decreases; an event stamped earlier than the
log's latest carries its own stamp in ``actor_t`` (``Event.own_t`` reads either). Figures
measured between threads (update and pause latency, time to first crash, the checker's
"before KVM_RUN returned") use ``own_t``. One thing the bus does reorder: a held call's IoctlEnter
and result are emitted before any later-stamped event, so an exit that happened while an
ioctl was inside the kernel follows its IoctlEnter in the log, and one after it returned
follows its IoctlExit, even when the worker thread's return reached trio late.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from engine.backends.kvm.inbox import ExitInbox
from engine.events import Event, OrderedBus


class StampedCall:
    """One syscall, stamped in the thread that makes it. ``announce(at)`` emits its entry,
    ``finish(at, error)`` its result; each runs once, in the event loop's thread."""

    __slots__ = ("announce", "announced", "enter_ns", "error", "exit_ns", "finish", "finished")

    def __init__(
        self,
        announce: Callable[[int], None],
        finish: Callable[[int, OSError | None], None],
    ) -> None:
        self.announce = announce
        self.finish = finish
        self.enter_ns: int | None = None
        self.exit_ns: int | None = None
        self.error: OSError | None = None
        self.announced = False
        self.finished = False

    def run(self, fn: Callable[..., Any], args: Sequence[Any]) -> None:
        """Make the call in this thread. The exit stamp is taken before anything else is
        stored, and stored last, so a reader that sees it sees the error too."""
        self.enter_ns = time.monotonic_ns()
        try:
            fn(*args)
        except OSError as err:
            at = time.monotonic_ns()
            self.error = err
            self.exit_ns = at
        else:
            self.exit_ns = time.monotonic_ns()


class WallClockBus(OrderedBus):
    """Stamps events with wall-clock ns since start(); see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.monotonic_ns()
        self._held: list[StampedCall] = []
        self._restate: Callable[[Event], None] | None = None
        self.inbox = ExitInbox()
        """Events the vCPU threads stamped while serving exits themselves (inbox.py)."""

    def start(self) -> None:
        self.t0 = time.monotonic_ns()
        self.now = 0

    def elapsed(self) -> int:
        return time.monotonic_ns() - self.t0

    def tick(self) -> int:
        """Bring ``now`` up to the wall clock (code that reads bus.now between events)."""
        now = time.monotonic_ns() - self.t0
        if now > self.now:
            self.now = now
        return self.now

    def restate_with(self, fn: Callable[[Event], None]) -> None:
        """``fn`` sees every event before it is stamped: the backend replaces figures the
        event loop measured with the ones its threads stamped (update and pause latency)."""
        self._restate = fn

    def emit(self, event: Event) -> None:
        self.emit_at(event, time.monotonic_ns())

    def emit_at(self, event: Event, at_ns: int) -> None:
        """Emit ``event`` as having happened at ``at_ns`` (time.monotonic_ns())."""
        if self.inbox:
            self.inbox.deliver(at_ns)
        if self._held:
            self._catch_up(at_ns)
        if self._restate is not None:
            self._restate(event)
        t = at_ns - self.t0
        later = max(self.now, t)
        self.now = t
        super().emit(event)
        self.now = later

    # --- calls in flight in worker threads --------------------------------------------------

    def hold(self, call: StampedCall) -> None:
        """``call`` is about to run in a worker thread: emit its entry and result, in time
        order, as soon as any event stamped after them is emitted (or settle() is called)."""
        self._held.append(call)

    def settle(self, call: StampedCall) -> None:
        """The call has returned: emit whatever of it is not emitted yet."""
        assert call.exit_ns is not None, "settle() after the call returned"
        if not call.announced:
            call.announced = True
            call.announce(call.enter_ns if call.enter_ns is not None else call.exit_ns)
        if not call.finished:
            call.finished = True
            call.finish(call.exit_ns, call.error)
        if call in self._held:
            self._held.remove(call)

    def _catch_up(self, at_ns: int) -> None:
        for call in list(self._held):
            enter, done = call.enter_ns, call.exit_ns
            if enter is None or enter > at_ns:
                continue
            if not call.announced:
                call.announced = True
                call.announce(enter)
            if done is not None and done <= at_ns and not call.finished:
                call.finished = True
                self._held.remove(call)
                call.finish(done, call.error)


class WallClock:
    """The Clock of a task on the real machine: trio's sleeps, the bus's wall time."""

    def __init__(self, bus: WallClockBus) -> None:
        self.bus = bus
        self._changed: trio.Event | None = None

    def now(self) -> int:
        return self.bus.tick()

    async def sleep(self, ns: int) -> None:
        await trio.sleep(ns / 1e9)

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    async def preemptible(self) -> None:
        """The host's own scheduler decides where the real VMM thread is preempted."""

    async def wait_until(self, done: Callable[[], bool], limit_ns: int) -> None:
        if done():
            return
        with trio.move_on_after(limit_ns / 1e9):
            while not done():
                self._changed = trio.Event()
                await self._changed.wait()
        self._changed = None

    def notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

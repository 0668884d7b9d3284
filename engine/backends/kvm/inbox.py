"""Exits a vCPU thread served itself, on their way to the event loop's bus.

A vCPU thread answers the exits that need no decision of the VMM's (kvm_cpu_exec() in QEMU's
accel/kvm/kvm-all.c handles KVM_EXIT_MMIO in the vCPU thread and goes straight back into
KVM_RUN), so the events they imply are stamped in that thread but emitted by the event loop,
the only thread that may touch the bus. Each is posted here with its stamp; the bus delivers
what is waiting before it emits anything stamped later (so an exit that happened before an
ioctl entered the kernel precedes its IoctlEnter in the log), the backend delivers the rest
every DELIVER_EVERY_S, and a full batch wakes the event loop at once. Posting never waits for
the event loop, and the event loop is not woken per exit: a woken event loop holds the GIL
the vCPU threads need between two KVM_RUNs.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable
from typing import Any

import trio

Deliver = Callable[[Any], None]
DELIVER_EVERY_S = 0.001
WAKE_AT = 64
"""Posts that wake the event loop before its next tick."""


class ExitInbox:
    """Stamped deliveries from vCPU threads; ``post`` from any thread, the rest from the event
    loop's.

    A post is one deque append, atomic under the GIL, and takes no lock: it sits on the vCPU
    thread's path between KVM_RUN returning and re-entering. Only the event loop takes items
    out (popleft, atomic as well) into ``_ready``, which only it touches."""

    def __init__(self) -> None:
        self._posted: collections.deque[tuple[int, Deliver, Any]] = collections.deque()
        self._ready: list[tuple[int, Deliver, Any]] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._woken = False
        self._delivering = False

    def attach(self, token: trio.lowlevel.TrioToken | None) -> None:
        """The event loop to wake (None: nobody is woken; the bus still delivers)."""
        self._token = token
        self._woken = False

    def __len__(self) -> int:
        return len(self._posted) + len(self._ready)

    def post(self, at_ns: int, deliver: Deliver, item: Any) -> None:
        """``deliver(item)`` emits what happened at ``at_ns`` (time.monotonic_ns() in the
        poster's thread); one thread's posts are stamped in order."""
        posted = self._posted
        posted.append((at_ns, deliver, item))
        if self._woken or len(posted) < WAKE_AT or self._token is None:
            return
        # Two posters may both wake it: the second delivery finds nothing or little.
        self._woken = True
        # After the run, its close-down delivers what is left.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self.deliver_all)

    async def deliver_often(self) -> None:
        """The event loop's side: deliver what waits every DELIVER_EVERY_S, until cancelled."""
        while True:
            await trio.sleep(DELIVER_EVERY_S)
            self.deliver(None)

    def deliver_all(self) -> None:
        self._woken = False
        self.deliver(None)

    def deliver(self, upto_ns: int | None) -> None:
        """Deliver, in stamp order, everything stamped at or before ``upto_ns`` (None: all).
        A delivery's own emits do not recurse into this."""
        if self._delivering or not (self._posted or self._ready):
            return
        self._delivering = True
        try:
            posted, pop = self._posted, self._posted.popleft
            while True:
                ready = self._ready
                while posted:
                    ready.append(pop())
                # Two threads post in their own stamp order; merge them (stable sort).
                ready.sort(key=_stamp)
                n = len(ready)
                if upto_ns is not None:
                    n = next((i for i, it in enumerate(ready) if it[0] > upto_ns), n)
                if not n:
                    return
                now, self._ready = ready[:n], ready[n:]
                for _, deliver, item in now:
                    deliver(item)
        finally:
            self._delivering = False


def _stamp(item: tuple[int, Deliver, Any]) -> int:
    return item[0]

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

import contextlib
import threading
from collections.abc import Callable

import trio

Deliver = Callable[[], None]
DELIVER_EVERY_S = 0.001
WAKE_AT = 64
"""Posts that wake the event loop before its next tick."""


class ExitInbox:
    """Stamped deliveries from vCPU threads; ``post`` from any thread, the rest from the event
    loop's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[int, Deliver]] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._woken = False
        self._delivering = False
        self.posted = 0

    def attach(self, token: trio.lowlevel.TrioToken | None) -> None:
        """The event loop to wake (None: nobody is woken; the bus still delivers)."""
        with self._lock:
            self._token = token
            self._woken = False

    def __len__(self) -> int:
        return len(self._items)

    def post(self, at_ns: int, deliver: Deliver) -> None:
        """``deliver`` emits what happened at ``at_ns`` (time.monotonic_ns() in the poster's
        thread); one thread's posts are stamped in order."""
        with self._lock:
            self._items.append((at_ns, deliver))
            self.posted += 1
            token = None if self._woken or len(self._items) < WAKE_AT else self._token
            if token is not None:
                self._woken = True
        if token is not None:
            # After the run, its close-down delivers what is left.
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(self.deliver_all)

    async def deliver_often(self) -> None:
        """The event loop's side: deliver what waits every DELIVER_EVERY_S, until cancelled."""
        while True:
            await trio.sleep(DELIVER_EVERY_S)
            self.deliver(None)

    def deliver_all(self) -> None:
        with self._lock:
            self._woken = False
        self.deliver(None)

    def deliver(self, upto_ns: int | None) -> None:
        """Deliver, in stamp order, everything stamped at or before ``upto_ns`` (None: all).
        A delivery's own emits do not recurse into this."""
        if self._delivering or not self._items:
            return
        self._delivering = True
        try:
            while True:
                with self._lock:
                    # Two threads post in their own stamp order; merge them (stable sort).
                    self._items.sort(key=lambda item: item[0])
                    n = len(self._items)
                    if upto_ns is not None:
                        n = next((i for i, it in enumerate(self._items) if it[0] > upto_ns), n)
                    ready, self._items = self._items[:n], self._items[n:]
                if not ready:
                    return
                for _, deliver in ready:
                    deliver()
        finally:
            self._delivering = False

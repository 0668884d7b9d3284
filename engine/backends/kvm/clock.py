"""Wall time on the real machine: the bus that stamps events with it, and the Clock."""

from __future__ import annotations

import time
from collections.abc import Callable

import trio

from engine.events import Event, EventBus


class WallClockBus(EventBus):
    """Stamps events with wall-clock ns since start(), never going backwards."""

    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.monotonic_ns()

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

    def emit(self, event: Event) -> None:
        now = time.monotonic_ns() - self.t0
        if now > self.now:
            self.now = now
        super().emit(event)


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

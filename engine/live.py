"""A run as a front end drives it: run, send commands, read snapshots, adjust the pacing.

It wraps a session core of any backend; what differs between backends is asked of the
backend (``pacing`` is None on the wall clock), never by checking which one it is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.snapshot import Snapshot, Tracker

if TYPE_CHECKING:
    from engine.checker import Verdict
    from engine.core.ports import Backend
    from engine.core.session import SessionCore
    from engine.events import Event, Subscriber
    from engine.sim.runtime import Pacing
    from engine.summary import Summary


class LiveSession:
    def __init__(self, session: SessionCore[Backend], tracker: Tracker) -> None:
        self.session = session
        """The session core, for engine-side scripts and tests; a front end uses the rest."""
        self.tracker = tracker

    @property
    def backend(self) -> str:
        return self.session.backend.name

    async def run(self) -> Verdict:
        return await self.session.run()

    def send(self, name: str, **args: str) -> None:
        """inject, pause, resume, speed, step: FaultError for a bad injection, ValueError for
        a command this backend cannot take (pacing on the wall clock)."""
        self.session.send(name, **args)

    def interrupt(self, signum: int) -> None:
        """SIGINT/SIGTERM: stop at the next hand-over with an `interrupted` verdict."""
        self.session.interrupt(signum)

    @property
    def interrupted_by(self) -> int:
        return self.session.interrupted_by

    def snapshot(self, events: bool = True) -> Snapshot:
        return self.tracker.snapshot(self.session, events=events)

    def subscribe(self, observer: Subscriber) -> None:
        """Every event from now on (one that arrives before the run starts sees all)."""
        self.session.bus.subscribe(observer)

    def last_event(self) -> Event | None:
        """The latest event emitted, if any (cheaper than a snapshot for a per-step check)."""
        recent = self.session.recent
        return recent[-1] if recent else None

    @property
    def pacing(self) -> Pacing | None:
        """The pacing of a virtual clock, to change directly (a replay viewer); None on the
        wall clock."""
        return self.session.backend.pacing

    def rebase(self) -> None:
        """Re-anchor the pacing to now: after changing it directly, or at the run's start
        (trio's clock starts anywhere)."""
        self.session.backend.rebase()

    @property
    def events(self) -> int:
        """Events emitted so far."""
        return self.session.bus.seq

    @property
    def log_path(self) -> str | None:
        writer = self.session.writer
        return str(writer.path) if writer is not None else None

    @property
    def result(self) -> Verdict | None:
        return self.session.result

    def summary(self) -> Summary:
        return self.session.summary()

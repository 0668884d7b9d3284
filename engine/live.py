"""A run as a front end drives it: run, send commands, read snapshots, adjust the pacing,
stop at breakpoints, step one event or one scheduler step, and travel back in time.

It wraps a session core of any backend; what differs between backends is asked of the
backend (``pacing`` is None on the wall clock), never by checking which one it is. Stepping,
breakpoints and seeking need a virtual clock (engine.stepping); going back needs a way to
build the same run again (``reopen``, which engine.api gives model sessions): runs are
deterministic, so the state at an earlier event is the same run re-executed from its config
and recorded commands up to that event (``rewound``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.breakpoints import Breakpoints, Hit
from engine.sim.pacing import Pacing
from engine.snapshot import Snapshot, Tracker
from engine.stepping import Stepper

if TYPE_CHECKING:
    from engine.checker import Verdict
    from engine.core.ports import Backend
    from engine.core.session import SessionCore
    from engine.events import Command, Event, Subscriber
    from engine.summary import Summary

Reopen = Callable[[Pacing, "list[Command]"], "LiveSession"]
"""Builds the same run again, paused, with these recorded commands scheduled as they were."""


class LiveSession:
    def __init__(
        self, session: SessionCore[Backend], tracker: Tracker, reopen: Reopen | None = None
    ) -> None:
        self.session = session
        """The session core, for engine-side scripts and tests; a front end uses the rest."""
        self.tracker = tracker
        self._reopen = reopen
        self.reexecuted_to = -1
        """For a session made by ``rewound``: the position it was re-executed to."""
        pacing = session.backend.pacing
        self.stepper: Stepper | None = None
        if pacing is not None:
            self.stepper = Stepper(pacing, session.checker, self._take, list(session.recent))
            # After the checker (SessionCore subscribed it when it opened the VM, and a model
            # session opens eagerly): a verdict breakpoint sees the event's own verdict.
            session.bus.subscribe(self.stepper.observe)

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
        """The run now, or, while it is stopped at an event, the run at that event."""
        held = self.stepper.held() if self.stepper is not None else None
        # Held at the last event of a run that has ended since: the end is the picture.
        if held is not None and not (self.session.result is not None and held.seq >= self.events):
            return held
        return self.tracker.snapshot(self.session, events=events)

    def _take(self) -> Snapshot:
        return self.tracker.snapshot(self.session)

    # --- stepping, breakpoints and time travel (a virtual clock only) ------------------------

    def _stepper(self) -> Stepper:
        if self.stepper is None:
            raise ValueError("a real VM runs in real time: it cannot be stepped or stopped")
        return self.stepper

    @property
    def breakpoints(self) -> Breakpoints:
        return self._stepper().breakpoints

    @breakpoints.setter
    def breakpoints(self, value: Breakpoints) -> None:
        """The front end's list, shared by every session it starts."""
        if self.stepper is not None:
            self.stepper.breakpoints = value

    @property
    def hit(self) -> Hit | None:
        """The breakpoint the run is stopped at, if it stopped at one."""
        return self.stepper.hit if self.stepper is not None else None

    @property
    def position(self) -> int:
        """Events shown: the held event and those before it, or every event so far."""
        emitted = self.events
        return self.stepper.position(emitted) if self.stepper is not None else emitted

    def step_event(self) -> None:
        """Pause and advance exactly one event. Call ``rebase()`` after it (wakes the run)."""
        self._stepper().step_event(self.events)

    def step_call(self) -> None:
        """Pause and advance one scheduler step: one actor's turn, to its next sleep or block."""
        self._stepper().step_call()

    def seek(self, position: int) -> int | None:
        """Show ``position`` events. Forward, the run goes on to it here (None); backward, a
        run cannot go back: the position to re-execute to (``rewound``)."""
        stepper = self._stepper()
        if position < self.position:
            return max(position, 0)
        stepper.run_to(position, self.events)
        return None

    def seek_time(self, t_ns: int) -> int | None:
        """Show the first event at or after virtual time ``t_ns``: forward here (None), or
        the position to re-execute to."""
        stepper = self._stepper()
        index = stepper.index_at(t_ns)
        if index is None:
            stepper.run_to_time(t_ns)
            return None
        return self.seek(index + 1)

    @property
    def can_rewind(self) -> bool:
        return self._reopen is not None

    def rewound(self, position: int) -> LiveSession:
        """The same run built again and re-executed, paused, to ``position`` events (from its
        config and the commands recorded so far, so it is the same run: runs are
        deterministic). Call it once this run has stopped: the new one writes the same log
        again. ValueError where the run cannot be built again (a real VM)."""
        stepper = self._stepper()
        if self._reopen is None:
            raise ValueError("this session cannot be re-executed (only a modelled run can)")
        pacing = stepper.pacing
        live = self._reopen(Pacing(speed=pacing.speed, paused=True), list(stepper.commands))
        again = live._stepper()
        again.breakpoints = stepper.breakpoints
        again.run_to(position, live.events)
        live.reexecuted_to = position
        return live

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

"""Stopping a run at an exact event: one-event steps, scheduler steps, breakpoints, seeks.

The sequencer pauses only between its calls (an actor's sleep or block, engine.sim.runtime),
and one actor may emit several events between two calls: a DELETE's ioctl entry, its
MemslotChange and the swap that follows. So "stop at event N" is kept in two halves. When
event N is emitted, this observer (subscribed after the checker, so the verdict includes N)
pauses the pacing and takes the snapshot of that instant; the actor then runs on to its next
call and parks there, and every event it emits on the way is captured as well. Until the
user resumes, the run shows the snapshot of event N, and stepping forward through events the
actor already emitted just shows the next capture. Only past the last capture does the
engine run again.

None of this is a command: the pacing never changes what a run decides (only commands do,
see Sequencer._keeps_baton), so stepping and breakpoints leave the log exactly as the
same run played without them.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.breakpoints import Breakpoints, Hit
from engine.checker import Checker
from engine.events import Command, Event
from engine.sim.pacing import Pacing
from engine.snapshot import Snapshot

RUN_ON = 1 << 62
"""A step target no run reaches: run until the stop condition is met."""

PAUSING_COMMANDS = frozenset({"pause", "speed"})
"""Commands that leave a held view where it is; any other (resume, step, inject) moves the
run on from where the engine is, so the held view gives way to it."""


def verdict_name(checker: Checker) -> str:
    """The checker's verdict so far, without building its explanation (every event asks)."""
    if checker.violations:
        return "violation"
    if checker.crash:
        return "crashed"
    if checker.livelock:
        return "livelock"
    return "ok"


class Stepper:
    """One run's stop points. ``take`` builds the snapshot of the current instant."""

    def __init__(
        self,
        pacing: Pacing,
        checker: Checker,
        take: Callable[[], Snapshot],
        emitted: list[Event],
        breakpoints: Breakpoints | None = None,
    ) -> None:
        self.pacing = pacing
        self.checker = checker
        self.take = take
        self.breakpoints = breakpoints or Breakpoints()
        self.times: list[int] = [e.t for e in emitted]
        """Every event's virtual time, by event index (a seek by time looks here)."""
        self.commands: list[Command] = [e for e in emitted if isinstance(e, Command)]
        """Every command applied so far: with the config, all a re-execution needs."""
        self.hit: Hit | None = None
        """The breakpoint the run last stopped at (until it moves on)."""
        self._verdict = verdict_name(checker)
        self._stop_seq = -1
        self._stop_t = -1
        self._held = -1
        self._captures: dict[int, Snapshot] = {}

    # --- the observer ------------------------------------------------------------------------

    def observe(self, ev: Event) -> None:
        self.times.append(ev.t)
        if isinstance(ev, Command):
            self.commands.append(ev)
            if ev.name not in PAUSING_COMMANDS:
                self._release()
        before, after = self._verdict, verdict_name(self.checker)
        self._verdict = after
        if self._held >= 0:
            if ev.seq > self._held:
                self._captures[ev.seq] = self.take()
            return
        if 0 <= self._stop_seq <= ev.seq or 0 <= self._stop_t <= ev.t:
            self._hold(ev.seq)
        elif not self.pacing.paused and self.breakpoints.active:
            hit = self.breakpoints.check(ev, before, after)
            if hit is not None:
                self.hit = hit
                self._hold(ev.seq)

    def _hold(self, seq: int) -> None:
        p = self.pacing
        p.paused = True
        p.step_until_seq = -1
        p.step_until_call = -1
        self._stop_seq = self._stop_t = -1
        self._held = seq
        self._captures = {seq: self.take()}

    def _release(self) -> None:
        self._held = -1
        self._captures = {}

    # --- what the viewer sees ----------------------------------------------------------------

    def held(self) -> Snapshot | None:
        """The snapshot of the event the run stopped at, while it stays stopped there."""
        if self._held < 0:
            return None
        if not self.pacing.paused:
            self._release()  # resumed: the engine's own state is the picture again
            self.hit = None
            return None
        return self._captures.get(self._held)

    def position(self, emitted: int) -> int:
        """Events shown: up to the held one, or all ``emitted`` so far."""
        return self._held + 1 if self._held >= 0 else emitted

    # --- controls (the caller pokes the sequencer afterwards) --------------------------------

    def step_event(self, emitted: int) -> None:
        """Exactly one event on: a capture when the engine already emitted it, else run the
        engine to it."""
        self.hit = None
        want = self.position(emitted)
        if want in self._captures:
            self._held = want
            return
        self.run_to(want + 1, emitted)

    def run_to(self, position: int, emitted: int) -> None:
        """Forward to ``position`` events shown (position >= what is shown now)."""
        self.hit = None
        if position - 1 in self._captures:
            self._held = position - 1  # emitted already: the engine stays where it is
            return
        p = self.pacing
        self._release()
        p.paused = True
        p.step_until_call = -1
        if position <= emitted:
            return
        self._stop_seq = position - 1
        p.step_until_seq = position

    def run_to_time(self, t_ns: int) -> None:
        """Forward to the first event at or after ``t_ns`` (later than every event so far)."""
        p = self.pacing
        self._release()
        self._stop_t = t_ns
        p.paused = True
        p.step_until_call = -1
        p.step_until_seq = RUN_ON

    def step_call(self) -> None:
        """One scheduler step: the engine runs to its next sequencer call (one actor's turn)."""
        self.hit = None
        self._release()
        p = self.pacing
        p.paused = True
        p.step_until_seq = -1
        p.step_until_call = p.at_call + 1

    def index_at(self, t_ns: int) -> int | None:
        """The index of the first event at or after ``t_ns``; None past the last one."""
        return next((i for i, t in enumerate(self.times) if t >= t_ns), None)

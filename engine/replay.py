"""Replaying a session log under a viewer's control (the TUI's replay screen).

A replay is the recorded run executed again from its header, with the recorded commands
scheduled at the sequencer calls they followed (engine.runner.replay_session), so it produces
the same events. The viewer's own play, pause, step and speed must not become commands (they
would change the run), so the replay sets the pacing directly; a recorded pause or speed
command still replays as its event, but the viewer's pacing is put back right after it.

Jumping forward runs flat out to the target event; jumping backward rebuilds the session and
fast-forwards, since a run cannot go back.
"""

from __future__ import annotations

import math

import msgspec

from engine.core.config import RunConfig
from engine.events import Command, Event, Injected
from engine.live import LiveSession
from engine.log import REPLAYABLE_SCHEMAS, SessionLog, read_log
from engine.runner import config_from_log, replay_session
from engine.sim.pacing import Pacing
from engine.snapshot import Tracker


class Matcher:
    """Compares each replayed event with the recorded line; stops at the recording's end
    when the recorded run was cut short."""

    def __init__(self, lines: list[bytes], finished: bool, pacing: Pacing) -> None:
        self.lines = lines
        self.finished = finished
        self.pacing = pacing
        self.count = 0
        self.first_mismatch = -1
        self._encoder = msgspec.json.Encoder()

    def observe(self, event: Event) -> None:
        i = self.count
        self.count += 1
        if self.first_mismatch < 0 and (
            i >= len(self.lines) or self._encoder.encode(event) != self.lines[i]
        ):
            self.first_mismatch = i
        if not self.finished and self.count == len(self.lines):
            # Past here the original run never went: hold the replay at its last event.
            self.pacing.paused = True
            self.pacing.step_until_seq = -1


class Replay:
    """A log opened for replay; ValueError (or LogError) for one that cannot be."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.log: SessionLog = read_log(path)
        if self.log.header.host.get("backend") == "kvm":
            raise ValueError(
                f"{path}: a real-KVM session ran on the wall clock and cannot be replayed; "
                "`slotlab check` re-judges its events"
            )
        self.config: RunConfig = config_from_log(self.log)
        self.total = len(self.log.event_lines)
        self.times = [e.t for e in self.log.events]
        verdict = self.log.verdict
        recorded = verdict.summary.virtual_ns if verdict is not None else 0
        self.total_ns = recorded or max(self.times, default=0)
        self.marks: dict[int, str] = {}
        for i, e in enumerate(self.log.events):
            if isinstance(e, Injected):
                self.marks[i] = "!"
            elif isinstance(e, Command):
                self.marks.setdefault(i, "c")
        self.speed = 1e-5
        self.paused = False
        self.live: LiveSession | None = None
        self.matcher: Matcher | None = None

    def build(self, until: int | None = None) -> LiveSession:
        """A fresh replay session; with ``until``, fast-forward to that many events and
        pause there."""
        paused = self.paused or until is not None
        pacing = Pacing(speed=self.speed, paused=paused)
        tracker = Tracker()
        matcher = Matcher(self.log.event_lines, self.log.verdict is not None, pacing)
        session = replay_session(
            self.log, pacing, observers=(tracker.observe, matcher.observe), keep_pacing=True
        )
        self.live, self.matcher = LiveSession(session, tracker), matcher
        if until is not None:
            self.live.seek(until)  # stops at that exact event (engine.stepping)
        return self.live

    # --- the viewer's controls (applied to the pacing; the host re-anchors it) ---------------

    @property
    def pacing(self) -> Pacing | None:
        return self.live.pacing if self.live is not None else None

    @property
    def position(self) -> int:
        """Events shown (a stop at an event shows it, though the engine ran a little on)."""
        return self.live.position if self.live is not None else 0

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        if self.pacing is not None:
            self.pacing.paused = paused
            self.pacing.step_until_seq = -1

    def step(self) -> None:
        """Exactly one event on."""
        self.paused = True
        if self.live is not None:
            self.live.step_event()

    def step_call(self) -> None:
        """One scheduler step on."""
        self.paused = True
        if self.live is not None:
            self.live.step_call()

    def set_speed(self, speed: float) -> None:
        self.speed = speed
        if self.pacing is not None:
            self.pacing.speed = speed

    def seek_forward(self, target: int) -> None:
        """Run flat out until ``target`` events, then pause (target >= position)."""
        self.paused = True
        if self.live is not None:
            self.live.seek(target)

    def status(self) -> str:
        m = self.matcher
        if m is None:
            return ""
        schema = self.log.header.schema
        if schema not in REPLAYABLE_SCHEMAS and m.first_mismatch >= 0:
            # This engine stamps t as schema 3 does (docs/log-format.md).
            return f"a schema {schema} log: replayed with schema {REPLAYABLE_SCHEMAS[0]} times"
        if m.first_mismatch >= 0:
            return f"DIVERGED from the log at event {m.first_mismatch}"
        return f"identical to the log so far ({m.count}/{self.total})"

    @property
    def flat_out(self) -> bool:
        return math.isinf(self.speed)

"""How a run's virtual time relates to wall time: flat out, paced, paused, or stepping.

The sequencer reads it at every hand-over (engine.sim.runtime); the TUI and replay set it.
"""

from __future__ import annotations

import math


class Pacing:
    """How virtual time maps to wall time. speed is virtual seconds per wall second;
    math.inf runs flat out."""

    def __init__(self, speed: float = math.inf, paused: bool = False) -> None:
        self._speed = speed
        self._paused = paused
        # Read at every sleep: a plain attribute, kept current by the two setters below.
        self.live = speed != math.inf or paused
        # While paused, run flat out until the bus has emitted this many events ("step").
        self.step_until_seq = -1
        # While paused, run on until the sequencer has made this many sleep/block calls (one
        # scheduler step); at_call is the call a paused run waits at (engine.stepping).
        self.step_until_call = -1
        self.at_call = 0
        self.anchor_wall = 0.0
        self.anchor_virtual = 0
        # What the pause, resume and step commands still queued for the next hand-over will
        # make `paused`; None when none is queued (the model backend keeps it).
        self.queued_paused: bool | None = None

    @property
    def speed(self) -> float:
        return self._speed

    @speed.setter
    def speed(self, speed: float) -> None:
        self._speed = speed
        self.live = speed != math.inf or self._paused

    @property
    def paused(self) -> bool:
        return self._paused

    @paused.setter
    def paused(self, paused: bool) -> None:
        self._paused = paused
        self.live = self._speed != math.inf or paused

    @property
    def paused_ahead(self) -> bool:
        """Paused as the run will be once its queued commands apply. A pause toggle reads
        this: two quick presses resume and pause again, never resume twice."""
        return self._paused if self.queued_paused is None else self.queued_paused

"""Virtual time for one actor: the Clock the session core and the VMM use on the model."""

from __future__ import annotations

from collections.abc import Callable

from engine.sim.runtime import Actor, Sequencer

POLL_NS = 200
"""How often a virtual-time wait re-checks its condition. Polling costs nothing in virtual time
and takes the same decisions in a live run and its replay, which a wake-up from the event that
changed the condition (emitted by whichever actor held the baton) would not guarantee."""


class SequencerClock:
    def __init__(self, seq: Sequencer, actor: Actor) -> None:
        self.seq = seq
        self.actor = actor

    def now(self) -> int:
        return self.seq.bus.now

    async def sleep(self, ns: int) -> None:
        await self.seq.sleep(self.actor, ns)

    async def checkpoint(self) -> None:
        await self.seq.sleep(self.actor, 0)

    async def preemptible(self) -> None:
        held = self.seq.preemptible(self.actor)
        if held is not None:
            await held

    async def wait_until(self, done: Callable[[], bool], limit_ns: int) -> None:
        waited = 0
        while not done() and waited < limit_ns:
            await self.seq.sleep(self.actor, POLL_NS)
            waited += POLL_NS

    def notify(self) -> None:
        """Nothing to do: wait_until polls."""

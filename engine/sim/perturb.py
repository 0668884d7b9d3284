"""Schedule perturbation for `slotlab hunt`: PCT-style priorities and change points.

PCT (Burckhardt et al., "A Randomized Scheduler with Probabilistic Guarantees of Finding Bugs",
ASPLOS 2010) gives every thread a random priority and, at d-1 random steps, drops the running
thread below all others; a bug of depth d is then found with probability at least
1 / (n * k^(d-1)) per run, for n threads and k steps. Here the threads are the sequencer's actors
and the steps are its hand-overs to the actors that synchronize with others (the VMM, the SRCU
grace-period worker, the injector). vCPU hand-overs are not steps: they are quantum expiries,
at which a vCPU touches nothing another actor reads, and there are thousands of them, which
would dilute the change points PCT's bound is about; vCPU timing varies by jitter instead.

- priorities order actors ready at the same virtual time (the default order is first come,
  first served, which is one fixed schedule out of many equally valid ones);
- at a change point the actor about to get the baton is preempted instead: it goes back to wait
  for ``preempt_ns`` and drops below every other actor, the way the host's scheduler can take
  the CPU from a QEMU thread at any instruction (a VMM preempted between a DELETE and its
  CREATE is how the QEMU 7.2 window grew from microseconds to milliseconds);
- vCPU quanta vary by up to ``jitter_ns`` either side, since real vCPU threads do not advance in
  lockstep.

Everything derives from ``Perturb``, which the log header records, so a perturbed run replays
byte for byte. Without a Perturb the sequencer takes none of these paths.
"""

from __future__ import annotations

import math
import random
import re
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from engine.sim.runtime import Actor

# A rank occupies the high bits of the heap's tie-break number, above the push counter.
_RANK_SHIFT = 40
_RANKS = 1 << 20


class Perturb(msgspec.Struct, frozen=True, kw_only=True):
    seed: int
    """Seeds the actors' priorities and the quantum jitter."""
    jitter_ns: int = 0
    points: list[tuple[int, int]] = msgspec.field(default_factory=list)
    """(step, preemption ns): the change points, in step order (a step is a hand-over to an
    actor that is not a vCPU)."""

    @property
    def depth(self) -> int:
        """PCT's d: the bug depth these change points can reach."""
        return len(self.points) + 1

    def text(self) -> str:
        """The `--perturb` argument that rebuilds this."""
        at = "+".join(f"{h}:{ns}" for h, ns in self.points)
        return f"seed={self.seed},jitter={self.jitter_ns}" + (f",at={at}" if at else "")

    def without_point(self, index: int) -> Perturb:
        return Perturb(
            seed=self.seed,
            jitter_ns=self.jitter_ns,
            points=[p for i, p in enumerate(self.points) if i != index],
        )


def derive(seed: int, depth: int, handoffs: int, max_preempt_ns: int, jitter_ns: int) -> Perturb:
    """The perturbation run `seed` of a hunt uses: depth-1 change points drawn uniformly over
    the first `handoffs` steps (a plain run's count), each preempting for up to
    max_preempt_ns."""
    rng = random.Random(f"pct/{seed}")
    k = max(handoffs, depth)
    points = sorted(rng.sample(range(1, k + 1), depth - 1))
    return Perturb(
        seed=seed,
        jitter_ns=jitter_ns,
        points=[(h, rng.randrange(1, max_preempt_ns + 1)) for h in points],
    )


def pct_miss_bound(actors: int, handoffs: int, depth: int, runs: int) -> float:
    """Upper bound on the chance that `runs` PCT runs all miss a bug of this depth."""
    p = 1.0 / (actors * max(handoffs, 1) ** (depth - 1))
    return math.exp(runs * math.log1p(-p)) if p < 1 else 0.0


_TEXT = re.compile(r"^seed=(\d+),jitter=(\d+)(?:,at=(\d+:\d+(?:\+\d+:\d+)*))?$")


def parse_perturb(text: str) -> Perturb:
    """`seed=S,jitter=NS[,at=HANDOVER:NS+...]`, as Perturb.text() writes it."""
    m = _TEXT.match(text.strip())
    if not m:
        raise ValueError(
            f"bad --perturb {text!r}: expected seed=S,jitter=NS[,at=HANDOVER:NS+HANDOVER:NS]"
        )
    points = []
    if m.group(3):
        for part in m.group(3).split("+"):
            h, ns = part.split(":")
            points.append((int(h), int(ns)))
    if [h for h, _ in points] != sorted({h for h, _ in points}):
        raise ValueError(f"bad --perturb {text!r}: hand-over numbers must increase")
    return Perturb(seed=int(m.group(1)), jitter_ns=int(m.group(2)), points=points)


class Pct:
    """The sequencer's side of a Perturb: ranks, change points, jitter."""

    def __init__(self, p: Perturb) -> None:
        self.spec = p
        self._ranks: dict[str, int] = {}
        self._points = list(p.points)
        self._dropped = 0
        self._jitter = random.Random(f"jitter/{p.seed}")

    def tiebreak(self, actor: Actor) -> int:
        """Added to the push counter: actors at the same time go in rank order."""
        rank = self._ranks.get(actor.name)
        if rank is None:
            rank = random.Random(f"rank/{self.spec.seed}/{actor.name}").randrange(_RANKS)
            self._ranks[actor.name] = rank
        return rank << _RANK_SHIFT

    def preempt(self, handoff: int, actor: Actor) -> int:
        """ns to hold `actor` back instead of handing it the baton now; 0 for none."""
        if not self._points or self._points[0][0] != handoff:
            return 0
        _, ns = self._points.pop(0)
        # Below every initial rank, and below earlier change points' victims.
        self._ranks[actor.name] = _RANKS + self._dropped
        self._dropped += 1
        return ns

    def quantum(self, base: int) -> int:
        j = self.spec.jitter_ns
        return base if not j else max(1, base + self._jitter.randrange(-j, j + 1))

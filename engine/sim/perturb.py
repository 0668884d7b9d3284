"""Schedule perturbation for `slotlab hunt`: PCT-style priorities and change points.

PCT (Burckhardt et al., "A Randomized Scheduler with Probabilistic Guarantees of Finding Bugs",
ASPLOS 2010) gives every thread a random priority and, at d-1 random steps, drops the running
thread below all others; a dropped thread runs again only when every thread above it is blocked.
A bug of depth d is then found with probability at least 1 / (n * k^(d-1)) per run, for n
threads and k steps.

The steps are the VMM's returns to user space between two ioctls of one memory transaction
(Vmm.between_ioctls; QEMU's listener going from a region_del to the next region_add). A host
kernel without full preemption takes the CPU from a thread running kernel code only where it
passes through the scheduler, and for a VMM thread in an ioctl that is the way back to user
space (synchronize_srcu_expedited() inside the ioctl is a wait, which the grace-period worker
ends). A change point there leaves the memslots half updated, the one state a vCPU cannot see in
a plain run for long: a VMM preempted between a DELETE and its CREATE is how the QEMU 7.2 window
grew from microseconds to milliseconds. The other points a hold could freeze add nothing a plain
run lacks: held after a transaction's last ioctl or between transactions, the memslots are the
quiescent set a plain run has between its updates (the run is only cut short), and held inside
an ioctl they are the state its next return shows, or INVALID copies vCPUs retry on
(kvm_faultin_pfn()'s RET_PF_RETRY). Drawing the points over every hand-over to the VMM and the
SRCU worker (before 2 Dec 2026) put two thirds of them on those: 36% of the demo's perturbed
runs crashed (pam-shadow under legacy), against 73% now (docs/scale.md). A strategy that applies a transaction in one ioctl has no such
step: its hunt perturbs only the priorities and the vCPU jitter.

- priorities order actors ready at the same virtual time (the default order is first come,
  first served, which is one fixed schedule out of many equally valid ones);
- at a change point the VMM is dropped below every other actor: as in PCT it runs again only
  when every other actor is blocked (vCPUs under an inhibit, say) or the run ends; a point with a
  hold in ns (``slotlab hunt --max-preempt``) brings it back after that long instead;
- vCPU quanta vary by up to ``jitter_ns`` either side, since real vCPU threads do not advance in
  lockstep.

Everything derives from ``Perturb``, which the log header records, so a perturbed run replays
byte for byte; a header without ``steps`` is from before 2 Dec 2026, when the steps were the
hand-overs to actors other than vCPUs and every point held its actor for its ns, and replays
that way. Without a Perturb the sequencer takes none of these paths.
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

GAPS = "gaps"
"""Perturb.steps: the VMM's returns to user space between a transaction's ioctls."""


class Perturb(msgspec.Struct, frozen=True, kw_only=True):
    seed: int
    """Seeds the actors' priorities and the quantum jitter."""
    jitter_ns: int = 0
    points: list[tuple[int, int]] = msgspec.field(default_factory=list)
    """(step, hold ns): the change points, in step order. A hold of 0 is PCT's drop: until
    every other actor is blocked or the run ends."""
    steps: str | msgspec.UnsetType = msgspec.UNSET
    """GAPS; unset in logs from before 2 Dec 2026, whose steps were the hand-overs to actors
    other than vCPUs (absent, not null, so those headers stay byte for byte what they were)."""

    @property
    def depth(self) -> int:
        """PCT's d: the bug depth these change points can reach."""
        return len(self.points) + 1

    @property
    def at_gaps(self) -> bool:
        return self.steps == GAPS

    def text(self) -> str:
        """The `--perturb` argument that rebuilds this."""
        at = "+".join(f"{h}:{ns}" for h, ns in self.points)
        steps = f",steps={self.steps}" if self.at_gaps else ""
        return f"seed={self.seed},jitter={self.jitter_ns}{steps}" + (f",at={at}" if at else "")

    def without_point(self, index: int) -> Perturb:
        return msgspec.structs.replace(
            self, points=[p for i, p in enumerate(self.points) if i != index]
        )


def derive(seed: int, depth: int, steps: int, max_preempt_ns: int, jitter_ns: int) -> Perturb:
    """The perturbation run `seed` of a hunt uses: depth-1 change points drawn uniformly over
    the first `steps` steps (a plain run's count), each PCT's drop (max_preempt_ns 0) or a
    hold of up to max_preempt_ns."""
    rng = random.Random(f"pct/{seed}")
    k = max(steps, depth)
    points = sorted(rng.sample(range(1, k + 1), depth - 1))
    return Perturb(
        seed=seed,
        jitter_ns=jitter_ns,
        points=[(h, rng.randrange(1, max_preempt_ns + 1) if max_preempt_ns else 0) for h in points],
        steps=GAPS,
    )


def pct_miss_bound(actors: int, steps: int, depth: int, runs: int) -> float:
    """Upper bound on the chance that `runs` PCT runs all miss a bug of this depth. With no
    step to put a change point on, only a bug of depth 1 is bound to be found."""
    if steps < 1 and depth > 1:
        return 1.0
    p = 1.0 / (actors * max(steps, 1) ** (depth - 1))
    return math.exp(runs * math.log1p(-p)) if p < 1 else 0.0


_TEXT = re.compile(r"^seed=(\d+),jitter=(\d+)(,steps=gaps)?(?:,at=(\d+:\d+(?:\+\d+:\d+)*))?$")


def parse_perturb(text: str) -> Perturb:
    """`seed=S,jitter=NS[,steps=gaps][,at=STEP:NS+...]`, as Perturb.text() writes it."""
    m = _TEXT.match(text.strip())
    if not m:
        raise ValueError(
            f"bad --perturb {text!r}: expected seed=S,jitter=NS[,steps=gaps][,at=STEP:NS+STEP:NS]"
        )
    points = []
    if m.group(4):
        for part in m.group(4).split("+"):
            h, ns = part.split(":")
            points.append((int(h), int(ns)))
    if [h for h, _ in points] != sorted({h for h, _ in points}):
        raise ValueError(f"bad --perturb {text!r}: step numbers must increase")
    return Perturb(
        seed=int(m.group(1)),
        jitter_ns=int(m.group(2)),
        points=points,
        steps=GAPS if m.group(3) else msgspec.UNSET,
    )


class Pct:
    """The sequencer's side of a Perturb: ranks, change points, jitter."""

    def __init__(self, p: Perturb) -> None:
        self.spec = p
        # Which steps the change points count: the VMM's gaps, or (old logs) hand-overs.
        self.at_gaps = p.at_gaps
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

    def preempt(self, step: int, actor: Actor) -> int | None:
        """None: no change point at this step; else the hold in ns for `actor` (0: dropped
        until every other actor is blocked or the run ends)."""
        if not self._points or self._points[0][0] != step:
            return None
        _, ns = self._points.pop(0)
        # Below every initial rank, and below earlier change points' victims.
        self._ranks[actor.name] = _RANKS + self._dropped
        self._dropped += 1
        return ns

    def quantum(self, base: int) -> int:
        j = self.spec.jitter_ns
        return base if not j else max(1, base + self._jitter.randrange(-j, j + 1))

"""QEMU's FlatView: the guest physical address space as userspace sees it.

A layout is a list of memory regions (RAM, ROM, MMIO) with priorities, as QEMU's MemoryRegion
tree resolves to; ``render`` flattens it into non-overlapping ranges, and ``diff`` is
address_space_update_topology_pass(): ranges present in the old view but not identical in the
new one become region_del, new ones region_add, and identical ranges whose dirty-log mask
changed become log_start/log_stop (a FLAGS_ONLY change, no delete).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from bisect import bisect_right


@dataclasses.dataclass(frozen=True, slots=True)
class Region:
    """A MemoryRegion mapped into an address space."""

    name: str
    kind: str  # "ram", "rom" or "mmio"
    gpa: int
    size: int
    hva: int = 0
    priority: int = 0
    log_dirty: bool = False
    slot: int | None = None  # the slot id a recorded trace used; a preference, not a key

    @property
    def end(self) -> int:
        return self.gpa + self.size


@dataclasses.dataclass(frozen=True, slots=True)
class FlatRange:
    start: int
    size: int
    kind: str
    hva: int
    name: str
    log_dirty: bool = False
    slot: int | None = None

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def backed(self) -> bool:
        """RAM-backed ranges get a memslot; MMIO needs none."""
        return self.kind in ("ram", "rom")

    @property
    def readonly(self) -> bool:
        return self.kind == "rom"

    @property
    def key(self) -> tuple[int, int, str, int]:
        """What QEMU compares to call two ranges identical (the dirty-log mask aside)."""
        return (self.start, self.size, self.kind, self.hva)

    def overlaps(self, other: FlatRange) -> bool:
        return self.start < other.end and other.start < self.end

    def hva_of(self, gpa: int) -> int:
        return self.hva + (gpa - self.start)


class FlatView:
    def __init__(self, ranges: list[FlatRange]) -> None:
        self.ranges = sorted(ranges, key=lambda r: r.start)
        self._starts = [r.start for r in self.ranges]

    @classmethod
    def render(cls, regions: list[Region]) -> FlatView:
        """Resolve overlapping regions: the higher priority wins, then the later one."""
        bounds = sorted({b for r in regions for b in (r.gpa, r.end)})
        pieces: list[FlatRange] = []
        # A sweep over the bounds with a heap of the regions covering the current piece,
        # highest (priority, index) on top; regions that ended are dropped lazily. Linear
        # enough for a trace's thousands of regions (scanning every region per piece was
        # quadratic).
        starts = sorted(range(len(regions)), key=lambda i: regions[i].gpa)
        active: list[tuple[int, int]] = []  # (-priority, -index)
        nxt = 0
        for lo, hi in itertools.pairwise(bounds):
            while nxt < len(starts) and regions[starts[nxt]].gpa <= lo:
                i = starts[nxt]
                heapq.heappush(active, (-regions[i].priority, -i))
                nxt += 1
            while active and regions[-active[0][1]].end <= lo:
                heapq.heappop(active)
            if not active:
                continue
            top = regions[-active[0][1]]
            hva = top.hva + (lo - top.gpa) if top.kind != "mmio" else 0
            prev = pieces[-1] if pieces else None
            if (
                prev is not None
                and prev.name == top.name
                and prev.end == lo
                and (top.kind == "mmio" or prev.hva + prev.size == hva)
            ):
                pieces[-1] = dataclasses.replace(prev, size=prev.size + (hi - lo))
            else:
                slot = top.slot if lo == top.gpa else None
                pieces.append(FlatRange(lo, hi - lo, top.kind, hva, top.name, top.log_dirty, slot))
        return cls(pieces)

    def lookup(self, gpa: int) -> FlatRange | None:
        i = bisect_right(self._starts, gpa) - 1
        if i >= 0 and gpa < self.ranges[i].end:
            return self.ranges[i]
        return None

    def backed(self) -> list[FlatRange]:
        return [r for r in self.ranges if r.backed]


@dataclasses.dataclass(frozen=True, slots=True)
class TopologyDiff:
    dels: list[FlatRange]
    adds: list[FlatRange]
    log_changes: list[tuple[FlatRange, FlatRange]]

    @property
    def empty(self) -> bool:
        return not (self.dels or self.adds or self.log_changes)

    @property
    def overlapping(self) -> bool:
        """f39b7d2b96e3's test: does any added range overlap a removed one? (A sweep over
        both, sorted: pairwise it was quadratic in a trace's thousands of ranges.)"""
        spans = sorted(
            [(r.start, r.end, 0) for r in self.adds] + [(r.start, r.end, 1) for r in self.dels]
        )
        reach = [-1, -1]  # the furthest end seen so far among adds (0) and dels (1)
        for start, end, side in spans:
            if start < reach[1 - side]:
                return True
            reach[side] = max(reach[side], end)
        return False


def diff(old: FlatView, new: FlatView) -> TopologyDiff:
    """Only RAM-backed ranges matter to the KVM listener."""
    old_by_key = {r.key: r for r in old.backed()}
    new_by_key = {r.key: r for r in new.backed()}
    dels = [r for k, r in old_by_key.items() if k not in new_by_key]
    adds = [r for k, r in new_by_key.items() if k not in old_by_key]
    logs = [
        (r, new_by_key[k])
        for k, r in old_by_key.items()
        if k in new_by_key and new_by_key[k].log_dirty != r.log_dirty
    ]
    return TopologyDiff(dels, adds, logs)

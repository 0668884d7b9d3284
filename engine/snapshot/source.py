"""What a backend tells a snapshot, and the helpers its sources share.

A backend's SnapshotSource reads its live objects (the model's memslot sets and SRCU, or the
slots a real VM's VMM set and its vCPU threads); the Tracker (tracker.py) adds the history it
watched on the bus and what the session core knows, and builds the Snapshot (views.py).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING, Protocol

from engine.snapshot.views import (
    AddressSpaceView,
    RangeView,
    SetView,
    SlotView,
    SrcuView,
    VcpuView,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.snapshot.tracker import History
    from engine.snapshot.viewcache import ViewCache
    from engine.vmm.vmm import Vmm


@dataclasses.dataclass(frozen=True, slots=True)
class ClockView:
    t_ns: int
    speed: float
    paused: bool
    finished: bool
    stop_reason: str


class SnapshotSource(Protocol):
    """A backend's live state, read at one instant."""

    backend: str
    rate_window_ns: int
    """Exit rates are counted over this much of the run's time."""

    def clock(self, verdict: bool, error: bool) -> ClockView:
        """Whether the session has its verdict, or has failed."""
        ...

    def slots_key(self) -> int:
        """Changes whenever the slots change in a way no event on the bus announces."""
        ...

    def spaces(
        self, vmm: Vmm, span: Callable[[int], tuple[int, int]], views: ViewCache
    ) -> tuple[AddressSpaceView, ...]: ...

    def vcpus(self, history: History, now: int) -> tuple[VcpuView, ...]: ...

    def srcu(self, history: History, now: int) -> SrcuView: ...


def address_space(
    vmm: Vmm,
    as_id: int,
    active: SetView,
    inactive: SetView,
    span: Callable[[int], tuple[int, int]],
    views: ViewCache,
) -> AddressSpaceView:
    """An address space: the kernel's sets as the backend sees them, the VMM's FlatViews,
    and the holes between them."""
    txn = vmm.in_flight
    published = views.ranges(vmm.views[as_id])
    pending = views.ranges(txn.new) if txn is not None and txn.as_id == as_id else ()
    return AddressSpaceView(
        as_id=as_id,
        active=active,
        inactive=inactive,
        vmm=published,
        pending=pending,
        holes=views.holes(as_id, active.slots, published, pending),
        layout=vmm.layout_names[as_id],
        span=span(as_id),
    )


NO_SRCU = SrcuView(-1, (0, 0), (0, 0), 0, None, 0, (), ())
"""What a backend that cannot see the kernel's SRCU shows."""


def rates(
    ring: deque[tuple[int, str]] | None, now: int, window: int
) -> tuple[tuple[str, float], ...]:
    """Exits per millisecond over the last ``window`` ns (or the run so far), by reason."""
    if not ring:
        return ()
    window_start = max(0, now - window)
    window_ms = max(now - window_start, 1) / 1e6
    counts: dict[str, int] = {}
    for t, reason in reversed(ring):
        if t < window_start:
            break
        counts[reason] = counts.get(reason, 0) + 1
    return tuple((r, n / window_ms) for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def activity(
    state: str, last_fault: str, kicked: bool, exits: deque[tuple[int, str]] | None
) -> str:
    if state in ("dead", "crashed"):
        return "dead"
    if state in ("halted", "blocked", "stalled", "idle"):
        return state
    if last_fault.startswith("retry") and state in ("guest", "fault"):
        return "retrying"
    if state == "fault":
        return "fault"
    if state == "guest":
        return "kicked" if kicked else "guest"
    # In userspace: what sent it there.
    last = exits[-1][1] if exits else ""
    if last == "KVM_EXIT_MMIO":
        return "mmio"
    if last == "KVM_EXIT_INTR":
        return "kicked"
    return "userspace"


def holes(
    slots: tuple[SlotView, ...], *views: tuple[RangeView, ...]
) -> tuple[tuple[int, int], ...]:
    """Backed GPA ranges (in any of the views) that no slot of the set covers."""
    backed = sorted((r.start, r.end) for view in views for r in view if r.kind in ("ram", "rom"))
    if not backed:
        return ()
    merged: list[list[int]] = []
    for start, end in backed:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    covered = [(s.start, s.end) for s in slots]  # gfn order, non-overlapping
    holes: list[tuple[int, int]] = []
    i = 0
    for start, end in merged:
        pos = start
        while i < len(covered) and covered[i][1] <= pos:
            i += 1
        j = i
        while pos < end:
            if j < len(covered) and covered[j][0] < end:
                cs, ce = covered[j]
                if cs > pos:
                    holes.append((pos, cs))
                pos = max(pos, ce)
                j += 1
            else:
                holes.append((pos, end))
                pos = end
    return tuple(holes)

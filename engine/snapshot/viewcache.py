"""Views of the kernel's and the VMM's memory maps, reused from one snapshot to the next.

A memslot never changes once built: an update replaces it (kvm_replace_memslot(), and
engine/model/memslots.py likewise), and each VMM commit renders a new FlatView of frozen
ranges. So a snapshot taken after a transaction shares almost all of its slots and ranges with
the previous one. At 1,024 regions, building every SlotView, RangeView and hole afresh was over
half of a TUI frame (docs/performance.md); now only what is new is built. What did not change
at all comes back as the very same tuple, which lets a viewer skip redrawing it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.snapshot.source import holes
from engine.snapshot.views import RangeView, SetView, SlotView

if TYPE_CHECKING:
    from engine.model.memslots import Memslot, MemslotSet
    from engine.vmm.flatview import FlatView

Holes = tuple[tuple[int, int], ...]


class ViewCache:
    """One session's views, keyed by the objects they show (each kept alive by its entry,
    so an id is never reused while cached). Every cache keeps only what the latest
    snapshot used, so memory follows the current maps, not the run's history."""

    def __init__(self) -> None:
        self._slots: dict[int, tuple[Memslot, SlotView]] = {}
        self._next_slots: dict[int, tuple[Memslot, SlotView]] = {}
        self._ranges: dict[int, tuple[FlatView, tuple[RangeView, ...]]] = {}
        self._next_ranges: dict[int, tuple[FlatView, tuple[RangeView, ...]]] = {}
        self._holes: dict[int, tuple[tuple[object, ...], Holes]] = {}
        # A session's memslot sets live as long as its VM: two per address space.
        self._sets: dict[int, tuple[MemslotSet, tuple[SlotView, ...]]] = {}

    def snapshot_done(self) -> None:
        """Forget what the snapshot just built did not use."""
        self._slots, self._next_slots = self._next_slots, {}
        self._ranges, self._next_ranges = self._next_ranges, {}

    def set_view(self, slots: MemslotSet) -> SetView:
        views = tuple(self._slot(s) for s in slots)
        # The same tuple as last time when nothing changed, so a viewer can tell by identity.
        last = self._sets.get(id(slots))
        if last is not None and last[0] is slots and last[1] == views:
            views = last[1]
        self._sets[id(slots)] = (slots, views)
        return SetView(slots.node_idx, slots.generation, slots.version, views)

    def _slot(self, slot: Memslot) -> SlotView:
        key = id(slot)
        hit = self._slots.get(key) or self._next_slots.get(key)
        if hit is None or hit[0] is not slot:
            hit = (
                slot,
                SlotView(slot.id, slot.base_gfn, slot.npages, slot.flags, slot.userspace_addr),
            )
        self._next_slots[key] = hit
        return hit[1]

    def ranges(self, view: FlatView) -> tuple[RangeView, ...]:
        key = id(view)
        hit = self._ranges.get(key) or self._next_ranges.get(key)
        if hit is None or hit[0] is not view:
            hit = (
                view,
                tuple(RangeView(r.start, r.size, r.kind, r.name, r.log_dirty) for r in view.ranges),
            )
        self._next_ranges[key] = hit
        return hit[1]

    def holes(
        self,
        as_id: int,
        slots: tuple[SlotView, ...],
        published: tuple[RangeView, ...],
        pending: tuple[RangeView, ...],
    ) -> Holes:
        """source.holes(), again only when one of its inputs changed (tuples of reused views
        compare by identity first, so an unchanged input costs a pointer compare a view)."""
        inputs = (slots, published, pending)
        hit = self._holes.get(as_id)
        if hit is not None and hit[0] == inputs:
            return hit[1]
        found = holes(slots, published, pending)
        self._holes[as_id] = (inputs, found)
        return found

"""Snapshot views reused across snapshots (engine/snapshot/viewcache.py): never stale, and
no bigger than the maps the latest snapshot showed."""

from __future__ import annotations

from engine.model.memslots import Memslot, MemslotSet
from engine.snapshot.source import holes
from engine.snapshot.viewcache import ViewCache
from engine.snapshot.views import SlotView
from engine.vmm.flatview import FlatRange, FlatView


def _set(*slots: Memslot) -> MemslotSet:
    memslots = MemslotSet(0, 0)
    for slot in slots:
        memslots.replace(None, slot)
    return memslots


def _fresh(memslots: MemslotSet) -> tuple[SlotView, ...]:
    return tuple(SlotView(s.id, s.base_gfn, s.npages, s.flags, s.userspace_addr) for s in memslots)


def test_a_replaced_slot_shows_its_replacement_and_the_others_are_reused() -> None:
    a, b = Memslot(0, 0, 0, 16, 0x1000, 0), Memslot(0, 1, 32, 16, 0x9000, 0)
    memslots = _set(a, b)
    views = ViewCache()
    first = views.set_view(memslots)
    views.snapshot_done()
    b2 = Memslot(0, 1, 32, 8, 0x9000, 1)  # what an update does: a new memslot, never an edit
    memslots.replace(b, b2)
    second = views.set_view(memslots)
    views.snapshot_done()
    assert second.slots == _fresh(memslots)
    assert second.slots[0] is first.slots[0]
    assert second.slots[1] != first.slots[1]


def test_only_the_latest_snapshot_s_views_are_kept() -> None:
    views = ViewCache()
    for i in range(50):
        views.set_view(_set(Memslot(0, i, i * 16, 16, 0x1000 * i, 0)))
        views.snapshot_done()
    assert len(views._slots) == 1


def test_holes_follow_their_inputs() -> None:
    memslots = _set(Memslot(0, 0, 0, 16, 0x1000, 0))
    whole = FlatView([FlatRange(0, 0x20000, "ram", 0x1000, "pc.ram")])
    views = ViewCache()
    slots, published = views.set_view(memslots).slots, views.ranges(whole)
    assert views.holes(0, slots, published, ()) == holes(slots, published) == ((0x10000, 0x20000),)
    covered = _set(Memslot(0, 0, 0, 32, 0x1000, 0))
    slots = views.set_view(covered).slots
    assert views.holes(0, slots, published, ()) == ()

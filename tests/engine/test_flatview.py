"""The VMM's FlatView: rendering overlapping regions, and the diff QEMU's KVM listener turns
into memslot ioctls (region_del, region_add, and log_start/log_stop as a FLAGS_ONLY change)."""

from __future__ import annotations

import trio

from engine.events import Event, IoctlEnter, MemslotChange, TxnBegin
from engine.model import constants as c
from engine.runner import make_config
from engine.session import Session
from engine.vmm.flatview import FlatRange, FlatView, Region, diff

HVA = 0x7F00_0000_0000
RAM = Region("pc.ram", "ram", 0x0, 0x20000, HVA)


def spans(view: FlatView) -> list[tuple[int, int, str, str, int]]:
    return [(r.start, r.size, r.kind, r.name, r.hva) for r in view.ranges]


def test_render_one_region() -> None:
    assert spans(FlatView.render([RAM])) == [(0, 0x20000, "ram", "pc.ram", HVA)]


def test_a_higher_priority_region_splits_the_one_below() -> None:
    shadow = Region("shadow", "rom", 0x10000, 0x4000, HVA + 0x10000, priority=1)
    view = FlatView.render([RAM, shadow])
    assert spans(view) == [
        (0x0, 0x10000, "ram", "pc.ram", HVA),
        (0x10000, 0x4000, "rom", "shadow", HVA + 0x10000),
        (0x14000, 0xC000, "ram", "pc.ram", HVA + 0x14000),  # the hva follows the offset
    ]
    assert [r.readonly for r in view.ranges] == [False, True, False]


def test_equal_priority_the_later_region_wins() -> None:
    a = Region("a", "ram", 0x0, 0x2000, HVA)
    b = Region("b", "ram", 0x1000, 0x2000, HVA + 0x100000)
    assert spans(FlatView.render([a, b])) == [
        (0x0, 0x1000, "ram", "a", HVA),
        (0x1000, 0x2000, "ram", "b", HVA + 0x100000),
    ]
    assert spans(FlatView.render([b, a])) == [
        (0x0, 0x2000, "ram", "a", HVA),
        (0x2000, 0x1000, "ram", "b", HVA + 0x101000),
    ]


def test_mmio_is_rendered_but_not_backed() -> None:
    bar = Region("bar0", "mmio", 0x4000, 0x1000, priority=1)
    view = FlatView.render([RAM, bar])
    assert [(r.kind, r.backed) for r in view.ranges] == [
        ("ram", True),
        ("mmio", False),
        ("ram", True),
    ]
    assert view.ranges[1].hva == 0
    assert [r.name for r in view.backed()] == ["pc.ram", "pc.ram"]


def test_holes_stay_holes_and_lookup() -> None:
    hi = Region("hi", "ram", 0x100000, 0x1000, HVA + 0x400000)
    view = FlatView.render([RAM, hi])
    assert len(view.ranges) == 2
    assert view.lookup(0x0) is view.ranges[0]
    assert view.lookup(0x1FFFF) is view.ranges[0]
    assert view.lookup(0x20000) is None
    assert view.lookup(0xFFFFF) is None
    hit = view.lookup(0x100800)
    assert hit is not None
    assert hit.hva_of(0x100800) == HVA + 0x400800
    assert FlatView([]).lookup(0) is None


def test_diff_of_identical_views_is_empty() -> None:
    view = FlatView.render([RAM])
    d = diff(view, FlatView.render([RAM]))
    assert d.empty
    assert not d.overlapping


def test_split_is_one_region_del_and_three_region_adds() -> None:
    shadow = Region("shadow", "rom", 0x10000, 0x4000, HVA + 0x10000, priority=1)
    old, new = FlatView.render([RAM]), FlatView.render([RAM, shadow])
    d = diff(old, new)
    assert [(r.start, r.size) for r in d.dels] == [(0, 0x20000)]
    assert [(r.start, r.size, r.kind) for r in d.adds] == [
        (0x0, 0x10000, "ram"),
        (0x10000, 0x4000, "rom"),
        (0x14000, 0xC000, "ram"),
    ]
    assert d.log_changes == []
    assert d.overlapping  # what makes QEMU 8.0 inhibit
    # And back: the merge deletes the three and adds the one.
    back = diff(new, old)
    assert (len(back.dels), len(back.adds)) == (3, 1)
    assert back.overlapping


def test_hotplug_is_pure_add_and_pure_delete() -> None:
    dimm = Region("dimm0", "ram", 0x100000, 0x100000, HVA + 0x400000)
    base, plugged = FlatView.render([RAM]), FlatView.render([RAM, dimm])
    plug = diff(base, plugged)
    assert plug.dels == []
    assert [r.name for r in plug.adds] == ["dimm0"]
    assert not plug.overlapping
    unplug = diff(plugged, base)
    assert [r.name for r in unplug.dels] == ["dimm0"]
    assert unplug.adds == []
    assert not unplug.overlapping


def test_mmio_changes_do_not_reach_the_listener() -> None:
    """A BAR mapped over a hole: nothing RAM-backed changed, so no memslot ioctl."""
    bar = Region("bar0", "mmio", 0x40000, 0x1000)
    assert diff(FlatView.render([RAM]), FlatView.render([RAM, bar])).empty


def test_log_start_is_a_flags_change_not_a_delete() -> None:
    logged = Region("pc.ram", "ram", 0x0, 0x20000, HVA, log_dirty=True)
    d = diff(FlatView.render([RAM]), FlatView.render([logged]))
    assert d.dels == []
    assert d.adds == []
    assert len(d.log_changes) == 1
    before, after = d.log_changes[0]
    assert before.key == after.key
    assert (before.log_dirty, after.log_dirty) == (False, True)
    assert not d.overlapping
    # log_stop is the same the other way round.
    stop = diff(FlatView.render([logged]), FlatView.render([RAM]))
    assert stop.dels == stop.adds == []
    assert [(a.log_dirty, b.log_dirty) for a, b in stop.log_changes] == [(True, False)]


def test_a_moved_range_is_a_delete_and_an_add() -> None:
    home = FlatView([FlatRange(0x20000, 0x10000, "ram", HVA, "data")])
    away = FlatView([FlatRange(0x1F000, 0x10000, "ram", HVA, "data")])
    d = diff(home, away)
    assert [r.start for r in d.dels] == [0x20000]
    assert [r.start for r in d.adds] == [0x1F000]
    assert d.overlapping


def test_the_vmm_turns_log_start_into_a_flags_only_ioctl() -> None:
    """dirty-log toggles KVM_MEM_LOG_DIRTY_PAGES on the data slot: one
    KVM_SET_USER_MEMORY_REGION on the same slot id, which KVM performs as FLAGS_ONLY."""
    events: list[Event] = []
    session = Session(
        make_config("dirty-log", "legacy", seed=1, duration_ns=120_000), observers=(events.append,)
    )
    trio.run(session.run)
    first = next(
        i for i, e in enumerate(events) if isinstance(e, TxnBegin) and e.layout == "logging"
    )
    txn = events[first]
    assert isinstance(txn, TxnBegin)
    assert (txn.dels, txn.adds) == ([], [])
    end = next(i for i in range(first, len(events)) if type(events[i]).__name__ == "TxnCommit")
    ioctls = [e for e in events[first:end] if isinstance(e, IoctlEnter)]
    changes = [e for e in events[first:end] if isinstance(e, MemslotChange) and e.step == "commit"]
    assert len(ioctls) == 1
    assert ioctls[0].memory_size == 0x10000
    assert ioctls[0].flags & c.KVM_MEM_LOG_DIRTY_PAGES
    assert [ch.change for ch in changes] == ["FLAGS_ONLY"]
    assert changes[0].id == ioctls[0].slot & 0xFFFF

"""SRCU: what a grace period waits for, and what happens when a swap skips it.

The guarantee under test is the one synchronize_srcu() documents (kernel/rcu/srcutree.c): every
read-side section that began before the grace period has ended by the time it completes, and
nothing that began after the flip can hold it up.
"""

from __future__ import annotations

import pytest

from engine.events import (
    Event,
    EventBus,
    MemslotChange,
    ReaderUseAfterFree,
    SrcuGp,
    SrcuUnlockMismatch,
    SwapPublish,
)
from engine.model.srcu import Srcu, SrcuWouldBlock
from engine.model.vm import VM

PAGE = 0x1000
UADDR = 0x7F00_0000_0000


def _recording_srcu() -> tuple[Srcu, list[Event]]:
    bus = EventBus()
    events: list[Event] = []
    bus.subscribe(events.append)
    return Srcu(bus), events


def _phases(events: list[Event]) -> list[str]:
    return [e.phase for e in events if isinstance(e, SrcuGp)]


def test_grace_period_with_no_readers_runs_every_phase_in_order() -> None:
    srcu, events = _recording_srcu()
    gp = srcu.start_gp()
    assert gp.poll()
    assert gp.done
    assert _phases(events) == ["start", "scan1", "flip", "scan2", "end"]
    assert srcu.gp is None
    assert srcu.gp_seq == 1


def test_reader_on_current_index_blocks_scan2_until_it_unlocks() -> None:
    srcu, events = _recording_srcu()
    idx = srcu.read_lock("r")
    gp = srcu.start_gp()
    # The reader holds the index that was current at the start: SCAN1 (the other index)
    # passes, the flip happens, and SCAN2 waits for it.
    for _ in range(3):
        assert not gp.poll()
    assert gp.phase == "scan2"
    assert gp.waiting_on() == ["r"]
    assert _phases(events) == ["start", "scan1", "flip", "scan2"]
    scan2 = [e for e in events if isinstance(e, SrcuGp) and e.phase == "scan2"]
    assert scan2[0].waiting_on == ["r"]

    srcu.read_unlock("r", idx)
    assert gp.poll()
    assert _phases(events)[-1] == "end"
    assert not srcu.holders


def test_reader_on_inactive_index_blocks_scan1_until_it_unlocks() -> None:
    srcu, events = _recording_srcu()
    idx = srcu.read_lock("old")
    # A grace period that gave up after its flip (what a clockless caller does when readers
    # hold it up) leaves the reader on what is now the inactive index.
    with pytest.raises(SrcuWouldBlock, match="old"):
        srcu.synchronize_now()
    assert idx != srcu.srcu_idx & 1

    events.clear()
    gp = srcu.start_gp()
    for _ in range(3):
        assert not gp.poll()
    assert gp.phase == "scan1"
    assert gp.waiting_on() == ["old"]
    # No flip may happen while SCAN1 is blocked.
    assert _phases(events) == ["start", "scan1"]

    srcu.read_unlock("old", idx)
    assert gp.poll()
    assert _phases(events) == ["start", "scan1", "flip", "scan2", "end"]


def test_readers_that_lock_after_the_flip_do_not_block_the_grace_period() -> None:
    srcu, _ = _recording_srcu()
    early = srcu.read_lock("early")
    gp = srcu.start_gp()
    assert not gp.poll()
    late = srcu.read_lock("late")
    assert late != early
    assert not gp.poll()
    assert gp.waiting_on() == ["early"]

    srcu.read_unlock("early", early)
    assert gp.poll(), "a reader that started after the flip held the grace period up"
    assert "late" in srcu.holders
    srcu.read_unlock("late", late)
    assert not srcu.holders


def test_unlock_with_the_wrong_index_is_reported() -> None:
    srcu, events = _recording_srcu()
    idx = srcu.read_lock("r")
    srcu.read_unlock("r", idx ^ 1)
    mismatches = [e for e in events if isinstance(e, SrcuUnlockMismatch)]
    assert len(mismatches) == 1
    assert mismatches[0].reader == "r"
    assert mismatches[0].held_idx == idx
    assert mismatches[0].idx == idx ^ 1


def test_unlock_without_a_lock_is_reported() -> None:
    srcu, events = _recording_srcu()
    srcu.read_unlock("ghost", 0)
    mismatches = [e for e in events if isinstance(e, SrcuUnlockMismatch)]
    assert [(m.reader, m.held_idx) for m in mismatches] == [("ghost", -1)]


def test_only_one_grace_period_at_a_time() -> None:
    srcu, _ = _recording_srcu()
    srcu.read_lock("r")
    srcu.start_gp()
    with pytest.raises(RuntimeError):
        srcu.start_gp()


# --- the memslot reader pattern through the VM ---------------------------------------------


def _vm_with_one_slot() -> tuple[VM, list[Event]]:
    vm = VM()
    events: list[Event] = []
    vm.bus.subscribe(events.append)
    vm.set_user_memory_region(0, 0, 0x10_0000, 4 * PAGE, UADDR)
    return vm, events


def test_a_swap_without_grace_periods_is_caught_as_use_after_free() -> None:
    vm, events = _vm_with_one_slot()
    vm.busted = True
    idx = vm.srcu.read_lock("reader")
    held_version = vm.srcu_dereference("reader", 0).version
    vm.set_user_memory_region(0, 0, 0, 0, 0)
    assert vm.active(0).version != held_version
    vm.srcu_read_unlock("reader", idx)

    uaf = [e for e in events if isinstance(e, ReaderUseAfterFree)]
    # The invalidation swap's catch-up edits the held set at once: caught there, naming the
    # reader, its SRCU index and the update.
    assert uaf
    assert (uaf[0].reader, uaf[0].as_id, uaf[0].version, uaf[0].idx) == (
        "reader",
        0,
        held_version,
        idx,
    )
    assert uaf[0].update == "DELETE of slot 0"


def test_a_correct_swap_cannot_complete_under_a_reader() -> None:
    vm, events = _vm_with_one_slot()
    idx = vm.srcu.read_lock("reader")
    vm.srcu_dereference("reader", 0)
    with pytest.raises(SrcuWouldBlock, match="reader"):
        vm.set_user_memory_region(0, 0, 0, 0, 0)
    vm.srcu_read_unlock("reader", idx)
    assert not [e for e in events if isinstance(e, ReaderUseAfterFree)]


def test_a_reader_held_across_one_busted_swap_is_a_use_after_free() -> None:
    vm, events = _vm_with_one_slot()
    vm.busted = True
    idx = vm.srcu.read_lock("reader")
    held = vm.srcu_dereference("reader", 0)
    before = sorted(held.by_id)
    # CREATE swaps once; KVM's two sets are reused, so the catch-up edit after the swap
    # rewrites the very set the reader holds (kvm_replace_memslot() on the inactive set).
    vm.set_user_memory_region(1, 0, 0x20_0000, PAGE, UADDR + 0x10_0000)
    assert (before, sorted(held.by_id)) == ([0], [0, 1])
    vm.srcu_read_unlock("reader", idx)
    uaf = [e for e in events if isinstance(e, ReaderUseAfterFree)]
    assert [(e.reader, e.age, e.update) for e in uaf] == [("reader", 1, "CREATE of slot 1")]


def test_a_reader_of_the_retired_set_is_caught_when_the_next_update_reuses_it() -> None:
    vm, events = _vm_with_one_slot()
    vm.busted = True
    vm.set_user_memory_region(1, 0, 0x20_0000, PAGE, UADDR + 0x10_0000)
    # A reader that picked up the active set; a busted CREATE publishes the other set and
    # edits this one: caught at the first edit, whichever update it is.
    idx = vm.srcu.read_lock("late")
    vm.srcu_dereference("late", 0)
    vm.set_user_memory_region(2, 0, 0x30_0000, PAGE, UADDR + 0x20_0000)
    vm.srcu_read_unlock("late", idx)
    assert [e.reader for e in events if isinstance(e, ReaderUseAfterFree)] == ["late"]


def test_an_update_refused_for_a_reader_leaves_the_vm_as_it_was() -> None:
    # A clockless caller cannot wait out a grace period; the update must then not start at
    # all, rather than stop after publishing an INVALID copy with the generation's
    # update-in-progress bit set.
    vm, events = _vm_with_one_slot()
    before = (vm.memslots(), vm.active(0).generation, vm.active(0).version)
    idx = vm.srcu.read_lock("reader")
    events.clear()
    with pytest.raises(SrcuWouldBlock, match="reader"):
        vm.set_user_memory_region(0, 0, 0, 0, 0)
    assert not [e for e in events if isinstance(e, SwapPublish | MemslotChange | SrcuGp)]
    assert (vm.memslots(), vm.active(0).generation, vm.active(0).version) == before
    assert not vm.update_in_progress
    vm.active(0).check_invariants()
    vm.inactive(0).check_invariants()

    vm.srcu.read_unlock("reader", idx)
    vm.set_user_memory_region(0, 0, 0, 0, 0)
    assert vm.memslots() == []
    assert vm.active(0).generation == before[1] + 2 * vm.host.nr_address_spaces
    assert vm.inactive(0).by_id == {}


def test_every_phase_of_a_grace_period_carries_one_number() -> None:
    """START #n ... END #n (the end used to say n+1), numbered from 0 in order."""
    import trio

    from engine.events import SrcuGp
    from engine.runner import make_config
    from engine.session import Session

    seen: list[SrcuGp] = []

    def keep(e: Event) -> None:
        if isinstance(e, SrcuGp):
            seen.append(e)

    session = Session(
        make_config("split", "inhibit", seed=1, duration_ns=300_000), observers=(keep,)
    )
    trio.run(session.run)
    assert seen
    numbers: list[int] = []
    for e in seen:
        if e.phase == "start":
            numbers.append(e.gp_seq)
        else:
            assert e.gp_seq == numbers[-1], (e.phase, e.gp_seq, numbers[-1])
    assert numbers == list(range(len(numbers)))

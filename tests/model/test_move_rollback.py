"""A MOVE that kvm_prepare_memory_region() refuses (the new range ends beyond
kvm_mmu_max_gfn()) has already been invalidated: kvm_set_memslot() then swaps the old slot back
with kvm_activate_memslot(). Two swaps, a zap, and EINVAL (virt/kvm/kvm_main.c)."""

from __future__ import annotations

import errno

import pytest

from engine.events import Event, IoctlExit, MemslotChange, SwapPublish, Zap
from engine.model.host import Host
from engine.model.vm import VM

PAGE = 0x1000
UADDR = 0x7F00_0000_0000


@pytest.mark.parametrize("profile", ["x86-tdp", "x86-pvm"])
def test_a_move_failing_in_prepare_is_invalidated_then_restored(profile: str) -> None:
    vm = VM(Host(profile=profile, maxphyaddr=36))
    events: list[Event] = []
    vm.set_user_memory_region(1, 0, 0x10_0000, 4 * PAGE, UADDR)
    before = vm.memslots()
    gen = vm.active(0).generation
    vm.bus.subscribe(events.append)
    with pytest.raises(OSError, match="beyond MAXPHYADDR") as err:
        vm.set_user_memory_region(1, 0, (1 << 36) - 2 * PAGE, 4 * PAGE, UADDR)
    assert err.value.errno == errno.EINVAL
    steps = [(e.change, e.step) for e in events if isinstance(e, MemslotChange)]
    assert steps == [("MOVE", "invalidate"), ("MOVE", "restore")]
    assert len([e for e in events if isinstance(e, SwapPublish)]) == 2
    assert [e for e in events if isinstance(e, Zap)]
    (exit,) = [e for e in events if isinstance(e, IoctlExit)]
    assert (exit.errno, exit.change) == (errno.EINVAL, "MOVE")
    # The slot is back, valid, and both sets agree; the generation moved on by two swaps.
    assert vm.memslots() == before
    assert not vm.active(0).by_id[1].invalid
    assert sorted(vm.inactive(0).by_id) == [1]
    assert not vm.inactive(0).by_id[1].invalid
    assert vm.active(0).generation == gen + 2 * vm.host.nr_address_spaces


def test_a_create_failing_in_prepare_swaps_nothing() -> None:
    vm = VM(Host(maxphyaddr=36))
    events: list[Event] = []
    vm.bus.subscribe(events.append)
    with pytest.raises(OSError, match="beyond MAXPHYADDR") as err:
        vm.set_user_memory_region(1, 0, (1 << 36) - 2 * PAGE, 4 * PAGE, UADDR)
    assert err.value.errno == errno.EINVAL
    assert not [e for e in events if isinstance(e, SwapPublish | MemslotChange)]


def test_zap_all_covers_every_address_space() -> None:
    vm = VM(Host(profile="x86-tdp"))
    vm.set_user_memory_region(1, 0, 0x10_0000, 4 * PAGE, UADDR)
    vm.set_user_memory_region((1 << 16) | 1, 0, 0x10_0000, 4 * PAGE, UADDR)
    for table in vm.stage2:
        table.install(0x100, UADDR, True)
    events: list[Event] = []
    vm.bus.subscribe(events.append)
    vm.set_user_memory_region(1, 0, 0, 0, 0)  # DELETE in as_id 0
    assert [t.pages for t in vm.stage2] == [{}, {}]
    assert sorted(e.as_id for e in events if isinstance(e, Zap)) == [0, 1]

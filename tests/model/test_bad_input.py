"""Arguments that cannot reach the kernel, and arguments the kernel refuses.

A value that does not fit its struct field is a Python-level error (TypeError, OverflowError)
raised before anything happens: no event, no state change. A value that fits but is nonsense
reaches the modelled kernel and fails with its errno (virt/kvm/kvm_main.c:
__kvm_set_memory_region(), as this host's /dev/kvm answers; tests/errno_cases.py holds the table).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import pytest

from engine.events import Event, IoctlExit
from engine.model import constants as c
from engine.model.host import Host
from engine.model.vm import VM

PAGE = c.PAGE_SIZE
UADDR = 0x7F00_0000_0000
GOOD = {
    "slot": 1,
    "flags": 0,
    "guest_phys_addr": 0x20_0000,
    "memory_size": 0x1_0000,
    "userspace_addr": UADDR + 0x10_0000,
}
U32_FIELDS = ("slot", "flags")
U64_FIELDS = ("guest_phys_addr", "memory_size", "userspace_addr")
WRONG_TYPES: list[object] = ["1", 1.0, None, True, False, b"\x01", [1]]


def _vm(host: Host | None = None) -> tuple[VM, list[Event]]:
    vm = VM(host)
    vm.set_user_memory_region(0, c.KVM_MEM_LOG_DIRTY_PAGES, 0x10_0000, 0x1_0000, UADDR)
    if vm.host.nr_address_spaces > 1:
        vm.set_user_memory_region(1 << 16, 0, 0x10_0000, 0x1_0000, UADDR)
    events: list[Event] = []
    vm.bus.subscribe(events.append)
    return vm, events


def _snapshot(vm: VM) -> tuple[Any, ...]:
    spaces = range(vm.host.nr_address_spaces)
    return (
        [vm.memslots(a) for a in spaces],
        [vm.active(a).generation for a in spaces],
        [vm.active(a).version for a in spaces],
        [sorted((s.id, s.base_gfn, s.npages) for s in vm.inactive(a)) for a in spaces],
        vm.nr_memslot_pages,
        vm.srcu.srcu_idx,
        list(vm.srcu.lock_count),
        vm.update_in_progress,
    )


def _errno(fn: Callable[[], object]) -> int:
    """The errno of the OSError fn raises."""
    try:
        fn()
    except OSError as err:
        return err.errno or 0
    raise AssertionError("no OSError")


def _call(vm: VM, **override: object) -> None:
    args = {**GOOD, **override}
    vm.set_user_memory_region(**args)  # type: ignore[arg-type]


# --- values that do not fit the struct ------------------------------------------------------


@pytest.mark.parametrize("field", U32_FIELDS + U64_FIELDS)
@pytest.mark.parametrize("value", WRONG_TYPES, ids=repr)
def test_wrong_types_are_type_errors_and_change_nothing(field: str, value: object) -> None:
    vm, events = _vm()
    before = _snapshot(vm)
    with pytest.raises(TypeError, match=field):
        _call(vm, **{field: value})
    assert _snapshot(vm) == before
    assert events == []


@pytest.mark.parametrize(
    ("field", "value"),
    [(f, -1) for f in U32_FIELDS + U64_FIELDS]
    + [(f, -(1 << 70)) for f in U32_FIELDS + U64_FIELDS]
    + [(f, 1 << 32) for f in U32_FIELDS]
    + [(f, (1 << 32) + 1) for f in U32_FIELDS]
    + [(f, 1 << 64) for f in U64_FIELDS]
    + [(f, 1 << 100) for f in U32_FIELDS + U64_FIELDS],
)
def test_out_of_range_values_are_overflow_errors_and_change_nothing(field: str, value: int) -> None:
    vm, events = _vm()
    before = _snapshot(vm)
    with pytest.raises(OverflowError, match=field):
        _call(vm, **{field: value})
    assert _snapshot(vm) == before
    assert events == []


@pytest.mark.parametrize("field", U32_FIELDS + U64_FIELDS)
def test_type_errors_change_nothing_even_for_a_delete(field: str) -> None:
    vm, events = _vm()
    before = _snapshot(vm)
    delete = {"slot": 0, "flags": 0, "guest_phys_addr": 0, "memory_size": 0, "userspace_addr": 0}
    with pytest.raises(TypeError):
        vm.set_user_memory_region(**{**delete, field: "0"})  # type: ignore[arg-type]
    assert _snapshot(vm) == before
    assert events == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("slot", c.U32_MAX),
        ("flags", c.U32_MAX),
        ("guest_phys_addr", c.U64_MAX - PAGE + 1),
        ("memory_size", c.U64_MAX - PAGE + 1),
        ("userspace_addr", c.U64_MAX - PAGE + 1),
    ],
)
def test_the_largest_values_that_fit_pass_the_type_checks(field: str, value: int) -> None:
    vm, events = _vm()
    # It reaches the kernel model (and fails there): the boundary is the field's, not lower.
    assert _errno(lambda: _call(vm, **{field: value})) == errno.EINVAL
    assert [e.errno for e in events if isinstance(e, IoctlExit)] == [errno.EINVAL]


# --- values that fit but the kernel refuses ------------------------------------------------


@pytest.mark.parametrize(
    ("row", "override"),
    [
        # tests/errno_cases.py rows 22-24 (a wrapping GPA, too many pages), on top of the
        # base region of the table.
        (22, {"guest_phys_addr": 1 << 63}),
        (23, {"memory_size": (1 << 31) * PAGE}),
        (24, {"memory_size": (1 << 64) - PAGE}),
        # and their neighbours
        (17, {"guest_phys_addr": 0xFFFF_FFFF_FFFF_F000, "memory_size": 0x2000}),
        (18, {"guest_phys_addr": 0xFFFF_FFFF_FFFF_0000, "memory_size": 0x1_0000}),
        (21, {"guest_phys_addr": 1 << 52}),
        (12, {"userspace_addr": 0xFFFF_8880_0000_0000}),
        (44, {"flags": 0xFFFF_FFFF}),
        (35, {"slot": 0xFFFF_0000}),
    ],
    ids=lambda v: f"row{v}" if isinstance(v, int) else "",
)
def test_huge_but_representable_values_are_einval(row: int, override: dict[str, int]) -> None:
    vm, events = _vm()
    before = _snapshot(vm)
    assert _errno(lambda: _call(vm, **override)) == errno.EINVAL, f"row {row}"
    assert _snapshot(vm) == before
    exits = [e for e in events if isinstance(e, IoctlExit)]
    assert [(e.errno, e.error) for e in exits] == [(errno.EINVAL, "EINVAL")]


def test_the_largest_slot_the_kernel_allows_is_accepted() -> None:
    vm, _ = _vm()
    # One page under row 23: 2^31 - 1 pages pass the npages check, and access_ok passes at a
    # low uaddr.
    _call(vm, memory_size=c.KVM_MEM_MAX_NR_PAGES * PAGE, userspace_addr=0x1000)
    assert vm.memslots()[1].memory_size == c.KVM_MEM_MAX_NR_PAGES * PAGE


def test_as_id_beyond_the_hosts_address_spaces_is_einval() -> None:
    vm, _ = _vm(Host(nr_address_spaces=2))
    before = _snapshot(vm)
    assert _errno(lambda: _call(vm, slot=2 << 16)) == errno.EINVAL
    assert _snapshot(vm) == before


# --- other entry points --------------------------------------------------------------------


@pytest.mark.parametrize("cap", ["10", 10.0, None, True, [10]], ids=repr)
def test_check_extension_rejects_non_ints(cap: object) -> None:
    vm, events = _vm()
    with pytest.raises(TypeError):
        vm.check_extension(cap)  # type: ignore[arg-type]
    assert events == []


def test_check_extension_answers_ints() -> None:
    vm, _ = _vm()
    assert vm.check_extension(c.KVM_CAP_NR_MEMSLOTS) == c.KVM_USER_MEM_SLOTS
    assert vm.check_extension(100_000) == 0


@pytest.mark.parametrize("slot", WRONG_TYPES, ids=repr)
def test_get_dirty_log_rejects_non_int_slots(slot: object) -> None:
    vm, events = _vm()
    before = _snapshot(vm)
    with pytest.raises(TypeError):
        vm.get_dirty_log(slot)  # type: ignore[arg-type]
    assert _snapshot(vm) == before
    assert events == []


@pytest.mark.parametrize("slot", [-1, 1 << 32, 1 << 64])
def test_get_dirty_log_rejects_slots_that_do_not_fit(slot: int) -> None:
    vm, events = _vm()
    with pytest.raises(OverflowError):
        vm.get_dirty_log(slot)
    assert events == []


@pytest.mark.parametrize(
    ("slot", "code"),
    [
        (c.KVM_USER_MEM_SLOTS, errno.EINVAL),
        (0x1_0000, errno.EINVAL),  # as_id 1 on a one-address-space host
        (c.U32_MAX, errno.EINVAL),
        (7, errno.ENOENT),  # never existed
    ],
)
def test_get_dirty_log_errnos(slot: int, code: int) -> None:
    vm, _ = _vm(Host(profile="x86-pvm"))
    assert _errno(lambda: vm.get_dirty_log(slot)) == code

"""The vCPU fault path, one outcome at a time (arch/x86/kvm/mmu/mmu.c: kvm_mmu_page_fault(),
kvm_faultin_pfn(); what this host's /dev/kvm does for each outcome is asserted in tests/kvm).

Every test builds a VM with a code slot and a data slot, puts a small guest program into host
memory, and drives KVM_RUN either to its exit or step by step when the point is what happens
in between.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator

import pytest

from engine.events import (
    Event,
    Exit,
    Fault,
    SrcuLock,
    UdInjected,
    Zap,
)
from engine.model import constants as c
from engine.model.guest import INSN_SIZE, assemble
from engine.model.host import Host
from engine.model.memslots import Memslot, MemslotSet
from engine.model.region import make_region
from engine.model.vcpu import Run, Vcpu, VcpuExit, run_to_exit
from engine.model.vm import SYNCHRONIZE, VM, Steps

PAGE = c.PAGE_SIZE
CODE_SLOT, DATA_SLOT = 0, 1
CODE_GPA, CODE_PAGES = 0x1000, 4
DATA_GPA, DATA_PAGES = 0x10_0000, 8
CODE_UADDR = 0x7F00_0000_0000
DATA_UADDR = 0x7F00_0010_0000
HOLE = 0x20_0000  # no slot here


class Guest:
    """A VM with a code slot and a data slot, and the events it emitted."""

    def __init__(self, host: Host | None = None, data_flags: int = 0) -> None:
        self.vm = VM(host)
        self.events: list[Event] = []
        self.vm.bus.subscribe(self.events.append)
        self.vm.set_user_memory_region(CODE_SLOT, 0, CODE_GPA, CODE_PAGES * PAGE, CODE_UADDR)
        self.vm.set_user_memory_region(
            DATA_SLOT, data_flags, DATA_GPA, DATA_PAGES * PAGE, DATA_UADDR
        )

    def load(self, base: int, lines: list[str]) -> None:
        for gpa, insn in assemble(base, lines).items():
            self.vm.memory[self.hva(gpa)] = insn

    def hva(self, gpa: int) -> int:
        hva = self.vm.gpa_to_hva(gpa)
        assert hva is not None, f"no memslot at {gpa:#x}"
        return hva

    def poke(self, gpa: int, value: int) -> None:
        self.vm.memory[self.hva(gpa)] = value

    def peek(self, gpa: int) -> object:
        return self.vm.memory.get(self.hva(gpa))

    def vcpu(self, **kwargs: object) -> Vcpu:
        return Vcpu(self.vm, 0, CODE_GPA, **kwargs)  # type: ignore[arg-type]

    def of(self, kind: type[Event]) -> list[Event]:
        return [e for e in self.events if isinstance(e, kind)]

    def faults(self) -> list[Fault]:
        return [e for e in self.events if isinstance(e, Fault)]

    def exits(self) -> list[Exit]:
        return [e for e in self.events if isinstance(e, Exit)]

    def slot(self, slot: int, flags: int, gpa: int, pages: int, uaddr: int) -> None:
        self.vm.set_user_memory_region(slot, flags, gpa, pages * PAGE, uaddr)

    def delete(self, slot: int) -> None:
        self.vm.set_user_memory_region(slot, 0, 0, 0, 0)


def run(vcpu: Vcpu) -> VcpuExit:
    exit, _ = run_to_exit(vcpu.kvm_run())
    # Guest mode and userspace are outside every read-side section (§5.4).
    assert not vcpu.vm.srcu.holders
    return exit


def steps(gen: Run, n: int) -> VcpuExit | None:
    """Advance KVM_RUN by n yields; the exit if it returned first."""
    for _ in range(n):
        try:
            next(gen)
        except StopIteration as stop:
            result: VcpuExit = stop.value
            return result
    return None


def until_outside_srcu(gen: Run, vcpu: Vcpu, limit: int = 100) -> None:
    """Advance KVM_RUN to a point where the vCPU holds no SRCU (so an update can proceed)."""
    for _ in range(limit):
        if vcpu.name not in vcpu.vm.srcu.holders:
            return
        next(gen)
    raise AssertionError("the vCPU never left its read-side section")


def drive_update(vm: VM, update: Steps, stop: Callable[[], bool] = lambda: False) -> bool:
    """Run an update's steps, completing each grace period at once, until stop() holds.
    Returns True if the update finished."""
    for step in update:
        if step is SYNCHRONIZE:
            vm.srcu.synchronize_now()
        if stop():
            return False
    return True


# --- valid slot --------------------------------------------------------------------------


def test_mapped_page_faults_once_then_hits_without_entering_kvm() -> None:
    g = Guest()
    g.poke(DATA_GPA, 0x1234)
    g.load(CODE_GPA, ["top:", f"load {DATA_GPA:#x}", "jmp top"])
    vcpu = g.vcpu()
    gen = vcpu.kvm_run()
    assert steps(gen, 10) is None
    assert [(f.access, f.outcome, f.gpa) for f in g.faults()] == [
        ("fetch", "mapped", CODE_GPA),
        ("read", "mapped", DATA_GPA),
    ]
    assert vcpu.acc == 0x1234

    g.events.clear()
    before = vcpu.instructions
    assert steps(gen, 200) is None
    assert vcpu.instructions == before + 200
    # Stage-2 hits never leave the guest: no fault, no SRCU read-side section.
    assert not g.faults()
    assert not g.of(SrcuLock)
    assert not g.vm.srcu.holders


# --- INVALID slot --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deleted", "access", "gpa", "final"),
    [
        (DATA_SLOT, "read", DATA_GPA, c.KVM_EXIT_MMIO),
        (CODE_SLOT, "fetch", CODE_GPA, c.KVM_EXIT_INTERNAL_ERROR),
    ],
)
def test_fault_on_an_invalid_slot_retries_until_the_delete_completes(
    deleted: int, access: str, gpa: int, final: int
) -> None:
    g = Guest()
    g.load(CODE_GPA, ["top:", f"load {DATA_GPA:#x}", "jmp top"])
    vcpu = g.vcpu()
    gen = vcpu.kvm_run()
    if deleted == DATA_SLOT:
        # Map the code page first, so the fault that meets the INVALID slot is the data access.
        assert steps(gen, 1) is None
        until_outside_srcu(gen, vcpu)
        assert g.faults()[0].access == "fetch"
        g.events.clear()

    change = g.vm.ioctl_prepare(make_region(deleted, 0, 0, 0, 0))
    assert change is not None
    update = g.vm.commit(change)
    # Stop right after the first swap and its zap: the slot is published INVALID.
    assert not drive_update(g.vm, update, lambda: bool(g.of(Zap)))
    slot = g.vm.active(0).lookup(gpa >> c.PAGE_SHIFT)
    assert slot is not None
    assert slot.invalid

    assert steps(gen, 60) is None, "a fault on an INVALID slot left the guest"
    # The zap took the code page too, so it is mapped again first; then the INVALID slot.
    at_slot = [f for f in g.faults() if f.gpa == gpa]
    assert {(f.access, f.outcome) for f in at_slot} == {(access, "retry")}
    assert len(at_slot) > 3
    assert {f.outcome for f in g.faults()} <= {"retry", "mapped"}
    assert not g.exits()
    assert vcpu.rip in (CODE_GPA, CODE_GPA + INSN_SIZE)

    until_outside_srcu(gen, vcpu)
    assert drive_update(g.vm, update)
    g.vm.ioctl_done(change)

    result = steps(gen, 200)
    assert result is not None
    assert result.reason == final
    assert result.phys_addr == (gpa if final == c.KVM_EXIT_MMIO else 0)


# --- no slot -------------------------------------------------------------------------------


def test_data_read_without_a_slot_exits_mmio_and_completes_on_reentry() -> None:
    g = Guest()
    g.load(CODE_GPA, [f"load {HOLE:#x}", f"store {DATA_GPA:#x}", "halt"])
    vcpu = g.vcpu()
    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_MMIO
    assert (exit.phys_addr, exit.len, exit.is_write) == (HOLE, 8, False)
    assert exit.rip == CODE_GPA
    assert g.faults()[-1].outcome == "mmio"

    vcpu.mmio_data = 0xBEEF
    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_HLT
    assert vcpu.acc == 0xBEEF
    assert g.peek(DATA_GPA) == 0xBEEF


def test_store_without_a_slot_exits_mmio_with_the_data() -> None:
    g = Guest()
    g.load(CODE_GPA, ["mov 0x55", f"store {HOLE + 8:#x}", "halt"])
    vcpu = g.vcpu()
    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_MMIO
    assert (exit.phys_addr, exit.len, exit.is_write, exit.data) == (HOLE + 8, 8, True, 0x55)
    assert exit.rip == CODE_GPA + INSN_SIZE
    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_HLT
    assert exit.rip == CODE_GPA + 3 * INSN_SIZE


def test_fetch_without_a_slot_is_an_internal_error_at_cpl0_in_l1() -> None:
    g = Guest()
    g.load(CODE_GPA, [f"jmp {HOLE:#x}"])
    vcpu = g.vcpu()
    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_INTERNAL_ERROR
    assert exit.suberror == c.KVM_INTERNAL_ERROR_EMULATION
    # rip is the instruction whose fetch failed, not advanced (as KVM_EXIT_INTERNAL_ERROR
    # leaves it on real hardware: tests/kvm/test_guest.py).
    assert exit.rip == HOLE
    assert not g.of(UdInjected)
    assert g.faults()[-1].outcome == "emulation_failure"

    # Re-entering keeps failing until the code has a slot again; then KVM_RUN just continues
    # (the cached MMIO SPTE must not outlive the generation it was learnt under).
    assert run(vcpu).reason == c.KVM_EXIT_INTERNAL_ERROR
    g.slot(2, 0, HOLE, 1, 0x7F00_0020_0000)
    g.load(HOLE, ["halt"])
    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_HLT
    assert exit.rip == HOLE + INSN_SIZE


@pytest.mark.parametrize(
    ("cpl", "guest_mode"), [(3, False), (0, True), (3, True)], ids=["cpl3", "l2", "l2-cpl3"]
)
def test_fetch_without_a_slot_injects_ud_at_cpl3_or_in_l2(cpl: int, guest_mode: bool) -> None:
    g = Guest()
    handler = CODE_GPA + 0x800
    g.load(CODE_GPA, [f"jmp {HOLE:#x}"])
    g.load(handler, ["halt"])
    vcpu = g.vcpu(cpl=cpl, guest_mode=guest_mode, ud_handler=handler)
    exit = run(vcpu)
    # KVM resumed the guest with #UD pending; the guest's handler ran and halted.
    assert exit.reason == c.KVM_EXIT_HLT
    assert exit.rip == handler + INSN_SIZE
    ud = g.of(UdInjected)
    assert len(ud) == 1
    assert isinstance(ud[0], UdInjected)
    assert (ud[0].rip, ud[0].cpl, ud[0].guest_mode) == (HOLE, cpl, guest_mode)
    assert all(e.reason != "KVM_EXIT_INTERNAL_ERROR" for e in g.exits())


def test_ud_without_a_guest_handler_never_reports_an_internal_error() -> None:
    g = Guest()
    g.load(CODE_GPA, [f"jmp {HOLE:#x}"])
    vcpu = g.vcpu(cpl=3)
    exit = run(vcpu)
    assert exit.reason != c.KVM_EXIT_INTERNAL_ERROR
    assert len(g.of(UdInjected)) == 1


def test_fetch_without_a_slot_under_the_2022_len0_proposal() -> None:
    g = Guest(Host(fetch_noslot="mmio_len0"))
    g.load(CODE_GPA, [f"jmp {HOLE:#x}"])
    vcpu = g.vcpu()
    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_MMIO
    assert (exit.phys_addr, exit.len, exit.is_write) == (HOLE, 0, False)
    assert exit.rip == HOLE
    assert not g.of(UdInjected)
    # Userspace re-enters once the code is back, and the guest carries on.
    g.slot(2, 0, HOLE, 1, 0x7F00_0020_0000)
    g.load(HOLE, ["halt"])
    assert run(vcpu).reason == c.KVM_EXIT_HLT


# --- read-only slot ------------------------------------------------------------------------


def test_readonly_slot_reads_and_runs_but_writes_exit_as_mmio() -> None:
    g = Guest(data_flags=c.KVM_MEM_READONLY | c.KVM_MEM_LOG_DIRTY_PAGES)
    ro_code = DATA_GPA + PAGE
    g.poke(DATA_GPA, 0x1234)
    g.load(ro_code, ["mov 7", "halt"])
    g.load(
        CODE_GPA,
        [
            f"load {DATA_GPA:#x}",
            f"store {DATA_GPA + 8:#x}",
            f"inc {DATA_GPA:#x}",
            f"jmp {ro_code:#x}",
        ],
    )
    vcpu = g.vcpu()

    exit = run(vcpu)
    assert vcpu.acc == 0x1234  # the read worked
    assert exit.reason == c.KVM_EXIT_MMIO
    assert (exit.phys_addr, exit.len, exit.is_write, exit.data) == (DATA_GPA + 8, 8, True, 0x1234)

    exit = run(vcpu)
    # inc: read from RAM, the write to a READONLY slot becomes MMIO with value + 1
    # (arch/x86/kvm/mmu/mmu.c: a write fault on a read-only memslot is emulated as MMIO).
    assert exit.reason == c.KVM_EXIT_MMIO
    assert (exit.phys_addr, exit.len, exit.is_write, exit.data) == (DATA_GPA, 8, True, 0x1235)
    assert {f.outcome for f in g.faults() if f.access == "write"} == {"readonly_mmio"}

    exit = run(vcpu)
    # Code in the read-only slot executes.
    assert exit.reason == c.KVM_EXIT_HLT
    assert exit.rip == ro_code + 2 * INSN_SIZE
    assert vcpu.acc == 7

    assert g.peek(DATA_GPA) == 0x1234
    assert g.peek(DATA_GPA + 8) is None
    # Writes that became MMIO dirty nothing.
    assert g.vm.get_dirty_log(DATA_SLOT) == []


# --- dirty logging -------------------------------------------------------------------------

WRITES = [1, 3, 7]  # data pages the guest writes, as tests/kvm/test_guest.py has a real guest do


def _logging_guest() -> tuple[Guest, Vcpu]:
    g = Guest(data_flags=c.KVM_MEM_LOG_DIRTY_PAGES)
    lines = ["mov 9", *(f"store {DATA_GPA + page * PAGE + 8:#x}" for page in WRITES)]
    # A read of another page must not dirty it.
    lines += [f"load {DATA_GPA + 5 * PAGE:#x}", "halt", f"store {DATA_GPA + 3 * PAGE:#x}", "halt"]
    g.load(CODE_GPA, lines)
    return g, g.vcpu()


def test_dirty_log_records_guest_writes_and_get_clears_it() -> None:
    g, vcpu = _logging_guest()
    assert g.vm.get_dirty_log(DATA_SLOT) == []
    assert run(vcpu).reason == c.KVM_EXIT_HLT
    assert g.vm.get_dirty_log(DATA_SLOT) == WRITES
    assert g.vm.get_dirty_log(DATA_SLOT) == []
    # Host writes through the mapping are not tracked.
    g.poke(DATA_GPA + 2 * PAGE, 1)
    assert g.vm.get_dirty_log(DATA_SLOT) == []
    # Harvested pages are write-protected again, so the next write is seen.
    assert run(vcpu).reason == c.KVM_EXIT_HLT
    assert g.vm.get_dirty_log(DATA_SLOT) == [3]


def test_dirty_log_survives_move_and_identical_reset() -> None:
    g, vcpu = _logging_guest()
    run(vcpu)
    flags = c.KVM_MEM_LOG_DIRTY_PAGES
    g.slot(DATA_SLOT, flags, DATA_GPA, DATA_PAGES, DATA_UADDR)  # no-op
    g.slot(DATA_SLOT, flags, 0x40_0000, DATA_PAGES, DATA_UADDR)  # MOVE
    assert g.vm.get_dirty_log(DATA_SLOT) == WRITES


def test_dirty_log_is_lost_across_delete_and_create() -> None:
    g, vcpu = _logging_guest()
    run(vcpu)
    g.delete(DATA_SLOT)
    with pytest.raises(OSError, match="no dirty log") as err:
        g.vm.get_dirty_log(DATA_SLOT)
    assert err.value.errno == errno.ENOENT
    g.slot(DATA_SLOT, c.KVM_MEM_LOG_DIRTY_PAGES, DATA_GPA, DATA_PAGES, DATA_UADDR)
    assert g.vm.get_dirty_log(DATA_SLOT) == []


def test_dirty_log_is_lost_when_logging_is_toggled_off_and_on() -> None:
    g, vcpu = _logging_guest()
    run(vcpu)
    g.slot(DATA_SLOT, 0, DATA_GPA, DATA_PAGES, DATA_UADDR)
    with pytest.raises(OSError, match="no dirty log") as err:
        g.vm.get_dirty_log(DATA_SLOT)
    assert err.value.errno == errno.ENOENT  # logging is off
    g.slot(DATA_SLOT, c.KVM_MEM_LOG_DIRTY_PAGES, DATA_GPA, DATA_PAGES, DATA_UADDR)
    assert g.vm.get_dirty_log(DATA_SLOT) == []


def test_enabling_logging_write_protects_pages_already_mapped_writable() -> None:
    g = Guest()
    g.load(CODE_GPA, ["mov 1", f"store {DATA_GPA:#x}", "halt", f"store {DATA_GPA:#x}", "halt"])
    vcpu = g.vcpu()
    run(vcpu)  # maps the data page writable, logging off
    g.slot(DATA_SLOT, c.KVM_MEM_LOG_DIRTY_PAGES, DATA_GPA, DATA_PAGES, DATA_UADDR)
    run(vcpu)
    assert g.vm.get_dirty_log(DATA_SLOT) == [0]


# --- memslot lookup cache ----------------------------------------------------------------


def test_last_used_slot_cache_is_used_and_dropped_on_a_generation_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = Guest()
    g.load(
        CODE_GPA,
        [
            f"load {DATA_GPA:#x}",
            f"load {DATA_GPA + PAGE:#x}",
            "halt",
            f"load {DATA_GPA + 2 * PAGE:#x}",
            "halt",
        ],
    )
    searched: list[int] = []
    real_lookup = MemslotSet.lookup

    def counting_lookup(self: MemslotSet, gfn: int) -> Memslot | None:
        searched.append(gfn)
        return real_lookup(self, gfn)

    monkeypatch.setattr(MemslotSet, "lookup", counting_lookup)
    vcpu = g.vcpu()
    run(vcpu)
    assert len(g.faults()) == 3
    # The code page and the first data page are searched; the second data page is found in
    # the per-vCPU cache.
    assert searched == [CODE_GPA >> c.PAGE_SHIFT, DATA_GPA >> c.PAGE_SHIFT]
    assert vcpu.last_used_slot is not None
    assert vcpu.last_used_slot.id == DATA_SLOT
    old_gen = vcpu.last_used_slot_gen

    # CREATE elsewhere: no zap, but a new generation invalidates the cache.
    g.slot(2, 0, 0x80_0000, 1, 0x7F00_0030_0000)
    searched.clear()
    run(vcpu)
    assert searched == [(DATA_GPA >> c.PAGE_SHIFT) + 2]
    assert vcpu.last_used_slot_gen == g.vm.active(0).generation != old_gen


# --- stage-2 zaps ----------------------------------------------------------------------------


def _mapped_guest(host: Host | None = None) -> tuple[Guest, Vcpu]:
    g = Guest(host)
    g.load(CODE_GPA, [f"load {DATA_GPA:#x}", f"load {DATA_GPA + PAGE:#x}", "halt"])
    vcpu = g.vcpu()
    run(vcpu)
    assert len(g.vm.stage2[0].pages) == 3
    return g, vcpu


@pytest.mark.parametrize("change", ["DELETE", "MOVE"])
def test_delete_and_move_zap_stage2(change: str) -> None:
    g, _ = _mapped_guest()
    g.events.clear()
    if change == "DELETE":
        g.delete(DATA_SLOT)
    else:
        g.slot(DATA_SLOT, 0, 0x40_0000, DATA_PAGES, DATA_UADDR)
    # kvm_mmu_zap_all_fast(): one zap per address space (x86-tdp has two).
    zaps = [z for z in g.of(Zap) if isinstance(z, Zap) and z.as_id == 0]
    assert len(zaps) == 1
    assert zaps[0].sptes == 3
    assert zaps[0].zap_all
    assert not g.vm.stage2[0].pages


@pytest.mark.parametrize("change", ["CREATE", "FLAGS_ONLY"])
def test_create_and_flags_only_do_not_zap(change: str) -> None:
    g, _ = _mapped_guest()
    g.events.clear()
    if change == "CREATE":
        g.slot(2, 0, 0x40_0000, 1, 0x7F00_0030_0000)
    else:
        g.slot(DATA_SLOT, c.KVM_MEM_LOG_DIRTY_PAGES, DATA_GPA, DATA_PAGES, DATA_UADDR)
    assert not g.of(Zap)
    assert len(g.vm.stage2[0].pages) == 3


def test_without_the_zap_all_quirk_delete_zaps_only_the_slot() -> None:
    g, _ = _mapped_guest(Host(slot_zap_all=False))
    g.events.clear()
    g.delete(DATA_SLOT)
    zaps = g.of(Zap)
    assert len(zaps) == 1
    assert isinstance(zaps[0], Zap)
    assert not zaps[0].zap_all
    assert zaps[0].start_gfn == DATA_GPA >> c.PAGE_SHIFT
    assert zaps[0].end_gfn == (DATA_GPA >> c.PAGE_SHIFT) + DATA_PAGES
    assert zaps[0].sptes == 2
    assert set(g.vm.stage2[0].pages) == {CODE_GPA >> c.PAGE_SHIFT}


# --- SRCU and guest mode ---------------------------------------------------------------------


def _observe(gen: Run, vcpu: Vcpu) -> Iterator[tuple[str, bool]]:
    """(state, holds SRCU) at every yield of KVM_RUN, until it returns."""
    holders = vcpu.vm.srcu.holders
    while True:
        try:
            next(gen)
        except StopIteration:
            return
        yield vcpu.state, vcpu.name in holders


def test_srcu_is_held_while_handling_faults_and_never_in_guest_mode() -> None:
    g = Guest()
    g.poke(DATA_GPA, 5)
    g.load(
        CODE_GPA,
        [
            f"load {DATA_GPA:#x}",
            f"inc {DATA_GPA + PAGE:#x}",
            f"load {HOLE:#x}",
            f"store {HOLE:#x}",
            "setc 3",
            "top:",
            "nop",
            "loop top",
            "halt",
        ],
    )
    vcpu = g.vcpu()
    seen: list[tuple[str, bool]] = []
    for _ in range(4):  # MMIO read, MMIO write, HLT, and one more
        seen += _observe(vcpu.kvm_run(), vcpu)
        assert not g.vm.srcu.holders
    assert ("fault", True) in seen
    assert ("guest", False) in seen
    assert ("guest", True) not in seen
    assert g.exits()[-2].reason == "KVM_EXIT_HLT"


# --- torn read-modify-write ------------------------------------------------------------------


def test_inc_across_a_deleted_data_slot_tears_into_a_read_and_a_write_exit() -> None:
    g = Guest()
    g.poke(DATA_GPA, 41)
    g.load(CODE_GPA, [f"inc {DATA_GPA:#x}", "halt"])
    g.delete(DATA_SLOT)
    vcpu = g.vcpu()

    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_MMIO
    assert (exit.phys_addr, exit.len, exit.is_write) == (DATA_GPA, 8, False)
    vcpu.mmio_data = 41  # what the VMM's old view of RAM says
    exit = run(vcpu)
    assert exit.reason == c.KVM_EXIT_MMIO
    assert (exit.phys_addr, exit.len, exit.is_write, exit.data) == (DATA_GPA, 8, True, 42)
    assert run(vcpu).reason == c.KVM_EXIT_HLT
    # RAM never saw the increment: the emulator handed both halves to userspace.
    assert g.vm.memory[DATA_UADDR] == 41


def test_inc_whose_slot_returns_between_read_and_write_lands_in_ram() -> None:
    g = Guest(data_flags=c.KVM_MEM_LOG_DIRTY_PAGES)
    g.poke(DATA_GPA, 41)
    g.load(CODE_GPA, [f"inc {DATA_GPA:#x}", "halt"])
    g.delete(DATA_SLOT)
    vcpu = g.vcpu()
    assert run(vcpu).reason == c.KVM_EXIT_MMIO
    g.slot(DATA_SLOT, c.KVM_MEM_LOG_DIRTY_PAGES, DATA_GPA, DATA_PAGES, DATA_UADDR)
    vcpu.mmio_data = 41
    assert run(vcpu).reason == c.KVM_EXIT_HLT
    assert g.peek(DATA_GPA) == 42
    assert g.vm.get_dirty_log(DATA_SLOT) == [0]

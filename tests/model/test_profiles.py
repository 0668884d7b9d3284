"""Host profiles: what an INVALID or missing slot means for each access kind on each kernel
(engine/model/profiles.py cites the kernel function behind every row)."""

from __future__ import annotations

import pytest

from engine import open_vm
from engine.events import Exit, UdInjected
from engine.model import constants as c
from engine.model.host import Host
from engine.model.region import make_region
from engine.model.srcu import SrcuWouldBlock
from engine.model.vcpu import Run
from engine.model.vm import SYNCHRONIZE
from tests.model.test_fault_path import (
    CODE_GPA,
    CODE_PAGES,
    CODE_SLOT,
    CODE_UADDR,
    DATA_GPA,
    DATA_PAGES,
    DATA_SLOT,
    DATA_UADDR,
    HOLE,
    PAGE,
    Guest,
    steps,
)


def _invalidate(g: Guest, gen: Run, slot: int, gpa: int, pages: int, uaddr: int) -> None:
    """Run a MOVE of ``slot`` up to its first grace period: the slot is INVALID and zapped.
    An emulated guest (x86-pvm) holds kvm->srcu: the vCPU runs until the grace period ends."""
    change = g.vm.ioctl_prepare(make_region(slot, 0, gpa + 0x100_0000, pages * PAGE, uaddr))
    assert change is not None
    update = g.vm.commit(change)
    for step in update:
        if step is SYNCHRONIZE:
            for _ in range(5000):
                try:
                    g.vm.srcu.synchronize_now()
                    break
                except SrcuWouldBlock:
                    next(gen)
            break
    # Past the grace period: the zap runs on the next step.
    next(update)
    assert g.vm.active(0).by_id[slot].invalid


@pytest.mark.parametrize(
    ("profile", "outcome", "exit"),
    [
        ("x86-tdp", "retry", None),  # kvm_mmu_faultin_pfn(): RET_PF_RETRY
        ("x86-pvm", "mmio", "KVM_EXIT_MMIO"),  # emulated: __gfn_to_hva_many() says no slot
        ("arm64", "mmio", "KVM_EXIT_MMIO"),  # kvm_handle_guest_abort() -> io_mem_abort()
    ],
)
def test_a_data_access_to_an_invalid_slot(profile: str, outcome: str, exit: str | None) -> None:
    g = Guest(Host(profile=profile))
    g.load(CODE_GPA, ["top:", f"load {DATA_GPA:#x}", "jmp top"])
    vcpu = g.vcpu()
    gen = vcpu.kvm_run()
    assert steps(gen, 10) is None
    _invalidate(g, gen, DATA_SLOT, DATA_GPA, DATA_PAGES, DATA_UADDR)
    g.events.clear()
    result = steps(gen, 40)
    fault = next(f for f in g.faults() if f.gpa == DATA_GPA)
    assert fault.outcome == outcome
    assert (None if result is None else result.name) == exit


@pytest.mark.parametrize(
    ("profile", "outcome"),
    [
        ("x86-tdp", "retry"),
        ("x86-pvm", "emulation_failure"),  # handle_emulation_failure(): CPL 0, L1
        ("arm64", "pabt_injected"),  # kvm_inject_pabt()
    ],
)
def test_an_instruction_fetch_from_an_invalid_slot(profile: str, outcome: str) -> None:
    g = Guest(Host(profile=profile))
    g.load(CODE_GPA, ["top:", "nop", "jmp top"])
    vcpu = g.vcpu()
    gen = vcpu.kvm_run()
    assert steps(gen, 10) is None
    _invalidate(g, gen, CODE_SLOT, CODE_GPA, CODE_PAGES, CODE_UADDR)
    g.events.clear()
    steps(gen, 40)
    fetch = next(f for f in g.faults() if f.access == "fetch")
    assert fetch.outcome == outcome
    if outcome == "pabt_injected":
        (ud,) = [e for e in g.events if isinstance(e, UdInjected)]
        assert ud.vector == "PABT"


@pytest.mark.parametrize(
    ("profile", "exit"),
    [
        # VMX hands the emulator no instruction bytes: it fetches them through the INVALID
        # code slot and fails (x86_emulate_instruction() -> handle_emulation_failure()).
        ("x86-tdp", "KVM_EXIT_INTERNAL_ERROR"),
        # io_mem_abort() decodes the access from the syndrome: no fetch, a plain MMIO exit.
        ("arm64", "KVM_EXIT_MMIO"),
    ],
)
def test_mmio_emulation_fetches_its_instruction_on_x86_only(profile: str, exit: str) -> None:
    g = Guest(Host(profile=profile))
    g.load(CODE_GPA, ["top:", f"load {HOLE:#x}", "jmp top"])
    vcpu = g.vcpu()
    gen = vcpu.kvm_run()
    # Map the code page, then make the code slot INVALID with the vCPU about to load.
    assert steps(gen, 3) is None
    g.vm.stage2[0].pages[CODE_GPA >> c.PAGE_SHIFT] = CODE_UADDR - CODE_GPA
    _invalidate(g, gen, CODE_SLOT, CODE_GPA, CODE_PAGES, CODE_UADDR)
    g.vm.stage2[0].install(CODE_GPA >> c.PAGE_SHIFT, CODE_UADDR, False)  # a stale TLB entry
    g.events.clear()
    result = steps(gen, 40)
    assert result is not None
    assert result.name == exit
    assert [e.reason for e in g.events if isinstance(e, Exit)] == [exit]


def test_profiles_set_the_address_spaces_and_reject_unknown_names() -> None:
    assert Host().profile == "x86-tdp"
    assert Host().nr_address_spaces == 2
    assert Host(profile="x86-pvm").nr_address_spaces == 1
    assert Host(profile="arm64").nr_address_spaces == 1
    assert Host(profile="x86-pvm", nr_address_spaces=2).nr_address_spaces == 2
    with pytest.raises(ValueError, match="unknown host profile 'ppc'"):
        Host(profile="ppc")
    vm = open_vm("model", profile="arm64")
    assert vm.host.profile == "arm64"


UNMODELLED = [
    c.KVM_CAP_DIRTY_LOG_RING,
    c.KVM_CAP_GUEST_MEMFD,
    c.KVM_CAP_USER_MEMORY2,
    c.KVM_CAP_EXIT_ON_EMULATION_FAILURE,
    c.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
    c.KVM_CAP_MEMORY_FAULT_INFO,
]


@pytest.mark.parametrize("profile", ["x86-tdp", "x86-pvm", "arm64"])
def test_check_extension_answers_only_for_what_the_model_implements(profile: str) -> None:
    vm = open_vm("model", profile=profile)
    for cap in UNMODELLED:
        assert vm.check_extension(cap) == 0, cap
    assert vm.check_extension(c.KVM_CAP_READONLY_MEM) == 1
    assert vm.check_extension(c.KVM_CAP_IMMEDIATE_EXIT) == 1
    spaces = vm.check_extension(c.KVM_CAP_MULTI_ADDRESS_SPACE)
    assert spaces == (2 if profile == "x86-tdp" else 0)
    assert vm.check_extension(c.KVM_CAP_VM_TYPES) == (0 if profile == "arm64" else 1)

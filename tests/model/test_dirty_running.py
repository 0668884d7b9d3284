"""Dirty logging reaches vCPUs that are already inside KVM_RUN (kvm_mmu_slot_apply_flags()
write-protects the slot and flushes remote TLBs; a zap kicks every vCPU out of its old SPTEs).
A vCPU suspended in the middle of its guest loop must fault on its next write."""

from __future__ import annotations

from engine.events import Fault
from engine.model import constants as c
from tests.model.test_fault_path import (
    DATA_GPA,
    DATA_PAGES,
    DATA_SLOT,
    DATA_UADDR,
    PAGE,
    Guest,
    steps,
)

LOG = c.KVM_MEM_LOG_DIRTY_PAGES


def _writer() -> tuple[Guest, object]:
    g = Guest()
    g.load(0x1000, ["mov 5", "top:", f"store {DATA_GPA + 8:#x}", "jmp top"])
    vcpu = g.vcpu()
    gen = vcpu.kvm_run()
    assert steps(gen, 20) is None  # mapped writable, in the guest loop
    assert vcpu.state == "guest"
    return g, gen


def test_enabling_logging_write_protects_a_vcpu_already_in_kvm_run() -> None:
    g, gen = _writer()
    g.events.clear()
    # FLAGS_ONLY, LOG on: every page of the slot write-protected while the vCPU runs.
    g.slot(DATA_SLOT, LOG, DATA_GPA, DATA_PAGES, DATA_UADDR)
    assert steps(gen, 20) is None  # type: ignore[arg-type]
    dirty = [f for f in g.faults() if f.outcome == "dirty"]
    assert [f.gpa for f in dirty] == [DATA_GPA + 8]
    assert g.vm.get_dirty_log(DATA_SLOT) == [0]


def test_harvest_write_protects_a_vcpu_already_in_kvm_run() -> None:
    g = Guest(data_flags=LOG)
    g.load(0x1000, ["mov 5", "top:", f"store {DATA_GPA + PAGE:#x}", "jmp top"])
    vcpu = g.vcpu()
    gen = vcpu.kvm_run()
    for _ in range(3):
        assert steps(gen, 20) is None
        assert vcpu.state == "guest"
        # Each harvest re-protects the page; the running vCPU dirties it again.
        assert g.vm.get_dirty_log(DATA_SLOT) == [1]
    assert len([e for e in g.events if isinstance(e, Fault) and e.outcome == "dirty"]) == 3

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.vmm.strategies.base import Strategy, delete_then_create

if TYPE_CHECKING:
    from engine.vmm.vmm import Transaction, Vmm


class MmioLen0(Strategy):
    name = "mmio-len0"
    summary = (
        "Sean's patch: a fetch with no memslot exits as KVM_EXIT_MMIO len 0; the VMM re-enters"
    )
    kernel_change = 'KVM_EXIT_MMIO with len 0 on a fetch from a GPA without memslot ("KVM: x86: Exit to userspace with zero-length MMIO read on MMIO fetch", 2022, never merged)'
    host_overrides = {"fetch_noslot": "mmio_len0"}

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        await delete_then_create(vmm, txn)


class MmioLen0Gpa(MmioLen0):
    name = "mmio-len0-gpa"
    summary = "mmio-len0, but the VMM stops a guest whose fetch GPA no in-flight update explains"

    def on_fetch_len0(self, vmm: Vmm, gpa: int) -> str:
        if vmm.gpa_in_flight(gpa):
            return "reenter"
        return f"instruction fetch from GPA {gpa:#x}, which no memory update in flight covers: the guest jumped into the weeds"

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.vmm.strategies.base import Strategy

if TYPE_CHECKING:
    from engine.vmm.vmm import Transaction, Vmm


class ReplaceAll(Strategy):
    name = "replace-all"
    summary = "KVM_SET_ALL_USER_MEMORY_REGIONS: the whole new layout replaces the old one"
    atomic = True
    kernel_change = "KVM_SET_ALL_USER_MEMORY_REGIONS (proposed by Sean Christopherson, 28 Sep 2022, never merged)"

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        await vmm.ioctl_all(txn.as_id, vmm.layout_regions(txn.as_id))

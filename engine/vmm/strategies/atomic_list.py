from __future__ import annotations

from typing import TYPE_CHECKING

from engine.vmm.strategies.base import Strategy

if TYPE_CHECKING:
    from engine.vmm.vmm import Transaction, Vmm


class AtomicList(Strategy):
    name = "atomic-list"
    summary = "the 2022 RFC's KVM_SET_USER_MEMORY_REGION_LIST: one batch, INVALID copies first"
    atomic = True
    kernel_change = "KVM_SET_USER_MEMORY_REGION_LIST ([RFC PATCH 0/9] kvm: implement atomic memslot updates, never merged)"

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        await vmm.ioctl_list([op.region for op in txn.ops])

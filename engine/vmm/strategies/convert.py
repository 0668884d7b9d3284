from __future__ import annotations

from typing import TYPE_CHECKING

from engine.vmm.strategies.base import Strategy, delete_then_create

if TYPE_CHECKING:
    from engine.vmm.vmm import Transaction, Vmm


class Convert(Strategy):
    name = "convert"
    summary = "1->N and N->1 conversions in one ioctl; anything else falls back to DELETE+CREATE"
    atomic = True
    kernel_change = "a 1->N / N->1 memslot conversion ioctl (suggested by Sean Christopherson, 28 Sep 2022, never merged)"

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        dels = [op for op in txn.ops if op.region.memory_size == 0]
        adds = [op for op in txn.ops if op.region.memory_size != 0]
        if dels and adds and (len(dels) == 1 or len(adds) == 1) and await vmm.ioctl_convert(
            txn.as_id, [op.slot_id for op in dels], [op.region for op in adds]
        ):
            return
        vmm.note(txn, "convert: not a 1->N or N->1 conversion, falling back to DELETE+CREATE")
        await delete_then_create(vmm, txn)

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.vmm.strategies.base import Strategy, delete_then_create

if TYPE_CHECKING:
    from engine.model.region import MemoryRegion
    from engine.vmm.vmm import Transaction, Vmm


class Convert(Strategy):
    name = "convert"
    summary = "1->N and N->1 conversions in one ioctl; anything else falls back to DELETE+CREATE"
    atomic = True
    kernel_change = "a 1->N / N->1 memslot conversion ioctl (suggested by Sean Christopherson, 28 Sep 2022, never merged)"

    def _conversion(
        self, vmm: Vmm, txn: Transaction
    ) -> tuple[list[int], list[MemoryRegion]] | None:
        """The 1->N or N->1 conversion the transaction is, if the kernel would accept it."""
        dels = [op.slot_id for op in txn.ops if op.region.memory_size == 0]
        adds = [op.region for op in txn.ops if op.region.memory_size != 0]
        if not dels or not adds or (len(dels) > 1 and len(adds) > 1):
            return None
        batch = vmm.kernel.batch
        if batch is None or not batch.converts(txn.as_id, dels, adds):
            return None
        return dels, adds

    def is_atomic(self, vmm: Vmm, txn: Transaction) -> bool:
        return self._conversion(vmm, txn) is not None

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        conversion = self._conversion(vmm, txn)
        if conversion is not None:
            await vmm.ioctl_convert(txn.as_id, *conversion)
            return
        vmm.note("convert: not a 1->N or N->1 conversion, falling back to DELETE+CREATE")
        await delete_then_create(vmm, txn)

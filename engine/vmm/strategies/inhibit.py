from __future__ import annotations

from typing import TYPE_CHECKING

from engine.vmm.strategies.base import Strategy, delete_then_create

if TYPE_CHECKING:
    from engine.vmm.vmm import Transaction, Vmm


class Inhibit(Strategy):
    name = "inhibit"
    summary = "QEMU 8.0's accel blocker: kick vCPUs out of KVM_RUN while adds overlap deletes"

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        # f39b7d2b96e3 only pays for quiescing when the transaction could open a hole.
        if not txn.diff.overlapping:
            await delete_then_create(vmm, txn)
            return
        await vmm.inhibit_begin()
        try:
            await delete_then_create(vmm, txn)
        finally:
            vmm.inhibit_end()

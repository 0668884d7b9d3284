from __future__ import annotations

from typing import TYPE_CHECKING

from engine.vmm.strategies.base import Strategy, delete_then_create

if TYPE_CHECKING:
    from engine.vmm.vmm import Transaction, Vmm


class Legacy(Strategy):
    name = "legacy"
    summary = "QEMU <= 7.2: DELETE then CREATE, one ioctl each, while vCPUs run"

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        await delete_then_create(vmm, txn)

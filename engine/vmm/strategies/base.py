"""What an update strategy is: one way to turn a memory transaction into memslot ioctls."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from engine.vmm.vmm import Transaction, Vmm


class Strategy:
    name: ClassVar[str]
    summary: ClassVar[str]
    atomic: ClassVar[bool] = False
    """No vCPU can find a GPA unmapped that is mapped before and after the transaction."""
    kernel_change: ClassVar[str | None] = None
    """The kernel change the strategy needs, for backends that do not have it."""
    host_overrides: ClassVar[dict[str, object]] = {}
    """Host options the strategy's kernel differs in (e.g. how a no-slot fetch exits)."""

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        raise NotImplementedError

    def is_atomic(self, vmm: Vmm, txn: Transaction) -> bool:
        """Whether this transaction will be applied atomically; a strategy that falls back
        for some transactions says so here, before it starts."""
        return self.atomic

    def on_fetch_len0(self, vmm: Vmm, gpa: int) -> str:
        """A KVM_EXIT_MMIO with len 0 (only kernels with the 2022 patch produce it):
        "reenter" to retry the fetch, or a reason to stop the VM."""
        return "reenter"


async def delete_then_create(vmm: Vmm, txn: Transaction) -> None:
    """What QEMU's KVM listener did up to 7.2: region_del issues every DELETE, region_add every
    CREATE, each its own ioctl, while vCPUs keep running."""
    first = True
    for op in txn.ops:
        if not first:
            await vmm.between_ioctls(txn)
        first = False
        await vmm.ioctl(op.region)
        if op.region.memory_size == 0:
            await vmm.after_delete(txn, op)

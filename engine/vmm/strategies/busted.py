from __future__ import annotations

from typing import TYPE_CHECKING

from engine.vmm.strategies.base import Strategy

if TYPE_CHECKING:
    from engine.vmm.vmm import Transaction, Vmm


class Busted(Strategy):
    """rcutorture has a `busted` flavour whose grace periods end at once, so its checker can be
    seen to fail. This is the same for memslots: the batch of atomic-list, swapped without
    synchronize_srcu_expedited(): the session sets VM.busted for it."""

    name = "busted"
    summary = "atomic-list whose swaps skip synchronize_srcu: exists to prove the checker fails"
    atomic = True
    kernel_change = (
        "a kernel whose memslot swaps skip synchronize_srcu_expedited() (deliberately broken)"
    )

    async def apply(self, vmm: Vmm, txn: Transaction) -> None:
        await vmm.ioctl_list([op.region for op in txn.ops])

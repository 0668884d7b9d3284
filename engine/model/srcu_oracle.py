"""The use-after-free oracle for kvm->memslots readers.

KVM never allocates memslot sets: each address space has two (kvm->__memslots[as_id][0/1]),
and every update edits the inactive one in place (kvm_replace_memslot()) and then swaps
(kvm_swap_active_memslots()). The set a reader dereferenced before a swap is therefore the very
set the update edits right after the swap, and the next update edits again before its own swap.
Only synchronize_srcu_expedited() between the swap and those edits keeps them from a reader:
so any edit of a set that some SRCU reader still holds is a use-after-free, whatever the number
of grace periods since (rcutorture's pipe count waits for two; this structure frees at one).
"""

from __future__ import annotations

from engine.events import EventBus, ReaderUseAfterFree
from engine.model.memslots import MemslotSet


class ReaderOracle:
    """Which memslot set each SRCU reader holds, checked at every edit of a set."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        # reader -> (as_id, version of the set it dereferenced, SRCU index it holds)
        self.held: dict[str, tuple[int, int, int]] = {}
        self.sync_count = 0
        self._retired: dict[tuple[int, int], int] = {}

    def dereference(self, reader: str, as_id: int, slots: MemslotSet, idx: int) -> None:
        self.held[reader] = (as_id, slots.version, idx)

    def release(self, reader: str) -> None:
        self.held.pop(reader, None)

    def retire(self, as_id: int, version: int) -> None:
        self._retired[(as_id, version)] = self.sync_count
        live = {(a, v) for a, v, _ in self.held.values()}
        for key in [k for k, at in self._retired.items() if self.sync_count - at > 4]:
            if key not in live:
                del self._retired[key]

    def editing(self, as_id: int, slots: MemslotSet, update: str) -> None:
        """The update is about to edit ``slots`` in place: every reader still holding it reads
        memory the writer owns."""
        for reader, (a, version, idx) in self.held.items():
            if (a, version) != (as_id, slots.version):
                continue
            age = self.sync_count - self._retired.get((a, version), self.sync_count)
            self.bus.emit(
                ReaderUseAfterFree(
                    reader=reader, as_id=a, version=version, age=age, idx=idx, update=update
                )
            )

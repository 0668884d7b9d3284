"""The stage-2 mapping cache: what the hardware walks without asking KVM.

``pages`` maps a gfn to its SPTE: the offset from the guest physical address to the host
address backing it (``hva = spte + gpa``), so a hit translates with one addition rather than a
mask and an addition. ``writable`` holds
the gfns whose SPTE allows writes, and ``mmio`` remembers gfns known to have no memslot,
stamped with the memslot generation they were learnt under, as x86 MMIO SPTEs are. A guest
access that finds its gfn in ``pages`` (and, for a write, in ``writable``) never enters KVM and
takes no SRCU lock: the hit is one dict lookup, which is what hardware makes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.model.constants import PAGE_SHIFT

if TYPE_CHECKING:
    from engine.model.cycles import Walks


class Stage2:
    __slots__ = ("mmio", "mmu_invalidate_seq", "pages", "version", "walks", "writable")

    def __init__(self) -> None:
        self.pages: dict[int, int] = {}
        self.writable: set[int] = set()
        self.mmio: dict[int, int] = {}
        # Bumped by every zap; a fault that started before a zap must not install its SPTE
        # (mmu_invalidate_retry()).
        self.mmu_invalidate_seq = 0
        # Bumped by every change to pages or writable: what a vCPU derived from them (a guest
        # loop's host addresses, engine/model/cycles.py) holds while it is unchanged.
        self.version = 0
        # Guest loops found under these mappings (engine/model/cycles.py), by start rip, for
        # every vCPU and KVM_RUN: each is checked against version and its code before reuse.
        self.walks: Walks = {}

    def install(self, gfn: int, hva: int, writable: bool) -> None:
        """Map gfn to the page at host address hva."""
        self.version += 1
        self.pages[gfn] = hva - (gfn << PAGE_SHIFT)
        if writable:
            self.writable.add(gfn)
        else:
            self.writable.discard(gfn)

    def zap_all(self) -> int:
        """kvm_mmu_zap_all_fast(): every root invalidated."""
        count = len(self.pages) + len(self.mmio)
        self.version += 1
        self.pages.clear()
        self.writable.clear()
        self.mmio.clear()
        self.mmu_invalidate_seq += 1
        return count

    def zap_range(self, start_gfn: int, end_gfn: int) -> int:
        """kvm_mmu_zap_memslot_leafs(): only the slot's gfns."""
        count = 0
        self.version += 1
        for table in (self.pages, self.mmio):
            if end_gfn - start_gfn < len(table):
                doomed = [g for g in range(start_gfn, end_gfn) if g in table]
            else:
                doomed = [g for g in table if start_gfn <= g < end_gfn]
            for gfn in doomed:
                del table[gfn]
                self.writable.discard(gfn)
            count += len(doomed)
        self.mmu_invalidate_seq += 1
        return count

    def write_protect(self, start_gfn: int, end_gfn: int) -> None:
        """Clear the writable bit so the next write faults (dirty logging).

        Always in place: a vCPU inside KVM_RUN walks these very containers, as hardware walks
        the live page tables, and kvm_mmu_slot_remove_write_access() plus the TLB flush that
        follows it reach a vCPU already running in the guest."""
        self.version += 1
        if end_gfn - start_gfn < len(self.writable):
            self.writable.difference_update(range(start_gfn, end_gfn))
        else:
            self.writable.difference_update([g for g in self.writable if start_gfn <= g < end_gfn])

    def write_protect_pages(self, gfns: list[int]) -> None:
        self.version += 1
        self.writable.difference_update(gfns)

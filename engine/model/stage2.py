"""The stage-2 mapping cache: what the hardware walks without asking KVM.

``pages`` maps a gfn to the host page backing it (an SPTE); ``mmio`` remembers gfns known to
have no memslot, stamped with the memslot generation they were learnt under, as x86 MMIO SPTEs
are. A guest access that finds a writable (or, for reads, any) entry in ``pages`` never enters
KVM and takes no SRCU lock.
"""

from __future__ import annotations


class Spte:
    __slots__ = ("hva", "slot_id", "writable")

    def __init__(self, hva: int, writable: bool, slot_id: int) -> None:
        self.hva = hva
        self.writable = writable
        self.slot_id = slot_id


class Stage2:
    __slots__ = ("mmio", "mmu_invalidate_seq", "pages")

    def __init__(self) -> None:
        self.pages: dict[int, Spte] = {}
        self.mmio: dict[int, int] = {}
        # Bumped by every zap; a fault that started before a zap must not install its SPTE
        # (mmu_invalidate_retry()).
        self.mmu_invalidate_seq = 0

    def zap_all(self) -> int:
        """kvm_mmu_zap_all_fast(): every root invalidated."""
        count = len(self.pages) + len(self.mmio)
        self.pages.clear()
        self.mmio.clear()
        self.mmu_invalidate_seq += 1
        return count

    def zap_range(self, start_gfn: int, end_gfn: int) -> int:
        """kvm_mmu_zap_memslot_leafs(): only the slot's gfns."""
        count = 0
        for table in (self.pages, self.mmio):
            if end_gfn - start_gfn < len(table):
                doomed = [g for g in range(start_gfn, end_gfn) if g in table]
            else:
                doomed = [g for g in table if start_gfn <= g < end_gfn]
            for gfn in doomed:
                del table[gfn]
            count += len(doomed)
        self.mmu_invalidate_seq += 1
        return count

    def write_protect(self, start_gfn: int, end_gfn: int) -> None:
        """Clear the writable bit so the next write faults (dirty logging)."""
        pages = self.pages
        if end_gfn - start_gfn < len(pages):
            for gfn in range(start_gfn, end_gfn):
                spte = pages.get(gfn)
                if spte is not None:
                    spte.writable = False
        else:
            for gfn, spte in pages.items():
                if start_gfn <= gfn < end_gfn:
                    spte.writable = False

    def write_protect_pages(self, gfns: list[int]) -> None:
        pages = self.pages
        for gfn in gfns:
            spte = pages.get(gfn)
            if spte is not None:
                spte.writable = False

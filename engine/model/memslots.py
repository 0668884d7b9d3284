"""struct kvm_memory_slot and struct kvm_memslots (one memslot set).

The kernel keeps a set's slots in an rb-tree by base_gfn plus a hash by id, and never copies a
whole set on update: kvm_replace_memslot() edits the inactive set in place. MemslotSet does the
same with a two-level sorted index (leaves of at most LEAF_MAX slots under a root of leaf
minima), so a lookup is two C-level bisections and an update touches one leaf and, rarely, the
root: O(log n) comparisons and O(LEAF_MAX) element moves, whatever the number of slots.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from engine.model.constants import KVM_MEMSLOT_INVALID, PAGE_SHIFT

LEAF_MAX = 128


class DirtyBitmap:
    """The dirty log of one slot: page offsets written by the guest since the last harvest.

    Sparse on purpose: a slot can be 2^31 pages. Shared between the old and the new slot when
    a MOVE or a FLAGS_ONLY change keeps logging on, as kvm_prepare_memory_region() reuses it.
    """

    __slots__ = ("pages",)

    def __init__(self) -> None:
        self.pages: set[int] = set()

    def harvest(self) -> list[int]:
        """KVM_GET_DIRTY_LOG without manual protect: read and clear."""
        pages = sorted(self.pages)
        self.pages.clear()
        return pages


class Memslot:
    """One memslot. Treated as immutable once published, as the kernel treats its slots:
    a change builds a new Memslot and swaps it in."""

    __slots__ = (
        "as_id",
        "base_gfn",
        "dirty_bitmap",
        "flags",
        "id",
        "npages",
        "userspace_addr",
    )

    def __init__(
        self,
        as_id: int,
        id: int,
        base_gfn: int,
        npages: int,
        userspace_addr: int,
        flags: int,
        dirty_bitmap: DirtyBitmap | None = None,
    ) -> None:
        self.as_id = as_id
        self.id = id
        self.base_gfn = base_gfn
        self.npages = npages
        self.userspace_addr = userspace_addr
        self.flags = flags
        self.dirty_bitmap = dirty_bitmap

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    @property
    def invalid(self) -> bool:
        return bool(self.flags & KVM_MEMSLOT_INVALID)

    def invalid_copy(self) -> Memslot:
        """The copy published during the first swap of DELETE and MOVE."""
        return Memslot(
            self.as_id,
            self.id,
            self.base_gfn,
            self.npages,
            self.userspace_addr,
            self.flags | KVM_MEMSLOT_INVALID,
            self.dirty_bitmap,
        )

    def gfn_to_hva(self, gfn: int) -> int:
        return self.userspace_addr + ((gfn - self.base_gfn) << PAGE_SHIFT)

    def __repr__(self) -> str:
        return (
            f"Memslot(as_id={self.as_id}, id={self.id}, gfn=[{self.base_gfn:#x},{self.end_gfn:#x}), "
            f"hva={self.userspace_addr:#x}, flags={self.flags:#x})"
        )


class MemslotSet:
    """One of the two memslot sets of an address space (struct kvm_memslots).

    ``version`` names the contents readers can observe: it changes at every publication, so a
    reader that dereferenced a set can later tell whether what it holds is still what was
    published (the checker's use-after-free test).
    """

    __slots__ = ("_keys", "_leaves", "_mins", "by_id", "generation", "node_idx", "version")

    def __init__(self, as_id: int, node_idx: int) -> None:
        self.generation = as_id
        self.node_idx = node_idx
        self.version = 0
        self.by_id: dict[int, Memslot] = {}
        # _mins[i] is the smallest base_gfn of leaf i; _keys[i] mirrors the base_gfns of
        # _leaves[i] so bisection runs on plain ints.
        self._mins: list[int] = []
        self._keys: list[list[int]] = []
        self._leaves: list[list[Memslot]] = []

    def __len__(self) -> int:
        return len(self.by_id)

    def __iter__(self) -> Iterator[Memslot]:
        """Slots in gfn order."""
        for leaf in self._leaves:
            yield from leaf

    def lookup(self, gfn: int) -> Memslot | None:
        """search_memslots(): the slot covering gfn, or None."""
        mins = self._mins
        i = bisect_right(mins, gfn) - 1
        if i < 0:
            return None
        keys = self._keys[i]
        slot = self._leaves[i][bisect_right(keys, gfn) - 1]
        return slot if gfn < slot.base_gfn + slot.npages else None

    def first_overlap(self, base_gfn: int, npages: int, ignore_id: int) -> Memslot | None:
        """kvm_check_memslot_overlap(): a slot other than ignore_id intersecting the range.

        Slots in a set never overlap each other, so walking back from the last slot that
        starts below the end of the range meets at most the slot being moved before either
        a conflict or a slot that ends below the range.
        """
        end = base_gfn + npages
        for slot in self._walk_back_from(end - 1):
            if slot.base_gfn + slot.npages <= base_gfn:
                return None
            if slot.id != ignore_id:
                return slot
        return None

    def _walk_back_from(self, gfn: int) -> Iterator[Memslot]:
        i = bisect_right(self._mins, gfn) - 1
        if i < 0:
            return
        j = bisect_right(self._keys[i], gfn) - 1
        while i >= 0:
            leaf = self._leaves[i]
            while j >= 0:
                yield leaf[j]
                j -= 1
            i -= 1
            if i >= 0:
                j = len(self._leaves[i]) - 1

    def in_range(self, start_gfn: int, end_gfn: int) -> Iterator[Memslot]:
        """kvm_for_each_memslot_in_gfn_range(), in gfn order."""
        i = bisect_right(self._mins, start_gfn) - 1
        # Start at the slot that begins at or before start_gfn: it may reach into the range.
        j = max(bisect_right(self._keys[i], start_gfn) - 1, 0) if i >= 0 else 0
        i = max(i, 0)
        while i < len(self._leaves):
            leaf = self._leaves[i]
            while j < len(leaf):
                slot = leaf[j]
                if slot.base_gfn >= end_gfn:
                    return
                if slot.base_gfn + slot.npages > start_gfn:
                    yield slot
                j += 1
            i += 1
            j = 0

    # Mutation: only ever applied to the inactive set, as kvm_replace_memslot() does.

    def replace(self, old: Memslot | None, new: Memslot | None) -> None:
        if old is not None:
            self._remove(old)
        if new is not None:
            self._insert(new)

    def _insert(self, slot: Memslot) -> None:
        self.by_id[slot.id] = slot
        key = slot.base_gfn
        if not self._leaves:
            self._mins.append(key)
            self._keys.append([key])
            self._leaves.append([slot])
            return
        i = max(bisect_right(self._mins, key) - 1, 0)
        keys, leaf = self._keys[i], self._leaves[i]
        j = bisect_right(keys, key)
        keys.insert(j, key)
        leaf.insert(j, slot)
        self._mins[i] = keys[0]
        if len(leaf) > LEAF_MAX:
            half = len(leaf) // 2
            self._keys.insert(i + 1, keys[half:])
            self._leaves.insert(i + 1, leaf[half:])
            self._mins.insert(i + 1, keys[half])
            del keys[half:], leaf[half:]

    def _remove(self, slot: Memslot) -> None:
        del self.by_id[slot.id]
        key = slot.base_gfn
        i = bisect_right(self._mins, key) - 1
        keys, leaf = self._keys[i], self._leaves[i]
        j = bisect_left(keys, key)
        while leaf[j] is not slot:
            j += 1
        del keys[j], leaf[j]
        if not leaf:
            del self._mins[i], self._keys[i], self._leaves[i]
        else:
            self._mins[i] = keys[0]

    def check_invariants(self) -> None:
        """For tests: the index agrees with itself and no two slots overlap."""
        flat = list(self)
        assert len(flat) == len(self.by_id)
        for leaf, keys, lo in zip(self._leaves, self._keys, self._mins, strict=True):
            assert leaf, "empty leaf"
            assert keys == [s.base_gfn for s in leaf]
            assert lo == keys[0]
        for a, b in itertools.pairwise(flat):
            assert a.base_gfn + a.npages <= b.base_gfn, f"{a} overlaps {b}"
        for slot in flat:
            assert self.by_id[slot.id] is slot

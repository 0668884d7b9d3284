"""The ioctls the 2022 thread proposed and Linux never merged, as patches to the model.

- KVM_SET_USER_MEMORY_REGION_LIST (the RFC): a batch of v1 regions, validated in order against
  the batch so far, published with one swap for all INVALID copies and one for the result.
- KVM_SET_ALL_USER_MEMORY_REGIONS (Sean's wholesale replacement): the complete new layout of an
  address space; the difference from the active set becomes one batch.
- 1->N / N->1 conversion (Sean's narrower API): one slot becomes several adjacent ones, or the
  reverse, covering the same GPA and HVA range; no INVALID phase is needed because every gfn
  stays mapped to the same host page throughout.

Each returns the changes for VM.commit_batch(); validation raises OSError before anything moves.
"""

from __future__ import annotations

import errno
import itertools

from engine.model import constants as c
from engine.model.memslots import Memslot
from engine.model.region import MemoryRegion
from engine.model.vm import (
    CONVERT_IN,
    CONVERT_OUT,
    CREATE,
    DELETE,
    FLAGS_ONLY,
    MOVE,
    REPLACE,
    VM,
    Change,
    kvm_error,
)


def _merged_kind(old: Memslot | None, new: Memslot | None) -> str | None:
    if old is None:
        return None if new is None else CREATE
    if new is None:
        return DELETE
    if new.npages != old.npages or new.userspace_addr != old.userspace_addr:
        return REPLACE
    if new.base_gfn != old.base_gfn:
        return MOVE
    return FLAGS_ONLY if new.flags != old.flags else None


def prepare_list(vm: VM, regions: list[MemoryRegion]) -> list[Change]:
    """KVM_SET_USER_MEMORY_REGION_LIST: entries apply in order, as if issued one by one."""
    pending: dict[tuple[int, int], Memslot | None] = {}
    first_old: dict[tuple[int, int], Memslot | None] = {}
    for region in regions:
        change = vm.prepare(region, pending)
        if change is None:
            continue
        key = (change.as_id, change.id)
        first_old.setdefault(key, change.old)
        pending[key] = change.new
    changes = []
    for (as_id, id), new in pending.items():
        old = first_old[(as_id, id)]
        kind = _merged_kind(old, new)
        if kind is not None:
            changes.append(Change(kind, as_id, id, old, new))
    return changes


def prepare_all(vm: VM, as_id: int, regions: list[MemoryRegion]) -> list[Change]:
    """KVM_SET_ALL_USER_MEMORY_REGIONS for one address space."""
    ids = [r.id for r in regions]
    if len(set(ids)) != len(ids):
        raise kvm_error(errno.EINVAL, "a slot id appears twice in the new layout")
    if any(r.as_id != as_id or r.memory_size == 0 for r in regions):
        raise kvm_error(errno.EINVAL, "every entry must be a non-empty slot of the address space")
    wanted = {r.id: r for r in regions}
    batch: list[MemoryRegion] = []
    for slot in vm.active(as_id):
        keep = wanted.get(slot.id)
        same_backing = (
            keep is not None
            and keep.memory_size >> c.PAGE_SHIFT == slot.npages
            and keep.userspace_addr == slot.userspace_addr
            and not (keep.flags ^ slot.flags) & c.KVM_MEM_READONLY
        )
        if not same_backing:
            batch.append(MemoryRegion((as_id << 16) | slot.id, 0, 0, 0, 0))
    # Deletions first so new slots may take over the ranges they free.
    return prepare_list(vm, batch + list(regions))


def prepare_convert(
    vm: VM, as_id: int, old_ids: list[int], regions: list[MemoryRegion]
) -> list[Change]:
    """Replace the slots old_ids by regions, which must cover exactly the same GPA and HVA
    range, contiguously in both; one of the two sides must be a single slot."""
    if not old_ids or not regions or (len(old_ids) > 1 and len(regions) > 1):
        raise kvm_error(errno.EINVAL, "conversion must be 1->N or N->1")
    active = vm.active(as_id)
    olds = []
    for id in old_ids:
        slot = active.by_id.get(id)
        if slot is None:
            raise kvm_error(errno.EINVAL, f"slot {id} does not exist")
        olds.append(slot)
    olds.sort(key=lambda s: s.base_gfn)
    news = sorted(regions, key=lambda r: r.guest_phys_addr)
    if not _contiguous(
        [(s.base_gfn << c.PAGE_SHIFT, s.npages << c.PAGE_SHIFT, s.userspace_addr) for s in olds]
    ):
        raise kvm_error(errno.EINVAL, "the old slots are not contiguous in GPA and HVA")
    if not _contiguous([(r.guest_phys_addr, r.memory_size, r.userspace_addr) for r in news]):
        raise kvm_error(errno.EINVAL, "the new slots are not contiguous in GPA and HVA")
    start, hva = olds[0].base_gfn << c.PAGE_SHIFT, olds[0].userspace_addr
    end = olds[-1].end_gfn << c.PAGE_SHIFT
    if (news[0].guest_phys_addr, news[0].userspace_addr) != (start, hva) or (
        news[-1].guest_phys_addr + news[-1].memory_size != end
    ):
        raise kvm_error(errno.EINVAL, "the new slots do not cover the old range exactly")
    # READONLY may differ (Sean's list asked for exactly that): the conversion zaps the range
    # as it publishes, so no writable SPTE outlives a read-only slot.
    # Validate the new entries as a batch that first drops the old slots.
    pending: dict[tuple[int, int], Memslot | None] = {(as_id, s.id): None for s in olds}
    changes = [Change(CONVERT_OUT, as_id, s.id, s, None) for s in olds]
    for region in news:
        change = vm.prepare(region, pending)
        if change is None or change.new is None:
            raise kvm_error(errno.EINVAL, "conversion entries must create slots")
        pending[(as_id, change.id)] = change.new
        changes.append(Change(CONVERT_IN, as_id, change.id, None, change.new))
    return changes


def _contiguous(spans: list[tuple[int, int, int]]) -> bool:
    return all(
        a_gpa + a_size == b_gpa and a_hva + a_size == b_hva
        for (a_gpa, a_size, a_hva), (b_gpa, _, b_hva) in itertools.pairwise(spans)
    )

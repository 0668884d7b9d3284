"""struct kvm: address spaces, the two memslot sets of each, swaps, and the memslot ioctls.

A memslot update is split the way kvm_set_memory_region() splits it: ``prepare`` validates in
the kernel's order and decides the change (raising OSError exactly where the ioctl fails, before
anything is touched), and ``commit`` performs it as a generator. The generator yields an int for
virtual time spent and SYNCHRONIZE where kvm_swap_active_memslots() calls
synchronize_srcu_expedited(); whoever drives it decides what waiting means. The engine waits for
its grace-period worker; ``set_user_memory_region`` below, for callers with no clock, completes
each grace period at once.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Callable, Generator, Iterable
from typing import Final

from engine.events import (
    DirtyLog,
    EventBus,
    IoctlEnter,
    IoctlExit,
    MemslotChange,
    SwapDone,
    SwapPublish,
    Zap,
)
from engine.model import constants as c
from engine.model.host import Host
from engine.model.memslots import DirtyBitmap, Memslot, MemslotSet
from engine.model.region import MemoryRegion, check_slot_arg, make_region
from engine.model.srcu import Srcu, SrcuWouldBlock
from engine.model.srcu_oracle import ReaderOracle
from engine.model.stage2 import Stage2
from engine.model.timing import Timing


class _Synchronize:
    def __repr__(self) -> str:
        return "SYNCHRONIZE"


SYNCHRONIZE: Final = _Synchronize()
"""Yielded by an update where the kernel calls synchronize_srcu_expedited()."""

Step = int | _Synchronize
Steps = Generator[Step, None, None]

CREATE, DELETE, MOVE, FLAGS_ONLY = "CREATE", "DELETE", "MOVE", "FLAGS_ONLY"
# Only in batches: the same id deleted and re-created with another size or address.
REPLACE = "REPLACE"
# Only in a 1->N or N->1 conversion: slots that leave or enter without an INVALID phase.
CONVERT_OUT, CONVERT_IN = "CONVERT_OUT", "CONVERT_IN"
_INVALIDATING = frozenset({DELETE, MOVE, REPLACE})


def kvm_error(code: int, what: str) -> OSError:
    return OSError(code, f"{os.strerror(code)}: {what}")


def ioctl_enter_event(
    ioctl: str, actor: str, region: MemoryRegion | None, entries: int = 0
) -> IoctlEnter:
    """The event a memslot ioctl's entry is, on every backend (its arguments as passed)."""
    r = region or MemoryRegion(0, 0, 0, 0, 0)
    return IoctlEnter(
        actor=actor,
        ioctl=ioctl,
        slot=r.slot,
        flags=r.flags,
        guest_phys_addr=r.guest_phys_addr,
        memory_size=r.memory_size,
        userspace_addr=r.userspace_addr,
        entries=entries,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One memslot change as kvm_set_memory_region() classified it."""

    kind: str
    as_id: int
    id: int
    old: Memslot | None
    new: Memslot | None
    prepare_error: OSError | None = None
    """kvm_prepare_memory_region() will fail with this, after a MOVE's invalidation."""


class VM:
    """The modelled VM: memslots, SRCU, stage-2 and guest memory of one KVM VM."""

    ioctl_actor = "vmm"

    def __init__(
        self, host: Host | None = None, bus: EventBus | None = None, timing: Timing | None = None
    ) -> None:
        self.host = host or Host()
        # The profile's rules, read on every fault (host is frozen; the property looks up).
        self.rules = self.host.rules
        self.bus = bus or EventBus()
        self.timing = timing or Timing()
        self.srcu = Srcu(self.bus)
        nr_as = self.host.nr_address_spaces
        self._sets = [(MemslotSet(a, 0), MemslotSet(a, 1)) for a in range(nr_as)]
        self._active = [0] * nr_as
        self.stage2 = [Stage2() for _ in range(nr_as)]
        # Host memory, sparse: hva -> 8-byte word or guest instruction.
        self.memory: dict[int, object] = {}
        self.nr_memslot_pages = 0
        self.closed = False
        # Swaps that skip synchronize_srcu (the `busted` strategy); the checker must notice.
        self.busted = False
        self.readers = ReaderOracle(self.bus)
        self._next_version = 1
        self.update_in_progress = False
        for a in range(nr_as):
            self._sets[a][0].version = self._take_version()

    # --- context manager / the common backend surface ---------------------------------

    def __enter__(self) -> VM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.closed = True

    def check_extension(self, cap: int) -> int:
        if not isinstance(cap, int) or isinstance(cap, bool):
            raise TypeError(f"cap must be an int, not {type(cap).__name__}")
        return self.host.check_extension(cap)

    def memslots(self, as_id: int = 0) -> list[MemoryRegion]:
        """The active slots of an address space as struct records, in slot-id order."""
        if not 0 <= as_id < self.host.nr_address_spaces:
            raise ValueError(
                f"as_id {as_id} out of range (this host has {self.host.nr_address_spaces})"
            )
        return [
            MemoryRegion(
                (s.as_id << 16) | s.id,
                s.flags & 0xFFFF,
                s.base_gfn << c.PAGE_SHIFT,
                s.npages << c.PAGE_SHIFT,
                s.userspace_addr,
            )
            for s in sorted(self.active(as_id), key=lambda s: s.id)
        ]

    def set_user_memory_region(
        self,
        slot: int,
        flags: int,
        guest_phys_addr: int,
        memory_size: int,
        userspace_addr: int,
    ) -> None:
        """KVM_SET_USER_MEMORY_REGION, completed at once (no clock, no concurrent readers)."""
        change = self.ioctl_prepare(
            make_region(slot, flags, guest_phys_addr, memory_size, userspace_addr)
        )
        if change is not None:
            try:
                self.run_now(self.commit(change))
            except OSError as err:
                self.ioctl_failed(change, err)
                raise
        self.ioctl_done(change)

    def get_dirty_log(self, slot: int) -> list[int]:
        """KVM_GET_DIRTY_LOG: page offsets written since the last call, then cleared."""
        check_slot_arg(slot)
        as_id, id = slot >> 16, slot & 0xFFFF
        if as_id >= self.host.nr_address_spaces or id >= self.host.nr_memslots:
            raise kvm_error(errno.EINVAL, f"KVM_GET_DIRTY_LOG: slot {slot:#x} out of range")
        memslot = self.active(as_id).by_id.get(id)
        if memslot is None or memslot.dirty_bitmap is None:
            raise kvm_error(errno.ENOENT, f"KVM_GET_DIRTY_LOG: slot {slot:#x} has no dirty log")
        pages = memslot.dirty_bitmap.harvest()
        # Harvested pages are write-protected again so the next write is seen.
        self.stage2[as_id].write_protect_pages([memslot.base_gfn + p for p in pages])
        self.bus.emit(DirtyLog(slot=slot, pages=pages))
        return pages

    # --- memslot sets -------------------------------------------------------------------

    def active(self, as_id: int) -> MemslotSet:
        return self._sets[as_id][self._active[as_id]]

    def inactive(self, as_id: int) -> MemslotSet:
        return self._sets[as_id][self._active[as_id] ^ 1]

    def _take_version(self) -> int:
        version = self._next_version
        self._next_version += 1
        return version

    def srcu_dereference(self, reader: str, as_id: int) -> MemslotSet:
        """srcu_dereference(kvm->memslots[as_id]): remember what the reader now holds."""
        slots = self._sets[as_id][self._active[as_id]]  # active(), inlined: every fault
        held = self.srcu.holders.get(reader)
        self.readers.dereference(reader, as_id, slots, -1 if held is None else held[0])
        return slots

    def srcu_read_unlock(self, reader: str, idx: int) -> None:
        """End a read-side section: the reader no longer holds any memslot set."""
        self.readers.release(reader)
        self.srcu.read_unlock(reader, idx)

    # --- the ioctl, in two halves -------------------------------------------------------

    def ioctl_prepare(self, region: MemoryRegion, actor: str | None = None) -> Change | None:
        """Enter KVM_SET_USER_MEMORY_REGION: emit the entry and validate. Returns None for a
        no-op; raises OSError (after emitting the failed exit) where the kernel fails."""
        self.ioctl_enter("KVM_SET_USER_MEMORY_REGION", actor, region)
        try:
            return self.prepare(region)
        except OSError as err:
            self.ioctl_exit("KVM_SET_USER_MEMORY_REGION", actor, region.slot, err.errno or 0, "")
            raise

    def ioctl_done(self, change: Change | None, actor: str | None = None) -> None:
        slot = 0 if change is None else (change.as_id << 16) | change.id
        kind = "NONE" if change is None else change.kind
        self.ioctl_exit("KVM_SET_USER_MEMORY_REGION", actor, slot, 0, kind)

    def ioctl_failed(self, change: Change, err: OSError) -> None:
        """The ioctl returns an error after its change had started (a MOVE rolled back)."""
        slot = (change.as_id << 16) | change.id
        self.ioctl_exit("KVM_SET_USER_MEMORY_REGION", None, slot, err.errno or 0, change.kind)

    def ioctl_enter(
        self, ioctl: str, actor: str | None, region: MemoryRegion | None, entries: int = 0
    ) -> None:
        self.bus.emit(ioctl_enter_event(ioctl, actor or self.ioctl_actor, region, entries))

    def ioctl_exit(self, ioctl: str, actor: str | None, slot: int, err: int, change: str) -> None:
        self.bus.emit(
            IoctlExit(
                actor=actor or self.ioctl_actor,
                ioctl=ioctl,
                slot=slot,
                errno=err,
                error=errno.errorcode.get(err, "") if err else "",
                change=change,
            )
        )

    def prepare(
        self, region: MemoryRegion, pending: dict[tuple[int, int], Memslot | None] | None = None
    ) -> Change | None:
        """kvm_vm_ioctl_set_memory_region() + kvm_set_memory_region() up to kvm_set_memslot():
        every check in the kernel's order. ``pending`` overlays changes already accepted in
        the same batch (the 2022 RFC looked ``old`` up in the inactive set for this)."""
        host = self.host
        slot, flags, gpa, size, uaddr = region
        if self.closed:
            raise kvm_error(errno.EIO, "VM is closed")
        if flags & ~c.KVM_SET_USER_MEMORY_REGION_V1_FLAGS:
            raise kvm_error(errno.EINVAL, f"flags {flags:#x} outside the v1 mask")
        as_id, id = slot >> 16, slot & 0xFFFF
        if id >= host.nr_memslots:
            raise kvm_error(
                errno.EINVAL, f"slot id {id} >= KVM_USER_MEM_SLOTS ({host.nr_memslots})"
            )
        valid = c.KVM_MEM_LOG_DIRTY_PAGES | (c.KVM_MEM_READONLY if host.readonly_mem else 0)
        if flags & ~valid:
            raise kvm_error(errno.EINVAL, f"flags {flags:#x} not supported")
        if size & (c.PAGE_SIZE - 1):
            raise kvm_error(errno.EINVAL, f"memory_size {size:#x} not page aligned")
        if gpa & (c.PAGE_SIZE - 1):
            raise kvm_error(errno.EINVAL, f"guest_phys_addr {gpa:#x} not page aligned")
        if uaddr & (c.PAGE_SIZE - 1):
            raise kvm_error(errno.EINVAL, f"userspace_addr {uaddr:#x} not page aligned")
        if size > host.task_size_max or uaddr > host.task_size_max - size:
            raise kvm_error(errno.EINVAL, f"userspace_addr {uaddr:#x}+{size:#x} fails access_ok")
        if as_id >= host.nr_address_spaces or id >= c.KVM_MEM_SLOTS_NUM:
            raise kvm_error(errno.EINVAL, f"as_id {as_id} >= {host.nr_address_spaces}")
        if gpa + size > c.U64_MAX:
            raise kvm_error(errno.EINVAL, f"guest_phys_addr {gpa:#x}+{size:#x} wraps")
        npages = size >> c.PAGE_SHIFT
        if npages > c.KVM_MEM_MAX_NR_PAGES:
            raise kvm_error(errno.EINVAL, f"{npages} pages > KVM_MEM_MAX_NR_PAGES")
        key = (as_id, id)
        if pending is not None and key in pending:
            old = pending[key]
        else:
            old = self.active(as_id).by_id.get(id)
        base_gfn = gpa >> c.PAGE_SHIFT
        if size == 0:
            if old is None:
                raise kvm_error(errno.EINVAL, f"DELETE of slot {id}, which does not exist")
            return Change(DELETE, as_id, id, old, None)
        if old is None:
            kind = CREATE
        else:
            if uaddr != old.userspace_addr or npages != old.npages:
                raise kvm_error(errno.EINVAL, f"slot {id}: size or userspace_addr cannot change")
            if (flags ^ old.flags) & c.KVM_MEM_READONLY:
                raise kvm_error(errno.EINVAL, f"slot {id}: KVM_MEM_READONLY cannot be toggled")
            if base_gfn != old.base_gfn:
                kind = MOVE
            elif flags != old.flags & 0xFFFF:
                kind = FLAGS_ONLY
            else:
                return None
        if kind in (CREATE, MOVE):
            other = self.active(as_id).first_overlap(base_gfn, npages, id)
            if pending is not None:
                other = self._overlap_with_pending(as_id, id, base_gfn, npages, other, pending)
            if other is not None:
                raise kvm_error(errno.EEXIST, f"slot {id} overlaps slot {other.id}")
            if base_gfn + npages - 1 > host.max_gfn:
                # kvm_arch_prepare_memory_region(): for a CREATE nothing is swapped yet; a
                # MOVE has already been invalidated when it fails (kvm_set_memslot()).
                err = kvm_error(errno.EINVAL, f"gfn {base_gfn + npages - 1:#x} beyond MAXPHYADDR")
                if kind == CREATE or pending is not None:
                    raise err
                return Change(MOVE, as_id, id, old, old, err)
        keep_log = old is not None and old.dirty_bitmap is not None
        bitmap = None
        if flags & c.KVM_MEM_LOG_DIRTY_PAGES:
            bitmap = old.dirty_bitmap if keep_log and old is not None else DirtyBitmap()
        new = Memslot(as_id, id, base_gfn, npages, uaddr, flags, bitmap)
        return Change(kind, as_id, id, old, new)

    @staticmethod
    def _overlap_with_pending(
        as_id: int,
        id: int,
        base_gfn: int,
        npages: int,
        found: Memslot | None,
        pending: dict[tuple[int, int], Memslot | None],
    ) -> Memslot | None:
        # A slot the batch already deletes or moves no longer conflicts where it was...
        if found is not None and (as_id, found.id) in pending:
            found = None
        # ...and one the batch creates or moves conflicts where it goes.
        end = base_gfn + npages
        for (a, other_id), slot in pending.items():
            if slot is None or a != as_id or other_id == id:
                continue
            if slot.base_gfn < end and base_gfn < slot.end_gfn:
                return slot
        return found

    # --- committing changes -------------------------------------------------------------

    def commit(self, change: Change) -> Steps:
        """kvm_set_memslot(): the swaps of one change, in the kernel's order."""
        yield from self.commit_batch([change])

    def commit_batch(self, changes: list[Change]) -> Steps:
        """Several changes published together: every DELETE and MOVE first replaced by its
        INVALID copy in one swap, mappings zapped, then every final slot in one more swap.
        With one change this is exactly kvm_set_memslot()."""
        if self.update_in_progress:
            raise RuntimeError("slots_lock is held by another update")
        self.update_in_progress = True
        try:
            yield self.timing.ioctl_ns
            for as_id in sorted({ch.as_id for ch in changes}):
                mine = [ch for ch in changes if ch.as_id == as_id]
                yield from self._commit_as(as_id, mine)
            yield self.timing.commit_ns
        finally:
            self.update_in_progress = False

    def _commit_as(self, as_id: int, changes: list[Change]) -> Steps:
        update = ", ".join(f"{ch.kind} of slot {ch.id}" for ch in changes)
        invalidated: dict[int, Memslot] = {}
        for ch in changes:
            if ch.kind in _INVALIDATING and ch.old is not None:
                invalidated[ch.id] = ch.old.invalid_copy()
        if invalidated:
            for ch in changes:
                if ch.id in invalidated:
                    self._emit_change(ch, "invalidate", invalidated[ch.id])
            yield from self._install(
                as_id,
                [(ch.old, invalidated[ch.id]) for ch in changes if ch.id in invalidated],
                update,
            )
            self._zap(
                as_id, [ch.old for ch in changes if ch.id in invalidated and ch.old is not None]
            )
            yield self.timing.zap_ns
        failed = next((ch for ch in changes if ch.prepare_error is not None), None)
        if failed is not None:
            # kvm_set_memslot(): prepare failed, so kvm_activate_memslot(kvm, invalid_slot,
            # old) swaps the old slot back in place of its INVALID copy.
            yield from self._install(as_id, [(invalidated[failed.id], failed.old)], update)
            self._emit_change(failed, "restore", failed.old)
            assert failed.prepare_error is not None
            raise failed.prepare_error
        final = [(invalidated.get(ch.id, ch.old), ch.new) for ch in changes]
        converted = [ch.old for ch in changes if ch.kind == CONVERT_OUT and ch.old is not None]
        # A conversion keeps every gfn on the same host page, so it needs no INVALID phase;
        # zapping as the new set is published rebuilds SPTEs (and their read-only bits)
        # against the new slots before any vCPU can use a stale writable one.
        on_publish = (lambda: self._zap(as_id, converted)) if converted else None
        yield from self._install(as_id, final, update, on_publish)
        for ch in changes:
            self._finish(ch)
            self._emit_change(ch, "commit", ch.new or ch.old)

    def _install(
        self,
        as_id: int,
        replacements: Iterable[tuple[Memslot | None, Memslot | None]],
        update: str,
        on_publish: Callable[[], None] | None = None,
    ) -> Steps:
        pairs = list(replacements)
        self._edit_inactive(as_id, pairs, update)
        yield from self._swap(as_id, on_publish)
        # The set that was active until the swap catches up once no reader can hold it.
        self._edit_inactive(as_id, pairs, update)

    def _edit_inactive(
        self, as_id: int, pairs: list[tuple[Memslot | None, Memslot | None]], update: str
    ) -> None:
        """kvm_replace_memslot() on the inactive set, which no reader may still hold."""
        slots = self.inactive(as_id)
        self.readers.editing(as_id, slots, update)
        for old, new in pairs:
            slots.replace(old, new)

    def _swap(self, as_id: int, on_publish: Callable[[], None] | None = None) -> Steps:
        """kvm_swap_active_memslots()."""
        active, inactive = self.active(as_id), self.inactive(as_id)
        gen = active.generation
        inactive.generation = gen | c.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS
        inactive.version = self._take_version()
        self._active[as_id] ^= 1
        self.readers.retire(as_id, active.version)
        self.bus.emit(SwapPublish(as_id=as_id, generation=gen, version=inactive.version))
        if on_publish is not None:
            on_publish()
        yield self.timing.swap_ns
        if not self.busted:
            yield SYNCHRONIZE
        self.readers.sync_count += 1
        inactive.generation = gen + self.host.nr_address_spaces
        self.bus.emit(SwapDone(as_id=as_id, generation=inactive.generation))

    def _zap(self, as_id: int, slots: list[Memslot]) -> None:
        stage2 = self.stage2[as_id]
        if self.host.slot_zap_all:
            # kvm_mmu_zap_all_fast() obsoletes every root, SMM roots included: all address
            # spaces lose their mappings, whichever one the slot lived in.
            for other, table in enumerate(self.stage2):
                count = table.zap_all()
                self.bus.emit(Zap(as_id=other, start_gfn=0, end_gfn=0, sptes=count, zap_all=True))
            return
        for slot in slots:
            count = stage2.zap_range(slot.base_gfn, slot.end_gfn)
            self.bus.emit(
                Zap(
                    as_id=as_id,
                    start_gfn=slot.base_gfn,
                    end_gfn=slot.end_gfn,
                    sptes=count,
                    zap_all=False,
                )
            )

    def _finish(self, ch: Change) -> None:
        """kvm_commit_memory_region()."""
        if ch.old is not None:
            self.nr_memslot_pages -= ch.old.npages
        if ch.new is not None:
            self.nr_memslot_pages += ch.new.npages
            was_logging = ch.old is not None and ch.old.flags & c.KVM_MEM_LOG_DIRTY_PAGES
            if ch.new.flags & c.KVM_MEM_LOG_DIRTY_PAGES and not was_logging:
                # kvm_mmu_slot_apply_flags(): write-protect so every first write faults.
                self.stage2[ch.as_id].write_protect(ch.new.base_gfn, ch.new.end_gfn)

    def _emit_change(self, ch: Change, step: str, slot: Memslot | None) -> None:
        s = slot or ch.old or ch.new
        assert s is not None
        self.bus.emit(
            MemslotChange(
                as_id=ch.as_id,
                id=ch.id,
                change=ch.kind,
                step=step,
                base_gfn=s.base_gfn,
                npages=s.npages,
                flags=s.flags,
            )
        )

    def run_now(self, steps: Steps) -> None:
        """Drive an update with no clock: every grace period completes at once."""
        # With no clock a grace period cannot be waited out, so refuse while any reader is
        # inside: the first swap publishes before its grace period, and stopping there would
        # leave an INVALID copy and an update-in-progress generation behind for good.
        if not self.busted and (self.srcu.readers_active(0) or self.srcu.readers_active(1)):
            steps.close()
            waiting = ", ".join(self.srcu.holders) or "unnamed readers"
            raise SrcuWouldBlock(f"synchronize_srcu would wait for readers: {waiting}")
        for step in steps:
            if step is SYNCHRONIZE:
                self.srcu.synchronize_now()

    # --- guest memory -------------------------------------------------------------------

    def gpa_to_hva(self, gpa: int, as_id: int = 0) -> int | None:
        slot = self.active(as_id).lookup(gpa >> c.PAGE_SHIFT)
        if slot is None or slot.invalid:
            return None
        return slot.gfn_to_hva(gpa >> c.PAGE_SHIFT) + (gpa & (c.PAGE_SIZE - 1))

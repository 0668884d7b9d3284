"""The userspace VMM: memory transactions, slot bookkeeping, and MMIO exits served from its
own FlatView.

Like QEMU, it publishes the new FlatView only after every listener callback (every memslot
ioctl) returned, so an MMIO exit taken in the window between a DELETE and the CREATE that
replaces it is dispatched through the old view and still lands in RAM. ``naive=True`` is a VMM
that does not, and drops those accesses: the checker then reports lost writes.
"""

from __future__ import annotations

import dataclasses
import errno
from typing import TYPE_CHECKING

from engine.events import (
    Fault,
    Inhibit,
    MmioServed,
    Note,
    TxnBegin,
    TxnCommit,
    VmStopped,
)
from engine.model import constants as c
from engine.model.region import MemoryRegion
from engine.vmm.flatview import FlatRange, FlatView, TopologyDiff, diff

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.core.ports import BatchMemslots, Clock, GuestRam, MemslotBackend, VcpuControl
    from engine.events import Event, EventBus
    from engine.faults import Injector
    from engine.vmm.strategies import Strategy

WINDOW_FAULTS = frozenset(
    {"emulation_failure", "mmio_len0", "ud_injected", "pabt_injected", "mmio"}
)


@dataclasses.dataclass(frozen=True, slots=True)
class SlotOp:
    """One KVM_SET_USER_MEMORY_REGION the listener wants: a delete, an add or a log toggle."""

    region: MemoryRegion
    range: FlatRange

    @property
    def slot_id(self) -> int:
        return self.region.slot & 0xFFFF


@dataclasses.dataclass(slots=True)
class Transaction:
    id: int
    as_id: int
    layout: str
    diff: TopologyDiff
    ops: list[SlotOp]
    old: FlatView
    new: FlatView
    started_ns: int


class Vmm:
    """QEMU's memory listener and exit handlers over narrow collaborators: the kernel side
    (``kernel``), the clock of the VMM thread, the vCPU threads (``vcpus``, for the accel
    blocker), guest RAM as the VMM maps it, and the fault injector. ``halt`` ends the run."""

    def __init__(
        self,
        *,
        bus: EventBus,
        clock: Clock,
        kernel: MemslotBackend,
        vcpus: VcpuControl,
        ram: GuestRam,
        injector: Injector,
        strategy: Strategy,
        halt: Callable[[], None],
        naive: bool = False,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.kernel = kernel
        self.vcpus = vcpus
        self.ram = ram
        self.injector = injector
        self.strategy = strategy
        self._halt = halt
        self.naive = naive
        nr_as = kernel.nr_address_spaces
        self.views = [FlatView([]) for _ in range(nr_as)]
        self.layout_names = ["" for _ in range(nr_as)]
        self._slot_of: list[dict[tuple[int, int, str, int], int]] = [{} for _ in range(nr_as)]
        self.in_flight: Transaction | None = None
        self.txn_count = 0
        self.latencies: list[int] = []
        self.inhibited = False
        self.ioctl_count = 0
        self.stopped_reason = ""
        self._window_faults = 0
        self.bus.subscribe(self._watch, only=Fault)

    def _watch(self, event: Event) -> None:
        assert isinstance(event, Fault)
        if event.outcome in WINDOW_FAULTS and self.in_flight is not None:
            self._window_faults += 1
            self.clock.notify()

    # --- transactions -------------------------------------------------------------------

    def begin(
        self, as_id: int, layout: str, new: FlatView, moves: bool = False
    ) -> Transaction | None:
        """Start a memory transaction towards ``new``: the listener's region_del and
        region_add calls, as the KVM slot operations they become. With ``moves``, a range
        that only changes GPA becomes one KVM_MR_MOVE, as the kernel selftests issue."""
        old = self.views[as_id]
        d = diff(old, new)
        if d.empty:
            self.views[as_id] = new
            self.layout_names[as_id] = layout
            return None
        slots = self._slot_of[as_id]
        ops: list[SlotOp] = []
        dels, adds = list(d.dels), list(d.adds)
        if moves:
            # Each deleted range pairs with the first unpaired added one of the same size,
            # kind and backing (by lookup: a scan per range was quadratic).
            twins: dict[tuple[int, str, int], list[FlatRange]] = {}
            for a in adds:
                twins.setdefault((a.size, a.kind, a.hva), []).append(a)
            for twin_list in twins.values():
                twin_list.reverse()  # pop() takes the first
            moved: set[FlatRange] = set()
            kept: list[FlatRange] = []
            for r in dels:
                candidates = twins.get((r.size, r.kind, r.hva))
                if not candidates:
                    kept.append(r)
                    continue
                twin = candidates.pop()
                moved.add(twin)
                id = slots.pop(r.key)
                slots[twin.key] = id
                ops.append(SlotOp(self._region(as_id, id, twin), twin))
            dels = kept
            adds = [a for a in adds if a not in moved]
        deletes = []
        for r in dels:
            id = slots.pop(r.key)
            deletes.append(SlotOp(MemoryRegion((as_id << 16) | id, 0, r.start, 0, r.hva), r))
        ops = deletes + ops
        # address_space_update_topology_pass(adding=true) walks the new view in GPA order:
        # log_start/log_stop and region_add interleave by address.
        used = set(slots.values())
        nr_memslots = self.kernel.nr_memslots
        lowest_free = 0  # ids only get used below: the lowest free one only moves up
        changes: list[tuple[int, FlatRange | None, FlatRange]] = [
            (new_r.start, old_r, new_r) for old_r, new_r in d.log_changes
        ]
        changes += [(r.start, None, r) for r in adds]
        for _, old_r, r in sorted(changes, key=lambda c: c[0]):
            if old_r is not None:
                id = slots.pop(old_r.key)
            elif r.slot is not None and r.slot not in used and r.slot < nr_memslots:
                id = r.slot  # the id the recorded VMM used (QEMU's lowest free, replayed)
            else:
                while lowest_free in used:
                    lowest_free += 1
                if lowest_free >= nr_memslots:
                    raise ValueError(
                        f"layout {layout!r}: no free memslot (nr_memslots={nr_memslots}): "
                        "QEMU's kvm_alloc_slot() gives up"
                    )
                id = lowest_free
            used.add(id)
            slots[r.key] = id
            ops.append(SlotOp(self._region(as_id, id, r), r))
        self.txn_count += 1
        txn = Transaction(self.txn_count, as_id, layout, d, ops, old, new, self.clock.now())
        self.in_flight = txn
        self._window_faults = 0
        self.bus.emit(
            TxnBegin(
                txn=txn.id,
                as_id=as_id,
                layout=layout,
                dels=[[r.start, r.size] for r in d.dels],
                adds=[[r.start, r.size] for r in d.adds],
                overlapping=d.overlapping,
                atomic=self.strategy.is_atomic(self, txn),
            )
        )
        return txn

    def commit(self, txn: Transaction) -> None:
        """Publish the new FlatView: only now does QEMU's own dispatch use it."""
        self.views[txn.as_id] = txn.new
        self.layout_names[txn.as_id] = txn.layout
        self.in_flight = None
        event = TxnCommit(txn=txn.id, as_id=txn.as_id, latency_ns=self.clock.now() - txn.started_ns)
        self.bus.emit(event)
        # Read back: a wall-clock bus restates it from the kernel-side stamps of the update's
        # own syscalls (engine/backends/kvm/clock.py).
        self.latencies.append(event.latency_ns)

    @staticmethod
    def _region(as_id: int, id: int, r: FlatRange) -> MemoryRegion:
        flags = (c.KVM_MEM_READONLY if r.readonly else 0) | (
            c.KVM_MEM_LOG_DIRTY_PAGES if r.log_dirty else 0
        )
        return MemoryRegion((as_id << 16) | id, flags, r.start, r.size, r.hva)

    def layout_regions(self, as_id: int) -> list[MemoryRegion]:
        """Every slot of the address space as the in-flight transaction wants it."""
        txn = self.in_flight
        view = txn.new if txn is not None and txn.as_id == as_id else self.views[as_id]
        slots = self._slot_of[as_id]
        return [self._region(as_id, slots[r.key], r) for r in view.backed()]

    def gpa_in_flight(self, gpa: int) -> bool:
        txn = self.in_flight
        if txn is None:
            return False
        return any(r.start <= gpa < r.end for r in txn.diff.dels + txn.diff.adds)

    def note(self, text: str) -> None:
        self.bus.emit(Note(source="vmm", text=text))

    # --- ioctls, as the strategies issue them --------------------------------------------

    async def sync_dirty_logs(self, only: set[int] | None = None) -> None:
        """KVM_GET_DIRTY_LOG for every logging slot (a migration round's bitmap sync)."""
        await self.kernel.sync_dirty_logs(only)

    async def _sync_before(self, regions: list[MemoryRegion]) -> None:
        """QEMU syncs a slot's bitmap before deleting it or stopping its log: best effort,
        since the guest may dirty pages between the sync and the ioctl."""
        doomed = {
            r.id
            for r in regions
            if self.kernel.logging(r.slot)
            and (r.memory_size == 0 or not r.flags & c.KVM_MEM_LOG_DIRTY_PAGES)
        }
        if doomed:
            await self.sync_dirty_logs(doomed)

    async def ioctl(self, region: MemoryRegion) -> None:
        await self._sync_before([region])
        self.ioctl_count += 1
        await self.kernel.ioctl(region, quiesced=self.inhibited)

    def batch(self, ioctl: str) -> BatchMemslots:
        """The kernel's batch ioctls; a kernel without them answers ENOTTY, as Linux does
        for an ioctl number it does not know (kvm_vm_ioctl())."""
        if self.kernel.batch is None:
            raise OSError(errno.ENOTTY, f"{ioctl} does not exist on this kernel")
        return self.kernel.batch

    async def ioctl_list(self, regions: list[MemoryRegion]) -> None:
        batch = self.batch("KVM_SET_USER_MEMORY_REGION_LIST")
        await self._sync_before(regions)
        self.ioctl_count += 1
        await batch.ioctl_list(regions)

    async def ioctl_all(self, as_id: int, regions: list[MemoryRegion]) -> None:
        batch = self.batch("KVM_SET_ALL_USER_MEMORY_REGIONS")
        kept = {r.id for r in regions}
        await self._sync_before(
            list(regions)
            + [
                MemoryRegion(s.slot, 0, 0, 0, 0)
                for s in self.kernel.memslots(as_id)
                if s.id not in kept
            ]
        )
        self.ioctl_count += 1
        await batch.ioctl_all(as_id, regions)

    async def ioctl_convert(
        self, as_id: int, old_ids: list[int], regions: list[MemoryRegion]
    ) -> None:
        batch = self.batch("KVM_CONVERT_MEMORY_REGIONS")
        # QEMU's region_del harvests the log of every slot that leaves, whatever ioctl follows.
        await self._sync_before([MemoryRegion((as_id << 16) | id, 0, 0, 0, 0) for id in old_ids])
        self.ioctl_count += 1
        await batch.ioctl_convert(as_id, old_ids, regions)

    async def between_ioctls(self, txn: Transaction) -> None:
        """Userspace work between two ioctls of a transaction; ioctl-gap stretches it."""
        await self.clock.preemptible()
        gap = self.injector.ioctl_gap()
        if gap:
            await self.clock.sleep(gap)

    async def after_delete(self, txn: Transaction, op: SlotOp) -> None:
        """The `race` fault holds the window open until a vCPU has faulted inside it."""
        if self.inhibited:
            return  # no vCPU is in KVM_RUN to fault: nothing to hold open
        limit = self.injector.race_window()
        if not limit:
            return
        await self.clock.wait_until(
            lambda: self._window_faults > 0 or bool(self.stopped_reason), limit
        )

    # --- QEMU 8.0's accel blocker ---------------------------------------------------------

    async def inhibit_begin(self) -> None:
        self.inhibited = True
        started = self.clock.now()
        self.bus.emit(Inhibit(phase="begin"))
        self.vcpus.kick_all()
        await self.vcpus.wait_all_out()
        self.bus.emit(Inhibit(phase="all_out", latency_ns=self.clock.now() - started))

    def inhibit_end(self) -> None:
        self.inhibited = False
        self.bus.emit(Inhibit(phase="end"))
        self.vcpus.resume_all()

    # --- exits ----------------------------------------------------------------------------

    def route_mmio(self, as_id: int, gpa: int, is_write: bool) -> tuple[str, str, FlatRange | None]:
        """Where address_space_rw() sends an MMIO exit through the published FlatView: the
        target, the region's name, and the RAM range to access (None when no RAM is touched:
        unassigned, a device, a naive VMM dropping it, a write to ROM)."""
        r = self.views[as_id].lookup(gpa)
        if r is None:
            return "unassigned", "", None
        if r.kind == "mmio":
            return "device", r.name, None
        if self.naive:
            return "dropped", r.name, None
        if is_write and r.readonly:
            return "rom-ignored", r.name, None
        return r.kind, r.name, r

    def serve_mmio(
        self, vcpu: int, as_id: int, gpa: int, is_write: bool, data: int, size: int
    ) -> int:
        """address_space_rw() through the published FlatView (the old one while a transaction
        is in flight, so an access taken in the update window still lands in RAM). Returns
        the value a read completes with (unassigned reads as all ones, a dropped one as 0)."""
        target, name, value = self.access_mmio(as_id, gpa, is_write, data, size)
        self.bus.emit(
            MmioServed(
                vcpu=vcpu, gpa=gpa, is_write=is_write, data=value, target=target, region=name
            )
        )
        return value

    def access_mmio(
        self, as_id: int, gpa: int, is_write: bool, data: int, size: int
    ) -> tuple[str, str, int]:
        """serve_mmio() without the event: the target, the region's name and the value (a
        write's own). A backend whose vCPU threads serve their own exits (as QEMU's
        kvm_cpu_exec() does) builds MmioServed later, in the event loop. Reads only the
        published FlatView (one reference, replaced whole, like QEMU's RCU-read one)."""
        target, name, ram = self.route_mmio(as_id, gpa, is_write)
        if is_write:
            if ram is not None:
                self.ram.write(ram.hva_of(gpa), data, size)
        elif ram is not None:
            data = self.ram.read(ram.hva_of(gpa), size)
        else:
            data = 0 if target == "dropped" else (1 << (8 * size)) - 1
        return target, name, data

    def vcpu_died(self, exit_name: str, vcpu: int, rip: int) -> None:
        """An exit the guest cannot survive (shutdown, internal error, a crash)."""
        self.stop_vm(f"{exit_name} on vcpu{vcpu} at RIP {rip:#x}: QEMU stops the VM", vcpu, rip)

    def stop_vm(self, reason: str, vcpu: int, rip: int = 0, gpa: int = 0) -> None:
        if self.stopped_reason:
            return
        self.stopped_reason = reason
        self.bus.emit(VmStopped(reason=reason, vcpu=vcpu, rip=rip, gpa=gpa))
        self._halt()

    def hva_of(self, gpa: int, size: int, as_id: int = 0) -> int:
        """Where userspace's own mapping holds guest bytes [gpa, gpa+size) (to load the
        program); ValueError unless backed ranges of the published layout cover them with one
        contiguous host mapping (a program may run on across two slots of the same RAM)."""
        view, end = self.views[as_id], gpa + size
        first = r = view.lookup(gpa)
        while r is not None and r.backed and r.end < end:
            nxt = view.lookup(r.end)
            if nxt is None or nxt.hva != r.hva_of(r.end):
                break
            r = nxt
        if first is None or r is None or not r.backed or end > r.end:
            raise ValueError(f"GPA {gpa:#x}+{size:#x} is not backed by one host mapping")
        return first.hva_of(gpa)

"""The userspace VMM: memory transactions, slot bookkeeping, and MMIO exits served from its
own FlatView.

Like QEMU, it publishes the new FlatView only after every listener callback (every memslot
ioctl) returned, so an MMIO exit taken in the window between a DELETE and the CREATE that
replaces it is dispatched through the old view and still lands in RAM. ``naive=True`` is a VMM
that does not, and drops those accesses: the checker then reports lost writes.
"""

from __future__ import annotations

import dataclasses
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
from engine.model import batch
from engine.model import constants as c
from engine.model.region import MemoryRegion
from engine.vmm.flatview import FlatRange, FlatView, TopologyDiff, diff

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.events import Event
    from engine.model.vcpu import Vcpu, VcpuExit
    from engine.model.vm import Change
    from engine.session import Session

ALL_ONES = (1 << 64) - 1
WINDOW_FAULTS = frozenset({"emulation_failure", "mmio_len0", "ud_injected", "mmio"})


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
    def __init__(self, session: Session, naive: bool = False) -> None:
        self.session = session
        self.vm = session.vm
        self.bus = session.bus
        self.naive = naive
        nr_as = self.vm.host.nr_address_spaces
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
        self.bus.subscribe(self._watch)

    def _watch(self, event: Event) -> None:
        if type(event) is Fault and event.outcome in WINDOW_FAULTS and self.in_flight is not None:
            self._window_faults += 1

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
            for r in list(dels):
                twin = next(
                    (a for a in adds if (a.size, a.kind, a.hva) == (r.size, r.kind, r.hva)), None
                )
                if twin is not None:
                    dels.remove(r)
                    adds.remove(twin)
                    id = slots.pop(r.key)
                    slots[twin.key] = id
                    ops.append(SlotOp(self._region(as_id, id, twin), twin))
        for r in reversed(dels):
            id = slots.pop(r.key)
            ops.insert(0, SlotOp(MemoryRegion((as_id << 16) | id, 0, r.start, 0, r.hva), r))
        # address_space_update_topology_pass(adding=true) walks the new view in GPA order:
        # log_start/log_stop and region_add interleave by address.
        used = set(slots.values())
        changes: list[tuple[int, FlatRange | None, FlatRange]] = [
            (new_r.start, old_r, new_r) for old_r, new_r in d.log_changes
        ]
        changes += [(r.start, None, r) for r in adds]
        for _, old_r, r in sorted(changes, key=lambda c: c[0]):
            if old_r is not None:
                id = slots.pop(old_r.key)
            elif r.slot is not None and r.slot not in used and r.slot < self.vm.host.nr_memslots:
                id = r.slot  # the id the recorded VMM used (QEMU's lowest free, replayed)
            else:
                id = next(i for i in range(self.vm.host.nr_memslots) if i not in used)
            used.add(id)
            slots[r.key] = id
            ops.append(SlotOp(self._region(as_id, id, r), r))
        self.txn_count += 1
        txn = Transaction(self.txn_count, as_id, layout, d, ops, old, new, self.bus.now)
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
                atomic=self.session.strategy.is_atomic(self, txn),
            )
        )
        return txn

    def commit(self, txn: Transaction) -> None:
        """Publish the new FlatView: only now does QEMU's own dispatch use it."""
        self.views[txn.as_id] = txn.new
        self.layout_names[txn.as_id] = txn.layout
        self.in_flight = None
        latency = self.bus.now - txn.started_ns
        self.latencies.append(latency)
        self.bus.emit(TxnCommit(txn=txn.id, as_id=txn.as_id, latency_ns=latency))

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

    def sync_dirty_logs(self, only: set[int] | None = None) -> None:
        """KVM_GET_DIRTY_LOG for every logging slot (a migration round's bitmap sync)."""
        for as_id in range(self.vm.host.nr_address_spaces):
            for slot in list(self.vm.active(as_id)):
                if slot.dirty_bitmap is not None and (only is None or slot.id in only):
                    self.vm.get_dirty_log((as_id << 16) | slot.id)

    def _sync_before(self, regions: list[MemoryRegion]) -> None:
        """QEMU syncs a slot's bitmap before deleting it or stopping its log: best effort,
        since the guest may dirty pages between the sync and the ioctl."""
        doomed: set[int] = set()
        for region in regions:
            old = self.vm.active(region.as_id).by_id.get(region.id)
            if old is None or old.dirty_bitmap is None:
                continue
            if region.memory_size == 0 or not region.flags & c.KVM_MEM_LOG_DIRTY_PAGES:
                doomed.add(region.id)
        if doomed:
            self.sync_dirty_logs(doomed)

    async def ioctl(self, region: MemoryRegion) -> None:
        vm, s = self.vm, self.session
        self._sync_before([region])
        self.ioctl_count += 1
        change = vm.ioctl_prepare(region)
        if change is not None:
            await s.drive(s.vmm_actor, vm.commit(change))
        vm.ioctl_done(change)

    async def ioctl_list(self, regions: list[MemoryRegion]) -> None:
        self._sync_before(regions)
        await self._batch(
            "KVM_SET_USER_MEMORY_REGION_LIST",
            lambda: batch.prepare_list(self.vm, regions),
            len(regions),
        )

    async def ioctl_all(self, as_id: int, regions: list[MemoryRegion]) -> None:
        kept = {r.id for r in regions}
        self._sync_before(
            list(regions)
            + [
                MemoryRegion((as_id << 16) | s.id, 0, 0, 0, 0)
                for s in self.vm.active(as_id)
                if s.id not in kept
            ]
        )
        await self._batch(
            "KVM_SET_ALL_USER_MEMORY_REGIONS",
            lambda: batch.prepare_all(self.vm, as_id, regions),
            len(regions),
        )

    async def ioctl_convert(
        self, as_id: int, old_ids: list[int], regions: list[MemoryRegion]
    ) -> None:
        # QEMU's region_del harvests the log of every slot that leaves, whatever ioctl follows.
        self._sync_before([MemoryRegion((as_id << 16) | id, 0, 0, 0, 0) for id in old_ids])
        await self._batch(
            "KVM_CONVERT_MEMORY_REGIONS",
            lambda: batch.prepare_convert(self.vm, as_id, old_ids, regions),
            len(old_ids) + len(regions),
        )

    async def _batch(self, name: str, prepare: Callable[[], list[Change]], entries: int) -> None:
        vm, s = self.vm, self.session
        self.ioctl_count += 1
        vm.ioctl_enter(name, None, None, entries)
        try:
            changes = prepare()
        except OSError as err:
            vm.ioctl_exit(name, None, 0, err.errno or 0, "")
            raise
        if changes:
            await s.drive(s.vmm_actor, vm.commit_batch(changes))
        vm.ioctl_exit(name, None, 0, 0, ",".join(sorted({ch.kind for ch in changes})) or "NONE")

    async def between_ioctls(self, txn: Transaction) -> None:
        """Userspace work between two ioctls of a transaction; ioctl-gap stretches it."""
        gap = self.session.injector.ioctl_gap()
        if gap:
            await self.session.seq.sleep(self.session.vmm_actor, gap)

    async def after_delete(self, txn: Transaction, op: SlotOp) -> None:
        """The `race` fault holds the window open until a vCPU has faulted inside it."""
        if self.inhibited:
            return  # no vCPU is in KVM_RUN to fault: nothing to hold open
        limit = self.session.injector.race_window()
        if not limit:
            return
        seq, me = self.session.seq, self.session.vmm_actor
        waited = 0
        while self._window_faults == 0 and waited < limit and not self.stopped_reason:
            await seq.sleep(me, 200)
            waited += 200

    # --- QEMU 8.0's accel blocker ---------------------------------------------------------

    async def inhibit_begin(self) -> None:
        s = self.session
        self.inhibited = True
        started = self.bus.now
        self.bus.emit(Inhibit(phase="begin"))
        for runner in s.vcpu_runners:
            runner.kick()
        while not all(r.out_of_kvm_run for r in s.vcpu_runners):
            s.vmm_waiting = True
            await s.seq.block(s.vmm_actor)
        s.vmm_waiting = False
        self.bus.emit(Inhibit(phase="all_out", latency_ns=self.bus.now - started))

    def inhibit_end(self) -> None:
        self.inhibited = False
        self.bus.emit(Inhibit(phase="end"))
        for runner in self.session.vcpu_runners:
            runner.resume()

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

    def served(
        self, vcpu: int, gpa: int, is_write: bool, data: int, target: str, name: str
    ) -> None:
        self.bus.emit(
            MmioServed(vcpu=vcpu, gpa=gpa, is_write=is_write, data=data, target=target, region=name)
        )

    def serve_mmio(self, vcpu: Vcpu, exit: VcpuExit) -> None:
        gpa, data = exit.phys_addr, exit.data
        target, name, ram = self.route_mmio(vcpu.as_id, gpa, exit.is_write)
        memory = self.vm.memory
        if exit.is_write:
            if ram is not None:
                memory[ram.hva_of(gpa)] = data
        else:
            if ram is not None:
                raw = memory.get(ram.hva_of(gpa))
                data = raw if isinstance(raw, int) else 0
            else:
                data = 0 if target == "dropped" else ALL_ONES
            vcpu.mmio_data = data
        self.served(vcpu.index, gpa, exit.is_write, data, target, name)

    def stop_vm(self, reason: str, vcpu: int, rip: int = 0, gpa: int = 0) -> None:
        if self.stopped_reason:
            return
        self.stopped_reason = reason
        self.bus.emit(VmStopped(reason=reason, vcpu=vcpu, rip=rip, gpa=gpa))
        self.halt()

    def halt(self) -> None:
        """End the run once the VM is stopped."""
        self.session.seq.finish("vm stopped")

    def write_guest(self, gpa: int, value: object, as_id: int = 0) -> None:
        """Userspace writing guest memory through its own mapping (loading the program)."""
        r = self.views[as_id].lookup(gpa)
        if r is None or not r.backed:
            raise ValueError(f"GPA {gpa:#x} is not RAM in the initial layout")
        self.vm.memory[r.hva_of(gpa)] = value

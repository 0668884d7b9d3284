"""The kernel side of the memslot ioctls on the real /dev/kvm, and guest RAM as the VMM maps it.

The calls are the real ones; the events are what the model's kernel emits for the same call
(IoctlEnter, MemslotChange, IoctlExit, DirtyLog), built from what userspace can see: the
arguments, the errno, and the slot as it was set before. The kernel's swaps, SRCU and stage-2
stay invisible.

While vCPUs run, a memslot ioctl or KVM_GET_DIRTY_LOG runs in a worker thread: a commit waits
out the vCPUs' SRCU read sections (kvm_swap_active_memslots() calls
synchronize_srcu_expedited()), and their exits must be served meanwhile, as QEMU's vCPU
threads serve them. With every vCPU out of KVM_RUN the call returns in microseconds and is
issued directly.

Dirty pages a DELETE or a log stop destroyed unharvested are inferred from guest RAM that
changed after the last KVM_GET_DIRTY_LOG (a lower bound: only writes that changed a value
show).
"""

from __future__ import annotations

import errno
import threading
import time

import trio

from engine.backends.kvm.clock import StampedCall, WallClockBus
from engine.backends.kvm.memory import ScenarioMemory
from engine.backends.kvm.vm import KvmVM
from engine.events import DirtyLog, Fault, IoctlExit, MemslotChange, Note
from engine.model import constants as c
from engine.model.region import MemoryRegion
from engine.model.vm import ioctl_enter_event

IOCTL = "KVM_SET_USER_MEMORY_REGION"


def change_kind(old: MemoryRegion | None, new: MemoryRegion) -> str | None:
    """What the kernel did with an accepted call; None for an identical re-set
    (virt/kvm/kvm_main.c: kvm_set_memory_region())."""
    if new.memory_size == 0:
        return "DELETE"
    if old is None:
        return "CREATE"
    if old.guest_phys_addr != new.guest_phys_addr:
        return "MOVE"
    if old.flags != new.flags:
        return "FLAGS_ONLY"
    return None


class KvmRam:
    """Guest RAM through the VMM's own mappings; remembers the pages the VMM itself wrote
    (QEMU marks those dirty itself, so they say nothing about the guest)."""

    def __init__(self, memory: ScenarioMemory, bql: threading.Lock) -> None:
        self.memory = memory
        self.vmm_pages: set[int] = set()
        self.bql = bql
        """Held by a vCPU thread serving an MMIO exit (serve.py) and by the VMM reading RAM
        against vmm_pages, so neither sees the other's access half done."""

    def read(self, hva: int, size: int) -> int:
        return int.from_bytes(self.memory.read(hva, size), "little")

    def write(self, hva: int, value: int, size: int) -> None:
        self.memory.write(hva, value.to_bytes(size, "little"))
        self.vmm_pages.add(hva >> c.PAGE_SHIFT)


class KvmKernel:
    """MemslotBackend over a KvmVM. It has no batch ioctls: this kernel has none."""

    batch = None

    def __init__(self, vm: KvmVM, memory: ScenarioMemory, ram: KvmRam, bus: WallClockBus) -> None:
        self.vm = vm
        self.memory = memory
        self.ram = ram
        self.bus = bus
        self.nr_address_spaces = vm.nr_address_spaces
        self.nr_memslots = vm.host.nr_memslots
        self.regions: dict[int, MemoryRegion] = {}
        """Every slot as set, with the scenario's HVA (events and snapshots use it)."""
        self._snapshots: dict[int, bytes] = {}
        self.first_enter_ns: int | None = None
        self.last_exit_ns: int | None = None
        """Kernel-side stamps (time.monotonic_ns()) of the update in flight: the backend
        reports update latency from them (KvmBackend.restate)."""

    # --- KVM_SET_USER_MEMORY_REGION ----------------------------------------------------------

    def ioctl_now(self, region: MemoryRegion) -> None:
        call = self._call(region)
        call.run(self.vm.region_call(self._real(region)), ())
        self.bus.settle(call)
        if call.error is not None:
            raise call.error

    async def ioctl(self, region: MemoryRegion, quiesced: bool) -> None:
        call = self._call(region)
        # Checked and packed here, so the worker thread stamps its entry right at the syscall.
        issue = self.vm.region_call(self._real(region))
        if quiesced:
            call.run(issue, ())
        else:
            self.bus.hold(call)
            await trio.to_thread.run_sync(call.run, issue, ())
        self.bus.settle(call)
        if call.error is not None:
            raise call.error
        if quiesced:
            await trio.lowlevel.checkpoint()

    def _real(self, region: MemoryRegion) -> MemoryRegion:
        return region._replace(userspace_addr=self.memory.real(region.userspace_addr))

    def _call(self, region: MemoryRegion) -> StampedCall:
        """The ioctl as the thread making it stamps it: IoctlEnter at the instant before the
        syscall, the result at the instant after (clock.py). The VMM issues one memslot
        ioctl at a time, so the slot as set before is the one ``regions`` holds now."""
        old = self.regions.get(region.slot)
        bus = self.bus

        def announce(at: int) -> None:
            bus.emit_at(ioctl_enter_event(IOCTL, "vmm", region), at)
            self.span(at)

        def finish(at: int, err: OSError | None) -> None:
            self.last_exit_ns = at
            if err is None:
                self._done(region, old, at)
            else:
                self._failed(region, err, at)

        return StampedCall(announce, finish)

    def span(self, at: int) -> None:
        """The VMM's first kernel-side action of the update in flight (an ioctl's entry, or
        the kick that pauses the vCPUs)."""
        if self.first_enter_ns is None:
            self.first_enter_ns = at

    def _failed(self, region: MemoryRegion, err: OSError, at: int) -> None:
        code = err.errno or 0
        self.bus.emit_at(
            IoctlExit(
                actor="vmm",
                ioctl=IOCTL,
                slot=region.slot,
                errno=code,
                error=errno.errorcode.get(code, ""),
            ),
            at,
        )

    def _done(self, region: MemoryRegion, old: MemoryRegion | None, at: int) -> None:
        change = change_kind(old, region)
        emit = self.bus.emit_at
        if change is None:
            emit(IoctlExit(actor="vmm", ioctl=IOCTL, slot=0, change="NONE"), at)
            return
        shown = old if change == "DELETE" else region
        assert shown is not None
        logged = old is not None and old.flags & c.KVM_MEM_LOG_DIRTY_PAGES
        logs = region.memory_size and region.flags & c.KVM_MEM_LOG_DIRTY_PAGES
        if old is not None and logged and not logs:
            self._unharvested(old)
        emit(
            MemslotChange(
                as_id=region.as_id,
                id=region.id,
                change=change,
                step="commit",
                base_gfn=shown.guest_phys_addr >> c.PAGE_SHIFT,
                npages=shown.memory_size >> c.PAGE_SHIFT,
                flags=shown.flags,
            ),
            at,
        )
        if change == "DELETE":
            self.regions.pop(region.slot, None)
            self._snapshots.pop(region.slot, None)
        else:
            self.regions[region.slot] = region
            if logs and not logged:
                self._snapshot(region)
        emit(IoctlExit(actor="vmm", ioctl=IOCTL, slot=region.slot, change=change), at)

    def logging(self, slot: int) -> bool:
        region = self.regions.get(slot)
        return region is not None and bool(region.flags & c.KVM_MEM_LOG_DIRTY_PAGES)

    def memslots(self, as_id: int) -> list[MemoryRegion]:
        return sorted((r for r in self.regions.values() if r.as_id == as_id), key=lambda r: r.id)

    # --- dirty logging -----------------------------------------------------------------------

    async def sync_dirty_logs(self, only: set[int] | None = None) -> None:
        logging = [
            r
            for r in self.regions.values()
            if r.flags & c.KVM_MEM_LOG_DIRTY_PAGES and (only is None or r.id in only)
        ]
        for region in logging:
            pages, at = await trio.to_thread.run_sync(self._get_dirty_log, region.slot)
            self.bus.emit_at(DirtyLog(slot=region.slot, pages=pages), at)
            self._snapshot(region)

    def _get_dirty_log(self, slot: int) -> tuple[list[int], int]:
        """KVM_GET_DIRTY_LOG in the worker thread, stamped there as it returns."""
        pages = self.vm.get_dirty_log(slot)
        return pages, time.monotonic_ns()

    def _snapshot(self, region: MemoryRegion) -> None:
        """RAM of a logging slot right after its bitmap was harvested (or created): what the
        guest changes after this, no KVM_GET_DIRTY_LOG has reported yet."""
        first = region.userspace_addr >> c.PAGE_SHIFT
        with self.ram.bql:
            self._snapshots[region.slot] = self.memory.read(
                region.userspace_addr, region.memory_size
            )
            self.ram.vmm_pages.difference_update(
                range(first, first + (region.memory_size >> c.PAGE_SHIFT))
            )

    def _unharvested(self, old: MemoryRegion) -> None:
        """The bitmap of ``old`` is gone: report pages the guest changed since its last harvest
        as dirty faults, so the checker sees them lost. Pages the VMM itself wrote (MMIO
        service) are QEMU's to mark dirty and are left out."""
        before = self._snapshots.pop(old.slot, None)
        if before is None:
            return
        first_hva = old.userspace_addr >> c.PAGE_SHIFT
        page = c.PAGE_SIZE
        with self.ram.bql:
            now = self.memory.read(old.userspace_addr, old.memory_size)
            changed = [
                i
                for i in range(old.memory_size // page)
                if now[i * page : (i + 1) * page] != before[i * page : (i + 1) * page]
                and first_hva + i not in self.ram.vmm_pages
            ]
        if not changed:
            return
        self.bus.emit(
            Note(
                source="kvm",
                text=f"slot {old.id}: guest RAM of page(s) {changed[:8]} changed after the last "
                "KVM_GET_DIRTY_LOG; the guest dirtied them (inferred from memory contents)",
            )
        )
        for i in changed:
            self.bus.emit(
                Fault(
                    vcpu=-1,
                    gpa=old.guest_phys_addr + i * page,
                    access="write",
                    outcome="dirty",
                    slot=old.id,
                    as_id=old.as_id,
                )
            )

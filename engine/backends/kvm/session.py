"""A session on the real /dev/kvm: the model Session's shape, with real vCPUs and a wall clock.

The pieces are the model's wherever the real kernel allows: the same VMM transactions and slot
numbering (KvmVmm is the model's Vmm with its ioctls, dirty-log syncs, MMIO service and accel
blocker done for real), the same strategies, the same events, checker, log and summary. What
differs is time and sight:

- t is wall-clock ns since the run started (time.monotonic_ns), stamped when an event is
  emitted; runs are nondeterministic and cannot be replayed.
- each vCPU is a trio task whose KVM_RUN calls run in a worker thread (trio.to_thread), one
  call per exit; the exit is handled back in trio, as the model's VcpuRunner does. Pausing is
  the accel blocker of real-kvm.md section 3: immediate_exit plus a SIGUSR1 kick.
- memslot ioctls and KVM_GET_DIRTY_LOG run in a worker thread while vCPUs run, so their exits
  are served while the VMM waits in the kernel, as QEMU's vCPU threads do. With every vCPU
  paused (inhibit) an ioctl takes microseconds and is issued directly.
- the kernel's internals (SRCU, memslot swaps, stage-2 faults) are invisible. The session emits
  only what it sees: ioctls and their outcome, exits, MMIO service, dirty-log harvests. Fault
  events are inferred from exits (an MMIO exit is a fault that found no usable slot; an
  internal error is a fetch that found none), and dirty pages a DELETE or a log stop destroyed
  unharvested are inferred from guest RAM that changed after the last KVM_GET_DIRTY_LOG. The
  header says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import platform
import threading
import time
from collections import Counter, deque
from typing import Any, cast

import trio

from engine import __version__
from engine.backends.kvm.ioctl import KVM_API_VERSION, REGS_RIP, device_path, kvm_module
from engine.backends.kvm.memory import ScenarioMemory
from engine.backends.kvm.vcpu import KvmVcpu, Mmio
from engine.backends.kvm.vm import KvmVM
from engine.backends.kvm.x86 import X86Program, translate
from engine.checker import Checker, Verdict
from engine.events import (
    SCHEMA_VERSION,
    DirtyLog,
    Event,
    EventBus,
    Exit,
    Fault,
    Inhibit,
    IoctlEnter,
    IoctlExit,
    MemslotChange,
    Note,
    Subscriber,
)
from engine.faults import FaultError, Injector, parse_fault
from engine.log import Header, LogWriter, VerdictLine
from engine.model import constants as c
from engine.model.region import MemoryRegion
from engine.scenarios import Scenario
from engine.session import RunConfig, actor_rng
from engine.summary import build_summary
from engine.units import format_ns
from engine.vmm.flatview import FlatView
from engine.vmm.strategies import Strategy, get_strategy
from engine.vmm.vmm import Transaction, Vmm

DEFAULT_DURATION_NS = 1_000_000_000
"""A real run lasts this long unless --duration says otherwise: the scenarios' 1 ms of model
time is a handful of real memslot ioctls on a host where each costs up to 1.4 ms."""
RECORDED_CAP_NS = 120_000_000_000
"""A recorded scenario's wall-time cap on a loaded host (each PAM transaction can take 0.2 s)."""
SYNC_FLOOR_NS = 1_000_000
"""Dirty logs are harvested at most this often: a real KVM_GET_DIRTY_LOG flushes every vCPU's
TLB, and the model's 10 us would keep the VMM thread in the kernel."""
KICK_TIMEOUT_S = 5.0
FAULTS = ("ioctl-gap", "race", "weeds")
STRATEGIES = ("legacy", "inhibit")
ALL_ONES = b"\xff" * 8
IOCTL = "KVM_SET_USER_MEMORY_REGION"


class WallClockBus(EventBus):
    """Stamps events with wall-clock ns since start(), never going backwards."""

    def __init__(self) -> None:
        super().__init__()
        self.t0 = time.monotonic_ns()

    def start(self) -> None:
        self.t0 = time.monotonic_ns()
        self.now = 0

    def elapsed(self) -> int:
        return time.monotonic_ns() - self.t0

    def tick(self) -> int:
        """Bring ``now`` up to the wall clock (code that reads bus.now between events)."""
        now = time.monotonic_ns() - self.t0
        if now > self.now:
            self.now = now
        return self.now

    def emit(self, event: Event) -> None:
        now = time.monotonic_ns() - self.t0
        if now > self.now:
            self.now = now
        super().emit(event)


class KvmChecker(Checker):
    """The model's checker and verdicts. One sentence differs: a real kernel shows userspace no
    memslot swap, so a fetch that failed during or after a DELETE is placed against the ioctl
    (when it entered, whether it had returned) instead of a swap time it cannot know."""

    def __init__(self, atomic: bool, bus: EventBus | None = None) -> None:
        super().__init__(atomic, bus)
        self._enter: IoctlEnter | None = None
        self._returned: IoctlExit | None = None

    def observe(self, ev: Event) -> None:
        kind = type(ev)
        if kind is IoctlEnter:
            self._enter = cast(IoctlEnter, ev)
            self._returned = None
        elif kind is IoctlExit and self._enter is not None:
            self._returned = cast(IoctlExit, ev)
        elif kind is Exit:
            self._real_exit(cast(Exit, ev))
        super().observe(ev)

    def _real_exit(self, ev: Exit) -> None:
        io = self._enter
        if (
            ev.reason != "KVM_EXIT_INTERNAL_ERROR"
            or self.crash
            or io is None
            or io.memory_size != 0
            or io.ioctl != IOCTL
        ):
            return
        done = self._returned
        when = (
            f"had not returned yet ({format_ns(ev.t - io.t)} after it entered the kernel)"
            if done is None
            else f"returned at t={format_ns(done.t)}, {format_ns(ev.t - done.t)} before the exit "
            "reached the VMM"
        )
        self.crash = (
            f"vcpu{ev.vcpu} fetched its next instruction at RIP {ev.rip:#x} while no memslot covered "
            f"that GPA: KVM could not emulate the fetch and KVM_RUN returned KVM_EXIT_INTERNAL_ERROR "
            f"(suberror {ev.suberror}, KVM_INTERNAL_ERROR_EMULATION). The window was opened by "
            f"KVM_SET_USER_MEMORY_REGION(slot {io.slot & 0xFFFF}, memory_size 0), a DELETE issued at "
            f"t={format_ns(io.t)} that {when}."
        )


# --- checks before anything runs ----------------------------------------------------------


def check_strategy(strategy: str) -> Strategy:
    st = get_strategy(strategy)
    if st.name not in STRATEGIES:
        need = st.kernel_change or "a kernel change"
        raise ValueError(
            f"strategy {st.name} needs {need}; the real kernel here runs only "
            f"{' and '.join(STRATEGIES)}"
        )
    return st


def check_scenario(sc: Scenario, nr_address_spaces: int) -> X86Program:
    """Whether real KVM can express the scenario; its guest program in x86 if so."""
    for layout in sc.layouts.values():
        for as_id, region in layout.regions:
            if as_id >= nr_address_spaces:
                raise ValueError(
                    f"scenario {sc.name} maps {region.name} into address space {as_id}, and this "
                    f"kernel has {nr_address_spaces} (KVM_CAP_MULTI_ADDRESS_SPACE); run it on the model"
                )
    if sc.cpl != 0 or sc.guest_mode:
        raise ValueError(
            f"scenario {sc.name} runs its guest at CPL {sc.cpl}{' in L2' if sc.guest_mode else ''}; "
            "the kvm backend runs real-mode guests at CPL 0 in L1 only"
        )
    try:
        return translate(sc.program, sc.entry)
    except ValueError as err:
        raise ValueError(f"scenario {sc.name}: {err}") from None


def check_faults(config: RunConfig) -> None:
    texts = [*config.faults, *(f for _, f in config.fault_script)]
    for text in texts:
        spec = parse_fault(text)
        if spec.kind.name not in FAULTS:
            raise FaultError(
                f"fault {spec.kind.name} acts inside the model's kernel (SRCU readers, grace "
                f"periods); on real KVM slotlab injects only {', '.join(FAULTS)}"
            )
    if config.host:
        raise ValueError(
            "--host describes the model's kernel; the kvm backend runs the one this machine has"
        )


# --- the VMM ---------------------------------------------------------------------------------


def _change_kind(old: MemoryRegion | None, new: MemoryRegion) -> str | None:
    """What the kernel did with an accepted call; None for an identical re-set."""
    if new.memory_size == 0:
        return "DELETE"
    if old is None:
        return "CREATE"
    if old.guest_phys_addr != new.guest_phys_addr:
        return "MOVE"
    if old.flags != new.flags:
        return "FLAGS_ONLY"
    return None


class KvmVmm(Vmm):
    """The model's VMM (transactions, slot ids, FlatView bookkeeping) doing its work on a real
    VM. Only what touches the kernel or the clock is overridden."""

    def __init__(self, session: KvmSession, naive: bool) -> None:
        # Vmm reads session.vm.host and session.bus, which a KvmSession has too.
        super().__init__(cast(Any, session), naive)
        self.ks = session
        self.regions: dict[int, MemoryRegion] = {}
        """Every slot as set, with the scenario's HVA (events and snapshots use it)."""
        self._snapshots: dict[int, bytes] = {}
        self._vmm_pages: set[int] = set()
        self._all_out: trio.Event | None = None
        self._window_event: trio.Event | None = None

    # --- transactions: Vmm reads bus.now, which on a wall clock must be brought up to date --

    def begin(
        self, as_id: int, layout: str, new: FlatView, moves: bool = False
    ) -> Transaction | None:
        self.ks.bus.tick()
        return super().begin(as_id, layout, new, moves)

    def commit(self, txn: Transaction) -> None:
        self.ks.bus.tick()
        super().commit(txn)

    # --- memslot ioctls ----------------------------------------------------------------------

    def _begin_call(self, region: MemoryRegion) -> tuple[MemoryRegion | None, MemoryRegion]:
        self.bus.emit(
            IoctlEnter(
                actor="vmm",
                ioctl=IOCTL,
                slot=region.slot,
                flags=region.flags,
                guest_phys_addr=region.guest_phys_addr,
                memory_size=region.memory_size,
                userspace_addr=region.userspace_addr,
            )
        )
        real = region._replace(userspace_addr=self.ks.memory.real(region.userspace_addr))
        return self.regions.get(region.slot), real

    def _failed(self, region: MemoryRegion, err: OSError) -> None:
        code = err.errno or 0
        self.bus.emit(
            IoctlExit(
                actor="vmm",
                ioctl=IOCTL,
                slot=region.slot,
                errno=code,
                error=errno.errorcode.get(code, ""),
            )
        )

    def _end_call(self, region: MemoryRegion, old: MemoryRegion | None) -> None:
        change = _change_kind(old, region)
        if change is None:
            self.bus.emit(IoctlExit(actor="vmm", ioctl=IOCTL, slot=0, change="NONE"))
            return
        shown = old if change == "DELETE" else region
        assert shown is not None
        logged = old is not None and old.flags & c.KVM_MEM_LOG_DIRTY_PAGES
        logs = region.memory_size and region.flags & c.KVM_MEM_LOG_DIRTY_PAGES
        if old is not None and logged and not logs:
            self._unharvested(old)
        self.bus.emit(
            MemslotChange(
                as_id=region.as_id,
                id=region.id,
                change=change,
                step="commit",
                base_gfn=shown.guest_phys_addr >> c.PAGE_SHIFT,
                npages=shown.memory_size >> c.PAGE_SHIFT,
                flags=shown.flags,
            )
        )
        if change == "DELETE":
            self.regions.pop(region.slot, None)
            self._snapshots.pop(region.slot, None)
        else:
            self.regions[region.slot] = region
            if logs and not logged:
                self._snapshot(region)
        self.bus.emit(IoctlExit(actor="vmm", ioctl=IOCTL, slot=region.slot, change=change))

    def ioctl_now(self, region: MemoryRegion) -> None:
        """A memslot ioctl from the calling thread (boot, before any vCPU runs)."""
        old, real = self._begin_call(region)
        try:
            self.ks.vm.set_user_memory_region(*real)
        except OSError as err:
            self._failed(region, err)
            raise
        self._end_call(region, old)

    async def ioctl(self, region: MemoryRegion) -> None:
        old = self.regions.get(region.slot)
        if (
            old is not None
            and old.flags & c.KVM_MEM_LOG_DIRTY_PAGES
            and (region.memory_size == 0 or not region.flags & c.KVM_MEM_LOG_DIRTY_PAGES)
        ):
            # QEMU's last sync before the bitmap goes; the guest may still dirty pages after it.
            await self.sync_dirty_logs_async({region.id})
        self.ioctl_count += 1
        old, real = self._begin_call(region)
        try:
            if self.inhibited:
                # Every vCPU is out of KVM_RUN: the commit waits for no SRCU reader and
                # returns in microseconds, and no exit needs serving meanwhile.
                self.ks.vm.set_user_memory_region(*real)
            else:
                # With vCPUs running each commit waits out their SRCU read sections (up to an
                # emulation batch each), and their exits must be served meanwhile.
                await trio.to_thread.run_sync(self.ks.vm.set_user_memory_region, *real)
        except OSError as err:
            self._failed(region, err)
            raise
        self._end_call(region, old)

    async def ioctl_list(self, regions: list[MemoryRegion]) -> None:
        raise OSError(errno.ENOTTY, "KVM_SET_USER_MEMORY_REGION_LIST does not exist on this kernel")

    async def ioctl_all(self, as_id: int, regions: list[MemoryRegion]) -> None:
        raise OSError(errno.ENOTTY, "KVM_SET_ALL_USER_MEMORY_REGIONS does not exist on this kernel")

    async def ioctl_convert(
        self, as_id: int, old_ids: list[int], regions: list[MemoryRegion]
    ) -> None:
        raise OSError(errno.ENOTTY, "KVM_CONVERT_MEMORY_REGIONS does not exist on this kernel")

    # --- dirty logging -----------------------------------------------------------------------

    def logging_slots(self, only: set[int] | None = None) -> list[MemoryRegion]:
        return [
            r
            for r in self.regions.values()
            if r.flags & c.KVM_MEM_LOG_DIRTY_PAGES and (only is None or r.id in only)
        ]

    def sync_dirty_logs(self, only: set[int] | None = None) -> None:
        """KVM_GET_DIRTY_LOG for every logging slot, from the calling thread."""
        for region in self.logging_slots(only):
            self._harvested(region, self.ks.vm.get_dirty_log(region.slot))

    async def sync_dirty_logs_async(self, only: set[int] | None = None) -> None:
        for region in self.logging_slots(only):
            pages = await trio.to_thread.run_sync(self.ks.vm.get_dirty_log, region.slot)
            self._harvested(region, pages)

    def _harvested(self, region: MemoryRegion, pages: list[int]) -> None:
        self.bus.emit(DirtyLog(slot=region.slot, pages=pages))
        self._snapshot(region)

    def _snapshot(self, region: MemoryRegion) -> None:
        """RAM of a logging slot right after its bitmap was harvested (or created): what the
        guest changes after this, no KVM_GET_DIRTY_LOG has reported yet."""
        self._snapshots[region.slot] = self.ks.memory.read(
            region.userspace_addr, region.memory_size
        )
        first = region.userspace_addr >> c.PAGE_SHIFT
        self._vmm_pages.difference_update(
            range(first, first + (region.memory_size >> c.PAGE_SHIFT))
        )

    def _unharvested(self, old: MemoryRegion) -> None:
        """The bitmap of ``old`` is gone: report pages the guest changed since its last harvest
        as dirty faults, so the checker sees them lost. Only writes that changed a value show,
        so this is a lower bound; pages the VMM itself wrote (MMIO service) are QEMU's to mark
        dirty and are left out."""
        before = self._snapshots.pop(old.slot, None)
        if before is None:
            return
        now = self.ks.memory.read(old.userspace_addr, old.memory_size)
        first_hva = old.userspace_addr >> c.PAGE_SHIFT
        page = c.PAGE_SIZE
        changed = [
            i
            for i in range(old.memory_size // page)
            if now[i * page : (i + 1) * page] != before[i * page : (i + 1) * page]
            and first_hva + i not in self._vmm_pages
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

    # --- between and after ioctls ----------------------------------------------------------------

    async def between_ioctls(self, txn: Any) -> None:
        gap = self.ks.injector.ioctl_gap()
        if gap:
            await trio.sleep(gap / 1e9)
        await trio.lowlevel.checkpoint()

    async def after_delete(self, txn: Any, op: Any) -> None:
        """`race`: hold the window open until a vCPU has exited inside it, or the limit."""
        if self.inhibited:
            return
        limit = self.ks.injector.race_window()
        if not limit:
            return
        if self._window_faults:
            return
        self._window_event = trio.Event()
        with trio.move_on_after(limit / 1e9):
            await self._window_event.wait()
        self._window_event = None

    def _watch(self, event: Event) -> None:
        super()._watch(event)
        if self._window_faults and self._window_event is not None:
            self._window_event.set()

    # --- the accel blocker -----------------------------------------------------------------------

    async def inhibit_begin(self) -> None:
        self.inhibited = True
        self.bus.emit(Inhibit(phase="begin"))
        started = time.monotonic_ns()
        runners = self.ks.vcpu_runners
        for runner in runners:
            runner.kick()
        while not all(r.out_of_kvm_run for r in runners):
            self._all_out = trio.Event()
            await self._all_out.wait()
        self._all_out = None
        self.bus.emit(Inhibit(phase="all_out", latency_ns=time.monotonic_ns() - started))

    def vcpu_out(self) -> None:
        if self._all_out is not None:
            self._all_out.set()

    def inhibit_end(self) -> None:
        self.inhibited = False
        self.bus.emit(Inhibit(phase="end"))
        for runner in self.ks.vcpu_runners:
            runner.resume()

    # --- exits -------------------------------------------------------------------------------

    def serve_real_mmio(self, runner: KvmVcpuRunner, mmio: Mmio) -> None:
        """address_space_rw() through the published FlatView (the old one while a transaction
        is in flight, so an access taken in the update window still lands in RAM)."""
        gpa, size = mmio.phys_addr, mmio.len
        target, name, ram = self.route_mmio(0, gpa, mmio.is_write)
        if mmio.is_write:
            if ram is not None:
                hva = ram.hva_of(gpa)
                self.ks.memory.write(hva, mmio.data[:size])
                self._vmm_pages.add(hva >> c.PAGE_SHIFT)
            data = mmio.value
        else:
            if ram is not None:
                value = self.ks.memory.read(ram.hva_of(gpa), size)
            else:
                value = bytes(size) if target == "dropped" else ALL_ONES[:size]
            runner.vcpu.complete_mmio_read(value)
            data = int.from_bytes(value, "little")
        self.served(runner.index, gpa, mmio.is_write, data, target, name)

    def halt(self) -> None:
        self.ks.request_stop()

    def write_guest(self, gpa: int, value: object, as_id: int = 0) -> None:
        """Userspace writing guest memory through its own mapping (loading the program)."""
        assert isinstance(value, bytes)
        r = self.views[as_id].lookup(gpa)
        if r is None or not r.backed or gpa + len(value) > r.end:
            raise ValueError(
                f"GPA {gpa:#x}+{len(value):#x} is not one RAM range in the initial layout"
            )
        self.ks.memory.write(r.hva_of(gpa), value)


# --- vCPUs -----------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class RawExit:
    """What a worker thread read after KVM_RUN returned (so trio's thread makes no syscall)."""

    reason: int
    rip: int
    mmio: Mmio | None = None
    suberror: int = 0
    data: tuple[int, ...] = ()


class _Call:
    """One KVM_RUN handed to a worker thread, and whether trio gave up waiting for it."""

    __slots__ = ("abandoned", "finished", "lock", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.abandoned = False
        self.finished = threading.Event()


class KvmVcpuRunner:
    """The userspace half of a vCPU thread, as the model's VcpuRunner: KVM_RUN, handle the
    exit, block while the VMM inhibits, stop on an exit the guest cannot survive."""

    def __init__(self, session: KvmSession, vcpu: KvmVcpu, index: int) -> None:
        self.session = session
        self.vcpu = vcpu
        self.index = index
        self.name = f"vcpu{index}"
        self.exits: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.state = "idle"
        self.rip = session.config.scenario.entry
        self.out_of_kvm_run = True
        self.stall_ns = 0
        self.blocked_since = -1
        self.done = False
        self.pending_jump: int | None = None
        self._resume = trio.Event()

    def kick(self) -> None:
        if not self.out_of_kvm_run:
            self.vcpu.kick()

    def resume(self) -> None:
        self._resume.set()

    async def body(self) -> None:
        s = self.session
        vmm = s.vmm
        try:
            while not s.stopping:
                if vmm.inhibited:
                    await self._blocked()
                    continue
                if self.pending_jump is not None:
                    self.vcpu.set_rip(self.pending_jump)
                    self.pending_jump = None
                self.vcpu.clear_kick()
                self.out_of_kvm_run = False
                self.state = "guest"
                try:
                    raw = await self._kvm_run()
                finally:
                    self.out_of_kvm_run = True
                    vmm.vcpu_out()
                if raw is None:
                    return
                self.state = "userspace"
                if not self._handle(raw):
                    return
        finally:
            self.done = True
            self.out_of_kvm_run = True
            vmm.vcpu_out()

    async def _kvm_run(self) -> RawExit | None:
        s, vcpu = self.session, self.vcpu
        call = _Call()

        def work() -> RawExit | None:
            with call.lock:
                if call.abandoned or s.stopping:
                    return None
                call.started = True
            try:
                reason = vcpu.run()
                rip = vcpu.get_regs()[REGS_RIP]
                if reason == c.KVM_EXIT_MMIO:
                    return RawExit(reason, rip, mmio=vcpu.mmio())
                if reason == c.KVM_EXIT_INTERNAL_ERROR:
                    suberror, data = vcpu.internal_error()
                    return RawExit(reason, rip, suberror=suberror, data=tuple(data))
                return RawExit(reason, rip)
            finally:
                call.finished.set()

        try:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=s.limiter)
        except trio.Cancelled:
            with call.lock:
                call.abandoned = True
                started = call.started
            if started:
                # trio stopped waiting, but the thread may still be inside KVM_RUN: kick it
                # until it is out, so the vCPU fd is never closed under a running ioctl. (A
                # call that had not started never will: it sees `abandoned`.)
                with trio.CancelScope(shield=True):
                    deadline = time.monotonic() + KICK_TIMEOUT_S
                    while not call.finished.is_set():
                        vcpu.kick()
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"{self.name} did not leave KVM_RUN") from None
                        await trio.sleep(0.0005)
            raise

    async def _blocked(self) -> None:
        s = self.session
        self.state = "blocked"
        since = time.monotonic_ns()
        self.blocked_since = s.bus.elapsed()
        while s.vmm.inhibited:
            self._resume = trio.Event()
            await self._resume.wait()
        self.stall_ns += time.monotonic_ns() - since
        self.blocked_since = -1

    def _fault(self, gpa: int, access: str, outcome: str) -> None:
        self.faults[outcome] += 1
        self.session.bus.emit(
            Fault(vcpu=self.index, gpa=gpa, access=access, outcome=outcome, slot=-1)
        )

    def _exit(self, reason: int, rip: int, **fields: Any) -> str:
        name = c.EXIT_REASON_NAMES.get(reason, f"KVM_EXIT_{reason}")
        self.exits[name] += 1
        self.session.bus.emit(Exit(vcpu=self.index, reason=name, rip=rip, **fields))
        return name

    def _handle(self, raw: RawExit) -> bool:
        """One exit, as the model's vCPU and VcpuRunner report it; False when the vCPU stops."""
        s = self.session
        rip = s.program.model_of(raw.rip)
        self.rip = rip
        if raw.reason == c.KVM_EXIT_MMIO:
            m = raw.mmio
            assert m is not None
            r = s.vmm.views[0].lookup(m.phys_addr)
            rom_write = m.is_write and r is not None and r.readonly
            self._fault(
                m.phys_addr,
                "write" if m.is_write else "read",
                "readonly_mmio" if rom_write else "mmio",
            )
            self._exit(
                raw.reason,
                rip,
                phys_addr=m.phys_addr,
                len=m.len,
                is_write=m.is_write,
                data=m.value if m.is_write else 0,
            )
            s.vmm.serve_real_mmio(self, m)
            return True
        if raw.reason == c.KVM_EXIT_INTR:
            self._exit(raw.reason, rip)
            return True
        self.done = True
        if raw.reason == c.KVM_EXIT_HLT:
            self._exit(raw.reason, rip)
            self.state = "halted"
            return False
        if raw.reason == c.KVM_EXIT_INTERNAL_ERROR:
            self._fault(rip, "fetch", "emulation_failure")
            name = self._exit(raw.reason, rip, suberror=raw.suberror)
        else:
            name = self._exit(raw.reason, rip)
        self.state = "dead"
        s.vmm.stop_vm(
            f"{name} on vcpu{self.index} at RIP {rip:#x}: QEMU stops the VM", self.index, rip
        )
        return False


# --- the session -----------------------------------------------------------------------------


class KvmSession:
    def __init__(
        self,
        config: RunConfig,
        log_path: str | None = None,
        observers: tuple[Subscriber, ...] = (),
        max_transactions: int | None = None,
    ) -> None:
        self.config = config
        sc = config.scenario
        self.strategy = check_strategy(config.strategy)
        check_faults(config)
        # One address space is all a scenario may use until the VM says otherwise (run()).
        self.program = check_scenario(sc, max(1, _address_spaces_hint()))
        self.bus = WallClockBus()
        # A recorded scenario ends when its steps are played; its cap is only a safety net.
        recorded = config.scenario.gaps_ns is not None
        self.duration_ns = config.duration_ns or (
            RECORDED_CAP_NS if recorded else DEFAULT_DURATION_NS
        )
        self.max_transactions = max_transactions
        self.nr_vcpus = config.vcpus or sc.vcpus
        armed = [parse_fault(f) for f in config.faults]
        self.injector = Injector(self.bus, actor_rng(config.seed, "injector"), armed)
        self.injector.jump_vcpu = self._jump_vcpu
        self.vmm_rng = actor_rng(config.seed, "vmm")
        self.checker = KvmChecker(self.strategy.atomic, self.bus)
        self.recent: deque[Event] = deque(maxlen=2000)
        self.bus.subscribe(self.recent.append)
        self.bus.subscribe(self.checker.observe)
        self.log_path = log_path
        self.writer: LogWriter | None = None
        for observer in observers:
            self.bus.subscribe(observer)
        self.limiter = trio.CapacityLimiter(self.nr_vcpus + 2)
        self.stopping = False
        self.stop_reason = ""
        self.result: Verdict | None = None
        self.error: BaseException | None = None
        self.host_info: dict[str, Any] = {"backend": "kvm"}
        self._vm: KvmVM | None = None
        self._memory: ScenarioMemory | None = None
        self._vmm: KvmVmm | None = None
        self.vcpu_runners: list[KvmVcpuRunner] = []
        self._nursery: trio.Nursery | None = None

    # The VMM reads these; they exist from run() on.

    @property
    def vm(self) -> KvmVM:
        if self._vm is None:
            raise RuntimeError("the session has not opened its VM (call run())")
        return self._vm

    @property
    def memory(self) -> ScenarioMemory:
        assert self._memory is not None
        return self._memory

    @property
    def vmm(self) -> KvmVmm:
        if self._vmm is None:
            raise RuntimeError("the session has not opened its VM (call run())")
        return self._vmm

    # --- set-up and teardown -------------------------------------------------------------------

    def header(self) -> Header:
        cfg = self.config
        return Header(
            schema=SCHEMA_VERSION,
            tool=f"slotlab {__version__}",
            seed=cfg.seed,
            scenario=cfg.scenario.name,
            strategy=cfg.strategy,
            host=self.host_info,
            vcpus=self.nr_vcpus,
            duration_ns=self.duration_ns,
            faults=list(cfg.faults),
            fault_script=[[t, f] for t, f in cfg.fault_script],
            naive=cfg.naive,
            scenario_text=cfg.scenario_text,
        )

    def _describe_host(self, vm: KvmVM) -> dict[str, Any]:
        caps = {
            name: vm.check_extension(cap)
            for name, cap in (
                ("KVM_CAP_NR_MEMSLOTS", c.KVM_CAP_NR_MEMSLOTS),
                ("KVM_CAP_MULTI_ADDRESS_SPACE", c.KVM_CAP_MULTI_ADDRESS_SPACE),
                ("KVM_CAP_READONLY_MEM", c.KVM_CAP_READONLY_MEM),
                ("KVM_CAP_IMMEDIATE_EXIT", c.KVM_CAP_IMMEDIATE_EXIT),
                ("KVM_CAP_NR_VCPUS", c.KVM_CAP_NR_VCPUS),
            )
        }
        return {
            "backend": "kvm",
            "deterministic": False,
            "clock": "wall: t is time.monotonic_ns() since the run started, taken when the "
            "event reached the VMM's event loop (a vCPU exit some 20-200 us after KVM_RUN "
            "returned in its worker thread)",
            "device": device_path(),
            "kernel": platform.release(),
            "api_version": KVM_API_VERSION,
            "kvm_module": kvm_module(),
            "nr_address_spaces": vm.nr_address_spaces,
            "caps": caps,
            "guest": "16-bit real mode with 4 GiB segment limits; data words are 16 bits",
            "code": self.program.describe(),
            "memory": self.memory.blocks(),
            "inferred": [
                "fault events come from exits (mmio, readonly_mmio, emulation_failure)",
                "dirty faults: RAM a guest changed between the last KVM_GET_DIRTY_LOG and the "
                "loss of the bitmap (a lower bound)",
            ],
        }

    def _open(self) -> None:
        """The VM, its memory, the boot layout, the guest program and the vCPUs."""
        sc = self.config.scenario
        self._vm = vm = KvmVM()
        check_scenario(sc, vm.nr_address_spaces)
        if self.nr_vcpus > vm.check_extension(c.KVM_CAP_MAX_VCPUS):
            raise ValueError(f"{self.nr_vcpus} vCPUs is more than KVM_CAP_MAX_VCPUS")
        self._memory = ScenarioMemory(vm, sc)
        self.host_info = self._describe_host(vm)
        if self.log_path is not None:
            self.writer = LogWriter(self.log_path)
            self.writer.write_header(self.header())
            self.bus.subscribe(self.writer.write_event)
        self._vmm = vmm = KvmVmm(self, self.config.naive)
        boot = sc.layouts[sc.sequence[0]]
        for as_id in range(vm.nr_address_spaces):
            txn = vmm.begin(as_id, boot.name, FlatView.render(boot.for_as(as_id)))
            if txn is None:
                continue
            for op in txn.ops:
                vmm.ioctl_now(op.region)
            vmm.commit(txn)
        vmm.latencies.clear()
        vmm.write_guest(self.program.base, self.program.code)
        for i in range(self.nr_vcpus):
            vcpu = vm.create_vcpu(i)
            vcpu.setup_flat_real_mode(self.program.base)
            self.vcpu_runners.append(KvmVcpuRunner(self, vcpu, i))

    def close(self) -> None:
        """Release the VM (vCPUs, fds, mappings); safe to call twice."""
        if self._vm is not None:
            self._vm.close()
        if self.writer is not None:
            self.writer.close()

    # --- running -------------------------------------------------------------------------------

    async def run(self) -> Verdict:
        self.bus.start()
        try:
            self._open()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.stopping:  # stopped before it started (a stop request during boot)
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._vmm_body)
                for runner in self.vcpu_runners:
                    nursery.start_soon(runner.body)
                nursery.start_soon(self._clock)
                if self.config.fault_script:
                    nursery.start_soon(self._script_body)
        except BaseException as err:
            self.error = err
            self.close()
            raise _unwrap(err) from None
        try:
            return self.finish()
        finally:
            self.close()

    def request_stop(self, reason: str = "vm stopped") -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_reason = reason
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def _clock(self) -> None:
        await trio.sleep(self.duration_ns / 1e9)
        self.request_stop("duration")

    def finish(self) -> Verdict:
        verdict = self.checker.verdict()
        self.result = verdict
        if self.writer is not None:
            self.writer.write_verdict(
                VerdictLine(
                    verdict=verdict.verdict,
                    explanation=verdict.explanation,
                    summary=self.summary(),
                )
            )
        return verdict

    async def _vmm_body(self) -> None:
        sc, vmm = self.config.scenario, self.vmm
        # As the model's Session: the boot layout is sequence[0]; Scenario.steps says when
        # to move to which next.
        for idle, layout in sc.steps(self.vmm_rng):
            await self._idle(idle)
            if layout is None:
                continue
            self.injector.on_transaction()
            for as_id in range(self.vm.nr_address_spaces):
                txn = vmm.begin(as_id, layout.name, FlatView.render(layout.for_as(as_id)), sc.moves)
                if txn is None:
                    continue
                await self.strategy.apply(vmm, txn)
                vmm.commit(txn)
            if vmm.stopped_reason:
                return
            if self.max_transactions is not None and vmm.txn_count >= self.max_transactions:
                self.request_stop("transactions")
                return
            await trio.lowlevel.checkpoint()
        self.request_stop("scenario played")

    async def _idle(self, ns: int) -> None:
        """Between transactions; harvests dirty logs every sync period while slots log."""
        sync = max(self.config.scenario.sync_ns, SYNC_FLOOR_NS)
        end = time.monotonic_ns() + ns
        while True:
            left = end - time.monotonic_ns()
            if left <= 0:
                return
            await trio.sleep(min(sync, left) / 1e9)
            if self.vmm.logging_slots():
                await self.vmm.sync_dirty_logs_async()

    async def _script_body(self) -> None:
        for t, text in self.config.fault_script:
            delay = t - self.bus.elapsed()
            if delay > 0:
                await trio.sleep(delay / 1e9)
            self.injector.apply_now(parse_fault(text))

    def _jump_vcpu(self, index: int, gpa: int) -> bool:
        """`weeds`: send a vCPU to a GPA; applied while it is out of KVM_RUN."""
        if not 0 <= index < len(self.vcpu_runners):
            return False
        runner = self.vcpu_runners[index]
        x86 = self.program.x86_of(gpa)
        runner.pending_jump = gpa if x86 is None else x86
        runner.kick()
        return True

    def send(self, name: str, **args: str) -> None:
        """A command from outside. Only `inject` means anything to a real VM: pacing commands
        (pause, step, speed) are the model's, whose clock is virtual."""
        if name != "inject":
            raise ValueError(f"command {name!r} needs the model's virtual clock")
        spec = parse_fault(args.get("fault", ""))
        if spec.kind.name not in FAULTS:
            raise FaultError(f"fault {spec.kind.name} cannot be injected into a real VM")
        self.injector.apply_now(spec)

    # --- results -------------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        vmm = self._vmm
        return build_summary(
            verdict=self.result or self.checker.verdict(),
            checker=self.checker,
            exits=(r.exits for r in self.vcpu_runners),
            faults=(r.faults for r in self.vcpu_runners),
            latencies=vmm.latencies if vmm is not None else [],
            transactions=vmm.txn_count if vmm is not None else 0,
            ioctls=vmm.ioctl_count if vmm is not None else 0,
            stall_ns=sum(r.stall_ns for r in self.vcpu_runners),
            injections=self.injector.injections,
            events=self.bus.seq,
            virtual_ns=self.bus.now,
            seed=self.config.seed,
            scenario=self.config.scenario.name,
            strategy=self.config.strategy,
            log=str(self.writer.path) if self.writer is not None else None,
        )


def _unwrap(err: BaseException) -> BaseException:
    """What a caller should see from the session's nursery: Ctrl-C as KeyboardInterrupt
    (whichever task trio delivered it to), and a lone failure as itself."""
    if isinstance(err, BaseExceptionGroup):
        if err.subgroup(KeyboardInterrupt) is not None:
            return KeyboardInterrupt()
        if len(err.exceptions) == 1:
            return _unwrap(err.exceptions[0])
    return err


def _address_spaces_hint() -> int:
    """Address spaces of the kernel here, read without keeping a VM; 1 if it cannot be read."""
    with contextlib.suppress(OSError), KvmVM() as vm:
        return vm.nr_address_spaces
    return 1

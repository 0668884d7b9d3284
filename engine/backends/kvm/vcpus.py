"""Real vCPU threads driven from trio, and the VMM's handle on them.

Each vCPU is a trio task whose KVM_RUN calls run in a worker thread (trio.to_thread). The
thread serves MMIO exits itself and stays in its KVM_RUN loop, as QEMU's vCPU thread does
(serve.py); any other exit is handed back to trio and handled there, as the model's
VcpuRunner does. Pausing is QEMU's
accel blocker: the runner sets kvm_run->immediate_exit and signals the thread, so KVM_RUN
returns -EINTR at once (arch/x86/kvm/x86.c: kvm_arch_vcpu_ioctl_run()).

Only what leaves the kernel is visible: a Fault event is inferred from an exit (an MMIO exit
is a fault that found no usable slot; an internal error is a fetch that found none). An exit
and its fault carry the instant KVM_RUN returned, stamped in the vCPU's thread (clock.py).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from engine.backends.kvm.serve import RawExit, ServedExit, VcpuThread, serve_mmio
from engine.backends.kvm.vcpu import KvmVcpu
from engine.backends.kvm.x86 import X86Program
from engine.core.ports import VcpuTotals
from engine.events import Exit, Fault, MmioServed, classify_internal
from engine.model import constants as c

if TYPE_CHECKING:
    from engine.backends.kvm.clock import WallClockBus
    from engine.vmm.flatview import FlatRange
    from engine.vmm.vmm import Vmm

KICK_TIMEOUT_S = 5.0


class _Call:
    """One KVM_RUN handed to a worker thread, and whether trio gave up waiting for it."""

    __slots__ = ("abandoned", "finished", "lock", "started")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started = False
        self.abandoned = False
        self.finished = threading.Event()


class KvmVcpus:
    """VcpuControl over real vCPU threads."""

    def __init__(self, bus: WallClockBus, nr_vcpus: int) -> None:
        self.bus = bus
        self.runners: list[KvmVcpuRunner] = []
        self.stopping = False
        self.limiter = trio.CapacityLimiter(nr_vcpus + 2)
        self._all_out: trio.Event | None = None
        self.kick_ns = 0
        self.kicked: list[KvmVcpuRunner] = []
        self.bql = threading.Lock()
        """QEMU's BQL, as far as the vCPU threads need one (serve.py); the backend shares it
        with the kernel layer."""

    def vcpu_out(self) -> None:
        if self._all_out is not None:
            self._all_out.set()

    def kick_all(self) -> None:
        self.kick_ns = time.monotonic_ns()
        self.kicked = [r for r in self.runners if not r.out_of_kvm_run]
        for runner in self.runners:
            runner.kick()

    def pause_ns(self) -> int:
        """Kernel-side pause latency: from the kick to the last kicked vCPU's return from
        KVM_RUN, both stamped in the thread that made the syscall."""
        out = [r.returned_ns for r in self.kicked]
        return max(0, max(out, default=self.kick_ns) - self.kick_ns)

    async def wait_all_out(self) -> None:
        while not all(r.out_of_kvm_run for r in self.runners):
            self._all_out = trio.Event()
            await self._all_out.wait()
        self._all_out = None

    def resume_all(self) -> None:
        for runner in self.runners:
            runner.resume()

    def fetching_from(self, ranges: Sequence[FlatRange]) -> bool:
        """A running vCPU's RIP is not visible from userspace: an update starts at once."""
        return True

    def totals(self) -> VcpuTotals:
        runners = self.runners
        return VcpuTotals.of(
            (r.exits for r in runners),
            (r.faults for r in runners),
            sum(r.stall_ns for r in runners),
        )

    def jump(self, program: X86Program, index: int, gpa: int) -> bool:
        """`weeds`: send a vCPU to a GPA; applied while it is out of KVM_RUN."""
        if not 0 <= index < len(self.runners):
            return False
        runner = self.runners[index]
        x86 = program.x86_of(gpa)
        runner.pending_jump = gpa if x86 is None else x86
        runner.kick()
        return True


class KvmVcpuRunner:
    """The userspace half of a vCPU thread, as the model's VcpuRunner: KVM_RUN, handle the
    exit, block while the VMM inhibits, stop on an exit the guest cannot survive."""

    def __init__(
        self,
        control: KvmVcpus,
        vmm: Vmm,
        program: X86Program,
        vcpu: KvmVcpu,
        index: int,
        entry: int,
    ) -> None:
        self.control = control
        self.vmm = vmm
        self.bus: WallClockBus = control.bus
        self.program = program
        self.vcpu = vcpu
        self.index = index
        self.name = f"vcpu{index}"
        self.exits: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.state = "idle"
        self.rip = entry
        self.out_of_kvm_run = True
        self.stall_ns = 0
        self.blocked_since = -1
        self.done = False
        self.pending_jump: int | None = None
        self.returned_ns = 0
        self.handoffs = 0
        """Exits handed to the event loop (those the thread served itself: thread.served_here)."""
        self.thread = VcpuThread(
            vcpu, vmm, control.bql, index, self._post, lambda: len(self.bus.inbox)
        )
        self._at = 0
        self._resume = trio.Event()

    def kick(self) -> None:
        if not self.out_of_kvm_run:
            self.vcpu.kick()

    def resume(self) -> None:
        self._resume.set()

    async def body(self) -> None:
        ctl, vmm = self.control, self.vmm
        try:
            while not ctl.stopping:
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
                    ctl.vcpu_out()
                if raw is None:
                    return
                self.state = "userspace"
                if not self._handle(raw):
                    return
        finally:
            self.done = True
            self.out_of_kvm_run = True
            ctl.vcpu_out()

    async def _kvm_run(self) -> RawExit | None:
        ctl, vcpu = self.control, self.vcpu
        call = _Call()

        def keep_going() -> bool:
            return not (call.abandoned or ctl.stopping)

        def work() -> RawExit | None:
            with call.lock:
                if call.abandoned or ctl.stopping:
                    return None
                call.started = True
            try:
                return self.thread.run(keep_going)
            finally:
                call.finished.set()

        try:
            raw = await trio.to_thread.run_sync(work, abandon_on_cancel=True, limiter=ctl.limiter)
            if raw is not None:
                self.handoffs += 1
                self.returned_ns = raw.at_ns
            return raw
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
        self.state = "blocked"
        since = time.monotonic_ns()
        self.blocked_since = self.control.bus.elapsed()
        while self.vmm.inhibited:
            self._resume = trio.Event()
            await self._resume.wait()
        self.stall_ns += time.monotonic_ns() - since
        self.blocked_since = -1

    def _fault(self, gpa: int, access: str, outcome: str) -> None:
        self.faults[outcome] += 1
        fault = Fault(vcpu=self.index, gpa=gpa, access=access, outcome=outcome, slot=-1)
        self.bus.emit_at(fault, self._at)

    def _exit(self, reason: int, rip: int, **fields: Any) -> str:
        name = c.EXIT_REASON_NAMES.get(reason, f"KVM_EXIT_{reason}")
        self.exits[name] += 1
        exit = Exit(vcpu=self.index, reason=name, rip=rip, **fields)
        self.bus.emit_at(exit, self._at)
        return name

    def _post(self, served: ServedExit) -> None:
        """From the vCPU thread: an exit it served, for the event loop to report."""
        self.bus.inbox.post(served.at_ns, self._report_mmio, served)

    def _report_mmio(self, served: ServedExit) -> None:
        """The events of a served MMIO exit, at the thread's stamps: the fault the exit implies
        and the exit when KVM_RUN returned, the VMM's service when it was done."""
        self._at = served.at_ns
        self.rip = self.program.model_of(served.rip)
        phys, is_write = served.phys_addr, served.is_write
        self._fault(
            phys,
            "write" if is_write else "read",
            "readonly_mmio" if served.rom_write else "mmio",
        )
        self._exit(
            c.KVM_EXIT_MMIO,
            self.rip,
            phys_addr=phys,
            len=served.len,
            is_write=is_write,
            data=served.written,
        )
        event = MmioServed(
            vcpu=self.index,
            gpa=phys,
            is_write=is_write,
            data=served.data,
            target=served.target,
            region=served.region,
        )
        self.bus.emit_at(event, served.served_ns)

    def _handle(self, raw: RawExit) -> bool:
        """One exit, as the model's vCPU and VcpuRunner report it; False when the vCPU stops."""
        vmm = self.vmm
        self.bus.inbox.deliver(raw.at_ns)  # what this thread served before it comes first
        self._at = raw.at_ns  # the exit and what it implies happened when KVM_RUN returned
        rip = self.program.model_of(raw.rip)
        self.rip = rip
        if raw.reason == c.KVM_EXIT_MMIO:
            self._report_mmio(serve_mmio(self.vcpu, vmm, self.control.bql, raw))
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
            words = list(raw.data)
            name = self._exit(
                raw.reason,
                rip,
                suberror=raw.suberror,
                internal_data=words,
                internal=classify_internal(raw.suberror, words),
            )
        else:
            name = self._exit(raw.reason, rip)
        self.state = "dead"
        vmm.vcpu_died(name, self.index, rip)
        return False

"""The kvm backend: a session on the machine's /dev/kvm, with real vCPUs and a wall clock.

The pieces are the model's wherever the real kernel allows: the same session core, VMM
transactions and slot numbering, strategies (those the kernel here runs), events, checker,
log and summary. What differs is time and sight:

- t is wall-clock ns since the run started (time.monotonic_ns), stamped in the thread that
  made the syscall (clock.py); runs are nondeterministic and cannot be replayed. Update and
  pause latency are restated from those stamps (restate()).
- the kernel side (kernel.py) issues the real ioctls and reports what userspace sees of them;
  the vCPUs (vcpus.py) run KVM_RUN in worker threads.
- the kernel's internals (SRCU, memslot swaps, stage-2 faults) are invisible, and the header
  says what is inferred instead.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from typing import Any, cast

import trio

from engine.backends.kvm.checker import KvmChecker
from engine.backends.kvm.checks import (
    FAULTS,
    address_spaces_hint,
    check_faults,
    check_scenario,
    check_strategy,
)
from engine.backends.kvm.clock import WallClock, WallClockBus
from engine.backends.kvm.ioctl import KVM_API_VERSION, device_path, kvm_module
from engine.backends.kvm.kernel import KvmKernel, KvmRam
from engine.backends.kvm.memory import ScenarioMemory
from engine.backends.kvm.snapshot import KvmSnapshotSource
from engine.backends.kvm.vcpus import KvmVcpuRunner, KvmVcpus
from engine.backends.kvm.vm import KvmVM
from engine.backends.kvm.x86 import X86Program
from engine.checker import Checker
from engine.core.config import RunConfig
from engine.core.ports import Body, Machine, RunContext
from engine.events import Event, EventBus, Inhibit, TxnBegin, TxnCommit
from engine.faults import FaultError, FaultSpec
from engine.model import constants as c
from engine.signals import INTERRUPTED
from engine.vmm.vmm import Vmm

DEFAULT_DURATION_NS = 1_000_000_000
"""A real run lasts this long unless --duration says otherwise: the scenarios' 1 ms of model
time is a handful of real memslot ioctls on a host where each costs up to 1.4 ms."""
RECORDED_CAP_NS = 120_000_000_000
"""A recorded scenario's wall-time cap on a loaded host (each PAM transaction can take 0.2 s)."""
SYNC_FLOOR_NS = 1_000_000
"""Dirty logs are harvested at most this often: a real KVM_GET_DIRTY_LOG flushes every vCPU's
TLB, and the model's 10 us would keep the VMM thread in the kernel."""


class KvmBackend:
    name = "kvm"
    opens_eagerly = False
    sync_floor_ns = SYNC_FLOOR_NS
    wall_clock = True

    def __init__(self) -> None:
        self.bus = WallClockBus()
        self.stopping = False
        self._stop_reason = ""
        self._ctx: RunContext | None = None
        self._program: X86Program | None = None
        self._clocks: dict[str, WallClock] = {}
        self._vm: KvmVM | None = None
        self._memory: ScenarioMemory | None = None
        self._kernel: KvmKernel | None = None
        self._vcpus: KvmVcpus | None = None
        self._nursery: trio.Nursery | None = None

    # --- before the run -------------------------------------------------------------------

    def new_bus(self) -> EventBus:
        return self.bus

    def check(self, config: RunConfig) -> None:
        check_strategy(config.strategy)
        check_faults(config)
        # One address space is all a scenario may use until the VM says otherwise (open()).
        self._program = check_scenario(config.scenario, max(1, address_spaces_hint()))

    def check_fault(self, spec: FaultSpec) -> None:
        if spec.kind.name not in FAULTS:
            raise FaultError(f"fault {spec.kind.name} cannot be injected into a real VM")

    def new_checker(self, atomic: bool, bus: EventBus) -> Checker:
        return KvmChecker(atomic, bus)

    def duration_ns(self, config: RunConfig) -> int:
        # A recorded scenario ends when its steps are played; its cap is only a safety net.
        recorded = config.scenario.gaps_ns is not None
        return config.duration_ns or (RECORDED_CAP_NS if recorded else DEFAULT_DURATION_NS)

    def attach(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self._vcpus = KvmVcpus(self.bus, ctx.config.nr_vcpus)
        ctx.injector.jump_vcpu = lambda index, gpa: self.vcpus.jump(self.program, index, gpa)

    def clock(self, actor: str) -> WallClock:
        clock = self._clocks.get(actor)
        if clock is None:
            clock = self._clocks[actor] = WallClock(self.bus)
        return clock

    @property
    def ctx(self) -> RunContext:
        assert self._ctx is not None, "attach() comes first"
        return self._ctx

    @property
    def program(self) -> X86Program:
        assert self._program is not None, "check() comes first"
        return self._program

    @property
    def vm(self) -> KvmVM:
        if self._vm is None:
            raise RuntimeError("the session has not opened its VM (call run())")
        return self._vm

    @property
    def memory(self) -> ScenarioMemory:
        assert self._memory is not None, "open() comes first"
        return self._memory

    @property
    def kernel(self) -> KvmKernel:
        if self._kernel is None:
            raise RuntimeError("the session has not opened its VM (call run())")
        return self._kernel

    @property
    def vcpus(self) -> KvmVcpus:
        assert self._vcpus is not None, "attach() comes first"
        return self._vcpus

    def open(self) -> Machine:
        """The VM and its memory (the session then sets the boot layout: start_vcpus)."""
        self.bus.start()
        sc, nr_vcpus = self.ctx.config.scenario, self.ctx.config.nr_vcpus
        self._vm = vm = KvmVM()
        check_scenario(sc, vm.nr_address_spaces)
        if nr_vcpus > vm.check_extension(c.KVM_CAP_MAX_VCPUS):
            raise ValueError(f"{nr_vcpus} vCPUs is more than KVM_CAP_MAX_VCPUS")
        self._memory = memory = ScenarioMemory(vm, sc)
        ram = KvmRam(memory, self.vcpus.bql)
        self._kernel = kernel = KvmKernel(vm, memory, ram, self.bus)
        self.bus.restate_with(self.restate)
        return Machine(kernel=kernel, vcpus=self.vcpus, ram=ram, host=self._describe_host(vm))

    def restate(self, ev: Event) -> None:
        """Kernel-side figures in place of the event loop's: a transaction's latency runs from
        its first syscall's entry (an ioctl, or the kick of a pause) to its last ioctl's
        return; a pause's from the kick to the last kicked vCPU's return from KVM_RUN."""
        kind, kernel = type(ev), self.kernel
        if kind is TxnBegin:
            kernel.first_enter_ns = kernel.last_exit_ns = None
        elif kind is Inhibit and cast(Inhibit, ev).phase == "all_out":
            cast(Inhibit, ev).latency_ns = self.vcpus.pause_ns()
            kernel.span(self.vcpus.kick_ns)
        elif kind is TxnCommit:
            first, last = kernel.first_enter_ns, kernel.last_exit_ns
            if first is not None and last is not None:
                cast(TxnCommit, ev).latency_ns = last - first

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
            "clock": "wall: time.monotonic_ns() since the run started, stamped in the thread "
            "that made the syscall (an ioctl just before and just after it, a vCPU exit the "
            "instant KVM_RUN returned); seq is the order the VMM's event loop learned of each "
            "event and t never decreases along it: an event stamped before the log's latest t "
            "carries its own stamp in actor_t",
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

    def start_vcpus(self, vmm: Vmm) -> None:
        program, sc = self.program, self.ctx.config.scenario
        self.memory.write(vmm.hva_of(program.base, len(program.code)), program.code)
        for i in range(self.ctx.config.nr_vcpus):
            vcpu = self.vm.create_vcpu(i)
            vcpu.setup_flat_real_mode(program.base)
            vcpu.sync_regs_on_exit()  # an exit's RIP without a KVM_GET_REGS (serve.py)
            self.vcpus.runners.append(KvmVcpuRunner(self.vcpus, vmm, program, vcpu, i, sc.entry))

    # --- the run --------------------------------------------------------------------------

    async def run(self, vmm: Body, others: Sequence[tuple[str, Body]]) -> None:
        self.bus.inbox.attach(trio.lowlevel.current_trio_token())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.stopping:  # stopped before it started (a stop request during boot)
                    nursery.cancel_scope.cancel()
                nursery.start_soon(vmm)
                for runner in self.vcpus.runners:
                    nursery.start_soon(runner.body)
                nursery.start_soon(self._duration)
                nursery.start_soon(self.bus.inbox.deliver_often)
                for _, body in others:
                    nursery.start_soon(body)
        except BaseException as err:
            raise _unwrap(err) from None
        finally:
            # Every vCPU thread has left KVM_RUN: what they served is the run's.
            self.bus.inbox.attach(None)
            self.bus.inbox.deliver(None)

    async def _duration(self) -> None:
        await trio.sleep(self.ctx.duration_ns / 1e9)
        self.stop("duration")

    def stop(self, reason: str) -> None:
        if not self.stopping:
            self.stopping = True
            self._stop_reason = reason
            if reason == INTERRUPTED:
                # What the cancelled tasks' clean-up emits (an `inhibit end`) is not the run's.
                self.bus.closed = True
            if self._vcpus is not None:
                self._vcpus.stopping = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    @property
    def stop_reason(self) -> str:
        return self._stop_reason

    def close(self) -> None:
        """Release the VM (vCPUs, fds, mappings); safe to call twice."""
        if self._vm is not None:
            self._vm.close()

    @property
    def pacing(self) -> None:
        return None

    def rebase(self) -> None:
        """The wall clock needs no anchor."""

    def snapshot_source(self) -> KvmSnapshotSource:
        return KvmSnapshotSource(self)

    def submit(self, name: str, args: dict[str, str]) -> None:
        """Only `inject` means anything to a real VM, and acts at once: pacing commands
        (pause, step, speed) are the model's, whose clock is virtual."""
        if name != "inject":
            raise ValueError(f"command {name!r} needs the model's virtual clock")
        self.ctx.apply_command(name, args)


def _unwrap(err: BaseException) -> BaseException:
    """What a caller should see from the run's nursery: Ctrl-C as KeyboardInterrupt
    (whichever task trio delivered it to), and a lone failure as itself."""
    if isinstance(err, BaseExceptionGroup):
        if err.subgroup(KeyboardInterrupt) is not None:
            return KeyboardInterrupt()
        if len(err.exceptions) == 1:
            return _unwrap(err.exceptions[0])
    return err

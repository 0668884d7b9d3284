"""A session: one run of a scenario under a strategy, from boot to verdict.

It wires the pieces together (model VM, VMM and strategy, vCPU actors, the SRCU grace-period
worker, the fault injector, checker and recorder) and runs them as trio tasks under the
sequencer. The TUI drives a Session through ``send()`` and reads ``snapshot()``; the CLI runs it
flat out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from collections import deque
from collections.abc import Generator
from typing import Any

import msgspec
import trio

from engine import __version__
from engine.checker import Checker, Verdict
from engine.events import SCHEMA_VERSION, Command, Event, EventBus, Subscriber
from engine.faults import FaultError, Injector, parse_fault
from engine.log import Header, LogWriter, VerdictLine
from engine.model import constants as c
from engine.model.host import Host
from engine.model.vcpu import Vcpu, VcpuExit
from engine.model.vm import SYNCHRONIZE, VM, Step
from engine.scenarios import Scenario
from engine.sim.perturb import Pct, Perturb
from engine.sim.runtime import Actor, Pacing, Sequencer
from engine.summary import build_summary
from engine.vmm.flatview import FlatView
from engine.vmm.strategies import Strategy, get_strategy
from engine.vmm.vmm import Vmm


def actor_rng(seed: int, actor: str) -> random.Random:
    """One stream per actor: string seeds hash with SHA-512, stable across processes."""
    return random.Random(f"{seed}/{actor}")


@dataclasses.dataclass
class RunConfig:
    scenario: Scenario
    strategy: str
    seed: int = 1
    vcpus: int | None = None
    duration_ns: int | None = None
    faults: list[str] = dataclasses.field(default_factory=list)
    fault_script: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    host: dict[str, Any] = dataclasses.field(default_factory=dict)
    naive: bool = False
    scenario_text: str = ""
    perturb: Perturb | None = None


class VcpuRunner:
    """The userspace half of a vCPU thread: KVM_RUN in a loop, handling each exit."""

    def __init__(self, session: Session, vcpu: Vcpu) -> None:
        self.session = session
        self.vcpu = vcpu
        self.actor = Actor(vcpu.name, vcpu=True)
        self.rng = actor_rng(session.config.seed, vcpu.name)
        self.out_of_kvm_run = True
        self.stall_ns = 0
        self.blocked_since = -1
        self.done = False

    def kick(self) -> None:
        if not self.out_of_kvm_run:
            self.vcpu.kick_requested = True

    def resume(self) -> None:
        self.session.seq.wake(self.actor)

    async def body(self) -> None:
        s, vcpu = self.session, self.vcpu
        seq, vmm, t = s.seq, s.vmm, s.vm.timing
        await seq.sleep(self.actor, self.rng.randrange(0, 2_000))
        while True:
            if vmm.inhibited:
                await self._blocked()
            self.out_of_kvm_run = False
            exit = await s.drive_run(self.actor, vcpu, vcpu.kvm_run())
            self.out_of_kvm_run = True
            if vmm.inhibited and s.vmm_waiting:
                seq.wake(s.vmm_actor)
            if exit.reason == c.KVM_EXIT_MMIO:
                if exit.len == 0:
                    decision = s.strategy.on_fetch_len0(vmm, exit.phys_addr)
                    if decision != "reenter":
                        vmm.stop_vm(decision, vcpu.index, exit.rip, exit.phys_addr)
                        return
                else:
                    vmm.serve_mmio(vcpu, exit)
                await seq.sleep(self.actor, t.userspace_exit_ns)
            elif exit.reason == c.KVM_EXIT_INTR:
                vcpu.kick_requested = False
            else:
                self._final(exit)
                return

    def _final(self, exit: VcpuExit) -> None:
        s, vcpu = self.session, self.vcpu
        self.done = True
        if exit.reason == c.KVM_EXIT_HLT:
            vcpu.state = "crashed" if vcpu.exits["ud_injected"] else "halted"
            return
        vcpu.state = "dead"
        s.vmm.stop_vm(
            f"{exit.name} on vcpu{vcpu.index} at RIP {exit.rip:#x}: QEMU stops the VM",
            vcpu.index,
            exit.rip,
        )

    async def _blocked(self) -> None:
        s, vcpu = self.session, self.vcpu
        vcpu.state = "blocked"
        vcpu.kick_requested = False
        since = s.bus.now
        self.blocked_since = since
        if s.vmm_waiting:
            s.seq.wake(s.vmm_actor)
        while s.vmm.inhibited:
            await s.seq.block(self.actor)
        self.stall_ns += s.bus.now - since
        self.blocked_since = -1


class Session:
    def __init__(
        self,
        config: RunConfig,
        log_path: str | None = None,
        pacing: Pacing | None = None,
        observers: tuple[Subscriber, ...] = (),
    ) -> None:
        self.config = config
        sc = config.scenario
        self.strategy: Strategy = get_strategy(config.strategy)
        host_opts = {**config.host, **self.strategy.host_overrides}
        self.host = Host.from_dict(host_opts)
        self.bus = EventBus()
        self.vm = VM(self.host, self.bus)
        self.vm.busted = self.strategy.name == "busted"
        self.duration_ns = config.duration_ns or sc.duration_ns
        self.seq = Sequencer(self.bus, self.duration_ns, pacing)
        if config.perturb is not None:
            self.seq.perturb = Pct(config.perturb)
        self.seq.set_command_handler(self._apply_command)
        self.vmm_actor = Actor("vmm")
        self.gp_actor = Actor("srcu-gp")
        self.injector_actor = Actor("injector")
        self.vmm_waiting = False
        self.gp_requests: deque[Actor] = deque()
        armed = [parse_fault(f) for f in config.faults]
        self.injector = Injector(self.bus, actor_rng(config.seed, "injector"), armed)
        self.injector.stall_vcpu = self._stall_vcpu
        self.injector.jump_vcpu = self._jump_vcpu
        self.vmm = Vmm(self, naive=config.naive)
        self.vmm_rng = actor_rng(config.seed, "vmm")
        self.checker = Checker(self.strategy.atomic, self.bus)
        self.recent: deque[Event] = deque(maxlen=2000)
        self.bus.subscribe(self.recent.append)
        self.bus.subscribe(self.checker.observe)
        self.writer: LogWriter | None = None
        if log_path is not None:
            self.writer = LogWriter(log_path)
            self.writer.write_header(self.header())
            self.bus.subscribe(self.writer.write_event)
        for observer in observers:
            self.bus.subscribe(observer)
        self.vcpus: list[Vcpu] = []
        self.vcpu_runners: list[VcpuRunner] = []
        self.result: Verdict | None = None
        self.error: BaseException | None = None
        self._boot()

    # --- set-up -------------------------------------------------------------------------

    def header(self) -> Header:
        cfg = self.config
        return Header(
            schema=SCHEMA_VERSION,
            tool=f"slotlab {__version__}",
            seed=cfg.seed,
            scenario=cfg.scenario.name,
            strategy=cfg.strategy,
            host=self.host.to_dict(),
            vcpus=cfg.vcpus or cfg.scenario.vcpus,
            duration_ns=self.duration_ns,
            faults=list(cfg.faults),
            fault_script=[[t, f] for t, f in cfg.fault_script],
            naive=cfg.naive,
            scenario_text=cfg.scenario_text,
            perturb=msgspec.UNSET if cfg.perturb is None else cfg.perturb,
        )

    def _boot(self) -> None:
        """Before any vCPU runs: the boot layout's slots and the guest program."""
        sc = self.config.scenario
        boot = sc.layouts[sc.sequence[0]]
        for as_id in range(self.host.nr_address_spaces):
            txn = self.vmm.begin(as_id, boot.name, FlatView.render(boot.for_as(as_id)))
            if txn is None:
                continue
            for op in txn.ops:
                change = self.vm.ioctl_prepare(op.region)
                if change is not None:
                    self.vm.run_now(self.vm.commit(change))
                self.vm.ioctl_done(change)
            self.vmm.commit(txn)
        # Installing the boot layout is not an update: keep its zero out of the latencies.
        self.vmm.latencies.clear()
        for gpa, insn in sc.program.items():
            self.vmm.write_guest(gpa, insn)
        for i in range(self.config.vcpus or sc.vcpus):
            vcpu = Vcpu(
                self.vm, i, sc.entry, cpl=sc.cpl, guest_mode=sc.guest_mode, ud_handler=sc.ud_handler
            )
            self.vcpus.append(vcpu)
            self.vcpu_runners.append(VcpuRunner(self, vcpu))

    # --- running ------------------------------------------------------------------------

    async def run(self) -> Verdict:
        try:
            async with trio.open_nursery() as nursery:
                self.seq.start(nursery, self.vmm_actor, self._vmm_body)
                self.seq.start(nursery, self.gp_actor, self._gp_body)
                for runner in self.vcpu_runners:
                    self.seq.start(nursery, runner.actor, runner.body)
                if self.config.fault_script:
                    self.seq.start(nursery, self.injector_actor, self._script_body)
                await self.seq.run(nursery)
        except BaseException as err:
            self.error = err
            if self.writer is not None:
                self.writer.close()
            raise
        return self.finish()

    def finish(self) -> Verdict:
        verdict = self.checker.verdict()
        self.result = verdict
        if self.writer is not None:
            summary = self.summary()
            self.writer.write_verdict(
                VerdictLine(
                    verdict=verdict.verdict, explanation=verdict.explanation, summary=summary
                )
            )
        return verdict

    async def drive(self, actor: Actor, steps: Generator[Step, None, None]) -> None:
        """Run a model update: time costs become sleeps, SYNCHRONIZE waits for the worker."""
        for step in steps:
            if step is SYNCHRONIZE:
                self.gp_requests.append(actor)
                self.seq.wake(self.gp_actor)
                await self.seq.block(actor)
            else:
                assert isinstance(step, int)
                await self.seq.sleep(actor, step)

    async def drive_run(
        self, actor: Actor, vcpu: Vcpu, run: Generator[int, None, VcpuExit]
    ) -> VcpuExit:
        seq = self.seq
        try:
            while True:
                vcpu.horizon_ns = seq.horizon(actor)
                await seq.sleep(actor, next(run))
        except StopIteration as stop:
            result: VcpuExit = stop.value
            return result

    async def _gp_body(self) -> None:
        """The SRCU grace-period worker: one synchronize_srcu_expedited() per request."""
        seq, me, srcu, t = self.seq, self.gp_actor, self.vm.srcu, self.vm.timing
        while True:
            while not self.gp_requests:
                await seq.block(me)
            waiter = self.gp_requests.popleft()
            gp = srcu.start_gp(expedited=True)
            delay = self.injector.gp_delay()
            if delay:
                await seq.sleep(me, delay)
            while not gp.poll():
                await seq.sleep(
                    me, t.srcu_poll_expedited_ns if gp.expedited else t.srcu_poll_normal_ns
                )
            seq.wake(waiter)

    async def _vmm_body(self) -> None:
        sc, seq, me, vmm = self.config.scenario, self.seq, self.vmm_actor, self.vmm
        # The boot layout is sequence[0]; Scenario.steps says when to move to which next.
        for idle, layout in sc.steps(self.vmm_rng):
            await self._idle(idle)
            if layout is None:
                continue
            self.injector.on_transaction()
            for as_id in range(self.host.nr_address_spaces):
                txn_view = FlatView.render(layout.for_as(as_id))
                if self.injector.race_armed():
                    await self._align_race(as_id, txn_view)
                txn = vmm.begin(as_id, layout.name, txn_view, moves=sc.moves)
                if txn is None:
                    continue
                await self.strategy.apply(vmm, txn)
                vmm.commit(txn)
            if vmm.stopped_reason:
                return
            await seq.sleep(me, 0)
        seq.finish("scenario played")  # a recorded scenario's steps are over

    async def _idle(self, ns: int) -> None:
        """Between transactions; harvests dirty logs every sync period while slots log."""
        sync = self.config.scenario.sync_ns
        end = self.bus.now + ns
        while self.bus.now < end:
            await self.seq.sleep(self.vmm_actor, min(sync, end - self.bus.now))
            self.vmm.sync_dirty_logs()

    async def _align_race(self, as_id: int, new: FlatView) -> None:
        """`race`: start when some vCPU is about to fetch from a range the update deletes."""
        old = self.vmm.views[as_id]
        doomed = [r for r in old.backed() if not any(r.key == n.key for n in new.backed())]
        if not doomed:
            return
        for _ in range(500):
            if any(
                any(r.start <= v.rip < r.end for r in doomed)
                for v in self.vcpus
                if v.state == "guest"
            ):
                return
            await self.seq.sleep(self.vmm_actor, 100)

    async def _script_body(self) -> None:
        for t, text in self.config.fault_script:
            if t > self.bus.now:
                await self.seq.sleep(self.injector_actor, t - self.bus.now)
            self.injector.apply_now(parse_fault(text))

    # --- faults and commands ------------------------------------------------------------

    def _stall_vcpu(self, index: int, ns: int) -> bool:
        if not 0 <= index < len(self.vcpus):
            return False
        self.vcpus[index].stall_ns = ns
        return True

    def _jump_vcpu(self, index: int, gpa: int) -> bool:
        if not 0 <= index < len(self.vcpus):
            return False
        self.vcpus[index].rip = gpa
        return True

    def send(self, name: str, **args: str) -> None:
        """A command from outside: inject, pause, resume, speed, step. Raises FaultError
        for a bad injection before anything is queued."""
        if name == "inject":
            parse_fault(args.get("fault", ""))
        self.seq.send((name, dict(args)))

    def _apply_command(self, command: Any) -> None:
        name, args = command
        self.bus.emit(Command(name=name, args=args, call=self.seq.calls))
        pacing = self.seq.pacing
        if name == "inject":
            with contextlib.suppress(FaultError):
                self.injector.apply_now(parse_fault(args["fault"]))
        elif name == "pause":
            pacing.paused = True
        elif name == "resume":
            pacing.paused = False
            self.seq.rebase()
        elif name == "step":
            # The Command event itself is one; step runs to the next `count` after it.
            pacing.paused = True
            pacing.step_until_seq = self.bus.seq + int(args.get("count", "1"))
        elif name == "speed":
            pacing.speed = float(args["speed"]) if args["speed"] != "inf" else math.inf
            self.seq.rebase()

    # --- results ------------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        return build_summary(
            verdict=self.result or self.checker.verdict(),
            checker=self.checker,
            exits=(v.exits for v in self.vcpus),
            faults=(v.faults for v in self.vcpus),
            latencies=self.vmm.latencies,
            transactions=self.vmm.txn_count,
            ioctls=self.vmm.ioctl_count,
            stall_ns=sum(r.stall_ns for r in self.vcpu_runners),
            injections=self.injector.injections,
            events=self.bus.seq,
            virtual_ns=self.bus.now,
            seed=self.config.seed,
            scenario=self.config.scenario.name,
            strategy=self.config.strategy,
            log=str(self.writer.path) if self.writer is not None else None,
        )

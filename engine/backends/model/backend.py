"""The model backend: the modelled kernel (engine.model) in deterministic virtual time.

Every task of a run (the VMM, the SRCU grace-period worker, each vCPU, the fault script) is
an actor of one Sequencer, which releases exactly one at a time in (virtual time, seq) order;
see engine.sim.runtime for why that, and nothing trio decides, fixes the order of events.
The actors start in a fixed order: the VMM, the grace-period worker, the vCPUs, the rest.

Commands from outside (inject, pause, resume, speed, step) are queued on the sequencer and
applied at its next hand-over, stamped with the number of the call that led to it, so a live
session replays into the same bytes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from typing import Any

import trio

from engine.backends.model.kernel import GracePeriodWorker, ModelKernel, ModelRam
from engine.backends.model.snapshot import ModelSnapshotSource
from engine.backends.model.vcpus import ModelVcpus, VcpuRunner
from engine.checker import Checker
from engine.core.config import RunConfig
from engine.core.ports import Body, Machine, RunContext
from engine.events import Command, EventBus, OrderedBus
from engine.faults import FaultError, FaultSpec
from engine.model.host import Host
from engine.model.vcpu import Vcpu
from engine.model.vm import VM
from engine.sim.clock import SequencerClock
from engine.sim.pacing import Pacing
from engine.sim.perturb import Pct
from engine.sim.runtime import Actor, Sequencer
from engine.vmm.vmm import Vmm

# What each pacing command leaves `Pacing.paused` at, for the toggle that reads it early.
_LEAVES_PAUSED = {"pause": True, "step": True, "resume": False}


class _Recorded:
    """A recorded command replayed in a forked run (told apart from one sent now)."""

    __slots__ = ("command",)

    def __init__(self, command: tuple[str, dict[str, str]]) -> None:
        self.command = command


class ModelBackend:
    name = "model"
    opens_eagerly = True
    sync_floor_ns = 0
    wall_clock = False

    def __init__(self, pacing: Pacing | None = None) -> None:
        self._pacing = pacing
        self._ctx: RunContext | None = None
        self._seq: Sequencer | None = None
        self._vm: VM | None = None
        self._actors: dict[str, Actor] = {}
        self._vcpus: ModelVcpus | None = None
        self._gp: GracePeriodWorker | None = None

    # --- before the run -------------------------------------------------------------------

    def new_bus(self) -> EventBus:
        return OrderedBus()

    def check(self, config: RunConfig) -> None:
        """The model runs every scenario, strategy and fault; the session checks their names."""

    def check_fault(self, spec: FaultSpec) -> None:
        """Every fault acts on the model."""

    def new_checker(self, atomic: bool, bus: EventBus) -> Checker:
        return Checker(atomic, bus)

    def duration_ns(self, config: RunConfig) -> int:
        return config.duration_ns or config.scenario.duration_ns

    def attach(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self._seq = seq = Sequencer(ctx.bus, ctx.duration_ns, self._pacing)
        if ctx.config.perturb is not None:
            seq.perturb = Pct(ctx.config.perturb)
        seq.set_command_handler(self.apply_command)

    @property
    def ctx(self) -> RunContext:
        assert self._ctx is not None, "attach() comes first"
        return self._ctx

    @property
    def seq(self) -> Sequencer:
        assert self._seq is not None, "attach() comes first"
        return self._seq

    @property
    def vm(self) -> VM:
        assert self._vm is not None, "open() comes first"
        return self._vm

    @property
    def vcpus(self) -> ModelVcpus:
        assert self._vcpus is not None, "open() comes first"
        return self._vcpus

    def actor(self, name: str) -> Actor:
        actor = self._actors.get(name)
        if actor is None:
            actor = self._actors[name] = Actor(name)
        return actor

    def clock(self, actor: str) -> SequencerClock:
        return SequencerClock(self.seq, self.actor(actor))

    def open(self) -> Machine:
        ctx, seq = self.ctx, self.seq
        host = Host.from_dict({**ctx.config.host, **ctx.strategy.host_overrides})
        self._vm = vm = VM(host, ctx.bus)
        vm.busted = ctx.strategy.name == "busted"
        self._gp = gp = GracePeriodWorker(vm, seq, ctx.injector)
        self._vcpus = vcpus = ModelVcpus(seq, self.actor("vmm"))
        ctx.injector.stall_vcpu = vcpus.stall
        ctx.injector.jump_vcpu = vcpus.jump
        ctx.injector.smi_vcpu = vcpus.smi
        kernel = ModelKernel(vm, seq, self.actor("vmm"), gp)
        return Machine(kernel=kernel, vcpus=vcpus, ram=ModelRam(vm.memory), host=host.to_dict())

    def start_vcpus(self, vmm: Vmm) -> None:
        sc = self.ctx.config.scenario
        for gpa, insn in sc.program.items():
            self.vm.memory[vmm.hva_of(gpa, 1)] = insn
        for i in range(self.ctx.config.nr_vcpus):
            vcpu = Vcpu(
                self.vm,
                i,
                sc.entry,
                cpl=sc.cpl,
                guest_mode=sc.guest_mode,
                ud_handler=sc.ud_handler,
                smm_entry=sc.smm_entry,
            )
            self.vcpus.add(VcpuRunner(self.vcpus, vmm, vcpu, self.ctx.config.seed))

    # --- the run --------------------------------------------------------------------------

    async def run(self, vmm: Body, others: Sequence[tuple[str, Body]]) -> None:
        seq = self.seq
        assert self._gp is not None
        async with trio.open_nursery() as nursery:
            seq.start(nursery, self.actor("vmm"), vmm)
            seq.start(nursery, self._gp.actor, self._gp.body)
            for runner in self.vcpus.runners:
                seq.start(nursery, runner.actor, runner.body)
            for name, body in others:
                seq.start(nursery, self.actor(name), body)
            if self.ctx.config.scenario.smi_ns and self.vm.host.nr_address_spaces > 1:
                seq.start(nursery, self.actor("smi"), self._smi_body)
            await seq.run(nursery)

    async def _smi_body(self) -> None:
        """The scenario's periodic SMI source, each vCPU in turn (a chipset SMI timer)."""
        me, period, turn = self.actor("smi"), self.ctx.config.scenario.smi_ns, 0
        while True:
            await self.seq.sleep(me, period)
            self.vcpus.smi(turn % len(self.vcpus.vcpus))
            turn += 1

    def stop(self, reason: str) -> None:
        self.seq.finish(reason)

    @property
    def stop_reason(self) -> str:
        return self.seq.stop_reason

    def close(self) -> None:
        """Nothing is held outside this process."""

    @property
    def pacing(self) -> Pacing:
        return self.seq.pacing

    def rebase(self) -> None:
        self.seq.rebase()

    def snapshot_source(self) -> ModelSnapshotSource:
        return ModelSnapshotSource(self)

    # --- commands -------------------------------------------------------------------------

    def replay_commands(
        self, commands: Iterable[Command], keep_pacing: bool, fork: bool = False
    ) -> None:
        """Replay: apply each recorded command at the hand-over after the sequencer call it
        followed. Pacing commands replay as their events; the pacing itself is then put back
        as it was (``keep_pacing``: a viewer controls it) or set flat out.

        ``fork``: a live run re-executed to an earlier event (LiveSession.rewound). Recorded
        commands replay as above; a command sent now acts as in any live run, and the
        recorded ones still ahead are dropped: from here the run takes a new course."""
        seq = self.seq
        for command in commands:
            recorded = (command.name, dict(command.args))
            seq.schedule(command.call, _Recorded(recorded) if fork else recorded)
        apply, pacing = self.apply_command, seq.pacing

        def keep(command: Any) -> None:
            saved = (pacing.paused, pacing.speed, pacing.step_until_seq)
            apply(command)
            pacing.paused, pacing.speed, pacing.step_until_seq = saved

        def flat_out(command: Any) -> None:
            apply(command)
            pacing.paused, pacing.step_until_seq, pacing.speed = False, -1, math.inf

        def forked(command: Any) -> None:
            if isinstance(command, _Recorded):
                keep(command.command)
            else:
                seq.unschedule()
                apply(command)

        seq.set_command_handler(forked if fork else keep if keep_pacing else flat_out)

    def submit(self, name: str, args: dict[str, str]) -> None:
        seq = self.seq
        if name in _LEAVES_PAUSED:
            seq.pacing.queued_paused = _LEAVES_PAUSED[name]
        seq.send((name, args))

    def apply_command(self, command: Any) -> None:
        """At a hand-over: the command becomes an event, then acts."""
        name, args = command
        seq = self.seq
        self.ctx.bus.emit(Command(name=name, args=args, call=seq.calls))
        pacing = seq.pacing
        if not seq.queued:
            pacing.queued_paused = None
        if name == "inject":
            with contextlib.suppress(FaultError):
                self.ctx.apply_command(name, args)
        elif name == "pause":
            pacing.paused = True
        elif name == "resume":
            pacing.paused = False
            seq.rebase()
        elif name == "step":
            # The Command event itself is one; step runs to the next `count` after it.
            pacing.paused = True
            pacing.step_until_seq = self.ctx.bus.seq + int(args.get("count", "1"))
        elif name == "speed":
            pacing.speed = float(args["speed"]) if args["speed"] != "inf" else math.inf
            seq.rebase()

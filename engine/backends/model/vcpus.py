"""The model's vCPU threads: KVM_RUN on the model vCPU in virtual time, each exit handled the
way QEMU's vCPU thread handles it, and the VMM's handle on them (VcpuControl)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from engine.core.config import actor_rng
from engine.core.ports import VcpuTotals
from engine.model import constants as c
from engine.model.vcpu import Vcpu, VcpuExit
from engine.sim.runtime import Actor, Sequencer

if TYPE_CHECKING:
    from engine.vmm.flatview import FlatRange
    from engine.vmm.vmm import Vmm


class VcpuRunner:
    """The userspace half of a vCPU thread: KVM_RUN in a loop, handling each exit."""

    def __init__(self, control: ModelVcpus, vmm: Vmm, vcpu: Vcpu, seed: int) -> None:
        self.control = control
        self.vmm = vmm
        self.vcpu = vcpu
        self.actor = Actor(vcpu.name, vcpu=True)
        self.rng = actor_rng(seed, vcpu.name)
        self.out_of_kvm_run = True
        self.stall_ns = 0
        self.blocked_since = -1
        self.done = False

    def kick(self) -> None:
        if not self.out_of_kvm_run:
            self.vcpu.kick_requested = True

    async def body(self) -> None:
        ctl, vmm, vcpu, actor = self.control, self.vmm, self.vcpu, self.actor
        seq, t = ctl.seq, vcpu.vm.timing
        horizon, step = seq.horizon, seq.step
        await seq.sleep(actor, self.rng.randrange(0, 2_000))
        while True:
            if vmm.inhibited:
                await self._blocked()
            self.out_of_kvm_run = False
            # One KVM_RUN: the vCPU advances up to the sequencer's horizon between sleeps
            # (seq.sleep(), minus the coroutine when the vCPU keeps the baton; a step that
            # keeps it leaves the new horizon in actor.horizon).
            run = vcpu.kvm_run()
            vcpu.horizon_ns = horizon(actor)
            try:
                while True:
                    handover = step(actor, next(run))
                    if handover is None:
                        vcpu.horizon_ns = actor.horizon
                    else:
                        await handover
                        vcpu.horizon_ns = horizon(actor)
            except StopIteration as stop:
                exit: VcpuExit = stop.value
            self.out_of_kvm_run = True
            if vmm.inhibited:
                ctl.vcpu_out()
            if exit.reason == c.KVM_EXIT_MMIO:
                if exit.len == 0:
                    decision = vmm.strategy.on_fetch_len0(vmm, exit.phys_addr)
                    if decision != "reenter":
                        vmm.stop_vm(decision, vcpu.index, exit.rip, exit.phys_addr)
                        return
                else:
                    data = vmm.serve_mmio(
                        vcpu.index, vcpu.as_id, exit.phys_addr, exit.is_write, exit.data, exit.len
                    )
                    if not exit.is_write:
                        vcpu.mmio_data = data
                handover = step(actor, t.userspace_exit_ns)
                if handover is not None:
                    await handover
            elif exit.reason == c.KVM_EXIT_INTR:
                vcpu.kick_requested = False
            else:
                self._final(exit)
                return

    def _final(self, exit: VcpuExit) -> None:
        vcpu = self.vcpu
        self.done = True
        if exit.reason == c.KVM_EXIT_HLT:
            vcpu.state = "crashed" if vcpu.exits["ud_injected"] else "halted"
            return
        vcpu.state = "dead"
        self.vmm.vcpu_died(exit.name, vcpu.index, exit.rip)

    async def _blocked(self) -> None:
        ctl, vcpu = self.control, self.vcpu
        vcpu.state = "blocked"
        vcpu.kick_requested = False
        since = ctl.seq.now
        self.blocked_since = since
        ctl.vcpu_out()
        while self.vmm.inhibited:
            await ctl.seq.block(self.actor)
        self.stall_ns += ctl.seq.now - since
        self.blocked_since = -1


class ModelVcpus:
    """VcpuControl over the model's runners; also how the injector reaches a vCPU."""

    def __init__(self, seq: Sequencer, vmm_actor: Actor) -> None:
        self.seq = seq
        self.vmm_actor = vmm_actor
        self.vcpus: list[Vcpu] = []
        self.runners: list[VcpuRunner] = []
        self.vmm_waiting = False

    def add(self, runner: VcpuRunner) -> None:
        self.vcpus.append(runner.vcpu)
        self.runners.append(runner)

    def vcpu_out(self) -> None:
        """A runner left KVM_RUN while the VMM inhibits: let a waiting VMM re-check."""
        if self.vmm_waiting:
            self.seq.wake(self.vmm_actor)

    def kick_all(self) -> None:
        for runner in self.runners:
            runner.kick()

    async def wait_all_out(self) -> None:
        while not all(r.out_of_kvm_run for r in self.runners):
            self.vmm_waiting = True
            await self.seq.block(self.vmm_actor)
        self.vmm_waiting = False

    def resume_all(self) -> None:
        for runner in self.runners:
            self.seq.wake(runner.actor)

    def fetching_from(self, ranges: Sequence[FlatRange]) -> bool:
        return any(
            any(r.start <= v.rip < r.end for r in ranges) for v in self.vcpus if v.state == "guest"
        )

    def totals(self) -> VcpuTotals:
        return VcpuTotals.of(
            (v.exits for v in self.vcpus),
            (v.faults for v in self.vcpus),
            sum(r.stall_ns for r in self.runners),
        )

    # --- the injector's hooks -------------------------------------------------------------

    def stall(self, index: int, ns: int) -> bool:
        if not 0 <= index < len(self.vcpus):
            return False
        self.vcpus[index].stall_ns = ns
        return True

    def jump(self, index: int, gpa: int) -> bool:
        if not 0 <= index < len(self.vcpus):
            return False
        self.vcpus[index].rip = gpa
        return True

    def smi(self, index: int) -> bool:
        """KVM_SMI (kvm_inject_smi()): taken at the vCPU's next instruction boundary. A host
        with one address space has no SMM (KVM_SMI is -EINVAL without CONFIG_KVM_SMM)."""
        if not 0 <= index < len(self.vcpus):
            return False
        vcpu = self.vcpus[index]
        if vcpu.vm.host.nr_address_spaces < 2:
            return False
        vcpu.smi_pending = True
        return True

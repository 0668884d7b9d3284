"""A vCPU: the guest interpreter and KVM's fault path (kvm_mmu_page_fault() and friends).

``kvm_run()`` is KVM_RUN as a generator: it yields the virtual ns each step costs and returns
the exit that sends it back to userspace. In guest mode it holds no SRCU; a stage-2 miss is a VM
exit, handled under srcu_read_lock like the kernel does:

    valid slot    map the page, re-enter the guest
    INVALID slot  RET_PF_RETRY: re-enter and fault again until the update completes
    no slot       data access: emulate as MMIO -> KVM_EXIT_MMIO
                  instruction fetch: the emulator cannot fetch -> KVM_EXIT_INTERNAL_ERROR
                  (L1 at CPL 0), or #UD injected into the guest (CPL > 0 or L2)
    READONLY      a write is emulated as MMIO -> KVM_EXIT_MMIO with is_write=1
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Generator

import msgspec

from engine.events import Exit, Fault, SmmTransition, UdInjected
from engine.model import constants as c
from engine.model.cycles import run_cycles
from engine.model.guest import INSN_SIZE, Insn
from engine.model.memslots import Memslot, MemslotSet
from engine.model.vm import VM

PAGE_MASK = c.PAGE_SIZE - 1
# kvm_pvm drops kvm->srcu every 1024 emulated instructions (real-kvm.md §4.3: about 0.67 ms
# per grace period while a vCPU emulates).
EMULATED_SRCU_BATCH = 1024
_DATA_OPS = frozenset({"load", "store", "inc"})
_JUMPS = frozenset({"jmp", "loop"})


# Structs rather than dataclasses: one of each per KVM_EXIT_MMIO, and a Struct's __init__ is
# C, a dataclass's a Python frame. Neither can be part of a reference cycle (gc=False).
class VcpuExit(msgspec.Struct, gc=False):
    """What KVM_RUN left in struct kvm_run."""

    reason: int
    rip: int
    phys_addr: int = 0
    len: int = 0
    is_write: bool = False
    data: int = 0
    suberror: int = 0

    @property
    def name(self) -> str:
        name = c.EXIT_REASON_NAMES.get(self.reason)  # no str() unless needed: every exit
        return str(self.reason) if name is None else name


class _PendingMmio(msgspec.Struct, gc=False):
    """An access the emulator handed to userspace, finished on the next KVM_RUN."""

    insn: Insn
    gpa: int
    is_write: bool


Run = Generator[int, None, VcpuExit]
Handler = Generator[int, None, VcpuExit | None]


class Vcpu:
    def __init__(
        self,
        vm: VM,
        index: int,
        rip: int,
        *,
        cpl: int = 0,
        guest_mode: bool = False,
        as_id: int = 0,
        ud_handler: int | None = None,
        smm_entry: int | None = None,
    ) -> None:
        self.vm = vm
        self.index = index
        self.name = f"vcpu{index}"
        self.rip = rip
        self.acc = 0
        self.rcx = 0
        self.cpl = cpl
        self.guest_mode = guest_mode
        self.as_id = as_id
        self.ud_handler = ud_handler
        self.state = "idle"
        self.last_used_slot: Memslot | None = None
        self.last_used_slot_gen = -1
        self.mmio_data = 0
        self.immediate_exit = False
        self.kick_requested = False
        self.srcu_idx = -1
        # An injected reader stall: the next exit handler holds SRCU this much longer.
        self.stall_ns = 0
        # How much guest time kvm_run() may batch before yielding; the engine raises it to
        # what the sequencer would let this vCPU run anyway. 0: yield every instruction.
        self.horizon_ns = 0
        self.exits: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.instructions = 0
        self.last_data_gpa = -1
        self._pending: _PendingMmio | None = None
        self._section_idx = -1
        # SMM: an SMI waiting for the next instruction boundary, where the handler starts,
        # and the RIP RSM returns to.
        self.smi_pending = False
        self.smm_entry = smm_entry
        self.smm_saved_rip = 0

    # --- KVM_RUN ------------------------------------------------------------------------

    def kvm_run(self) -> Run:
        t = self.vm.timing
        if self.immediate_exit:
            return self._exit(VcpuExit(c.KVM_EXIT_INTR, self.rip))
        pending_mmio = self._pending
        if pending_mmio is not None:
            if pending_mmio.is_write or pending_mmio.insn.op == "load":
                self._complete_access(pending_mmio)  # no kernel work: no generator either
            else:
                result = yield from self._complete_mmio(pending_mmio)
                if result is not None:
                    return result
        self.state = "guest"
        insn_ns = t.insn_ns
        stage2 = self.vm.stage2[self.as_id]
        pages = stage2.pages
        writable = stage2.writable
        memory = self.vm.memory
        shift = c.PAGE_SHIFT
        # Guest time executed but not yet yielded: instructions that hit in stage-2 touch
        # nothing another actor can see before this vCPU next yields, so up to horizon_ns of
        # them run as one step. Anything that enters KVM yields the pending time first, so
        # its events carry the right timestamp.
        pending = 0
        # Guest loops found at backward-jump targets (engine/model/cycles.py).
        walks = stage2.walks
        # An emulated guest (x86-pvm) runs inside KVM under kvm->srcu, dropping it every
        # EMULATED_SRCU_BATCH instructions; a hardware-run guest holds none (section < 0), so
        # its fault paths skip _emulator_section(False), a call per fault that would do nothing.
        section = 0 if self.vm.rules.emulated else -1
        while True:
            if section == 0:
                if pending:
                    yield pending
                    pending = 0
                self._emulator_section(False)
                self._emulator_section(True)
                section = EMULATED_SRCU_BATCH
            if self.smi_pending:
                self.smi_pending = False
                if self.as_id == 0 and self.vm.host.nr_address_spaces > 1:
                    if pending:
                        yield pending
                        pending = 0
                    self._emulator_section(False)
                    if section > 0:  # min(section, 0) without the builtin's keyword parsing
                        section = 0
                    self._smm_changed(True)
                    stage2 = self.vm.stage2[self.as_id]
                    pages, writable, walks = stage2.pages, stage2.writable, stage2.walks
            if self.kick_requested:
                self.kick_requested = False
                self._emulator_section(False)
                yield pending + t.vmexit_ns
                return self._exit(VcpuExit(c.KVM_EXIT_INTR, self.rip))
            if self.stall_ns:
                if pending:
                    yield pending
                    pending = 0
                if section >= 0:
                    self._emulator_section(False)
                    section = 0
                yield from self._stalled_exit()
                continue
            rip = self.rip
            spte = pages.get(rip >> shift)
            if spte is None:
                if pending:
                    yield pending
                    pending = 0
                if section >= 0:
                    self._emulator_section(False)
                    section = 0
                result = yield from self._page_fault(rip, "fetch", None)
                if result is not None:
                    return result
                continue
            insn = memory.get(spte + rip)
            if not isinstance(insn, Insn):
                # Not code: a triple fault in a guest with no IDT.
                self._emulator_section(False)
                yield pending + insn_ns
                return self._exit(VcpuExit(c.KVM_EXIT_SHUTDOWN, rip))
            op = insn.op
            if op == "jmp":
                self.rip = insn.arg
            elif op == "loop":
                self.rcx -= 1
                self.rip = insn.arg if self.rcx else rip + INSN_SIZE
            elif op in _DATA_OPS:
                gpa = insn.arg
                self.last_data_gpa = gpa
                dspte = pages.get(gpa >> shift)
                if dspte is None or (op != "load" and gpa >> shift not in writable):
                    if pending:
                        yield pending
                        pending = 0
                    if section >= 0:
                        self._emulator_section(False)
                        section = 0
                    access = "write" if op == "store" or dspte is not None else "read"
                    result = yield from self._page_fault(gpa, access, insn)
                    if result is not None:
                        return result
                    continue
                hva = dspte + gpa
                if op == "load":
                    self.acc = _word(memory.get(hva))
                elif op == "store":
                    memory[hva] = self.acc
                else:
                    memory[hva] = _word(memory.get(hva)) + 1
                self.rip = rip + INSN_SIZE
            elif op == "mov":
                self.acc = insn.arg
                self.rip = rip + INSN_SIZE
            elif op == "setc":
                self.rcx = insn.arg
                self.rip = rip + INSN_SIZE
            elif op == "rsm":
                if self.as_id == 0:
                    # RSM outside SMM raises #UD on hardware; the model treats it as a nop.
                    self.rip = rip + INSN_SIZE
                else:
                    if pending:
                        yield pending
                        pending = 0
                    if section >= 0:
                        self._emulator_section(False)
                        section = 0
                    self._smm_changed(False)
                    stage2 = self.vm.stage2[self.as_id]
                    pages, writable, walks = stage2.pages, stage2.writable, stage2.walks
            elif op == "halt":
                self.rip = rip + INSN_SIZE
                self._emulator_section(False)
                yield pending + insn_ns
                return self._exit(VcpuExit(c.KVM_EXIT_HLT, self.rip))
            else:
                self.rip = rip + INSN_SIZE
            self.instructions += 1
            pending += insn_ns
            section -= 1
            if pending > self.horizon_ns:
                yield pending
                pending = 0
            elif op in _JUMPS and self.rip <= rip:
                # A loop closed: run the whole iterations that fit before the next yield at
                # once (engine/model/cycles.py); the state is the interpreter's, exactly.
                budget = (self.horizon_ns - pending) // insn_ns
                if section >= 0:
                    # An emulated guest still drops kvm->srcu on schedule.
                    budget = min(budget, section)
                done = run_cycles(self, stage2, memory, budget, walks)
                pending += done * insn_ns
                if section >= 0:
                    section -= done

    def _smm_changed(self, entered: bool) -> None:
        """enter_smm() on an SMI, emulator_leave_smm() on RSM (arch/x86/kvm/smm.c): both end
        in kvm_smm_changed(), after which kvm_arch_vcpu_memslots_id() is 1 in SMM."""
        if entered:
            self.smm_saved_rip = self.rip
            if self.smm_entry is not None:
                self.rip = self.smm_entry
            self.as_id = 1
        else:
            self.rip = self.smm_saved_rip
            self.as_id = 0
        self.last_used_slot = None
        self.last_used_slot_gen = -1
        self.vm.bus.emit(
            SmmTransition(vcpu=self.index, entered=entered, rip=self.rip, as_id=self.as_id)
        )

    def _emulator_section(self, enter: bool) -> None:
        """The emulator loop's read-side section (kvm_vcpu_srcu_read_lock/unlock around the
        emulation of a batch of instructions); its accesses use the set it dereferenced."""
        vm = self.vm
        if enter:
            self._section_idx = vm.srcu.read_lock(self.name)
            vm.srcu_dereference(self.name, self.as_id)
        elif self._section_idx >= 0:
            vm.srcu_read_unlock(self.name, self._section_idx)
            self._section_idx = -1

    def _stalled_exit(self) -> Generator[int, None, None]:
        """An exit KVM handles in the kernel (say, an external interrupt) during which the
        injected reader stall holds kvm->srcu; the guest resumes where it was."""
        vm = self.vm
        idx = self.srcu_idx = vm.srcu.read_lock(self.name)
        yield vm.timing.vmexit_ns
        vm.srcu_dereference(self.name, self.as_id)
        yield from self._leave_kernel(idx)
        yield vm.timing.vmentry_ns
        self.state = "guest"

    # --- the fault path -----------------------------------------------------------------

    def _page_fault(self, gpa: int, access: str, insn: Insn | None) -> Handler:
        vm, t = self.vm, self.vm.timing
        # An emulated guest never leaves KVM for this: the emulator looks the gfn up itself.
        emulated = vm.rules.emulated
        self.state = "fault"
        idx = self.srcu_idx = vm.srcu.read_lock(self.name)
        yield 0 if emulated else t.vmexit_ns
        gfn = gpa >> c.PAGE_SHIFT
        stage2 = vm.stage2[self.as_id]
        slots = vm.srcu_dereference(self.name, self.as_id)
        gen = slots.generation
        seq = stage2.mmu_invalidate_seq
        in_progress = bool(gen & c.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS)
        if vm.host.mmio_caching and stage2.mmio.get(gfn) == gen and not in_progress:
            slot = None  # handle_mmio_page_fault(): the cached MMIO SPTE is still current
        else:
            slot = self._gfn_to_memslot(slots, gfn)
        slot_id = -1 if slot is None else slot.id
        rules = vm.rules
        if slot is not None and slot.invalid:
            if rules.invalid_retry:
                return (yield from self._resume(idx, gpa, access, "retry", slot_id, gen))
            # No retry (arm64, or an emulated guest): __gfn_to_hva_many() answers
            # KVM_HVA_ERR_BAD for an INVALID slot exactly as for no slot.
            return (yield from self._emulate_noslot(idx, gpa, access, insn, gen))
        if slot is None:
            if rules.mmio_sptes and vm.host.mmio_caching and not in_progress:
                stage2.mmio[gfn] = gen
            return (yield from self._emulate_noslot(idx, gpa, access, insn, gen))
        if access == "write" and slot.flags & c.KVM_MEM_READONLY:
            assert insn is not None
            return (
                yield from self._emulate_mmio(idx, gpa, insn, True, "readonly_mmio", slot_id, gen)
            )
        yield t.insn_ns if emulated else t.fault_map_ns
        if stage2.mmu_invalidate_seq != seq:
            # mmu_invalidate_retry(): a zap ran while we resolved the page.
            return (yield from self._resume(idx, gpa, access, "retry_invalidated", slot_id, gen))
        logging = slot.flags & c.KVM_MEM_LOG_DIRTY_PAGES
        writable = not slot.flags & c.KVM_MEM_READONLY and (access == "write" or not logging)
        outcome = "mapped"
        if access == "write" and logging and slot.dirty_bitmap is not None:
            slot.dirty_bitmap.pages.add(gfn - slot.base_gfn)
            outcome = "dirty"
        stage2.install(gfn, slot.gfn_to_hva(gfn), writable)
        return (yield from self._resume(idx, gpa, access, outcome, slot_id, gen))

    def _gfn_to_memslot(self, slots: MemslotSet, gfn: int) -> Memslot | None:
        """kvm_vcpu_gfn_to_memslot(): the per-vCPU last_used_slot cache, then a search."""
        if slots.generation != self.last_used_slot_gen:
            self.last_used_slot = None
            self.last_used_slot_gen = slots.generation
        cached = self.last_used_slot
        if cached is not None and cached.base_gfn <= gfn < cached.base_gfn + cached.npages:
            return cached
        slot = slots.lookup(gfn)
        if slot is not None:
            self.last_used_slot = slot
        return slot

    def _resume(
        self, idx: int, gpa: int, access: str, outcome: str, slot: int, gen: int
    ) -> Handler:
        """Finish handling in the kernel and re-enter the guest."""
        self._fault_event(gpa, access, outcome, slot, gen)
        if self.stall_ns:
            yield from self._leave_kernel(idx)
        else:
            self._unlock(idx)
        if not self.vm.rules.emulated:
            yield self.vm.timing.vmentry_ns
        self.state = "guest"
        return None

    def _leave_kernel(self, idx: int) -> Generator[int, None, None]:
        if self.stall_ns:
            stall, self.stall_ns = self.stall_ns, 0
            self.state = "stalled"
            yield stall
        self._unlock(idx)

    def _unlock(self, idx: int) -> None:
        """_leave_kernel() with no stall pending: nothing to yield."""
        self.vm.srcu_read_unlock(self.name, idx)
        self.srcu_idx = -1

    def _emulate_noslot(
        self, idx: int, gpa: int, access: str, insn: Insn | None, gen: int
    ) -> Handler:
        # Not a generator itself: the handler it picks runs one level closer to kvm_run().
        if access != "fetch":
            assert insn is not None
            return self._emulate_mmio(idx, gpa, insn, access == "write", "mmio", -1, gen)
        return self._fetch_noslot(idx, gpa, gen)

    def _fetch_noslot(self, idx: int, gpa: int, gen: int) -> Handler:
        yield self.vm.timing.emulate_ns
        return (yield from self._fetch_failed(idx, gpa, gen))

    def _fetch_failed(self, idx: int, gpa: int, gen: int) -> Handler:
        """The instruction at gpa cannot be fetched (no slot, or an INVALID one)."""
        vm = self.vm
        access = "fetch"
        if vm.rules.fetch_fault == "pabt_injected":
            # arm64 kvm_handle_guest_abort(): an instruction abort outside any memslot
            # injects a prefetch abort (kvm_inject_pabt()) and resumes the guest.
            return (yield from self._inject(idx, gpa, gen, "pabt_injected", "PABT"))
        if vm.host.fetch_noslot == "mmio_len0":
            # The 2022 proposal: tell userspace about the fetch, let it re-enter.
            self._fault_event(gpa, access, "mmio_len0", -1, gen)
            yield from self._leave_kernel(idx)
            return self._exit(VcpuExit(c.KVM_EXIT_MMIO, self.rip, phys_addr=gpa, len=0))
        if self.cpl == 0 and not self.guest_mode:
            self._fault_event(gpa, access, "emulation_failure", -1, gen)
            yield from self._leave_kernel(idx)
            return self._exit(
                VcpuExit(
                    c.KVM_EXIT_INTERNAL_ERROR, self.rip, suberror=c.KVM_INTERNAL_ERROR_EMULATION
                )
            )
        # CPL > 0 or L2: #UD is queued and the guest resumes, architecturally wrong but silent.
        return (yield from self._inject(idx, gpa, gen, "ud_injected", "#UD"))

    def _inject(self, idx: int, gpa: int, gen: int, outcome: str, vector: str) -> Handler:
        vm = self.vm
        self._fault_event(gpa, "fetch", outcome, -1, gen)
        vm.bus.emit(
            UdInjected(
                vcpu=self.index,
                rip=self.rip,
                cpl=self.cpl,
                guest_mode=self.guest_mode,
                vector=vector,
            )
        )
        self.exits["ud_injected"] += 1
        yield from self._leave_kernel(idx)
        yield vm.timing.vmentry_ns
        if self.ud_handler is not None:
            self.rip = self.ud_handler
            self.state = "guest"
            return None
        # No exception handler: the guest kernel panics and halts.
        return self._exit(VcpuExit(c.KVM_EXIT_HLT, self.rip))

    def _emulate_mmio(
        self, idx: int, gpa: int, insn: Insn, is_write: bool, outcome: str, slot: int, gen: int
    ) -> Handler:
        vm = self.vm
        yield vm.timing.emulate_ns
        if vm.rules.mmio_fetch:
            # x86_emulate_instruction() with no instruction bytes from the exit (VMX) fetches
            # them: kvm_fetch_guest_virt() -> kvm_vcpu_read_guest_page(), whose memslot lookup
            # dereferences the set again and sees INVALID as no slot.
            code = vm.srcu_dereference(self.name, self.as_id).lookup(self.rip >> c.PAGE_SHIFT)
            if code is None or code.invalid:
                return (yield from self._fetch_failed(idx, self.rip, gen))
        self._fault_event(gpa, "write" if is_write else "read", outcome, slot, gen)
        data = 0
        if is_write:
            data = self.acc if insn.op == "store" else _word(self._read_ram(gpa)) + 1
        self._pending = _PendingMmio(insn, gpa, is_write)
        if self.stall_ns:
            yield from self._leave_kernel(idx)
        else:
            self._unlock(idx)
        return self._exit(
            VcpuExit(c.KVM_EXIT_MMIO, self.rip, phys_addr=gpa, len=8, is_write=is_write, data=data)
        )

    def _read_ram(self, gpa: int) -> object:
        hva = self.vm.gpa_to_hva(gpa, self.as_id)
        return None if hva is None else self.vm.memory.get(hva)

    def _complete_access(self, pending: _PendingMmio) -> None:
        """complete_emulated_mmio() for a load or a store: the access userspace handled
        is the whole instruction."""
        self._pending = None
        if not pending.is_write:
            self.acc = self.mmio_data
        self.rip += INSN_SIZE
        self.instructions += 1

    def _complete_mmio(self, pending: _PendingMmio) -> Handler:
        """complete_emulated_mmio() for an inc: the read came back from userspace; the
        emulator now writes value + 1, which lands in RAM if a slot appeared meanwhile, or
        becomes an MMIO write exit."""
        self._pending = None
        insn = pending.insn
        vm = self.vm
        idx = vm.srcu.read_lock(self.name)
        slots = vm.srcu_dereference(self.name, self.as_id)
        slot = slots.lookup(pending.gpa >> c.PAGE_SHIFT)
        value = self.mmio_data + 1
        if slot is None or slot.invalid or slot.flags & c.KVM_MEM_READONLY:
            self._pending = _PendingMmio(insn, pending.gpa, True)
            yield vm.timing.emulate_ns
            self._fault_event(
                pending.gpa, "write", "mmio", -1 if slot is None else slot.id, slots.generation
            )
            yield from self._leave_kernel(idx)
            return self._exit(
                VcpuExit(
                    c.KVM_EXIT_MMIO,
                    self.rip,
                    phys_addr=pending.gpa,
                    len=8,
                    is_write=True,
                    data=value,
                )
            )
        gfn = pending.gpa >> c.PAGE_SHIFT
        vm.memory[slot.gfn_to_hva(gfn) + (pending.gpa & PAGE_MASK)] = value
        if slot.dirty_bitmap is not None:
            slot.dirty_bitmap.pages.add(gfn - slot.base_gfn)
            self._fault_event(pending.gpa, "write", "dirty", slot.id, slots.generation)
        yield from self._leave_kernel(idx)
        self.rip += INSN_SIZE
        self.instructions += 1
        return None

    # --- bookkeeping --------------------------------------------------------------------

    def _fault_event(self, gpa: int, access: str, outcome: str, slot: int, gen: int) -> None:
        self.faults[outcome] += 1
        self.vm.bus.emit(
            Fault(
                vcpu=self.index,
                gpa=gpa,
                access=access,
                outcome=outcome,
                slot=slot,
                generation=gen,
                as_id=self.as_id,
            )
        )

    def _exit(self, exit: VcpuExit) -> VcpuExit:
        self.state = "userspace"
        name = exit.name
        self.exits[name] += 1
        self.vm.bus.emit(
            Exit(
                vcpu=self.index,
                reason=name,
                rip=exit.rip,
                phys_addr=exit.phys_addr,
                len=exit.len,
                is_write=exit.is_write,
                data=exit.data,
                suberror=exit.suberror,
            )
        )
        return exit


def _word(value: object) -> int:
    return value if isinstance(value, int) else 0


def run_to_exit(run: Run) -> tuple[VcpuExit, int]:
    """Drive KVM_RUN with no other actor: returns the exit and the virtual ns it took."""
    spent = 0
    while True:
        try:
            spent += next(run)
        except StopIteration as stop:
            result: VcpuExit = stop.value
            return result, spent

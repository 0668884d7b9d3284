"""A real guest on /dev/kvm: the ISA translation, MMIO exits on a deleted slot, READONLY
slots, and dirty logging with a guest that writes."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest

from engine.backends.kvm.ioctl import REGS_RAX, REGS_RCX
from engine.backends.kvm.x86 import TranslateError, translate
from engine.model import constants as c
from engine.model.guest import assemble
from tests.kvm.helpers import flat_vm, load_program, raises_errno, run_to_exit, set_word, word

LOG, RO = c.KVM_MEM_LOG_DIRTY_PAGES, c.KVM_MEM_READONLY
CODE = 0x1000


def test_every_instruction_of_the_isa_runs_as_the_model_describes_it() -> None:
    vm, mem = flat_vm()
    with vm:
        extra = vm.map_memory(0x10000)
        vm.set_user_memory_region(1, 0, 0x100000, 0x10000, extra.addr)
        set_word(extra, 0x10, 0x4321)
        program = load_program(
            mem,
            0,
            CODE,
            [
                "setc 3",
                "mov 5",
                "store [0x3000]",
                "spin:",
                "inc [0x3002]",
                "nop",
                "loop spin",
                "load [0x100010]",  # above 1 MiB: the 32-bit address prefix reaches it
                "store [0x3004]",
                "halt",
            ],
        )
        vcpu = vm.create_vcpu()
        vcpu.setup_flat_real_mode(CODE)
        assert run_to_exit(vcpu) == c.KVM_EXIT_HLT
        regs = vcpu.get_regs()
        assert (word(mem, 0x3000), word(mem, 0x3002), word(mem, 0x3004)) == (5, 3, 0x4321)
        assert regs[REGS_RAX] & 0xFFFF == 0x4321
        assert regs[REGS_RCX] & 0xFFFFFFFF == 0
        # hlt leaves RIP after itself; reported as the model's address after its halt.
        assert program.model_of(vcpu.rip()) == CODE + 4 * 9


def test_a_jump_out_of_the_program_fetches_from_that_gpa() -> None:
    vm, mem = flat_vm()
    with vm:
        load_program(mem, 0, CODE, ["jmp 0xdead0000"])
        vcpu = vm.create_vcpu()
        vcpu.setup_flat_real_mode(CODE)
        # No slot at 0xdead0000: the fetch cannot be emulated (KVM_INTERNAL_ERROR_EMULATION).
        assert run_to_exit(vcpu) == c.KVM_EXIT_INTERNAL_ERROR
        suberror, _ = vcpu.internal_error()
        assert suberror == c.KVM_INTERNAL_ERROR_EMULATION
        assert vcpu.rip() == 0xDEAD0000


def test_the_rip_kvm_stores_at_each_exit_is_the_one_kvm_get_regs_reads() -> None:
    """serve.py reads an exit's RIP from kvm_run (KVM_CAP_SYNC_REGS) instead of making a
    KVM_GET_REGS per exit: the two must agree at every kind of exit the backend sees."""
    vm, mem = flat_vm()
    with vm:
        program = load_program(
            mem, 0, CODE, ["load [0x100000]", "store [0x100002]", "jmp 0xdead0000"]
        )
        vcpu = vm.create_vcpu()
        vcpu.setup_flat_real_mode(CODE)
        assert vcpu.sync_regs_on_exit()
        seen = []
        while (reason := run_to_exit(vcpu)) == c.KVM_EXIT_MMIO:
            seen.append(vcpu.exit_rip())
            assert seen[-1] == vcpu.rip()
        assert reason == c.KVM_EXIT_INTERNAL_ERROR
        assert vcpu.exit_rip() == vcpu.rip() == 0xDEAD0000
        # A read exits before its instruction completes; a write after (RIP is past it).
        assert [program.model_of(rip) for rip in seen] == [CODE, CODE + 8]
        vcpu.kick()  # a kick returns EINTR before the guest runs: RIP stored all the same
        assert vcpu.run() == c.KVM_EXIT_INTR
        assert vcpu.exit_rip() == 0xDEAD0000


def test_translation_refuses_what_a_real_mode_guest_cannot_do() -> None:
    with pytest.raises(TranslateError, match="below 4 GiB"):
        translate(assemble(CODE, ["load [0x100000000]"]), CODE)
    with pytest.raises(TranslateError, match="16 bits"):
        translate(assemble(CODE, ["mov 0x10000"]), CODE)
    with pytest.raises(TranslateError, match="own code"):
        translate(assemble(CODE, ["store [0x1002]"]), CODE)
    with pytest.raises(TranslateError, match="beyond the pages"):
        translate(assemble(0x1FF8, ["inc [0x3000]", "jmp 0x1ff8"]), 0x1FF8)


@pytest.mark.parametrize("op", ["load", "inc"])
def test_a_deleted_data_slot_turns_accesses_into_mmio_exits(op: str) -> None:
    vm, mem = flat_vm()
    with vm:
        data = vm.map_memory(0x10000)
        vm.set_user_memory_region(1, 0, 0x100000, 0x10000, data.addr)
        set_word(data, 0, 7)
        load_program(mem, 0, CODE, [f"{op} [0x100000]", "halt"])
        vcpu = vm.create_vcpu()
        vcpu.setup_flat_real_mode(CODE)
        vm.set_user_memory_region(1, 0, 0x100000, 0, data.addr)
        assert run_to_exit(vcpu) == c.KVM_EXIT_MMIO
        read = vcpu.mmio()
        assert (read.phys_addr, read.len, read.is_write) == (0x100000, 2, False)
        vcpu.complete_mmio_read((0xBEEF).to_bytes(2, "little"))
        if op == "inc":
            # The emulator finishes the read-modify-write as a second exit: value + 1.
            assert run_to_exit(vcpu) == c.KVM_EXIT_MMIO
            write = vcpu.mmio()
            assert (write.phys_addr, write.len, write.is_write) == (0x100000, 2, True)
            assert write.value == 0xBEF0
        assert run_to_exit(vcpu) == c.KVM_EXIT_HLT
        if op == "load":
            assert vcpu.get_regs()[REGS_RAX] & 0xFFFF == 0xBEEF
        assert word(data, 0) == 7  # RAM behind the deleted slot was never touched


def test_writes_to_a_readonly_slot_exit_as_mmio_and_leave_ram_alone() -> None:
    vm, mem = flat_vm(0x2000)
    with vm:
        rom = vm.map_memory(0x2000)
        set_word(rom, 0x1000, 0x1234)
        vm.set_user_memory_region(1, RO | LOG, 0x2000, 0x2000, rom.addr)
        load_program(mem, 0, CODE, ["load [0x3000]", "store [0x3002]", "inc [0x3000]", "halt"])
        vcpu = vm.create_vcpu()
        vcpu.setup_flat_real_mode(CODE)
        seen = []
        while (reason := run_to_exit(vcpu)) == c.KVM_EXIT_MMIO:
            m = vcpu.mmio()
            seen.append((m.phys_addr, m.len, m.is_write, m.value))
        assert reason == c.KVM_EXIT_HLT
        # The read works from the slot; the store and the inc's write become MMIO exits.
        assert seen == [(0x3002, 2, True, 0x1234), (0x3000, 2, True, 0x1235)]
        assert (word(rom, 0x1000), word(rom, 0x1002)) == (0x1234, 0)
        assert vm.get_dirty_log(1) == []  # nothing reached RAM, so nothing is dirty


# --- dirty logging ---------------------------------------------------------------------------

WRITES = ["store [0x3000]", "store [0x5000]", "store [0x9002]", "halt"]
DIRTY = [1, 3, 7]  # page offsets from the slot base 0x2000


class Logging:
    """Slot 0 = code [0, 8K); slot 1 = [0x2000, 0x10000) with LOG_DIRTY (14 pages)."""

    def __init__(self) -> None:
        self.vm, self.mem = flat_vm(0x2000)
        self.data = self.vm.map_memory(0xE000)
        self.vm.set_user_memory_region(1, LOG, 0x2000, 0xE000, self.data.addr)
        load_program(self.mem, 0, CODE, WRITES)
        self.vcpu = self.vm.create_vcpu()

    def guest_writes(self) -> None:
        self.vcpu.setup_flat_real_mode(CODE)
        assert run_to_exit(self.vcpu) == c.KVM_EXIT_HLT


@pytest.fixture
def logging() -> Iterator[Logging]:
    g = Logging()
    yield g
    g.vm.close()


def test_get_dirty_log_reports_the_pages_the_guest_wrote_then_clears(logging: Logging) -> None:
    assert logging.vm.get_dirty_log(1) == []
    logging.guest_writes()
    assert logging.vm.get_dirty_log(1) == DIRTY
    assert logging.vm.get_dirty_log(1) == []
    logging.data.write(0x5000, b"\x01")  # the host writing through its mapping is not tracked
    assert logging.vm.get_dirty_log(1) == []


def test_dirty_bits_survive_an_identical_reset_and_a_move(logging: Logging) -> None:
    logging.guest_writes()
    logging.vm.set_user_memory_region(1, LOG, 0x2000, 0xE000, logging.data.addr)
    assert logging.vm.get_dirty_log(1) == DIRTY
    logging.guest_writes()
    logging.vm.set_user_memory_region(1, LOG, 0x20000, 0xE000, logging.data.addr)  # MOVE
    assert logging.vm.get_dirty_log(1) == DIRTY


def test_dirty_bits_are_lost_across_delete_and_create(logging: Logging) -> None:
    logging.guest_writes()
    logging.vm.set_user_memory_region(1, LOG, 0x2000, 0, logging.data.addr)
    logging.vm.set_user_memory_region(1, LOG, 0x2000, 0xE000, logging.data.addr)
    assert logging.vm.get_dirty_log(1) == []


def test_dirty_bits_are_lost_when_logging_stops_and_restarts(logging: Logging) -> None:
    logging.guest_writes()
    logging.vm.set_user_memory_region(1, 0, 0x2000, 0xE000, logging.data.addr)
    with raises_errno(errno.ENOENT):
        logging.vm.get_dirty_log(1)
    logging.vm.set_user_memory_region(1, LOG, 0x2000, 0xE000, logging.data.addr)
    assert logging.vm.get_dirty_log(1) == []

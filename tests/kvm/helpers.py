"""Small drivers for tests that need a real guest: a program in slotlab's ISA placed in real
memory, and a vCPU that runs it on its own thread while the test changes memslots."""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from engine.backends.kvm.vcpu import KvmVcpu, Mmio
from engine.backends.kvm.vm import GuestMemory, KvmVM
from engine.backends.kvm.x86 import X86Program, translate
from engine.model import constants as c
from engine.model.guest import assemble

# Hang guards, not timing claims: a vCPU thread leaves KVM_RUN in microseconds when kicked,
# and these only turn a real hang into a failure on however loaded a machine.
JOIN_S = 120.0


def raises_errno(code: int) -> Any:
    """pytest.raises for an OSError carrying exactly this errno."""
    return pytest.raises(OSError, match=rf"^\[Errno {code}\] {os.strerror(code)}")


def load_program(memory: GuestMemory, mem_gpa: int, entry: int, lines: list[str]) -> X86Program:
    """Assemble slotlab ISA at ``entry`` and write its x86 bytes where ``memory`` (mapped at
    ``mem_gpa``) holds that GPA."""
    program = translate(assemble(entry, lines), entry)
    memory.write(entry - mem_gpa, program.code)
    return program


def word(memory: GuestMemory, offset: int) -> int:
    value: int = struct.unpack("<H", memory.read(offset, 2))[0]
    return value


def set_word(memory: GuestMemory, offset: int, value: int) -> None:
    memory.write(offset, struct.pack("<H", value))


def run_to_exit(vcpu: KvmVcpu, limit: int = 1000) -> int:
    """KVM_RUN on this thread until an exit other than a kick; MMIO is the caller's to answer."""
    for _ in range(limit):
        reason = vcpu.run()
        if reason != c.KVM_EXIT_INTR:
            return reason
    raise AssertionError(f"no exit after {limit} KVM_RUN calls")


class VcpuThread(threading.Thread):
    """KVM_RUN in a loop on its own thread. MMIO reads are answered with ``mmio_value``;
    every MMIO exit is recorded; the loop ends at any other exit (kept in ``final``) or when
    stop() asks."""

    def __init__(self, vcpu: KvmVcpu, mmio_value: int = 0) -> None:
        super().__init__(name=f"vcpu{vcpu.index}", daemon=True)
        self.vcpu = vcpu
        self.mmio_value = mmio_value
        self.mmio: list[Mmio] = []
        self.final: tuple[int, int] | None = None  # (exit reason, rip)
        self.error: BaseException | None = None
        self._stop_asked = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_asked.is_set():
                reason = self.vcpu.run()
                if reason == c.KVM_EXIT_INTR:
                    continue
                if reason == c.KVM_EXIT_MMIO:
                    m = self.vcpu.mmio()
                    self.mmio.append(m)
                    if not m.is_write:
                        self.vcpu.complete_mmio_read(self.mmio_value.to_bytes(8, "little"))
                    continue
                self.final = (reason, self.vcpu.rip())
                return
        except BaseException as err:
            self.error = err

    def stop(self) -> None:
        self._stop_asked.set()
        self.vcpu.kick()
        self.join(JOIN_S)
        assert not self.is_alive(), "the vCPU thread did not leave KVM_RUN"
        self.vcpu.clear_kick()
        if self.error is not None:
            raise self.error


def wait_for(what: str, condition: Callable[[], bool], timeout: float = JOIN_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.0002)


def flat_vm(code_size: int = 0x10000) -> tuple[KvmVM, GuestMemory]:
    """A VM with slot 0 = [0, code_size) of fresh RAM."""
    vm = KvmVM()
    try:
        memory = vm.map_memory(code_size)
        vm.set_user_memory_region(0, 0, 0, code_size, memory.addr)
    except BaseException:
        vm.close()
        raise
    return vm, memory

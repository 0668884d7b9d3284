"""A vCPU thread serves its MMIO exits itself and stays in its KVM_RUN loop, as QEMU's
kvm_cpu_exec() does: the event loop sees only the exits that need the session. Counts of
hand-offs and served exits, never timings."""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING, cast

import trio

from engine.backends.kvm.serve import RawExit, ServedExit, VcpuThread
from engine.backends.kvm.session import KvmSession
from engine.events import Event, Exit, MmioServed, VmStopped
from engine.model import constants as c
from engine.runner import make_config
from engine.vmm.flatview import FlatView
from tests.kvm.helpers import JOIN_S, flat_vm, load_program, wait_for, word

if TYPE_CHECKING:
    from engine.vmm.vmm import Vmm

CODE, DOORBELL, OUT = 0x1000, 0x20000, 0x3000
DEVICE_VALUE = 0x1234


class _Device:
    """The part of a Vmm a vCPU thread reads: a published FlatView with no RAM at the
    doorbell, and a device that reads as DEVICE_VALUE."""

    def __init__(self) -> None:
        self.views = [FlatView([])]
        self.inhibited = False
        self.accesses = 0

    def access_mmio(
        self, as_id: int, gpa: int, is_write: bool, data: int, size: int
    ) -> tuple[str, str, int]:
        self.accesses += 1
        return "device", "doorbell", data if is_write else DEVICE_VALUE


def test_doorbell_reads_are_answered_in_the_vcpu_thread_without_handing_off() -> None:
    vm, memory = flat_vm()
    with vm:
        load_program(memory, 0, CODE, ["top:", f"load [{DOORBELL:#x}]", f"store [{OUT:#x}]",
                                       "jmp top"])  # fmt: skip
        vcpu = vm.create_vcpu(0)
        vcpu.setup_flat_real_mode(CODE)
        device = _Device()
        posted: list[ServedExit] = []
        thread = VcpuThread(vcpu, cast("Vmm", device), threading.Lock(), 0, posted.append,
                            lambda: 0)  # fmt: skip
        handed: list[RawExit] = []
        worker = threading.Thread(target=lambda: handed.append(thread.run(lambda: True)))
        worker.start()
        try:
            # The guest stored the doorbell's value: its read was completed by the thread.
            wait_for(
                "the guest to store the doorbell value",
                lambda: word(memory, OUT) != 0 or not worker.is_alive(),
            )
            wait_for("a few served exits", lambda: thread.served_here >= 3 or not worker.is_alive())
        finally:
            vcpu.kick()
            worker.join(JOIN_S)
        assert not worker.is_alive()
        assert word(memory, OUT) == DEVICE_VALUE
        # One hand-off for the whole loop: the kick's EINTR (or an MMIO exit racing it).
        assert len(handed) == 1
        assert handed[0].reason in (c.KVM_EXIT_INTR, c.KVM_EXIT_MMIO)
        assert thread.served_here == len(posted) >= 3
        assert all(p.phys_addr == DOORBELL and not p.is_write for p in posted)
        assert all(p.data == DEVICE_VALUE and p.target == "device" for p in posted)
        assert device.accesses == thread.served_here
        stamps = [p.at_ns for p in posted]
        assert stamps == sorted(stamps)


def test_a_session_reports_every_exit_its_threads_served_in_their_order() -> None:
    events: list[Event] = []
    config = make_config("split", "legacy", vcpus=2, duration_ns=300_000_000)
    session = KvmSession(config, observers=(events.append,))
    trio.run(session.run)
    runners = session.backend.vcpus.runners
    exits = [e for e in events if isinstance(e, Exit)]
    served = [e for e in events if isinstance(e, MmioServed)]
    # Each exit is either served in its thread or handed to the event loop, never both.
    assert len(exits) == sum(r.thread.served_here + r.handoffs for r in runners)
    assert len(served) == sum(1 for e in exits if e.reason == "KVM_EXIT_MMIO")
    # Until the VM stops, only what needs the session is handed off: per vCPU at most its
    # last exit (the crash, or the stop's kick) and one MMIO exit that raced the stop, plus
    # any the thread handed over because the event loop had fallen MAX_WAITING behind.
    assert any(isinstance(e, VmStopped) for e in events) or session.summary().verdict == "ok"
    assert all(r.handoffs <= 2 + r.thread.backpressured for r in runners)
    for index in range(2):
        ts = [e.t for e in exits if e.vcpu == index]
        assert ts == sorted(ts)
        # A served exit's MmioServed follows its Exit, stamped after it.
        own = [e for e in events if isinstance(e, Exit | MmioServed) and e.vcpu == index]
        for first, second in itertools.pairwise(own):
            if isinstance(second, MmioServed):
                assert isinstance(first, Exit)
                assert first.reason == "KVM_EXIT_MMIO"
                assert first.t <= second.t

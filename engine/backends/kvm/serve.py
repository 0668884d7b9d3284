"""A vCPU thread's own KVM_RUN loop: the exits it serves without the event loop.

QEMU's vCPU thread answers KVM_EXIT_MMIO itself (kvm_cpu_exec() in accel/kvm/kvm-all.c calls
address_space_rw() there, on the FlatView published under RCU, and goes back into KVM_RUN
without waking the main loop); only what needs a decision reaches the rest of QEMU. Handing
every exit to the event loop and back instead costs two thread hand-offs per exit, each
waiting for a CPU and the GIL, so a guest polling a device register spends most of its time
out of the guest, and meets a DELETE's missing slot much later than QEMU's would.

So a vCPU thread here serves an MMIO exit in place, under the BQL (``bql``: the lock the
VMM's side also takes where it reads RAM against its dirty-log snapshots, kernel.py), posts
the raw facts of the exit (ServedExit) for the event loop to turn into events with the
thread's stamps (inbox.py), and re-enters KVM_RUN. Everything between KVM_RUN returning and
re-entering it keeps a vCPU out of the guest and holds the GIL the other threads need, so that
path only reads kvm_run, serves the access and appends one record: no event is built there.
It returns to the event loop only for what needs the session: an exit the guest cannot
survive, a kick (EINTR: a stop, an inhibit's pause, a `weeds` jump), a pending inhibit or
stop, or an inbox the event loop has fallen behind on (backpressure).
"""

from __future__ import annotations

import dataclasses
import mmap
import threading
from collections.abc import Callable
from time import monotonic_ns
from typing import TYPE_CHECKING

import msgspec

from engine.backends.kvm.ioctl import RUN_MMIO, RUN_MMIO_DATA, RUN_UNION
from engine.backends.kvm.vcpu import KvmVcpu, Mmio
from engine.model import constants as c

if TYPE_CHECKING:
    from engine.vmm.vmm import Vmm

MAX_WAITING = 256
"""Served exits the event loop may be behind on before a vCPU thread waits for it."""


class ServedExit(msgspec.Struct, gc=False):
    """An MMIO exit a thread served: what it read from kvm_run and what the VMM answered,
    built positionally in the vCPU's thread (the event loop makes the events of it)."""

    at_ns: int
    """time.monotonic_ns() in the vCPU's thread the instant KVM_RUN returned."""
    rip: int
    phys_addr: int
    len: int
    is_write: bool
    written: int
    """The value a write stored (0 for a read)."""
    target: str
    region: str
    data: int
    """The value the access completed with (a write's own)."""
    served_ns: int
    rom_write: bool


@dataclasses.dataclass(slots=True)
class RawExit:
    """An exit handed to the event loop (what the vCPU's thread read after KVM_RUN returned,
    so trio's thread makes no syscall)."""

    reason: int
    rip: int
    at_ns: int
    """time.monotonic_ns() in the vCPU's thread the instant KVM_RUN returned."""
    mmio: Mmio | None = None
    suberror: int = 0
    data: tuple[int, ...] = ()


def read_exit(vcpu: KvmVcpu, reason: int) -> RawExit:
    """The exit KVM_RUN just returned with, as the vCPU's thread sees it."""
    at = vcpu.returned_ns
    rip = vcpu.exit_rip()
    if reason == c.KVM_EXIT_MMIO:
        return RawExit(reason, rip, at, mmio=vcpu.mmio())
    if reason == c.KVM_EXIT_INTERNAL_ERROR:
        suberror, data = vcpu.internal_error()
        return RawExit(reason, rip, at, suberror=suberror, data=tuple(data))
    return RawExit(reason, rip, at)


def serve_mmio(vcpu: KvmVcpu, vmm: Vmm, bql: threading.Lock, raw: RawExit) -> ServedExit:
    """address_space_rw() for an MMIO exit handed to the event loop (the slow path)."""
    m = raw.mmio
    assert m is not None
    return _serve(vcpu.page, vmm, bql, raw.at_ns, raw.rip, m.phys_addr, m.data, m.len, m.is_write)


def _serve(
    page: mmap.mmap,
    vmm: Vmm,
    bql: threading.Lock,
    at: int,
    rip: int,
    phys: int,
    raw: bytes,
    size: int,
    is_write: int | bool,
) -> ServedExit:
    """Serve one MMIO access; a read's value goes back to the guest on the next KVM_RUN."""
    rom = False
    written = int.from_bytes(raw[:size], "little") if is_write else 0
    with bql:
        if is_write:
            r = vmm.views[0].lookup(phys)
            rom = r is not None and r.readonly
        target, name, value = vmm.access_mmio(0, phys, bool(is_write), written, size)
    if not is_write:
        page[RUN_MMIO_DATA : RUN_MMIO_DATA + size] = value.to_bytes(size, "little")
    done = monotonic_ns()
    return ServedExit(at, rip, phys, size, bool(is_write), written, target, name, value, done, rom)


class VcpuThread:
    """The loop one KVM_RUN hand-off runs in a worker thread."""

    def __init__(
        self,
        vcpu: KvmVcpu,
        vmm: Vmm,
        bql: threading.Lock,
        index: int,
        post: Callable[[ServedExit], None],
        waiting: Callable[[], int],
    ) -> None:
        self.vcpu = vcpu
        self.vmm = vmm
        self.bql = bql
        self.index = index
        self.post = post
        self.waiting = waiting
        self.served_here = 0
        """MMIO exits this thread served without the event loop."""
        self.backpressured = 0
        """MMIO exits handed to the event loop because it was MAX_WAITING behind."""

    def run(self, keep_going: Callable[[], bool]) -> RawExit:
        """KVM_RUN until an exit the event loop must see; serve the rest in place. The loop
        reads kvm_run through locals bound once: every lookup here delays re-entry."""
        vcpu, vmm, bql, post, waiting = self.vcpu, self.vmm, self.bql, self.post, self.waiting
        page, run, rip_of = vcpu.page, vcpu.run, vcpu.exit_rip
        unpack, mmio_exit = RUN_MMIO.unpack_from, c.KVM_EXIT_MMIO
        while True:
            reason = run()
            if reason != mmio_exit or not keep_going() or vmm.inhibited:
                return read_exit(vcpu, reason)
            if waiting() >= MAX_WAITING:
                self.backpressured += 1
                return read_exit(vcpu, reason)
            phys, raw, size, is_write = unpack(page, RUN_UNION)
            post(_serve(page, vmm, bql, vcpu.returned_ns, rip_of(), phys, raw, size, is_write))
            self.served_here += 1

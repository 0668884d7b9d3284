"""A vCPU thread's own KVM_RUN loop: the exits it serves without the event loop.

QEMU's vCPU thread answers KVM_EXIT_MMIO itself (kvm_cpu_exec() in accel/kvm/kvm-all.c calls
address_space_rw() there, on the FlatView published under RCU, and goes back into KVM_RUN
without waking the main loop); only what needs a decision reaches the rest of QEMU. Handing
every exit to the event loop and back instead costs two thread hand-offs per exit, each
waiting for a CPU and the GIL, so a guest polling a device register spends most of its time
out of the guest, and meets a DELETE's missing slot much later than QEMU's would.

So a vCPU thread here serves an MMIO exit in place, under the BQL (``bql``: the lock the
VMM's side also takes where it reads RAM against its dirty-log snapshots, kernel.py), posts
what the exit implies for the event loop to emit with the thread's stamps (inbox.py), and
re-enters KVM_RUN. It returns to the event loop only for what needs the session: an exit the
guest cannot survive, a kick (EINTR: a stop, an inhibit's pause, a `weeds` jump), a pending
inhibit or stop, or an inbox the event loop has fallen behind on (backpressure).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from time import monotonic_ns
from typing import TYPE_CHECKING

from engine.backends.kvm.vcpu import KvmVcpu, Mmio
from engine.events import MmioServed
from engine.model import constants as c

if TYPE_CHECKING:
    from engine.vmm.vmm import Vmm

MAX_WAITING = 256
"""Served exits the event loop may be behind on before a vCPU thread waits for it."""


@dataclasses.dataclass(slots=True)
class RawExit:
    """What a vCPU thread read after KVM_RUN returned (so trio's thread makes no syscall)."""

    reason: int
    rip: int
    at_ns: int
    """time.monotonic_ns() in the vCPU's thread the instant KVM_RUN returned."""
    mmio: Mmio | None = None
    suberror: int = 0
    data: tuple[int, ...] = ()
    served: MmioServed | None = None
    """How the MMIO exit was served (None: not yet)."""
    served_ns: int = 0
    rom_write: bool = False


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


def serve_mmio(vcpu: KvmVcpu, vmm: Vmm, bql: threading.Lock, index: int, raw: RawExit) -> None:
    """address_space_rw() for an MMIO exit, in whichever thread holds it; a read's value goes
    back to the guest on the next KVM_RUN."""
    m = raw.mmio
    assert m is not None
    phys, is_write = m.phys_addr, m.is_write
    with bql:
        if is_write:
            r = vmm.views[0].lookup(phys)
            raw.rom_write = r is not None and r.readonly
        served = vmm.access_mmio(index, 0, phys, is_write, m.value if is_write else 0, m.len)
    if not is_write:
        vcpu.complete_mmio_read(served.data.to_bytes(m.len, "little"))
    raw.served = served
    raw.served_ns = monotonic_ns()


class VcpuThread:
    """The loop one KVM_RUN hand-off runs in a worker thread."""

    def __init__(
        self,
        vcpu: KvmVcpu,
        vmm: Vmm,
        bql: threading.Lock,
        index: int,
        post: Callable[[RawExit], None],
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
        """KVM_RUN until an exit the event loop must see; serve the rest in place."""
        vcpu = self.vcpu
        while True:
            raw = read_exit(vcpu, vcpu.run())
            if raw.reason != c.KVM_EXIT_MMIO or not keep_going() or self.vmm.inhibited:
                return raw
            if self.waiting() >= MAX_WAITING:
                self.backpressured += 1
                return raw
            serve_mmio(vcpu, self.vmm, self.bql, self.index, raw)
            self.served_here += 1
            self.post(raw)

"""The kvm SnapshotSource: userspace's side of a real VM, on the wall clock.

The kernel's two memslot sets, their generations and SRCU stay hidden: the slots shown are
the ones the VMM set, and the vCPUs are what their threads saw at their last exit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.model import constants as c
from engine.snapshot.source import NO_SRCU, ClockView, activity, address_space, rates
from engine.snapshot.views import AddressSpaceView, SetView, SlotView, SrcuView, VcpuView

if TYPE_CHECKING:
    from engine.backends.kvm.backend import KvmBackend
    from engine.snapshot.tracker import History
    from engine.snapshot.viewcache import ViewCache
    from engine.vmm.vmm import Vmm

RATE_WINDOW_NS = 100_000_000
"""On a real VM t is wall time, where 100 us holds next to nothing: count over 100 ms."""


class KvmSnapshotSource:
    backend = "kvm"
    rate_window_ns = RATE_WINDOW_NS

    def __init__(self, backend: KvmBackend) -> None:
        self.b = backend

    def clock(self, verdict: bool, error: bool) -> ClockView:
        bus = self.b.bus
        # Wall time runs on after the end: a finished run's time is its last event's.
        if verdict or error:
            return ClockView(bus.now, 1.0, False, verdict, self.b.stop_reason)
        return ClockView(bus.elapsed() if bus.seq else 0, 1.0, False, verdict, self.b.stop_reason)

    def slots_key(self) -> int:
        return len(self.b.kernel.regions)

    def spaces(
        self, vmm: Vmm, span: Callable[[int], tuple[int, int]], views: ViewCache
    ) -> tuple[AddressSpaceView, ...]:
        """The slots as the VMM set them: the kernel's sets and generations stay hidden."""
        kernel = self.b.kernel
        out = []
        for as_id in range(kernel.nr_address_spaces):
            slots = tuple(
                sorted(
                    (
                        SlotView(
                            r.id,
                            r.guest_phys_addr >> c.PAGE_SHIFT,
                            r.memory_size >> c.PAGE_SHIFT,
                            r.flags,
                            r.userspace_addr,
                        )
                        for r in kernel.regions.values()
                        if r.as_id == as_id
                    ),
                    key=lambda s: s.base_gfn,
                )
            )
            out.append(
                address_space(
                    vmm, as_id, SetView(-1, 0, 0, slots), SetView(-1, 0, 0, ()), span, views
                )
            )
        return tuple(out)

    def vcpus(self, history: History, now: int) -> tuple[VcpuView, ...]:
        out = []
        for runner in self.b.vcpus.runners:
            last_fault = history.last_fault.get(runner.index, "")
            ring = history.exits.get(runner.index)
            out.append(
                VcpuView(
                    index=runner.index,
                    as_id=0,
                    state=runner.state,
                    activity=activity(runner.state, last_fault, False, ring),
                    rip=runner.rip,
                    srcu_idx=-1,
                    last_data_gpa=-1,
                    exits=tuple(runner.exits.most_common()),
                    exit_rates=rates(ring, now, self.rate_window_ns),
                    faults=tuple(runner.faults.most_common()),
                    last_fault=last_fault,
                    instructions=0,
                    stall_ns=runner.stall_ns,
                )
            )
        return tuple(out)

    def srcu(self, history: History, now: int) -> SrcuView:
        return NO_SRCU

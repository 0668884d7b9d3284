"""The seams between the session core and a backend.

A backend is what differs between machines, and only that: how time passes (``Clock``), the
kernel side of the memslot ioctls (``MemslotBackend``), the vCPU threads (``VcpuControl``) and
the VMM's own mapping of guest RAM (``GuestRam``). The session core (engine.core.session) and
the VMM (engine.vmm.vmm) are written once against these protocols; nothing outside a backend
asks which one it has.

Three backends fit: the model (virtual time from the sequencer, the model kernel), the real
/dev/kvm (wall time, ioctls on the device), and an observer of a real QEMU, which is handed
memslot calls and vCPU exits from a trace instead of issuing them: its ``Backend.run`` drives
the kernel side from the trace and never starts the core's VMM loop.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.checker import Checker
    from engine.core.config import RunConfig
    from engine.events import EventBus
    from engine.faults import FaultSpec, Injector
    from engine.model.region import MemoryRegion
    from engine.sim.pacing import Pacing
    from engine.snapshot.source import SnapshotSource
    from engine.vmm.flatview import FlatRange
    from engine.vmm.strategies import Strategy
    from engine.vmm.vmm import Vmm

Body = Callable[[], Awaitable[None]]


class Clock(Protocol):
    """Time as one task of the run sees it: virtual ns from the sequencer, or wall ns."""

    def now(self) -> int:
        """ns since the run started (what events are stamped with)."""
        ...

    async def sleep(self, ns: int) -> None: ...

    async def checkpoint(self) -> None:
        """Let every other task of the run go first, then carry on."""
        ...

    async def preemptible(self) -> None:
        """The task is back in user space between two kernel calls of one operation, where a
        host scheduler can preempt it: `slotlab hunt`'s change points act here."""
        ...

    async def wait_until(self, done: Callable[[], bool], limit_ns: int) -> None:
        """Return once ``done()`` holds, or after ``limit_ns``; ``notify`` re-checks it."""
        ...

    def notify(self) -> None:
        """Something ``wait_until``'s condition reads may have changed."""
        ...


class GuestRam(Protocol):
    """Guest memory as the VMM maps it, addressed by the scenario's HVAs."""

    def read(self, hva: int, size: int) -> int: ...

    def write(self, hva: int, value: int, size: int) -> None: ...


class BatchMemslots(Protocol):
    """The batch ioctls proposed in 2022 and never merged: only the model's kernel has them,
    and a backend without them refuses their strategies before a run starts."""

    async def ioctl_list(self, regions: list[MemoryRegion]) -> None: ...

    async def ioctl_all(self, as_id: int, regions: list[MemoryRegion]) -> None: ...

    async def ioctl_convert(
        self, as_id: int, old_ids: list[int], regions: list[MemoryRegion]
    ) -> None: ...

    def converts(self, as_id: int, old_ids: list[int], regions: list[MemoryRegion]) -> bool:
        """Whether the kernel would accept this 1->N or N->1 conversion."""
        ...


class MemslotBackend(Protocol):
    """The kernel side of the memslot ioctls. Each implementation emits the same events for
    a call (IoctlEnter, MemslotChange, IoctlExit, DirtyLog): the kernel layer emits them,
    never the VMM."""

    nr_address_spaces: int
    nr_memslots: int

    @property
    def batch(self) -> BatchMemslots | None:
        """The batch ioctls, on a kernel that has them."""
        ...

    def ioctl_now(self, region: MemoryRegion) -> None:
        """KVM_SET_USER_MEMORY_REGION before any vCPU runs (the boot layout)."""
        ...

    async def ioctl(self, region: MemoryRegion, quiesced: bool) -> None:
        """KVM_SET_USER_MEMORY_REGION while the VM runs; ``quiesced`` when every vCPU is out
        of KVM_RUN (no SRCU reader to wait for). Raises OSError where the kernel fails it."""
        ...

    def logging(self, slot: int) -> bool:
        """Whether the slot (as_id << 16 | id) exists and logs dirty pages."""
        ...

    def memslots(self, as_id: int) -> list[MemoryRegion]: ...

    async def sync_dirty_logs(self, only: set[int] | None = None) -> None:
        """KVM_GET_DIRTY_LOG for every logging slot (or those ids)."""
        ...


class VcpuControl(Protocol):
    """The VMM's handle on its vCPU threads (QEMU's accel blocker needs no more)."""

    def kick_all(self) -> None: ...

    async def wait_all_out(self) -> None:
        """Until no vCPU is inside KVM_RUN."""
        ...

    def resume_all(self) -> None: ...

    def fetching_from(self, ranges: Sequence[FlatRange]) -> bool:
        """Whether some vCPU in the guest is about to fetch from one of the ranges (the race
        fault starts an update then); True where the backend cannot see a guest's RIP."""
        ...

    def totals(self) -> VcpuTotals: ...


@dataclasses.dataclass
class VcpuTotals:
    """Every vCPU's exits and fault outcomes by name, and the time they spent blocked."""

    exits: Counter[str] = dataclasses.field(default_factory=Counter)
    faults: Counter[str] = dataclasses.field(default_factory=Counter)
    stall_ns: int = 0

    @classmethod
    def of(
        cls, exits: Iterable[Counter[str]], faults: Iterable[Counter[str]], stall_ns: int
    ) -> VcpuTotals:
        totals = cls(stall_ns=stall_ns)
        for counter in exits:
            totals.exits.update(counter)
        for counter in faults:
            totals.faults.update(counter)
        return totals


@dataclasses.dataclass
class Machine:
    """What a backend opened for a run."""

    kernel: MemslotBackend
    vcpus: VcpuControl
    ram: GuestRam
    host: dict[str, Any]
    """The log header's description of the host."""


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What the session core hands its backend when it is built."""

    config: RunConfig
    strategy: Strategy
    bus: EventBus
    injector: Injector
    duration_ns: int
    apply_command: Callable[[str, dict[str, str]], None]
    """The core's own handling of a command, for a backend that queues them (see submit)."""


class Backend(Protocol):
    """One kind of machine a session runs on."""

    name: str
    opens_eagerly: bool
    """Open the machine when the session is built (the model), or when it runs (kvm: the
    device is opened inside the run so its errors surface there)."""
    sync_floor_ns: int
    """Dirty logs are harvested at most this often, whatever the scenario asks."""
    wall_clock: bool
    """Event times are wall time (the summary says ``clock: "wall"``), not virtual time."""

    def new_bus(self) -> EventBus: ...

    def check(self, config: RunConfig) -> None:
        """Refuse, with one line (ValueError), what this machine cannot run."""
        ...

    def check_fault(self, spec: FaultSpec) -> None: ...

    def new_checker(self, atomic: bool, bus: EventBus) -> Checker: ...

    def duration_ns(self, config: RunConfig) -> int: ...

    def clock(self, actor: str) -> Clock:
        """The clock of one task of the run: "vmm" or "injector"."""
        ...

    def attach(self, ctx: RunContext) -> None:
        """Remember the run (cheap: nothing is opened yet)."""
        ...

    def open(self) -> Machine: ...

    def start_vcpus(self, vmm: Vmm) -> None:
        """Load the guest program and create the vCPUs, once the boot layout is in."""
        ...

    async def run(self, vmm: Body, others: Sequence[tuple[str, Body]]) -> None:
        """Run the VMM loop, the backend's own tasks and ``others`` until the run ends."""
        ...

    def stop(self, reason: str) -> None: ...

    @property
    def stop_reason(self) -> str: ...

    def submit(self, name: str, args: dict[str, str]) -> None:
        """A command from outside (inject, pause, resume, speed, step), already checked: the
        model queues it for the next hand-over and applies it there with
        ``RunContext.apply_command``; a wall-clock backend applies an inject at once and
        refuses the pacing commands (ValueError)."""
        ...

    def close(self) -> None: ...

    @property
    def pacing(self) -> Pacing | None:
        """How run time maps to wall time, where the backend's clock is virtual; None on
        the wall clock (pause, step and speed do not apply)."""
        ...

    def rebase(self) -> None:
        """Re-anchor the pacing to now (after it was changed directly, or trio's clock
        started); nothing on the wall clock."""
        ...

    def snapshot_source(self) -> SnapshotSource: ...

"""What a monitor reads: an immutable picture of a run at one instant (the view types).

A Snapshot holds only tuples, ints and strings (and the recent events, which are never
mutated once emitted), so a frame can be drawn from it while the engine moves on.

A run on the real /dev/kvm snapshots too, with less in it: its clock is the wall clock, and
what lives inside the kernel (the two memslot sets and their generations, SRCU) is invisible
from userspace. Its snapshot shows the slots as the VMM set them, the vCPUs as their threads
see them, and says ``backend="kvm"``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from engine.events import Event
from engine.model import constants as c

UPDATE_IN_PROGRESS = c.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS


class SlotView(NamedTuple):
    """One memslot as a set holds it."""

    id: int
    base_gfn: int
    npages: int
    flags: int
    userspace_addr: int

    @property
    def start(self) -> int:
        return self.base_gfn << c.PAGE_SHIFT

    @property
    def end(self) -> int:
        return (self.base_gfn + self.npages) << c.PAGE_SHIFT

    @property
    def invalid(self) -> bool:
        return bool(self.flags & c.KVM_MEMSLOT_INVALID)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & c.KVM_MEM_READONLY)

    @property
    def logging(self) -> bool:
        return bool(self.flags & c.KVM_MEM_LOG_DIRTY_PAGES)


class SetView(NamedTuple):
    """One of an address space's two memslot sets (struct kvm_memslots)."""

    node: int
    generation: int
    version: int
    slots: tuple[SlotView, ...]

    @property
    def update_in_progress(self) -> bool:
        """Bit 63 of the generation: a swap published this set and has not yet returned."""
        return bool(self.generation & UPDATE_IN_PROGRESS)


class RangeView(NamedTuple):
    """A range of the VMM's FlatView: what QEMU believes the guest sees."""

    start: int
    size: int
    kind: str
    name: str
    log_dirty: bool

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclasses.dataclass(frozen=True, slots=True)
class AddressSpaceView:
    as_id: int
    active: SetView
    inactive: SetView
    vmm: tuple[RangeView, ...]
    """The VMM's published FlatView."""
    pending: tuple[RangeView, ...]
    """The FlatView an in-flight transaction moves to (empty when none is in flight)."""
    holes: tuple[tuple[int, int], ...]
    """GPA ranges the VMM backs with RAM (before or after the update) that no memslot covers:
    a slot deleted and not yet re-created. A fetch from one kills an L1 guest at CPL 0."""
    layout: str
    span: tuple[int, int]
    """The GPA range any layout of the scenario uses: the natural zoom-out limit."""


@dataclasses.dataclass(frozen=True, slots=True)
class VcpuView:
    index: int
    as_id: int
    state: str
    """Vcpu.state as the model keeps it (guest, fault, stalled, userspace, blocked, ...)."""
    activity: str
    """What a person wants to know: guest, fault, retrying, kicked, blocked, stalled, mmio,
    userspace, halted, dead or idle."""
    rip: int
    srcu_idx: int
    """The SRCU index this vCPU holds, or -1."""
    last_data_gpa: int
    exits: tuple[tuple[str, int], ...]
    """Exit reason -> count, most frequent first."""
    exit_rates: tuple[tuple[str, float], ...]
    """Exit reason -> exits per virtual millisecond over the recent window."""
    faults: tuple[tuple[str, int], ...]
    last_fault: str
    instructions: int
    stall_ns: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReaderView:
    name: str
    idx: int
    since_ns: int
    held_ns: int
    blocking: bool
    """The current grace period is waiting for this reader."""


@dataclasses.dataclass(frozen=True, slots=True)
class GpView:
    """One synchronize_srcu(): when each phase began, and who it waited for."""

    gp_seq: int
    expedited: bool
    phase: str
    """scan1, scan2 or done (the flip is the instant between the two scans)."""
    started_ns: int
    flip_ns: int
    ended_ns: int
    waiting_on: tuple[str, ...]

    def duration(self, now: int) -> int:
        return (self.ended_ns if self.ended_ns >= 0 else now) - self.started_ns

    def scan1_ns(self, now: int) -> int:
        return (self.flip_ns if self.flip_ns >= 0 else now) - self.started_ns

    def scan2_ns(self, now: int) -> int:
        if self.flip_ns < 0:
            return 0
        return (self.ended_ns if self.ended_ns >= 0 else now) - self.flip_ns


@dataclasses.dataclass(frozen=True, slots=True)
class SrcuView:
    srcu_idx: int
    lock_count: tuple[int, int]
    unlock_count: tuple[int, int]
    gp_seq: int
    current: GpView | None
    last_gp_ns: int
    readers: tuple[ReaderView, ...]
    history: tuple[GpView, ...]
    """Completed grace periods, oldest first."""

    @property
    def current_index(self) -> int:
        """The index new readers pick up: srcu_idx & 1."""
        return self.srcu_idx & 1


@dataclasses.dataclass(frozen=True, slots=True)
class TxnView:
    id: int
    as_id: int
    layout: str
    started_ns: int
    dels: tuple[tuple[int, int], ...]
    adds: tuple[tuple[int, int], ...]
    overlapping: bool


@dataclasses.dataclass(frozen=True, slots=True)
class IoctlView:
    """A VM ioctl userspace is inside right now."""

    ioctl: str
    slot: int
    guest_phys_addr: int
    memory_size: int
    flags: int
    since_ns: int


@dataclasses.dataclass(frozen=True, slots=True)
class VerdictView:
    verdict: str
    explanation: str
    violations: int
    final: bool
    """False while the run goes on: what the checker has found so far."""


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    t_ns: int
    seq: int
    end_ns: int
    scenario: str
    strategy: str
    seed: int
    speed: float
    paused: bool
    finished: bool
    stop_reason: str
    spaces: tuple[AddressSpaceView, ...]
    vcpus: tuple[VcpuView, ...]
    srcu: SrcuView
    txn: TxnView | None
    ioctl: IoctlView | None
    inhibited: bool
    txn_count: int
    ioctl_count: int
    vm_stopped: str
    verdict: VerdictView | None
    armed: tuple[str, ...]
    """Faults armed and still able to fire, as NAME=ARGS."""
    injections: int
    events: tuple[Event, ...]
    """The most recent events (at most a couple of thousand), oldest first."""
    log_path: str | None
    backend: str = "model"
    """model, or kvm: a real VM, where only userspace's side is visible (see above)."""

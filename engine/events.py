"""Typed events: everything that matters in a run, as msgspec Structs in one tagged union.

A session log is one JSON object per line: a ``header``, the events in ``seq`` order, and a
closing ``verdict``. ``seq`` is the emission order and ``t`` the time in ns; the bus stamps
both, so the model never reads a clock. On the model (OrderedBus) ``t`` never decreases along
``seq``; an event whose actor's own clock was behind carries that clock in ``actor_t``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

SCHEMA_VERSION = 4
"""The newest log schema. 4 differs from 3 only in a perturbed run's header, whose
`perturb.steps` changes what its change points count: a replay that ignored it would take
another schedule. A log without it is still written as 3 (engine.log.header_schema)."""


class Event(msgspec.Struct, tag_field="kind", kw_only=True, gc=False):
    t: int = 0
    """When the event was applied, in the log's total order: never less than an earlier
    event's t (on the model)."""
    seq: int = 0
    actor_t: int | msgspec.UnsetType = msgspec.UNSET
    """The emitting actor's own clock, when it differs from t: a vCPU that ran within its
    quantum behind another vCPU's already-applied events. Absent (not null) otherwise."""

    @property
    def own_t(self) -> int:
        """The emitting actor's own time: actor_t when recorded, else t."""
        return self.t if self.actor_t is msgspec.UNSET else self.actor_t


# --- the modelled kernel ------------------------------------------------------------------


class IoctlEnter(Event, tag="ioctl_enter"):
    """A VM ioctl begins (userspace entered the kernel)."""

    actor: str
    ioctl: str
    slot: int = 0
    flags: int = 0
    guest_phys_addr: int = 0
    memory_size: int = 0
    userspace_addr: int = 0
    entries: int = 0


class IoctlExit(Event, tag="ioctl"):
    """A VM ioctl returned; errno 0 on success. change is the KVM_MR_* it performed."""

    actor: str
    ioctl: str
    slot: int = 0
    errno: int = 0
    error: str = ""
    change: str = ""


class MemslotChange(Event, tag="memslot"):
    """One step of kvm_set_memslot(): the INVALID copy published, or the change committed."""

    as_id: int
    id: int
    change: str
    step: str
    base_gfn: int
    npages: int
    flags: int


class SwapPublish(Event, tag="swap_publish"):
    """kvm_swap_active_memslots(): the inactive set is now active, with the
    update-in-progress bit set until readers drain."""

    as_id: int
    generation: int
    version: int


class SwapDone(Event, tag="swap_done"):
    """The swap's synchronize_srcu_expedited() returned; the generation is final."""

    as_id: int
    generation: int


class Zap(Event, tag="zap"):
    """kvm_arch_flush_shadow_memslot(): stage-2 mappings dropped."""

    as_id: int
    start_gfn: int
    end_gfn: int
    sptes: int
    zap_all: bool


class SrcuLock(Event, tag="srcu_lock"):
    reader: str
    idx: int


class SrcuUnlock(Event, tag="srcu_unlock"):
    reader: str
    idx: int
    held_ns: int


class SrcuUnlockMismatch(Event, tag="srcu_unlock_mismatch"):
    """srcu_read_unlock() with an index other than the one srcu_read_lock() returned."""

    reader: str
    held_idx: int
    idx: int


class SrcuGp(Event, tag="srcu_gp"):
    """A grace period changed phase: start, scan1, flip, scan2, end."""

    gp_seq: int
    phase: str
    expedited: bool
    srcu_idx: int
    waiting_on: list[str] = msgspec.field(default_factory=list)


class Fault(Event, tag="fault"):
    """A stage-2 fault and how KVM resolved it."""

    vcpu: int
    gpa: int
    access: str
    outcome: str
    slot: int = -1
    generation: int = 0
    as_id: int = 0


class Exit(Event, tag="exit"):
    """KVM_RUN returned to userspace."""

    vcpu: int
    reason: str
    rip: int
    phys_addr: int = 0
    len: int = 0
    is_write: bool = False
    data: int = 0
    suberror: int = 0
    internal_data: list[int] = msgspec.field(default_factory=list)
    """KVM_EXIT_INTERNAL_ERROR: internal.data[:ndata] as the kernel filled it."""
    internal: str = ""
    """KVM_EXIT_INTERNAL_ERROR classified from suberror and data (classify_internal())."""


def classify_internal(suberror: int, data: list[int]) -> str:
    """What an INTERNAL_ERROR says, from its own fields (include/uapi/linux/kvm.h). For
    KVM_INTERNAL_ERROR_EMULATION, arch/x86/kvm/x86.c prepare_emulation_failure_exit() puts the
    emulation_failure flags in data[0]: bit 0 (INSTRUCTION_BYTES) is set when the instruction
    could be read, so a clear bit means the emulator failed to fetch it."""
    if suberror == 1:
        if data and data[0] & 1:
            return "emulation failure (instruction bytes read)"
        return "emulation failure (instruction fetch failed)"
    return {
        2: "simultaneous exceptions (KVM_INTERNAL_ERROR_SIMUL_EX)",
        3: "exit during event delivery (KVM_INTERNAL_ERROR_DELIVERY_EV)",
        4: "unexpected exit reason (KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON)",
    }.get(suberror, f"suberror {suberror}")


class UdInjected(Event, tag="ud_injected"):
    """Emulation failed at CPL > 0 or in L2: KVM queued #UD and resumed the guest. On arm64
    (vector "PABT") an instruction abort outside any memslot injected a prefetch abort."""

    vcpu: int
    rip: int
    cpl: int
    guest_mode: bool
    vector: str = "#UD"


class SmmTransition(Event, tag="smm"):
    """A vCPU entered SMM (enter_smm(), on an SMI) or left it (RSM): kvm_smm_changed() flips
    HF_SMM_MASK, so its faults and memslot lookups now use as_id 1 (or 0 again)."""

    vcpu: int
    entered: bool
    rip: int
    as_id: int


class DirtyLog(Event, tag="dirty_log"):
    """KVM_GET_DIRTY_LOG harvested these page offsets of the slot."""

    slot: int
    pages: list[int]


class ReaderUseAfterFree(Event, tag="srcu_uaf"):
    """An update edited (or reused) a memslot set that an SRCU reader still held: the reader
    reads memory the writer owns. age: synchronize calls completed since the set was retired;
    idx: the SRCU index the reader holds; update: the changes that edited the set."""

    reader: str
    as_id: int
    version: int
    age: int
    idx: int = -1
    update: str = ""


# --- the VMM, the runtime and the checker ---------------------------------------------


class TxnBegin(Event, tag="txn_begin"):
    """A memory transaction committed in the VMM: the FlatView changes from old to new."""

    txn: int
    as_id: int
    layout: str
    dels: list[list[int]]
    adds: list[list[int]]
    overlapping: bool
    atomic: bool = False
    """Whether the strategy applies this transaction atomically (the checker holds it to it)."""


class TxnCommit(Event, tag="txn_commit"):
    """Every ioctl of the transaction returned and the VMM published its new FlatView."""

    txn: int
    as_id: int
    latency_ns: int


class MmioServed(Event, tag="mmio_served"):
    """The VMM handled a KVM_EXIT_MMIO through its own FlatView."""

    vcpu: int
    gpa: int
    is_write: bool
    data: int
    target: str
    region: str


class Inhibit(Event, tag="inhibit"):
    """QEMU 8.0's accel blocker: begin (kick), all_out (every vCPU left KVM_RUN), end."""

    phase: str
    latency_ns: int = 0


class Note(Event, tag="note"):
    """Something a strategy or the engine wants the reader of the log to know."""

    source: str
    text: str


class VmStopped(Event, tag="vm_stopped"):
    """The VMM stopped the VM (QEMU's "KVM internal error" path, or a guest in the weeds)."""

    reason: str
    vcpu: int
    rip: int = 0
    gpa: int = 0


class Injected(Event, tag="inject"):
    """A fault was injected (every injection is logged, whatever asked for it)."""

    fault: str
    params: dict[str, str]
    target: str = ""


class Command(Event, tag="command"):
    """A command from outside the simulation, applied at this (t, seq)."""

    name: str
    args: dict[str, str] = msgspec.field(default_factory=dict)
    call: int = 0
    """The sequencer's sleep/block call it followed; replay applies it at the same one."""


class Violation(Event, tag="violation"):
    """The checker found something wrong: use-after-free, atomicity, lost write, lost dirty
    bits, livelock."""

    check: str
    message: str
    vcpu: int = -1
    gpa: int = -1


# --- bus --------------------------------------------------------------------------------

Subscriber = Callable[[Event], None]


class EventBus:
    """Stamps events with (t, seq) and hands them to subscribers in emission order."""

    __slots__ = ("_routes", "_subscribers", "closed", "now", "seq")

    def __init__(self) -> None:
        self.now = 0
        self.seq = 0
        # (subscriber, the one event type it wants or None for all), in subscription order.
        self._subscribers: list[tuple[Subscriber, type[Event] | None]] = []
        # Event type -> the subscribers it goes to, built at its first emit: a subscriber
        # that wants one kind costs nothing for the others (most events are SRCU and exits).
        self._routes: dict[type[Event], list[Subscriber]] = {}
        # Set when the run is over and its tasks are being cancelled: what their clean-up
        # code would emit (an `inhibit end` from a finally) never happened in the run.
        self.closed = False

    def subscribe(self, fn: Subscriber, only: type[Event] | None = None) -> None:
        """fn sees every event from now on, or only those of type ``only``."""
        self._subscribers.append((fn, only))
        self._routes = {}

    def unsubscribe(self, fn: Subscriber) -> None:
        for i, (subscribed, _) in enumerate(self._subscribers):
            if subscribed == fn:
                del self._subscribers[i]
                self._routes = {}
                return
        raise ValueError(f"{fn!r} is not subscribed")

    def _route(self, kind: type[Event]) -> list[Subscriber]:
        fns = [fn for fn, only in self._subscribers if only is None or only is kind]
        self._routes[kind] = fns
        return fns

    def log_t(self) -> int:
        """How far the log has come: no event so far has a later t (what a clock shows)."""
        return self.now

    def emit(self, event: Event) -> None:
        if self.closed:
            return
        event.t = self.now
        event.seq = self.seq
        self.seq += 1
        try:
            fns = self._routes[type(event)]
        except KeyError:
            fns = self._route(type(event))
        for fn in fns:
            fn(event)


class OrderedBus(EventBus):
    """The model's bus: ``t`` is the time at which an event is applied in the log's total
    order, so it never decreases along ``seq``.

    ``now`` is the running actor's own clock. vCPUs are ordered against each other only by
    quantum (engine/sim/runtime.py), so the baton can pass from a vCPU at 50.1us to one at
    49.6us: that vCPU's events happen after the first one's in the run (they see what it did),
    yet its clock is behind. Such an event gets the latest applied time as ``t`` and its
    actor's clock as ``actor_t``. Durations an actor measures (srcu held_ns, stalls, update
    latency) keep using its own clock."""

    __slots__ = ("applied",)

    def __init__(self) -> None:
        super().__init__()
        self.applied = 0  # the latest event's t

    def log_t(self) -> int:
        return max(self.now, self.applied)

    def emit(self, event: Event) -> None:
        # EventBus.emit with one comparison more; written out, since it runs for every event.
        if self.closed:
            return
        now = self.now
        if now < self.applied:
            event.t = self.applied
            event.actor_t = now
        else:
            event.t = self.applied = now
        event.seq = self.seq
        self.seq += 1
        try:
            fns = self._routes[type(event)]
        except KeyError:
            fns = self._route(type(event))
        for fn in fns:
            fn(event)


def to_builtins(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(event)
    return out

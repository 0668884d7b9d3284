"""What a monitor reads: an immutable picture of a Session at one instant.

The TUI never touches live engine objects. It asks a Tracker for a Snapshot at its own pace
(20-30 times a wall second) and draws that; everything it does to the run goes back through
``Session.send``. A Snapshot holds only tuples, ints and strings (and the recent events,
which are never mutated once emitted), so a frame can be drawn from it while the engine
moves on.

Some of what a monitor shows is history rather than state: the phases of past grace periods,
the last fault outcome of each vCPU, recent exits for rates. The Tracker keeps those by
watching the event bus, with a per-event cost of one dict lookup for the events it ignores.

A session on the real /dev/kvm (engine.backends.kvm.session.KvmSession) snapshots too, with
less in it: its clock is the wall clock, and what lives inside the kernel (the two memslot sets
and their generations, SRCU) is invisible from userspace. Its snapshot shows the slots as the
VMM set them, the vCPUs as their threads see them, and says ``backend="kvm"``.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING, Any, NamedTuple

from engine.events import (
    Event,
    Exit,
    Fault,
    IoctlEnter,
    IoctlExit,
    MemslotChange,
    SrcuGp,
    SwapDone,
    SwapPublish,
)
from engine.model import constants as c

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.backends.kvm.session import KvmSession
    from engine.model.memslots import MemslotSet
    from engine.scenarios import Scenario
    from engine.session import Session
    from engine.vmm.flatview import FlatRange, FlatView

UPDATE_IN_PROGRESS = c.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS
RATE_WINDOW_NS = 100_000
"""Exit rates are counted over this much virtual time (or the whole run, if shorter)."""
KVM_RATE_WINDOW_NS = 100_000_000
"""On a real VM t is wall time, where 100 us holds next to nothing: count over 100 ms."""
GP_HISTORY = 8
EXIT_HISTORY = 256


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


@dataclasses.dataclass(slots=True)
class _GpRecord:
    gp_seq: int
    expedited: bool
    phase: str
    started_ns: int
    flip_ns: int = -1
    ended_ns: int = -1
    waiting_on: tuple[str, ...] = ()

    def view(self) -> GpView:
        return GpView(
            self.gp_seq,
            self.expedited,
            self.phase,
            self.started_ns,
            self.flip_ns,
            self.ended_ns,
            self.waiting_on,
        )


class Tracker:
    """Watches a session's events for the history a snapshot needs, and builds snapshots.

    Subscribe ``observe`` before the run starts (``Session(..., observers=(t.observe,))``
    or ``Tracker.attach(session)``)."""

    def __init__(self) -> None:
        self._slots_dirty = True
        self._spaces: tuple[AddressSpaceView, ...] = ()
        self._spans: dict[int, tuple[int, int]] = {}
        self._last_fault: dict[int, str] = {}
        self._exits: dict[int, deque[tuple[int, str]]] = {}
        self._gp: _GpRecord | None = None
        self._gp_history: deque[GpView] = deque(maxlen=GP_HISTORY)
        self._ioctl: IoctlView | None = None
        self._vmm_key: tuple[int, ...] = ()
        handlers: dict[type[Event], Callable[[Event], None]] = {
            Fault: self._on_fault,  # type: ignore[dict-item]
            Exit: self._on_exit,  # type: ignore[dict-item]
            SrcuGp: self._on_gp,  # type: ignore[dict-item]
            IoctlEnter: self._on_ioctl_enter,  # type: ignore[dict-item]
            IoctlExit: self._on_ioctl_exit,
            MemslotChange: self._on_slots,
            SwapPublish: self._on_slots,
            SwapDone: self._on_slots,
        }
        self._handlers = handlers

    @classmethod
    def attach(cls, session: Session) -> Tracker:
        tracker = cls()
        session.bus.subscribe(tracker.observe)
        return tracker

    # --- watching -----------------------------------------------------------------------

    def observe(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_fault(self, ev: Fault) -> None:
        # The latest outcome only: a fault that resolves ends a retry streak.
        self._last_fault[ev.vcpu] = ev.outcome

    def _on_exit(self, ev: Exit) -> None:
        ring = self._exits.get(ev.vcpu)
        if ring is None:
            ring = self._exits[ev.vcpu] = deque(maxlen=EXIT_HISTORY)
        ring.append((ev.t, ev.reason))

    def _on_gp(self, ev: SrcuGp) -> None:
        phase = ev.phase
        if phase == "start":
            self._gp = _GpRecord(ev.gp_seq, ev.expedited, "scan1", ev.t)
            return
        gp = self._gp
        if gp is None:
            return
        if phase == "scan1":
            gp.waiting_on = tuple(ev.waiting_on)
        elif phase == "flip":
            gp.flip_ns = ev.t
        elif phase == "scan2":
            gp.phase = "scan2"
            gp.waiting_on = tuple(ev.waiting_on)
        elif phase == "end":
            gp.phase = "done"
            gp.ended_ns = ev.t
            self._gp_history.append(gp.view())
            self._gp = None

    def _on_ioctl_enter(self, ev: IoctlEnter) -> None:
        self._ioctl = IoctlView(
            ev.ioctl, ev.slot, ev.guest_phys_addr, ev.memory_size, ev.flags, ev.t
        )

    def _on_ioctl_exit(self, ev: Event) -> None:
        self._ioctl = None

    def _on_slots(self, ev: Event) -> None:
        self._slots_dirty = True

    # --- building -----------------------------------------------------------------------

    def snapshot(self, session: Session | KvmSession, events: bool = True) -> Snapshot:
        from engine.session import Session

        if not isinstance(session, Session):
            return self._kvm_snapshot(session, events)
        seq, pacing = session.seq, session.seq.pacing
        now = session.bus.now
        vmm = session.vmm
        txn = vmm.in_flight
        # Slot sets change only at swaps and commits, and the VMM's views only at
        # transaction boundaries: rebuild the (possibly thousands of) slot records then.
        vmm_key = (id(txn), *(id(v) for v in vmm.views))
        if self._slots_dirty or vmm_key != self._vmm_key:
            self._spaces = self._build_spaces(session)
            self._slots_dirty = False
            self._vmm_key = vmm_key
        result = session.result
        if result is not None:
            verdict: VerdictView | None = VerdictView(
                result.verdict, result.explanation, len(result.violations), True
            )
        else:
            verdict = self._provisional(session)
        return Snapshot(
            t_ns=now,
            seq=session.bus.seq,
            end_ns=session.duration_ns,
            scenario=session.config.scenario.name,
            strategy=session.config.strategy,
            seed=session.config.seed,
            speed=pacing.speed,
            paused=pacing.paused,
            finished=seq.finished,
            stop_reason=seq.stop_reason,
            spaces=self._spaces,
            vcpus=self._vcpus(session, now),
            srcu=self._srcu(session, now),
            txn=None
            if txn is None
            else TxnView(
                txn.id,
                txn.as_id,
                txn.layout,
                txn.started_ns,
                tuple((r.start, r.size) for r in txn.diff.dels),
                tuple((r.start, r.size) for r in txn.diff.adds),
                txn.diff.overlapping,
            ),
            ioctl=self._ioctl,
            inhibited=vmm.inhibited,
            txn_count=vmm.txn_count,
            ioctl_count=vmm.ioctl_count,
            vm_stopped=vmm.stopped_reason,
            verdict=verdict,
            armed=tuple(s.text() for s in session.injector.armed if s.times != 0),
            injections=session.injector.injections,
            events=tuple(session.recent) if events else (),
            log_path=str(session.writer.path) if session.writer is not None else None,
        )

    def _kvm_snapshot(self, session: KvmSession, events: bool) -> Snapshot:
        # Wall time runs on after the end: a finished run's time is its last event's.
        if session.result is not None or session.error is not None:
            now = session.bus.now
        else:
            now = session.wall_bus.elapsed() if session.bus.seq else 0
        try:
            vmm = session.vmm
        except RuntimeError:  # the VM is not open yet
            vmm = None
        spaces: tuple[AddressSpaceView, ...] = ()
        txn_view: TxnView | None = None
        if vmm is not None:
            txn = vmm.in_flight
            vmm_key = (id(txn), *(id(v) for v in vmm.views), len(session.backend.kernel.regions))
            if self._slots_dirty or vmm_key != self._vmm_key:
                self._spaces = self._kvm_spaces(session, vmm)
                self._slots_dirty = False
                self._vmm_key = vmm_key
            spaces = self._spaces
            if txn is not None:
                txn_view = TxnView(
                    txn.id,
                    txn.as_id,
                    txn.layout,
                    txn.started_ns,
                    tuple((r.start, r.size) for r in txn.diff.dels),
                    tuple((r.start, r.size) for r in txn.diff.adds),
                    txn.diff.overlapping,
                )
        result = session.result
        verdict = (
            VerdictView(result.verdict, result.explanation, len(result.violations), True)
            if result is not None
            else self._checker_verdict(session.checker)
        )
        vcpus = []
        for runner in session.vcpu_runners:
            last_fault = self._last_fault.get(runner.index, "")
            ring = self._exits.get(runner.index)
            vcpus.append(
                VcpuView(
                    index=runner.index,
                    as_id=0,
                    state=runner.state,
                    activity=_activity(runner.state, last_fault, False, ring),
                    rip=runner.rip,
                    srcu_idx=-1,
                    last_data_gpa=-1,
                    exits=tuple(runner.exits.most_common()),
                    exit_rates=_rates(ring, now, KVM_RATE_WINDOW_NS),
                    faults=tuple(runner.faults.most_common()),
                    last_fault=last_fault,
                    instructions=0,
                    stall_ns=runner.stall_ns,
                )
            )
        return Snapshot(
            t_ns=now,
            seq=session.bus.seq,
            end_ns=session.duration_ns,
            scenario=session.config.scenario.name,
            strategy=session.config.strategy,
            seed=session.config.seed,
            speed=1.0,
            paused=False,
            finished=result is not None,
            stop_reason=session.stop_reason,
            spaces=spaces,
            vcpus=tuple(vcpus),
            srcu=SrcuView(-1, (0, 0), (0, 0), 0, None, 0, (), ()),
            txn=txn_view,
            ioctl=self._ioctl,
            inhibited=vmm.inhibited if vmm is not None else False,
            txn_count=vmm.txn_count if vmm is not None else 0,
            ioctl_count=vmm.ioctl_count if vmm is not None else 0,
            vm_stopped=vmm.stopped_reason if vmm is not None else "",
            verdict=verdict,
            armed=tuple(s.text() for s in session.injector.armed if s.times != 0),
            injections=session.injector.injections,
            events=tuple(session.recent) if events else (),
            log_path=str(session.writer.path) if session.writer is not None else None,
            backend="kvm",
        )

    def _kvm_spaces(self, session: KvmSession, vmm: Any) -> tuple[AddressSpaceView, ...]:
        """The slots as the VMM set them: the kernel's sets and generations stay hidden."""
        txn = vmm.in_flight
        out = []
        for as_id in range(session.vm.nr_address_spaces):
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
                        for r in session.backend.kernel.regions.values()
                        if r.as_id == as_id
                    ),
                    key=lambda s: s.base_gfn,
                )
            )
            published = _ranges(vmm.views[as_id])
            pending = _ranges(txn.new) if txn is not None and txn.as_id == as_id else ()
            out.append(
                AddressSpaceView(
                    as_id=as_id,
                    active=SetView(-1, 0, 0, slots),
                    inactive=SetView(-1, 0, 0, ()),
                    vmm=published,
                    pending=pending,
                    holes=_holes(slots, published, pending),
                    layout=vmm.layout_names[as_id],
                    span=self._span_of(session.config.scenario, as_id),
                )
            )
        return tuple(out)

    @staticmethod
    def _checker_verdict(checker: Any) -> VerdictView | None:
        if not (checker.violations or checker.crash or checker.livelock):
            return None
        v = checker.verdict()
        return VerdictView(v.verdict, v.explanation, len(v.violations), False)

    @staticmethod
    def _provisional(session: Session) -> VerdictView | None:
        checker = session.checker
        if not (checker.violations or checker.crash or checker.livelock):
            return None
        v = checker.verdict()
        return VerdictView(v.verdict, v.explanation, len(v.violations), False)

    def _span(self, session: Session, as_id: int) -> tuple[int, int]:
        return self._span_of(session.config.scenario, as_id)

    def _span_of(self, scenario: Scenario, as_id: int) -> tuple[int, int]:
        span = self._spans.get(as_id)
        if span is None:
            regions = [r for layout in scenario.layouts.values() for r in layout.for_as(as_id)]
            if regions:
                span = (min(r.gpa for r in regions), max(r.end for r in regions))
            else:
                span = (0, c.PAGE_SIZE)
            self._spans[as_id] = span
        return span

    def _build_spaces(self, session: Session) -> tuple[AddressSpaceView, ...]:
        vm, vmm = session.vm, session.vmm
        txn = vmm.in_flight
        out = []
        for as_id in range(vm.host.nr_address_spaces):
            active = _set_view(vm.active(as_id))
            published = _ranges(vmm.views[as_id])
            pending = _ranges(txn.new) if txn is not None and txn.as_id == as_id else ()
            out.append(
                AddressSpaceView(
                    as_id=as_id,
                    active=active,
                    inactive=_set_view(vm.inactive(as_id)),
                    vmm=published,
                    pending=pending,
                    holes=_holes(active.slots, published, pending),
                    layout=vmm.layout_names[as_id],
                    span=self._span(session, as_id),
                )
            )
        return tuple(out)

    def _vcpus(self, session: Session, now: int) -> tuple[VcpuView, ...]:
        out = []
        for runner in session.vcpu_runners:
            v = runner.vcpu
            last_fault = self._last_fault.get(v.index, "")
            ring = self._exits.get(v.index)
            out.append(
                VcpuView(
                    index=v.index,
                    as_id=v.as_id,
                    state=v.state,
                    activity=_activity(v.state, last_fault, v.kick_requested, ring),
                    rip=v.rip,
                    srcu_idx=v.srcu_idx,
                    last_data_gpa=v.last_data_gpa,
                    exits=tuple(v.exits.most_common()),
                    exit_rates=_rates(ring, now),
                    faults=tuple(v.faults.most_common()),
                    last_fault=last_fault,
                    instructions=v.instructions,
                    stall_ns=runner.stall_ns
                    + (now - runner.blocked_since if runner.blocked_since >= 0 else 0),
                )
            )
        return tuple(out)

    def _srcu(self, session: Session, now: int) -> SrcuView:
        srcu = session.vm.srcu
        gp = srcu.gp
        current: GpView | None = None
        waiting: tuple[str, ...] = ()
        if gp is not None:
            waiting = tuple(gp.waiting_on())
            rec = self._gp
            if rec is not None:
                current = dataclasses.replace(rec.view(), phase=gp.phase, waiting_on=waiting)
            else:
                current = GpView(
                    srcu.gp_seq, gp.expedited, gp.phase, gp.started_at, -1, -1, waiting
                )
        readers = tuple(
            ReaderView(name, idx, since, now - since, name in waiting)
            for name, (idx, since) in srcu.holders.items()
        )
        return SrcuView(
            srcu_idx=srcu.srcu_idx,
            lock_count=(srcu.lock_count[0], srcu.lock_count[1]),
            unlock_count=(srcu.unlock_count[0], srcu.unlock_count[1]),
            gp_seq=srcu.gp_seq,
            current=current,
            last_gp_ns=srcu.last_gp_ns,
            readers=readers,
            history=tuple(self._gp_history),
        )


def _rates(
    ring: deque[tuple[int, str]] | None, now: int, window: int = RATE_WINDOW_NS
) -> tuple[tuple[str, float], ...]:
    """Exits per millisecond over the last ``window`` ns (or the run so far), by reason."""
    if not ring:
        return ()
    window_start = max(0, now - window)
    window_ms = max(now - window_start, 1) / 1e6
    counts: dict[str, int] = {}
    for t, reason in reversed(ring):
        if t < window_start:
            break
        counts[reason] = counts.get(reason, 0) + 1
    return tuple((r, n / window_ms) for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def _activity(
    state: str, last_fault: str, kicked: bool, exits: deque[tuple[int, str]] | None
) -> str:
    if state in ("dead", "crashed"):
        return "dead"
    if state in ("halted", "blocked", "stalled", "idle"):
        return state
    if last_fault.startswith("retry") and state in ("guest", "fault"):
        return "retrying"
    if state == "fault":
        return "fault"
    if state == "guest":
        return "kicked" if kicked else "guest"
    # In userspace: what sent it there.
    last = exits[-1][1] if exits else ""
    if last == "KVM_EXIT_MMIO":
        return "mmio"
    if last == "KVM_EXIT_INTR":
        return "kicked"
    return "userspace"


def _set_view(slots: MemslotSet) -> SetView:
    return SetView(
        slots.node_idx,
        slots.generation,
        slots.version,
        tuple(SlotView(s.id, s.base_gfn, s.npages, s.flags, s.userspace_addr) for s in slots),
    )


def _ranges(view: FlatView) -> tuple[RangeView, ...]:
    return tuple(_range(r) for r in view.ranges)


def _range(r: FlatRange) -> RangeView:
    return RangeView(r.start, r.size, r.kind, r.name, r.log_dirty)


def _holes(
    slots: tuple[SlotView, ...], *views: tuple[RangeView, ...]
) -> tuple[tuple[int, int], ...]:
    """Backed GPA ranges (in any of the views) that no slot of the set covers."""
    backed = sorted((r.start, r.end) for view in views for r in view if r.kind in ("ram", "rom"))
    if not backed:
        return ()
    merged: list[list[int]] = []
    for start, end in backed:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    covered = [(s.start, s.end) for s in slots]  # gfn order, non-overlapping
    holes: list[tuple[int, int]] = []
    i = 0
    for start, end in merged:
        pos = start
        while i < len(covered) and covered[i][1] <= pos:
            i += 1
        j = i
        while pos < end:
            if j < len(covered) and covered[j][0] < end:
                cs, ce = covered[j]
                if cs > pos:
                    holes.append((pos, cs))
                pos = max(pos, ce)
                j += 1
            else:
                holes.append((pos, end))
                pos = end
    return tuple(holes)

"""The history a monitor needs, and the Snapshot built from it and a live session.

The TUI never touches live engine objects. It asks for a Snapshot at its own pace (20-30
times a wall second) and draws that; everything it does to the run goes back through
commands. Some of what a monitor shows is history rather than state: the phases of past grace
periods, the last fault outcome of each vCPU, recent exits for rates. The Tracker keeps those
by watching the event bus, with a per-event cost of one dict lookup for the events it ignores.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import TYPE_CHECKING

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
from engine.snapshot.viewcache import ViewCache
from engine.snapshot.views import (
    AddressSpaceView,
    GpView,
    IoctlView,
    Snapshot,
    TxnView,
    VerdictView,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.checker import Checker
    from engine.core.ports import Backend
    from engine.core.session import SessionCore
    from engine.scenarios import Scenario

GP_HISTORY = 8
EXIT_HISTORY = 256


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


class History:
    """What the bus said, kept for snapshots: a backend's source reads it."""

    def __init__(self) -> None:
        self.slots_dirty = True
        self.last_fault: dict[int, str] = {}
        self.exits: dict[int, deque[tuple[int, str]]] = {}
        self.gp: _GpRecord | None = None
        self.gp_history: deque[GpView] = deque(maxlen=GP_HISTORY)
        self.ioctl: IoctlView | None = None
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

    def observe(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def _on_fault(self, ev: Fault) -> None:
        # The latest outcome only: a fault that resolves ends a retry streak.
        self.last_fault[ev.vcpu] = ev.outcome

    def _on_exit(self, ev: Exit) -> None:
        ring = self.exits.get(ev.vcpu)
        if ring is None:
            ring = self.exits[ev.vcpu] = deque(maxlen=EXIT_HISTORY)
        ring.append((ev.t, ev.reason))

    def _on_gp(self, ev: SrcuGp) -> None:
        phase = ev.phase
        if phase == "start":
            self.gp = _GpRecord(ev.gp_seq, ev.expedited, "scan1", ev.t)
            return
        gp = self.gp
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
            self.gp_history.append(gp.view())
            self.gp = None

    def _on_ioctl_enter(self, ev: IoctlEnter) -> None:
        self.ioctl = IoctlView(
            ev.ioctl, ev.slot, ev.guest_phys_addr, ev.memory_size, ev.flags, ev.t
        )

    def _on_ioctl_exit(self, ev: Event) -> None:
        self.ioctl = None

    def _on_slots(self, ev: Event) -> None:
        self.slots_dirty = True


class Tracker(History):
    """Watches a session's events and builds its snapshots.

    Subscribe ``observe`` before the run starts (``observers=(tracker.observe,)``, or
    ``Tracker.attach(session)``)."""

    def __init__(self) -> None:
        super().__init__()
        self._spaces: tuple[AddressSpaceView, ...] = ()
        self._spans: dict[int, tuple[int, int]] = {}
        self._vmm_key: tuple[int, ...] = ()
        self._views = ViewCache()
        self._scenario: Scenario | None = None

    @classmethod
    def attach(cls, session: SessionCore[Backend]) -> Tracker:
        tracker = cls()
        session.bus.subscribe(tracker.observe)
        return tracker

    def snapshot(self, session: SessionCore[Backend], events: bool = True) -> Snapshot:
        source = session.backend.snapshot_source()
        result = session.result
        clock = source.clock(result is not None, session.error is not None)
        now = clock.t_ns
        self._scenario = session.config.scenario
        txn_view: TxnView | None = None
        vmm = session.vmm if session.opened else None
        if vmm is not None:
            txn = vmm.in_flight
            # Slot sets change only at swaps and commits, and the VMM's views only at
            # transaction boundaries: rebuild the (possibly thousands of) slot records then.
            vmm_key = (id(txn), *(id(v) for v in vmm.views), source.slots_key())
            if self.slots_dirty or vmm_key != self._vmm_key:
                self._spaces = source.spaces(vmm, self._span, self._views)
                self._views.snapshot_done()
                self.slots_dirty = False
                self._vmm_key = vmm_key
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
        verdict = (
            VerdictView(result.verdict, result.explanation, len(result.violations), True)
            if result is not None
            else self._provisional(session.checker)
        )
        config = session.config
        return Snapshot(
            t_ns=now,
            seq=session.bus.seq,
            end_ns=session.duration_ns,
            scenario=config.scenario.name,
            strategy=config.strategy,
            seed=config.seed,
            speed=clock.speed,
            paused=clock.paused,
            finished=clock.finished,
            stop_reason=clock.stop_reason,
            spaces=self._spaces if vmm is not None else (),
            vcpus=source.vcpus(self, now),
            srcu=source.srcu(self, now),
            txn=txn_view,
            ioctl=self.ioctl,
            inhibited=vmm.inhibited if vmm is not None else False,
            txn_count=vmm.txn_count if vmm is not None else 0,
            ioctl_count=vmm.ioctl_count if vmm is not None else 0,
            vm_stopped=vmm.stopped_reason if vmm is not None else "",
            verdict=verdict,
            armed=tuple(s.text() for s in session.injector.armed if s.times != 0),
            injections=session.injector.injections,
            events=tuple(session.recent) if events else (),
            log_path=str(session.writer.path) if session.writer is not None else None,
            backend=source.backend,
        )

    @staticmethod
    def _provisional(checker: Checker) -> VerdictView | None:
        if not (checker.violations or checker.crash or checker.livelock):
            return None
        v = checker.verdict()
        return VerdictView(v.verdict, v.explanation, len(v.violations), False)

    def _span(self, as_id: int) -> tuple[int, int]:
        """The GPA range any layout of the scenario uses: the natural zoom-out limit."""
        span = self._spans.get(as_id)
        if span is None:
            assert self._scenario is not None
            regions = [
                r for layout in self._scenario.layouts.values() for r in layout.for_as(as_id)
            ]
            if regions:
                span = (min(r.gpa for r in regions), max(r.end for r in regions))
            else:
                span = (0, c.PAGE_SIZE)
            self._spans[as_id] = span
        return span

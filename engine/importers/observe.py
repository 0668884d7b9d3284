"""A watched QEMU as a monitor sees it: the same Snapshot the TUI draws for a session.

What a trace shows is userspace's side only, like the kvm backend's snapshot
(engine.snapshot, backend="kvm"): the slots as QEMU set them (the kernel's two sets,
generations and SRCU stay hidden), each vCPU thread as its KVM_RUN/exit lines show it, and the
transaction in progress. ``vmm`` is the table the last finished transaction left; a range it
had that no slot covers now is a hole: a DELETE whose CREATE has not come yet.
"""

from __future__ import annotations

from collections import Counter

from engine.importers.calls import Imported, Record, SlotTable, VcpuExit, VcpuRun
from engine.model import constants as c
from engine.snapshot import (
    AddressSpaceView,
    RangeView,
    SetView,
    SlotView,
    Snapshot,
    SrcuView,
    TxnView,
    VcpuView,
)

EXIT_NAMES = {
    **c.EXIT_REASON_NAMES,
    1: "KVM_EXIT_EXCEPTION",
    7: "KVM_EXIT_IRQ_WINDOW_OPEN",
    9: "KVM_EXIT_FAIL_ENTRY",
    24: "KVM_EXIT_SYSTEM_EVENT",
}
EMPTY_SRCU = SrcuView(-1, (0, 0), (0, 0), 0, None, 0, (), ())


class VcpuThreads:
    """Each vCPU as its thread's trace lines show it: inside KVM_RUN or not, and its exits."""

    def __init__(self) -> None:
        self.inside: dict[int, bool] = {}
        self.exits: dict[int, Counter[str]] = {}

    def feed(self, records: list[Record]) -> None:
        for rec in records:
            if isinstance(rec, VcpuRun):
                self.inside[rec.cpu] = True
                self.exits.setdefault(rec.cpu, Counter())
            elif isinstance(rec, VcpuExit):
                self.inside[rec.cpu] = False
                name = EXIT_NAMES.get(rec.reason, f"exit {rec.reason}")
                self.exits.setdefault(rec.cpu, Counter())[name] += 1

    def views(self) -> tuple[VcpuView, ...]:
        out = []
        for cpu in sorted(self.inside):
            state = "guest" if self.inside[cpu] else "userspace"
            exits = self.exits[cpu]
            out.append(
                VcpuView(
                    index=cpu, as_id=0, state=state, activity=state, rip=-1, srcu_idx=-1,
                    last_data_gpa=-1, exits=tuple(exits.most_common()), exit_rates=(),
                    faults=(), last_fault="", instructions=0, stall_ns=0,
                )
            )  # fmt: skip
        return tuple(out)


def _slots(table: SlotTable, as_id: int) -> tuple[SlotView, ...]:
    return tuple(
        sorted(
            (
                SlotView(s.id, s.gpa >> c.PAGE_SHIFT, s.size >> c.PAGE_SHIFT, s.flags, s.hva)
                for s in table.values()
                if s.as_id == as_id
            ),
            key=lambda v: v.base_gfn,
        )
    )


def _ranges(table: SlotTable, as_id: int) -> tuple[RangeView, ...]:
    return tuple(
        RangeView(v.start, v.end - v.start, "rom" if v.readonly else "ram", f"s{v.id}", v.logging)
        for v in _slots(table, as_id)
    )


def _holes(now: tuple[SlotView, ...], before: tuple[RangeView, ...]) -> tuple[tuple[int, int], ...]:
    holes = []
    for r in before:
        pos = r.start
        for s in now:
            if s.end <= pos or s.start >= r.end:
                continue
            if s.start > pos:
                holes.append((pos, s.start))
            pos = max(pos, s.end)
        if pos < r.end:
            holes.append((pos, r.end))
    return tuple(holes)


def qemu_snapshot(
    name: str, state: Imported | None, vcpus: VcpuThreads, t_ns: int, finished: bool, stop: str
) -> Snapshot:
    """The Snapshot of a watched QEMU ``t_ns`` after it started (backend="qemu")."""
    spaces: list[AddressSpaceView] = []
    txn_view: TxnView | None = None
    txns, calls = 0, 0
    if state is not None:
        txns, calls = len(state.transactions), len(state.calls)
        current = state.transactions[-1].table if state.transactions else state.boot
        done = state.transactions[-2].table if len(state.transactions) > 1 else state.boot
        tables = [state.boot] + [t.table for t in state.transactions]
        for as_id in sorted({s.as_id for tab in tables for s in tab.values()}):
            seen = [s for tab in tables for s in tab.values() if s.as_id == as_id]
            slots = _slots(current, as_id)
            before = _ranges(done, as_id)
            spaces.append(
                AddressSpaceView(
                    as_id=as_id,
                    active=SetView(-1, 0, 0, slots),
                    inactive=SetView(-1, 0, 0, ()),
                    vmm=before,
                    pending=(),
                    holes=_holes(slots, before),
                    layout=f"after txn {txns}" if txns else "boot",
                    span=(min(s.gpa for s in seen), max(s.end for s in seen)),
                )
            )
        if state.transactions and not finished:
            last = state.transactions[-1]
            dels = tuple(
                (a.old.gpa, a.old.size) for a in last.calls if a.old and a.kind == "delete"
            )
            adds = tuple((a.call.gpa, a.call.size) for a in last.calls if a.kind == "create")
            overlapping = any(g < ag + asz and ag < g + sz for g, sz in dels for ag, asz in adds)
            txn_view = TxnView(last.index, last.as_id, "qemu", 0, dels, adds, overlapping)
    return Snapshot(
        t_ns=t_ns, seq=calls, end_ns=max(t_ns, 1), scenario=name, strategy="QEMU", seed=0,
        speed=1.0, paused=False, finished=finished, stop_reason=stop, spaces=tuple(spaces),
        vcpus=vcpus.views(), srcu=EMPTY_SRCU, txn=txn_view, ioctl=None, inhibited=False,
        txn_count=txns, ioctl_count=calls, vm_stopped="", verdict=None, armed=(),
        injections=0, events=(), log_path=None, backend="qemu",
    )  # fmt: skip

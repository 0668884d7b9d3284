"""The model's SnapshotSource: every kernel structure is visible, in virtual time."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.snapshot.source import ClockView, activity, address_space, rates
from engine.snapshot.views import AddressSpaceView, GpView, ReaderView, SrcuView, VcpuView

if TYPE_CHECKING:
    from engine.backends.model.backend import ModelBackend
    from engine.snapshot.tracker import History
    from engine.snapshot.viewcache import ViewCache
    from engine.vmm.vmm import Vmm

RATE_WINDOW_NS = 100_000
"""Exit rates are counted over this much virtual time (or the whole run, if shorter)."""


class ModelSnapshotSource:
    backend = "model"
    rate_window_ns = RATE_WINDOW_NS

    def __init__(self, backend: ModelBackend) -> None:
        self.b = backend

    def clock(self, verdict: bool, error: bool) -> ClockView:
        seq = self.b.seq
        return ClockView(
            # The log's time, not the running actor's: a vCPU behind the others would show
            # a t earlier than rows already on screen.
            seq.bus.log_t(),
            seq.pacing.speed,
            seq.pacing.paused,
            seq.finished,
            seq.stop_reason,
        )

    def slots_key(self) -> int:
        return 0  # every change of a memslot set is an event the tracker sees

    def spaces(
        self, vmm: Vmm, span: Callable[[int], tuple[int, int]], views: ViewCache
    ) -> tuple[AddressSpaceView, ...]:
        vm = self.b.vm
        return tuple(
            address_space(
                vmm, a, views.set_view(vm.active(a)), views.set_view(vm.inactive(a)), span, views
            )
            for a in range(vm.host.nr_address_spaces)
        )

    def vcpus(self, history: History, now: int) -> tuple[VcpuView, ...]:
        out = []
        for runner in self.b.vcpus.runners:
            v = runner.vcpu
            last_fault = history.last_fault.get(v.index, "")
            ring = history.exits.get(v.index)
            out.append(
                VcpuView(
                    index=v.index,
                    as_id=v.as_id,
                    state=v.state,
                    activity=activity(v.state, last_fault, v.kick_requested, ring),
                    rip=v.rip,
                    srcu_idx=v.srcu_idx,
                    last_data_gpa=v.last_data_gpa,
                    exits=tuple(v.exits.most_common()),
                    exit_rates=rates(ring, now, self.rate_window_ns),
                    faults=tuple(v.faults.most_common()),
                    last_fault=last_fault,
                    instructions=v.instructions,
                    stall_ns=runner.stall_ns
                    + (now - runner.blocked_since if runner.blocked_since >= 0 else 0),
                )
            )
        return tuple(out)

    def srcu(self, history: History, now: int) -> SrcuView:
        srcu = self.b.vm.srcu
        gp = srcu.gp
        current: GpView | None = None
        waiting: tuple[str, ...] = ()
        if gp is not None:
            waiting = tuple(gp.waiting_on())
            rec = history.gp
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
            history=tuple(history.gp_history),
        )

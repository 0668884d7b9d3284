"""engine.snapshot: what the TUI reads, built from a running session (trio, no Textual)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import trio
import trio.testing

from engine.model import constants as c
from engine.runner import make_config
from engine.session import Session
from engine.sim.pacing import Pacing
from engine.snapshot import RangeView, SlotView, Snapshot, Tracker, _holes


def test_holes_are_backed_ranges_without_a_slot() -> None:
    ram = RangeView(0, 0x20000, "ram", "pc.ram", False)
    mmio = RangeView(0x20000, 0x1000, "mmio", "bar", False)
    slots = (SlotView(0, 0, 0x10, 0, 0),)  # covers [0, 0x10000)
    assert _holes(slots, (ram, mmio)) == ((0x10000, 0x20000),)
    assert _holes((), (ram,)) == ((0, 0x20000),)
    assert _holes((SlotView(0, 0, 0x20, 0, 0),), (ram,)) == ()


def _run_to(session: Session, tracker: Tracker, done: Callable[[Snapshot], bool]) -> Snapshot:
    """Single-step the paused session until ``done(snapshot)``."""

    async def main() -> Snapshot:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            await trio.testing.wait_all_tasks_blocked()
            snap = tracker.snapshot(session)
            for _ in range(2000):
                if done(snap):
                    break
                session.send("step", count="1")
                await trio.testing.wait_all_tasks_blocked()
                snap = tracker.snapshot(session)
            nursery.cancel_scope.cancel()
        return snap

    return trio.run(main)


def test_snapshot_in_the_race_window() -> None:
    tracker = Tracker()
    session = Session(
        make_config("split", "legacy", faults=["race"]),
        pacing=Pacing(paused=True),
        observers=(tracker.observe,),
    )
    snap = _run_to(session, tracker, lambda s: not s.spaces[0].active.slots)
    assert dataclasses.is_dataclass(snap)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.seq = 0  # type: ignore[misc]
    space = snap.spaces[0]
    assert space.active.update_in_progress
    assert space.active.generation & c.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS
    assert space.holes == ((0, 0x20000),)
    assert [s.invalid for s in space.inactive.slots] == [True]
    assert snap.txn is not None
    assert snap.txn.layout == "split"
    assert snap.ioctl is not None
    assert snap.ioctl.memory_size == 0
    assert {v.activity for v in snap.vcpus} == {"retrying"}
    # Each vCPU retries a fetch in the loop (inc, doorbell load, jmp).
    assert all(v.rip in (0x1000, 0x1004, 0x1008) for v in snap.vcpus)
    assert snap.srcu.history  # the boot's and the INVALID swap's grace periods
    assert snap.verdict is None
    assert snap.events[-1].seq == snap.seq - 1
    assert snap.armed == ("race=window=100us",)


def test_gp_phases_and_readers_holding_them_up() -> None:
    tracker = Tracker()
    session = Session(
        make_config("split", "legacy", faults=["reader-stall=vcpu=0,duration=300us"]),
        pacing=Pacing(paused=True),
        observers=(tracker.observe,),
    )
    snap = _run_to(
        session, tracker, lambda s: s.srcu.current is not None and s.srcu.current.phase == "scan2"
    )
    gp = snap.srcu.current
    assert gp is not None
    assert gp.phase == "scan2"
    assert gp.flip_ns >= gp.started_ns
    # The stalled reader holds the grace period up; vcpu1 may be inside KVM too, serving
    # its doorbell poll.
    assert "vcpu0" in gp.waiting_on
    readers = {r.name: r for r in snap.srcu.readers}
    assert readers["vcpu0"].blocking
    assert readers["vcpu0"].held_ns > 0
    assert gp.duration(snap.t_ns) == snap.t_ns - gp.started_ns

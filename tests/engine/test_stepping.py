"""Breakpoints, one-event steps, scheduler steps and time travel on a live session
(engine.stepping through engine.api), under trio's mock clock: nothing here waits on wall time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from engine.api import Breakpoints, LiveSession, Pacing, make_config, open_session, parse_breakpoint
from engine.breakpoints import matches
from engine.events import Command, Exit, Fault, MemslotChange, SrcuGp, SwapPublish, TxnBegin
from engine.log import read_log

Drive = Callable[[LiveSession], Awaitable[None]]


def _open(log: Path | None = None, **kw: object) -> LiveSession:
    config = make_config("pam-shadow", "legacy", seed=1, **kw)  # type: ignore[arg-type]
    return open_session(config, log=str(log) if log else None, pacing=Pacing(paused=True))


async def _drive(live: LiveSession, drive: Drive) -> None:
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            live.rebase()
            await live.run()

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        await drive(live)
        nursery.cancel_scope.cancel()


async def _settle(live: LiveSession) -> None:
    live.rebase()
    await trio.testing.wait_all_tasks_blocked()


def _resume(live: LiveSession) -> None:
    pacing = live.pacing
    assert pacing is not None
    pacing.paused = False
    pacing.speed = float("inf")


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown breakpoint 'nope'"),
        ("delete=3", "takes no argument"),
        ("gp=half", "gp phase 'half'"),
        ("gpa", "gpa needs a range"),
        ("gpa=zz", "'zz' is not an address"),
        ("gpa=0x2000-0x1000", "ends before it starts"),
        ("swap=x", "address-space id"),
    ],
)
def test_bad_breakpoints_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_breakpoint(text)


def test_breakpoints_match_their_events_only() -> None:
    delete = MemslotChange(
        as_id=0, id=1, change="DELETE", step="invalidate", base_gfn=0, npages=1, flags=0
    )
    assert matches(parse_breakpoint("delete"), delete)
    assert not matches(parse_breakpoint("create"), delete)
    assert matches(parse_breakpoint("swap"), SwapPublish(as_id=1, generation=2, version=1))
    assert not matches(parse_breakpoint("swap=0"), SwapPublish(as_id=1, generation=2, version=1))
    flip = SrcuGp(gp_seq=1, phase="flip", expedited=True, srcu_idx=0)
    assert matches(parse_breakpoint("gp=flip"), flip)
    assert not matches(parse_breakpoint("gp=end"), flip)
    fault = Fault(vcpu=0, gpa=0xA1000, access="fetch", outcome="emulate")
    assert matches(parse_breakpoint("fault=emulate"), fault)
    assert not matches(parse_breakpoint("fault=mapped"), fault)
    assert matches(parse_breakpoint("gpa=0xa0000-0xbffff"), fault)
    assert not matches(parse_breakpoint("gpa=0xc0000"), fault)
    mmio = Exit(vcpu=0, reason="KVM_EXIT_MMIO", rip=0, phys_addr=0xC0000)
    assert matches(parse_breakpoint("exit=mmio"), mmio)
    assert matches(parse_breakpoint("gpa=0xc0000"), mmio)
    assert not matches(parse_breakpoint("exit=internal_error"), mmio)
    txn = TxnBegin(txn=1, as_id=0, layout="x", dels=[], adds=[], overlapping=False)
    assert matches(parse_breakpoint("txn"), txn)


def test_the_list_toggles_and_clears() -> None:
    bps = Breakpoints(["delete", "gp=end"])
    bps.add("delete")  # already there
    assert bps.texts() == ["delete", "gp=end"]
    bps.toggle(0)
    assert [e.enabled for e in bps.entries] == [False, True]
    bps.remove(1)
    assert not bps.active
    bps.clear()
    assert bps.entries == []


# --- stopping -----------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("kind", ["delete", "create", "swap", "gp=flip", "txn", "fault=mapped"])
async def test_a_running_session_stops_at_the_event_a_breakpoint_names(
    kind: str, autojump_clock: trio.testing.MockClock
) -> None:
    live = _open()
    live.breakpoints = Breakpoints([kind])

    async def drive(live: LiveSession) -> None:
        _resume(live)
        await _settle(live)
        hit = live.hit
        assert hit is not None
        assert hit.bp.text() == kind
        snap = live.snapshot()
        # The picture is of the event itself, even if the actor ran on to its next call.
        assert snap.seq == hit.seq + 1 == live.position
        assert matches(parse_breakpoint(kind), snap.events[-1])
        assert snap.paused

    await _drive(live, drive)


@pytest.mark.trio
async def test_a_verdict_breakpoint_stops_where_the_verdict_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    live = _open(faults=["race"])
    live.breakpoints = Breakpoints(["verdict"])

    async def drive(live: LiveSession) -> None:
        _resume(live)
        await _settle(live)
        assert live.hit is not None
        snap = live.snapshot()
        assert snap.verdict is not None
        assert snap.verdict.verdict == "crashed"

    await _drive(live, drive)


@pytest.mark.trio
async def test_space_steps_exactly_one_event(autojump_clock: trio.testing.MockClock) -> None:
    live = _open()

    async def drive(live: LiveSession) -> None:
        seen: list[int] = []
        for _ in range(200):
            live.step_event()
            await _settle(live)
            snap = live.snapshot()
            seen.append(snap.seq)
            assert snap.events[-1].seq == snap.seq - 1
        start = seen[0]
        assert seen == list(range(start, start + 200))
        assert not [e for e in live.session.recent if isinstance(e, Command)]  # not recorded

    await _drive(live, drive)


@pytest.mark.trio
async def test_a_scheduler_step_is_one_sequencer_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    live = _open()

    async def drive(live: LiveSession) -> None:
        pacing = live.pacing
        assert pacing is not None
        calls = []
        for _ in range(50):
            live.step_call()
            await _settle(live)
            calls.append(pacing.at_call)
        assert calls == list(range(calls[0], calls[0] + 50))

    await _drive(live, drive)


async def _run_plain(log: Path) -> list[bytes]:
    live = _open(log, faults=["race"])

    async def drive(live: LiveSession) -> None:
        _resume(live)
        await _settle(live)

    await _drive(live, drive)
    return read_log(str(log)).event_lines


@pytest.mark.trio
async def test_stepping_and_breakpoints_leave_the_log_as_the_plain_run(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    plain = await _run_plain(tmp_path / "plain.jsonl")
    log = tmp_path / "stepped.jsonl"
    live = _open(log, faults=["race"])
    live.breakpoints = Breakpoints(["delete", "gp=end"])

    async def drive(live: LiveSession) -> None:
        for _ in range(6):
            _resume(live)
            await _settle(live)
            for _ in range(7):
                live.step_event()
                await _settle(live)
            live.step_call()
            await _settle(live)
        live.breakpoints.clear()
        _resume(live)
        await _settle(live)

    await _drive(live, drive)
    assert read_log(str(log)).event_lines == plain


@pytest.mark.trio
async def test_going_back_re_executes_to_the_previous_event(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = tmp_path / "travel.jsonl"
    live = _open(log, faults=["race"])
    live.breakpoints = Breakpoints(["delete"])
    state: dict[str, object] = {}

    async def drive(live: LiveSession) -> None:
        _resume(live)
        await _settle(live)
        for _ in range(3):
            live.step_event()
            await _settle(live)
        live.session.send("inject", fault="reader-stall=vcpu=1,duration=30us")
        live.step_event()
        await _settle(live)
        state["before"] = live.snapshot()
        live.step_event()
        await _settle(live)
        state["at"] = live.position
        assert live.seek(live.position - 1) == live.position - 1

    await _drive(live, drive)
    target = int(str(state["at"])) - 1
    again = live.rewound(target)
    assert again.reexecuted_to == target

    async def check(again: LiveSession) -> None:
        await _settle(again)
        before = state["before"]
        snap = again.snapshot()
        assert snap.seq == target
        assert snap.events[-1] == before.events[-1]  # type: ignore[attr-defined]
        assert snap.t_ns == before.t_ns  # type: ignore[attr-defined]
        # Forward again from there: the same run (the injection replays where it was).
        again.breakpoints.clear()
        _resume(again)
        await _settle(again)

    await _drive(again, check)
    # Rewound and finished, the log is again the whole run, injection and all.
    lines = read_log(str(log)).event_lines
    assert any(b'"inject"' in line for line in lines)
    assert read_log(str(log)).verdict is not None


@pytest.mark.trio
async def test_seeking_by_time_forward_and_back(autojump_clock: trio.testing.MockClock) -> None:
    live = _open()
    state: dict[str, int] = {}

    async def drive(live: LiveSession) -> None:
        assert live.seek_time(1_000_000) is None
        await _settle(live)
        snap = live.snapshot()
        assert snap.events[-1].t >= 1_000_000
        assert all(e.t < 1_000_000 for e in snap.events[:-1] if e.seq > 0)
        state["pos"] = live.position
        back = live.seek_time(500_000)
        assert back is not None
        assert back < live.position
        state["back"] = back

    await _drive(live, drive)
    again = live.rewound(state["back"])

    async def check(again: LiveSession) -> None:
        await _settle(again)
        snap = again.snapshot()
        assert snap.seq == state["back"]
        assert snap.events[-1].t >= 500_000

    await _drive(again, check)

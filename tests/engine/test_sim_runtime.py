"""The sequencer: one actor at a time in (time, seq) order, vCPU quanta, how runs end, clean
cancellation, and outside commands stamped with the call they followed."""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from engine.events import Command, Event, EventBus
from engine.log import read_log
from engine.runner import make_config
from engine.session import Session
from engine.sim import runtime
from engine.sim.pacing import Pacing
from engine.sim.runtime import QUANTUM_NS, Actor, Sequencer


class Toy:
    """A few actors with scripted sleeps; records who held the baton when."""

    def __init__(self, end_ns: int, pacing: Pacing | None = None) -> None:
        self.bus = EventBus()
        self.seq = Sequencer(self.bus, end_ns, pacing)
        self.log: list[tuple[int, str]] = []
        self.running: str | None = None
        self.cleanups: list[str] = []
        self.actors: dict[str, Actor] = {}
        self._bodies: list[tuple[Actor, Callable[[], Awaitable[None]]]] = []

    def mark(self, name: str) -> None:
        self.log.append((self.bus.now, name))

    async def hold(self, name: str) -> None:
        """Prove exclusivity: let trio run anything else it likes, then check that no other
        actor took over meanwhile."""
        assert self.running is None, f"{name} released while {self.running} runs"
        self.running = name
        for _ in range(3):
            await trio.lowlevel.checkpoint()
        assert self.running == name
        self.running = None

    def add(self, name: str, steps: list[int], vcpu: bool = False) -> Actor:
        actor = Actor(name, vcpu=vcpu)
        self.actors[name] = actor

        async def body() -> None:
            try:
                self.mark(name)
                await self.hold(name)
                for ns in steps:
                    await self.seq.sleep(actor, ns)
                    self.mark(name)
                    await self.hold(name)
            finally:
                self.cleanups.append(name)

        self._bodies.append((actor, body))
        return actor

    def add_body(
        self, name: str, body: Callable[[Actor], Awaitable[None]], vcpu: bool = False
    ) -> Actor:
        actor = Actor(name, vcpu=vcpu)
        self.actors[name] = actor

        async def wrapped() -> None:
            try:
                await body(actor)
            finally:
                self.cleanups.append(name)

        self._bodies.append((actor, wrapped))
        return actor

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for actor, body in self._bodies:
                self.seq.start(nursery, actor, body)
            await self.seq.run(nursery)


def reference_order(spec: list[tuple[str, list[int]]], end_ns: int) -> list[tuple[int, str]]:
    """A plain discrete-event loop over a (time, seq) heap: what the sequencer must match."""
    steps = dict(spec)
    counter = 0
    heap: list[tuple[int, int, str, int]] = []
    for name, _ in spec:
        heap.append((0, counter, name, 0))
        counter += 1
    heapq.heapify(heap)
    out: list[tuple[int, str]] = []
    while heap:
        t, _, name, k = heapq.heappop(heap)
        if t > end_ns:
            break
        out.append((t, name))
        if k < len(steps[name]):
            heapq.heappush(heap, (t + steps[name][k], counter, name, k + 1))
            counter += 1
    return out


@pytest.mark.trio
@pytest.mark.parametrize("end_ns", [10_000, 150])
async def test_actors_run_one_at_a_time_in_time_seq_order(end_ns: int) -> None:
    spec = [
        ("a", [30, 30, 30, 30, 30]),
        ("b", [20, 40, 20, 40]),
        ("c", [60, 60, 0, 60]),
        ("d", [0, 0, 90]),
    ]
    toy = Toy(end_ns)
    for name, steps in spec:
        toy.add(name, steps)
    await toy.run()
    assert toy.log == reference_order(spec, end_ns)
    times = [t for t, _ in toy.log]
    assert times == sorted(times)
    assert toy.seq.stop_reason == ("idle" if end_ns == 10_000 else "duration")


@pytest.mark.trio
async def test_vcpu_quanta_never_pass_a_non_vcpu_actor() -> None:
    toy = Toy(5_000)
    toy.add("vmm", [250] * 30)
    toy.add("worker", [730] * 10)
    toy.add("vcpu0", [90] * 60, vcpu=True)
    toy.add("vcpu1", [130] * 40, vcpu=True)
    await toy.run()
    strict = {"vmm", "worker"}
    seen_max = 0
    for i, (t, name) in enumerate(toy.log):
        if name in strict:
            # Everything that ran before a non-vCPU actor ran at or before its time.
            assert t >= seen_max, (i, t, name, seen_max)
        else:
            # vCPUs skew against each other by less than a quantum.
            assert seen_max - t < QUANTUM_NS, (i, t, name, seen_max)
        seen_max = max(seen_max, t)
    strict_times = [t for t, name in toy.log if name in strict]
    assert strict_times == sorted(strict_times)
    # A vCPU keeps the baton within its quantum: some vCPU ran several steps in a row.
    runs = [
        a == b for (_, a), (_, b) in zip(toy.log, toy.log[1:], strict=False) if a.startswith("vcpu")
    ]
    assert any(runs)
    # And the vCPUs did interleave.
    names = [n for _, n in toy.log if n.startswith("vcpu")]
    assert {names[i] != names[i + 1] for i in range(len(names) - 1)} == {True, False}


@pytest.mark.trio
async def test_switches_count_the_task_switches_the_baton_makes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`slotlab bench` sizes its bare trio loop by `switches`: it must be the number of times
    the baton went to another task, not the hand-overs that gave it back to the same actor."""
    toy = Toy(10_000)
    toy.add("vmm", [2_500] * 3)
    toy.add("vcpu0", [600] * 15, vcpu=True)
    reschedules = 0
    real = trio.lowlevel.reschedule

    def counting(task: trio.lowlevel.Task, *args: Any) -> None:
        nonlocal reschedules
        reschedules += 1
        real(task, *args)

    # The sequencer binds trio's reschedule once, at import.
    monkeypatch.setattr(runtime, "_reschedule", counting)
    await toy.run()
    assert toy.seq.switches == reschedules
    # A lone vCPU past its quantum gets the baton back when the VMM is not due yet.
    assert 0 < toy.seq.switches < toy.seq.handoffs


@pytest.mark.trio
async def test_a_vcpu_sleeping_within_its_horizon_keeps_the_baton() -> None:
    toy = Toy(20_000)
    toy.add("vmm", [3_000] * 5)
    kept: list[bool] = []

    async def vcpu(actor: Actor) -> None:
        seq = toy.seq
        for _ in range(40):
            horizon = seq.horizon(actor)
            before = seq.handoffs
            await seq.sleep(actor, horizon)
            kept.append(seq.handoffs == before)
            await seq.sleep(actor, 1)  # one past the horizon: may hand over

    toy.add_body("vcpu0", vcpu, vcpu=True)
    toy.add("vcpu1", [400] * 40, vcpu=True)
    await toy.run()
    assert kept
    assert all(kept)


@pytest.mark.trio
async def test_finish_on_duration() -> None:
    toy = Toy(1_000)
    toy.add("a", [300] * 10)
    await toy.run()
    assert toy.log == [(0, "a"), (300, "a"), (600, "a"), (900, "a")]
    assert toy.seq.stop_reason == "duration"
    assert toy.seq.finished
    assert toy.bus.now == 1_000
    assert toy.cleanups == ["a"]


@pytest.mark.trio
async def test_finish_on_idle_and_wake() -> None:
    toy = Toy(1_000_000)
    woke_at: list[int] = []

    async def sleeper(actor: Actor) -> None:
        await toy.seq.block(actor)
        woke_at.append(toy.bus.now)
        await toy.seq.block(actor)  # nobody wakes it again
        woke_at.append(-1)

    async def waker(actor: Actor) -> None:
        await toy.seq.sleep(actor, 500)
        toy.seq.wake(toy.actors["sleeper"], delay_ns=250)
        toy.seq.wake(toy.actors["sleeper"], delay_ns=999)  # not blocked any more: ignored
        await toy.seq.sleep(actor, 100)

    toy.add_body("sleeper", sleeper)
    toy.add_body("waker", waker)
    await toy.run()
    assert woke_at == [750]
    assert toy.seq.stop_reason == "idle"
    assert toy.bus.now == 750
    assert sorted(toy.cleanups) == ["sleeper", "waker"]


@pytest.mark.trio
async def test_cancellation_while_paused_is_clean() -> None:
    toy = Toy(10_000, Pacing(paused=True))
    toy.add("a", [100] * 10)
    toy.add("v", [50] * 10, vcpu=True)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as outer:

            async def cancel_when_stuck() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            outer.start_soon(cancel_when_stuck)
            await toy.run()
    assert scope.cancelled_caught
    assert toy.log == []  # paused from the start: nobody ran, nobody was left behind
    assert toy.cleanups == []
    assert not toy.seq.finished


@pytest.mark.trio
async def test_cancellation_mid_run_is_clean(autojump_clock: trio.testing.MockClock) -> None:
    toy = Toy(1_000_000, Pacing(speed=1.0))
    toy.add("a", [1_000] * 1_000)
    toy.add("v", [300] * 3_000, vcpu=True)
    with trio.move_on_after(0.000_2) as scope:  # 200 us of mock wall time at speed 1
        await toy.run()
    assert scope.cancelled_caught
    assert not toy.seq.finished
    assert 0 < toy.bus.now < 1_000_000
    assert toy.log
    assert toy.log[-1][0] <= toy.bus.now
    assert sorted(toy.cleanups) == ["a", "v"]


@pytest.mark.trio
async def test_a_cancelled_session_leaves_a_readable_log(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    log = tmp_path / "cancelled.jsonl"
    session = Session(
        make_config("split", "inhibit", seed=2), log_path=str(log), pacing=Pacing(speed=1.0)
    )
    with trio.move_on_after(0.000_3):
        await session.run()
    # The cancellation reached every actor; nothing else went wrong.
    err = session.error
    assert err is not None
    if isinstance(err, BaseExceptionGroup):
        rest = err.split(trio.Cancelled)[1]
        assert rest is None, rest
    else:
        assert isinstance(err, trio.Cancelled)
    assert session.result is None
    data = log.read_bytes()
    assert data.endswith(b"\n")
    parsed = read_log(log)
    assert parsed.verdict is None
    assert 0 < len(parsed.events) <= session.bus.seq


# --- commands -------------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_command_applies_at_the_hand_over_after_the_call_it_followed() -> None:
    toy = Toy(10_000)
    applied: list[tuple[int, Any, int]] = []

    def handler(cmd: Any) -> None:
        applied.append((toy.seq.calls, cmd, toy.bus.now))
        toy.mark(f"cmd:{cmd}")

    toy.seq.set_command_handler(handler)
    expected_calls: list[int] = []

    async def sender(actor: Actor) -> None:
        for i in range(3):
            await toy.seq.sleep(actor, 100)
            toy.mark("sender")
            toy.seq.send(f"c{i}")
            expected_calls.append(toy.seq.calls + 1)
            # Would keep the baton (nobody else before t+10) but a command is pending.
            await toy.seq.sleep(actor, 10)
            toy.mark("sender")

    toy.add_body("sender", sender)
    toy.add("other", [150, 150, 150])
    await toy.run()
    assert [c for _, c, _ in applied] == ["c0", "c1", "c2"]
    assert [k for k, _, _ in applied] == expected_calls
    # Applied before anybody else runs, stamped with the time the next actor is released at.
    for _, cmd, now in applied:
        j = toy.log.index((now, f"cmd:{cmd}"))
        assert toy.log[j - 1][1] == "sender"
        assert toy.log[j + 1][0] == now


@pytest.mark.trio
async def test_scheduled_commands_replay_at_the_recorded_call() -> None:
    toy = Toy(10_000)
    applied: list[tuple[int, Any]] = []
    toy.seq.set_command_handler(lambda cmd: applied.append((toy.seq.calls, cmd)))
    toy.seq.schedule(4, "x")
    toy.seq.schedule(9, "y")
    toy.add("a", [100] * 20)
    toy.add("b", [70] * 20)
    await toy.run()
    assert applied == [(4, "x"), (9, "y")]


@pytest.mark.trio
async def test_pause_step_speed_become_command_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events: list[Event] = []
    calls_at: list[int] = []

    def watch(ev: Event) -> None:
        events.append(ev)
        if isinstance(ev, Command):
            calls_at.append(session.seq.calls)

    session = Session(
        make_config("hotplug", "legacy", seed=1, duration_ns=300_000),
        pacing=Pacing(paused=True),
        observers=(watch,),
    )
    boot_events = session.bus.seq

    async def controller() -> None:
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)
        assert session.bus.seq == boot_events  # paused from the start
        session.send("step", count="4")
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(5)
        stepped = [e for e in events if e.seq >= boot_events]
        assert isinstance(stepped[0], Command)
        assert stepped[0].name == "step"
        assert len(stepped) >= 1 + 4  # the command, then at least the events it ran to
        frozen = session.bus.seq
        await trio.sleep(5)
        assert session.bus.seq == frozen  # paused again
        session.send("speed", speed="0.5")
        session.send("resume")
        await trio.sleep(0.000_01)
        session.send("pause")
        session.send("speed", speed="inf")
        session.send("resume")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(controller)
        await session.run()
    commands = [e for e in events if isinstance(e, Command)]
    assert [c.name for c in commands] == ["step", "speed", "resume", "pause", "speed", "resume"]
    assert [c.call for c in commands] == calls_at
    assert [c.call for c in commands] == sorted(c.call for c in commands)
    assert commands[1].args == {"speed": "0.5"}
    assert session.result is not None
    assert session.seq.stop_reason == "duration"

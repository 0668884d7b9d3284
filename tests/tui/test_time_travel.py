"""Stepping and time travel in a live run: `.` one scheduler step, `,` one event back (the
run re-executed from its start), `j` to an event or a time. The clock moves only by steps."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.log import read_log
from tui.app import SlotlabApp
from tui.screens.jump import JumpForm, parse_live_target

from .helpers import finish, press, screen_text, session, settle

AppFactory = Callable[..., SlotlabApp]


def _position(app: SlotlabApp) -> int:
    live = app.host.live
    assert live is not None
    return live.position


@pytest.mark.asyncio
async def test_full_stop_is_one_scheduler_step(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test() as pilot:
        await settle(app, pilot)
        pacing = session(app).seq.pacing
        calls = []
        for _ in range(20):
            await press(app, pilot, "full_stop")
            calls.append(pacing.at_call)
        assert calls == list(range(calls[0], calls[0] + 20))
        assert pacing.paused


@pytest.mark.asyncio
async def test_comma_goes_back_one_event_by_re_executing(app_factory: AppFactory) -> None:
    app = app_factory(scenario="pam-shadow", faults=[], log_path="sessions/back.jsonl")
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(app, pilot)
        for _ in range(30):
            await press(app, pilot, "space")
        await press(app, pilot, "r")  # an injection the re-execution must replay
        for _ in range(5):
            await press(app, pilot, "space")
        before = app.host.snapshot()
        await press(app, pilot, "space")
        first = session(app)
        at = _position(app)

        await press(app, pilot, "comma")
        assert session(app) is not first  # a new run, re-executed
        assert _position(app) == at - 1
        snap = app.host.snapshot()
        assert snap is not None
        assert before is not None
        assert snap.events[-1] == before.events[-1]
        assert snap.t_ns == before.t_ns
        assert snap.armed == before.armed  # the race armed again on the way
        assert f"⟲ re-executed from the start to #{at - 1}" in screen_text(app)
        assert any("re-executed the run" in n.message for n in app._notifications)

        # And forward again: the same events as the first time.
        await press(app, pilot, "space")
        assert _position(app) == at
        await finish(app, pilot)
    log = read_log("sessions/back.jsonl")
    assert log.verdict is not None
    assert sum(1 for e in log.events if type(e).__name__ == "Injected") == 1


@pytest.mark.asyncio
async def test_j_jumps_to_an_event_ahead_and_a_time_behind(app_factory: AppFactory) -> None:
    app = app_factory(scenario="pam-shadow", faults=[])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "j")
        assert isinstance(app.screen, JumpForm)
        await pilot.press(*"#300", "enter")
        await settle(app, pilot)
        assert _position(app) == 300
        assert "#300 " in screen_text(app)
        first = session(app)

        await press(app, pilot, "j")
        await pilot.press(*"100us", "enter")
        await settle(app, pilot)
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        assert session(app) is not first
        snap = app.host.snapshot()
        assert snap is not None
        assert snap.events[-1].t >= 100_000
        assert all(e.t < 100_000 for e in snap.events[:-1])
        assert "re-executed from the start" in screen_text(app)


def test_live_jump_targets() -> None:
    assert parse_live_target("#40", 1_000_000) == ("event", 40)
    assert parse_live_target("5000", 1_000_000) == ("event", 5000)
    assert parse_live_target("45us", 1_000_000) == ("time", 45_000)
    assert parse_live_target("50%", 1_000_000) == ("time", 500_000)
    with pytest.raises(ValueError, match="ends at"):
        parse_live_target("2ms", 1_000_000)
    with pytest.raises(ValueError, match="type an event"):
        parse_live_target(" ", 1_000_000)

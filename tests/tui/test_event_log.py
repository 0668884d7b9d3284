"""The event log: live, filterable with `/`, pausable with `l`; a selected event shows its
fields."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.widgets import Input

from engine.events import Fault, SrcuLock
from tui.app import SlotlabApp
from tui.format import kind_of
from tui.widgets.event_log import EventDetail, EventLog, parse_filter

from .helpers import finish, live, press, session, settle, step

AppFactory = Callable[..., SlotlabApp]


def test_filter_terms() -> None:
    assert parse_filter("Fault -retry") == [(True, "fault"), (False, "retry")]
    assert parse_filter("  ") == []


@pytest.mark.asyncio
async def test_log_follows_the_run(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await step(app, pilot, 30)
        log = live(app).query_one("#ov-log", EventLog)
        assert log.follow
        assert log.window[-1].seq == session(app).bus.seq - 1


@pytest.mark.asyncio
async def test_slash_filters_both_logs(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await step(app, pilot, 40)
        await pilot.press("slash")
        await pilot.pause()
        screen = live(app)
        assert screen.view == "events"
        assert isinstance(screen.focused, Input)
        await pilot.press(*"fault mmio")
        await pilot.pause()
        for log in screen.query(EventLog):
            assert log.visible_events
            assert all(isinstance(e, Fault) and e.outcome == "mmio" for e in log.visible_events)
        # Typing in the filter is not a command: `p` and space went into the text.
        assert session(app).seq.pacing.paused
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(screen.focused, EventLog)
        # New events that match join the filtered log; the rest stay out.
        await press(app, pilot, "space")
        await step(app, pilot, 5)
        assert all(isinstance(e, Fault) for e in screen.query_one("#log", EventLog).visible_events)


@pytest.mark.asyncio
async def test_negative_filter_excludes(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await step(app, pilot, 30)
        log = live(app).query_one("#log", EventLog)
        log.set_filter("-srcu")
        assert log.visible_events
        assert not any(isinstance(e, SrcuLock) for e in log.visible_events)


@pytest.mark.asyncio
async def test_l_pauses_the_log_while_the_run_goes_on(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        log = live(app).query_one("#ov-log", EventLog)
        await press(app, pilot, "l")
        assert log.paused
        frozen = log.visible_events[-1].seq
        await step(app, pilot, 20)
        assert log.visible_events[-1].seq == frozen
        assert session(app).bus.seq > frozen + 10
        await press(app, pilot, "l")
        assert not log.paused
        assert log.visible_events[-1].seq == session(app).bus.seq - 1


@pytest.mark.asyncio
async def test_selecting_an_event_shows_its_fields(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(app, pilot)
        await step(app, pilot, 40)
        await press(app, pilot, "5")
        screen = live(app)
        log = screen.query_one("#log", EventLog)
        log.set_filter("swap_publish")
        await pilot.pause()
        await press(app, pilot, "up")
        selected = log.selected
        assert selected is not None
        assert not log.follow
        detail = str(screen.query_one("#detail", EventDetail).render())
        assert "swap_publish" in detail
        assert "generation" in detail
        assert "bit 63" in detail
        await press(app, pilot, "end")
        assert log.follow
        assert log.selected is None


@pytest.mark.asyncio
async def test_enter_on_the_overview_log_opens_the_event(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(app, pilot)
        await step(app, pilot, 20)
        screen = live(app)
        overview = screen.query_one("#ov-log", EventLog)
        overview.focus()
        await press(app, pilot, "up", "enter")
        assert screen.view == "events"
        chosen = overview.selected
        assert chosen is not None
        assert screen.query_one("#log", EventLog).selected is chosen


@pytest.mark.asyncio
async def test_clicking_a_line_selects_it(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(110, 32)) as pilot:
        await settle(app, pilot)
        await step(app, pilot, 20)
        await press(app, pilot, "5")
        log = live(app).query_one("#log", EventLog)
        target = log.window[2]
        assert await pilot.click(log, offset=(5, 2))
        await pilot.pause()
        assert log.selected is target
        assert log.window[2] is target  # the line stays under the mouse


def _log_rows(log: EventLog) -> list[str]:
    return [log.render_line(y).text for y in range(len(log.window))]


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["ctrl+r", "strategy"])
async def test_a_new_session_shows_none_of_the_last_ones_rows(
    app_factory: AppFactory, how: str
) -> None:
    """After a crash, ctrl+r (or a strategy switch) starts again: the rows on screen are the
    new session's, not the last session's rows at the same seq numbers."""
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await finish(app, pilot)
        old = session(app)
        assert old.result is not None
        assert old.result.verdict == "crashed"
        if how == "ctrl+r":
            await press(app, pilot, "ctrl+r")
        else:
            await live(app).restart(strategy="inhibit")
            await settle(app, pilot)
        assert session(app) is not old
        await step(app, pilot, 40)
        new_events = {e.seq: e for e in session(app).recent}
        for log in live(app).query(EventLog):
            if not log.size.width:
                continue  # the Events tab's log, not on screen
            rows = _log_rows(log)
            assert rows
            for event, row in zip(log.window, rows, strict=True):
                assert new_events[event.seq] is event
                assert row.split()[1] == f"#{event.seq}"
                assert kind_of(event) in row
            assert not any("vm_stopped" in row or "INTERNAL_ERROR" in row for row in rows)
        # The filter reads the new session's text too.
        await pilot.press("slash", *"vm_stopped")
        await pilot.pause()
        assert live(app).query_one("#log", EventLog).visible_events == []


@pytest.mark.asyncio
@pytest.mark.parametrize("leave_first", [False, True], ids=["typing", "after-enter"])
async def test_escape_clears_the_filter_and_the_log_says_so(
    app_factory: AppFactory, leave_first: bool
) -> None:
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await step(app, pilot, 40)
        screen = live(app)
        log = screen.query_one("#log", EventLog)
        everything = len(log.visible_events)
        await pilot.press("slash", *"fault")
        await pilot.pause()
        if leave_first:
            await pilot.press("enter")
            await pilot.pause()
        assert 0 < len(log.visible_events) < everything
        status = log.render_line(log._lines).text
        assert "filter: fault (esc clears)" in status
        await pilot.press("escape")
        await pilot.pause()
        for each in screen.query(EventLog):
            assert each.filter_text == ""
        assert len(log.visible_events) == everything
        assert screen.query_one("#filter", Input).value == ""
        assert "/ filters" in log.render_line(log._lines).text
        assert screen.focused is log

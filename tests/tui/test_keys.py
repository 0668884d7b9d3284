"""Keys drive the engine: pause, speed and run to end through recorded commands; space
steps one event by holding the pacing (nothing a run decides changes, so nothing is recorded)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from tui.app import SlotlabApp
from tui.options import DEFAULT_SPEED, faster
from tui.screens.live import LiveScreen

from .helpers import commands, live, press, screen_text, session, settle

AppFactory = Callable[..., SlotlabApp]


@pytest.mark.asyncio
async def test_paused_at_boot_nothing_moves(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test() as pilot:
        await settle(app, pilot)
        seq = session(app).bus.seq
        await settle(app, pilot)
        assert session(app).bus.seq == seq
        assert "PAUSED" in screen_text(app)


@pytest.mark.asyncio
async def test_space_steps_exactly_one_event(app_factory: AppFactory) -> None:
    """One event per press, on screen and in the status bar, though one actor may emit
    several between two scheduler calls; stepping holds the pacing and records nothing."""
    app = app_factory()
    async with app.run_test() as pilot:
        await settle(app, pilot)
        shown = []
        for _ in range(40):
            await press(app, pilot, "space")
            snap = app.host.snapshot()
            assert snap is not None
            shown.append(snap.seq)
            assert f"#{snap.seq} " in screen_text(app)
        assert shown == list(range(shown[0], shown[0] + 40))
        assert commands(app) == []
        assert session(app).seq.pacing.paused


@pytest.mark.asyncio
async def test_p_toggles_pause_and_each_toggle_is_a_command(app_factory: AppFactory) -> None:
    app = app_factory(speed=1e-9)  # resumed, the clock barely moves: nothing to race
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await press(app, pilot, "p")
        assert not session(app).seq.pacing.paused
        assert "RUNNING" in screen_text(app)
        await press(app, pilot, "p")
        assert session(app).seq.pacing.paused
        assert [c.name for c in commands(app)] == ["resume", "pause"]


@pytest.mark.asyncio
async def test_two_presses_of_p_before_the_engine_moves_resume_then_pause(
    app_factory: AppFactory,
) -> None:
    """A second press reads the pause the first one queued, not the engine's state before
    it: under load a fast typist got two resumes and a run that would not stop."""
    app = app_factory(speed=1e-9)
    async with app.run_test() as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, LiveScreen)
        screen.action_pause()
        screen.action_pause()  # no await between: the engine has not had a hand-over
        await settle(app, pilot)
        assert [c.name for c in commands(app)] == ["resume", "pause"]
        assert session(app).seq.pacing.paused
        assert "PAUSED" in screen_text(app)


@pytest.mark.asyncio
async def test_plus_and_minus_change_speed(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await press(app, pilot, "plus")
        assert session(app).seq.pacing.speed == pytest.approx(faster(DEFAULT_SPEED))
        await press(app, pilot, "minus", "minus")
        assert session(app).seq.pacing.speed < DEFAULT_SPEED
        speeds = [c.args["speed"] for c in commands(app) if c.name == "speed"]
        assert len(speeds) == 3
        assert "x5e-6" in screen_text(app)


@pytest.mark.asyncio
async def test_e_runs_flat_out_to_the_verdict(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await pilot.press("e")
        await app.host.wait_done()
        app.refresh_now()
        await pilot.pause()
        assert math.isinf(session(app).seq.pacing.speed)
        assert session(app).result is not None
        assert "FINISHED" in screen_text(app)


@pytest.mark.asyncio
async def test_question_mark_opens_help_with_binding_ids(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        from tui.screens.help import HelpScreen

        assert isinstance(app.screen, HelpScreen)
        assert "fault-reader-stall" in app.screen.markdown
        assert "SLOTLAB_KEYMAP" in app.screen.markdown
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is live(app)


@pytest.mark.asyncio
async def test_digits_switch_views(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        for key, view in (
            ("2", "slots"),
            ("3", "vcpus"),
            ("4", "srcu"),
            ("5", "events"),
            ("1", "overview"),
        ):
            await press(app, pilot, key)
            assert live(app).view == view


@pytest.mark.asyncio
async def test_q_quits_and_stops_the_engine(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await pilot.press("q")
        await pilot.pause()
    assert not app.host.running
    assert app.return_code in (0, None)


def test_every_binding_has_an_id() -> None:
    """Users remap keys by binding id (App.set_keymap), so no binding may lack one."""
    from textual.binding import Binding

    from tui.screens.compare import CompareScreen
    from tui.screens.live import LiveScreen
    from tui.screens.replay import ReplayScreen
    from tui.widgets.event_log import EventLog
    from tui.widgets.slot_map import SlotMap

    for cls in (SlotlabApp, LiveScreen, ReplayScreen, CompareScreen, EventLog, SlotMap):
        for klass in cls.__mro__:
            for b in klass.__dict__.get("BINDINGS", []):
                if isinstance(b, Binding) and klass.__module__.startswith("tui"):
                    assert b.id, f"{klass.__name__}: {b.key} has no id"


@pytest.mark.asyncio
async def test_t_toggles_dark_and_light(app_factory: AppFactory) -> None:
    from tui.widgets.slot_map import CLASS, INVALID, SlotMap

    app = app_factory()
    async with app.run_test() as pilot:
        await settle(app, pilot)
        slot_map = live(app).query_one("#ov-map", SlotMap)
        dark = slot_map.style(CLASS[INVALID])
        await press(app, pilot, "T")
        assert app.theme == "textual-light"
        # The map's cached colours follow the theme.
        assert slot_map.style(CLASS[INVALID]) != dark
        await press(app, pilot, "T")
        assert app.theme == "textual-dark"


@pytest.mark.asyncio
async def test_mouse_switches_views(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert await pilot.click("#--content-tab-srcu")
        await settle(app, pilot)
        assert live(app).view == "srcu"
        assert "kvm->srcu" in screen_text(app)

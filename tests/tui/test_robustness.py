"""No crash under random key presses (1,000 in the default run, 10,000 behind `slow`: counted,
never timed), a resize storm, or a tiny terminal."""

from __future__ import annotations

import gc
import random
import unicodedata
from collections.abc import Callable
from typing import Any

import pytest
from textual import events
from textual.command import CommandList
from textual.drivers.headless_driver import HeadlessDriver
from textual.geometry import Size
from textual.keys import _get_unicode_name_from_key
from textual.pilot import Pilot

from engine.api import MatrixRow
from tui.app import SlotlabApp
from tui.palette import Palette
from tui.screens.monitor import MonitorScreen

from .helpers import screen_text, settle

AppFactory = Callable[..., SlotlabApp]

# Everything a user can type, the ways out included: quitting is counted, not done (see the
# test), so one early `q` does not end it.
KEYS = [
    *"abcdefghijklmnopqrstuvwxyz",
    *"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    *"0123456789",
    "space", "plus", "minus", "equals_sign", "slash", "question_mark", "less_than_sign",
    "greater_than_sign", "left_square_bracket", "right_square_bracket", "enter", "escape",
    "tab", "shift+tab", "up", "down", "left", "right", "home", "end", "pageup", "pagedown",
    "backspace", "delete", "f1", "ctrl+p", "ctrl+r", "ctrl+q", "ctrl+c",
]  # fmt: skip
PRESSES = 10_000
BURST = 5


def instant_compare(*args: Any) -> list[MatrixRow]:
    strategies: list[str] = args[1]
    return [
        MatrixRow(
            strategy=s,
            runs=1,
            crash_rate=0.0,
            retries=0.0,
            stall_ns=0.0,
            latency_p50_ns=0,
            latency_p99_ns=0,
            verdicts={"ok": 1},
            internal_errors=0,
            violations={},
            exits={},
            window_mmio_exits=0,
        )
        for s in strategies
    ]


def key_event(key: str) -> events.Key:
    """The event a terminal sends for ``key`` (as Pilot.press builds it)."""
    try:
        char: str | None = unicodedata.lookup(_get_unicode_name_from_key(key))
    except KeyError:
        char = key if len(key) == 1 else None
    return events.Key(key, char)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "presses",
    [
        pytest.param(300, marks=pytest.mark.slow, id="300"),
        pytest.param(PRESSES, marks=pytest.mark.soak, id="10000"),
    ],
)
async def test_random_keys(app_factory: AppFactory, presses: int) -> None:
    """Keys arrive as fast as a key-masher types them: in bursts, the app catching up
    between bursts (Pilot.press would wait for an idle CPU after every key, which makes
    10,000 presses take many minutes and depends on wall time)."""
    rng = random.Random(20221)
    app = app_factory(compare_fn=instant_compare)
    quits: list[int] = []

    async def count_quit() -> None:
        quits.append(1)

    # `q`, ctrl+q and the palette's Quit all land here; test_keys covers a real quit.
    app.action_quit = count_quit  # type: ignore[method-assign]
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        driver = app._driver
        assert driver is not None
        for _ in range(0, presses, BURST):
            for _ in range(BURST):
                event = key_event(rng.choice(KEYS))
                event.set_sender(app)
                driver.send_message(event)
            await pilot._wait_for_screen()
        await pilot.pause()
        assert app.is_running
        assert quits  # the ways out were pressed too
        assert any(isinstance(s, MonitorScreen) for s in app.screen_stack)
        screen_text(app)  # the screen still renders


@pytest.mark.slow
@pytest.mark.asyncio
async def test_resize_storm(app_factory: AppFactory) -> None:
    rng = random.Random(7)
    app = app_factory()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        driver = app._driver
        assert isinstance(driver, HeadlessDriver)
        # A storm: bursts of resizes with no time to lay out in between (a window being
        # dragged), as Pilot.resize_terminal posts them but without its wait after each.
        for burst in range(60):
            for _ in range(5):
                size = Size(rng.randint(1, 220), rng.randint(1, 70))
                driver._size = size
                app.post_message(events.Resize(size, size))
            if burst % 3 == 0:
                await pilot.press("space")
            await pilot._wait_for_screen()
        await pilot.press("space", "2", "3", "4", "5", "1")
        for width, height in ((40, 12), (1, 1), (80, 24)):
            await pilot.resize_terminal(width, height)
            await pilot.pause()
            screen_text(app)
        assert app.is_running


@pytest.mark.asyncio
@pytest.mark.parametrize("view", ["1", "2", "3", "4", "5"])
async def test_every_view_at_40x12(app_factory: AppFactory, view: str) -> None:
    app = app_factory()
    async with app.run_test(size=(40, 12)) as pilot:
        await settle(app, pilot)
        await pilot.press(view, "space", "question_mark", "escape")
        await settle(app, pilot)
        await pilot.press("e")
        await app.host.wait_done()
        await pilot.pause()
        screen_text(app)
        assert app.is_running


@pytest.mark.asyncio
async def test_usable_at_80x24(app_factory: AppFactory) -> None:
    """Everything that matters fits: state, the map, the vCPUs, the log, the footer."""
    app = app_factory()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        text = screen_text(app)
        for needle in ("PAUSED", "active", "inactive", "rip ▲", "vCPU", "kvm->srcu", "REC", "Step"):
            assert needle in text, needle


@pytest.mark.asyncio
async def test_start_up_objects_are_frozen_for_the_apps_lifetime(app_factory: AppFactory) -> None:
    """The collector's full passes skip what lives as long as the app (they were the slowest
    frames at 64 x 1,024), and the app hands it back when it exits."""
    app = app_factory()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


async def open_palette(app: SlotlabApp, pilot: Pilot[Any], typed: str) -> Palette:
    await settle(app, pilot)
    await pilot.press("ctrl+p", *typed)
    palette = app.screen
    assert isinstance(palette, Palette)
    return palette


@pytest.mark.asyncio
async def test_a_palette_search_ending_after_escape_is_harmless(app_factory: AppFactory) -> None:
    """The palette's search worker may report after the palette is gone (found by the random
    keys): its last update must not take the app down."""
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        palette = await open_palette(app, pilot, "pause")
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen is not palette
        palette._list_visible = not palette._list_visible  # what the late worker does
        await settle(app, pilot)
        assert app.is_running


@pytest.mark.asyncio
async def test_a_palette_timer_firing_as_the_palette_closes_is_harmless(
    app_factory: AppFactory,
) -> None:
    """A widget's timer hands its callback to call_next when it fires, so the callback runs
    later still: the palette's "No matches found" ran once its command list was gone, which
    took the app down (found by the 2,000-key soak, seed 40000)."""
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        palette = await open_palette(app, pilot, "zzzq")
        palette._slotlab_dismissed = True  # what dismiss() marks first: the palette is closing
        await palette.query_one(CommandList).remove()
        palette._start_no_matches_countdown("zzzq")
        timer = palette._no_matches_timer
        assert timer is not None
        timer.stop()  # fired here, not after half a second of wall time
        await timer._tick(next_timer=0, count=0)
        await settle(app, pilot)
        assert app.is_running

"""Driving the app from tests without wall-clock waits."""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot

from engine.events import Command, Event
from engine.session import Session
from tui.app import SlotlabApp
from tui.screens.live import LiveScreen
from tui.screens.monitor import MonitorScreen


async def settle(app: SlotlabApp, pilot: Pilot[int]) -> None:
    """Until the engine waits for the UI, then until the UI has drawn it."""
    await app.settle()
    await pilot.pause()


async def press(app: SlotlabApp, pilot: Pilot[int], *keys: str) -> None:
    await pilot.press(*keys)
    await settle(app, pilot)


def session(app: SlotlabApp) -> Session:
    """The running model session behind the app's LiveSession (tests step its internals)."""
    live = app.host.live
    assert live is not None
    assert isinstance(live.session, Session)
    return live.session


def events(app: SlotlabApp) -> list[Event]:
    return list(session(app).recent)


def commands(app: SlotlabApp) -> list[Command]:
    return [e for e in events(app) if isinstance(e, Command)]


async def step(app: SlotlabApp, pilot: Pilot[int], count: int) -> None:
    """Advance the paused engine by about ``count`` events."""
    app.host.send("step", count=str(count))
    await settle(app, pilot)


async def finish(app: SlotlabApp, pilot: Pilot[int]) -> None:
    """Run flat out to the verdict (the `e` key)."""
    await pilot.press("e")
    await app.host.wait_done()
    app.refresh_now()
    await pilot.pause()


def monitor(app: SlotlabApp) -> MonitorScreen:
    screen = app.monitor
    assert screen is not None
    return screen


def live(app: SlotlabApp) -> LiveScreen:
    screen = app.monitor
    assert isinstance(screen, LiveScreen)
    return screen


def screen_text(app: SlotlabApp) -> str:
    """What the terminal shows, as plain text."""
    import io

    from rich.console import Console

    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        record=True,
        color_system="truecolor",
        legacy_windows=False,
        safe_box=False,
    )
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


async def step_until(
    app: SlotlabApp, pilot: Pilot[int], done: Callable[[], bool], limit: int = 400
) -> None:
    """Single-step the paused engine until ``done()`` (or fail after ``limit`` steps)."""
    for _ in range(limit):
        if done():
            return
        app.host.send("step", count="1")
        await app.settle()
    app.refresh_now()
    await pilot.pause()
    assert done(), f"not reached in {limit} steps"

"""Screen-stack discipline under keys that arrive faster than screens open: one of each
dialog at most, no app-level screen pushed over an open dialog, and Escape always finds the
way back to the monitor."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.command import CommandPalette

from tui.app import SlotlabApp
from tui.screens.compare import CompareScreen
from tui.screens.help import HelpScreen
from tui.screens.monitor import MonitorScreen

from .helpers import settle
from .test_robustness import instant_compare, key_event

AppFactory = Callable[..., SlotlabApp]


async def burst(app: SlotlabApp, *keys: str) -> None:
    """Keys posted together, as a terminal delivers fast typing: none waits for the screen
    the one before it opened."""
    driver = app._driver
    assert driver is not None
    for key in keys:
        event = key_event(key)
        event.set_sender(app)
        driver.send_message(event)


def stack_kinds(app: SlotlabApp) -> list[str]:
    return [type(s).__name__ for s in app.screen_stack]


async def back_to_monitor(app: SlotlabApp, pilot: Any) -> None:
    for _ in range(4):
        await pilot.press("escape")
        await pilot.pause()
    assert isinstance(app.screen, MonitorScreen), stack_kinds(app)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "keys",
    [
        ("ctrl+p", "c", "ctrl+p"),
        ("ctrl+p", "c", "ctrl+p", "c", "ctrl+p"),
        ("f1", "f1", "c", "f1"),
        ("c", "ctrl+p", "f1", "c"),
        ("slash", "f1", "ctrl+p", "f1"),
    ],
)
async def test_fast_keys_never_stack_a_screen_twice(
    app_factory: AppFactory, keys: tuple[str, ...]
) -> None:
    app = app_factory(compare_fn=instant_compare)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await burst(app, *keys)
        await pilot._wait_for_screen()
        await pilot.pause()
        assert app.is_running
        for kind in (CommandPalette, HelpScreen, CompareScreen):
            assert sum(isinstance(s, kind) for s in app.screen_stack) <= 1, stack_kinds(app)
        # A dialog owns the keys: nothing app-level was pushed on top of one.
        for lower, upper in zip(app.screen_stack, app.screen_stack[1:], strict=False):
            assert not isinstance(lower, CommandPalette | HelpScreen), stack_kinds(app)
            del upper
        await back_to_monitor(app, pilot)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running


@pytest.mark.asyncio
async def test_a_second_dismiss_never_pops_the_monitor(app_factory: AppFactory) -> None:
    """Screen.dismiss pops whatever is on top: a dialog dismissed twice in one burst (two
    Enters in Textual's own theme picker) used to pop the monitor and empty the stack."""
    app = app_factory(compare_fn=instant_compare)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("f1")
        await pilot.pause()
        dialog = app.screen
        assert isinstance(dialog, HelpScreen)
        dialog.dismiss()
        dialog.dismiss()
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen), stack_kinds(app)
        await pilot.press("ctrl+p", *"theme", "enter")
        await pilot.pause()
        await burst(app, "enter", "enter", "enter")
        await pilot._wait_for_screen()
        await pilot.pause()
        assert isinstance(app.screen, MonitorScreen), stack_kinds(app)

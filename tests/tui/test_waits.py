"""The TUI tests' waits are facts about the app, never the clock: a machine starved of CPU
makes a test slower, not red (tests/tui/conftest.py, tests/tui/quiesce.py)."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable
from typing import Any

import pytest
import textual.pilot

from tui.app import SlotlabApp

from .conftest import SCREEN_WAIT_S
from .helpers import press, settle

AppFactory = Callable[..., SlotlabApp]


@pytest.mark.asyncio
async def test_keys_and_pauses_never_give_up_on_a_slow_screen(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Textual's own limit is 30 s: the key storm at nice 19, beside two whole suites, got
    WaitForScreenTimeout from it."""
    timeouts: list[float | None] = []

    async def wait(tasks: Any, **kwargs: Any) -> Any:
        timeouts.append(kwargs.get("timeout"))
        return await asyncio.wait(tasks, **kwargs)

    spy = types.SimpleNamespace(**{**vars(asyncio), "wait": wait})
    monkeypatch.setattr(textual.pilot, "asyncio", spy)
    app = app_factory()
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await press(app, pilot, "space", "tab")
        await pilot.pause()
    assert timeouts
    assert min(t for t in timeouts if t is not None) >= SCREEN_WAIT_S

"""`--demo`: the default scenario, paused just before the first DELETE, with a hint."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.events import Command, IoctlEnter, MemslotChange
from tui.app import SlotlabApp
from tui.cli import build_parser, options_from_args
from tui.options import DEFAULT_SCENARIO, LaunchOptions

from .helpers import events, live, press, screen_text, session, settle

AppFactory = Callable[..., SlotlabApp]


def test_the_flag_starts_paused_in_demo_mode() -> None:
    options = options_from_args(build_parser().parse_args(["tui", "--demo"]))
    assert options.demo
    assert options.paused
    assert options.scenario == DEFAULT_SCENARIO
    assert options.faults == []


@pytest.mark.asyncio
async def test_demo_pauses_just_before_the_first_delete() -> None:
    app = SlotlabApp(LaunchOptions(demo=True, paused=True, record=False), keymap={})
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        last = events(app)[-1]
        assert isinstance(last, IoctlEnter)
        assert last.memory_size == 0  # a DELETE, entered and not yet applied
        assert not any(isinstance(e, MemslotChange) and e.change == "DELETE" for e in events(app))
        assert session(app).seq.pacing.paused
        assert "Paused just before the first DELETE: space steps one event" in screen_text(app)
        # Space: what follows starts with the DELETE's first step, the slot marked INVALID.
        await press(app, pilot, "space")
        after = [e for e in events(app) if e.seq > last.seq and not isinstance(e, Command)]
        assert isinstance(after[0], MemslotChange)
        assert after[0].change == "DELETE"
        assert live(app).options.demo

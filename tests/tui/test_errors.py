"""An engine exception becomes an error screen naming the log, never a traceback; quitting
from it exits with status 1."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.checker import Checker
from engine.events import Event, TxnBegin
from engine.log import read_log
from tui.app import SlotlabApp
from tui.screens.error import ErrorScreen

from .helpers import screen_text, settle

AppFactory = Callable[..., SlotlabApp]


def break_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checker blows up on the second transaction, deep inside an actor."""
    observe = Checker.observe

    def exploding(self: Checker, ev: Event) -> None:
        if isinstance(ev, TxnBegin) and ev.txn == 2:
            raise RuntimeError("checker exploded on txn 2")
        observe(self, ev)

    monkeypatch.setattr(Checker, "observe", exploding)


@pytest.mark.asyncio
async def test_engine_exception_shows_the_error_screen(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    break_the_engine(monkeypatch)
    log = tmp_path / "sessions" / "broken.jsonl"
    app = app_factory(log_path=str(log))
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("e")
        await app.host.wait_done()
        await pilot.pause()
        assert isinstance(app.screen, ErrorScreen)
        text = screen_text(app)
        assert "RuntimeError: checker exploded on txn 2" in text
        assert str(log) in text.replace("\n", "") or log.name in text
        assert "Traceback (most recent call last)" not in text
        assert "Details for a bug report" in text
        assert app.engine_error == "RuntimeError: checker exploded on txn 2"
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 1
    trace = log.with_suffix(".traceback.txt")
    assert "checker exploded" in trace.read_text()
    # The log up to the failure is intact and readable.
    recorded = read_log(log)
    assert recorded.verdict is None
    assert any(isinstance(e, TxnBegin) for e in recorded.events)


@pytest.mark.asyncio
async def test_error_without_recording_says_so(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    break_the_engine(monkeypatch)
    app = app_factory(record=False, log_path=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("e")
        await app.host.wait_done()
        await pilot.pause()
        assert isinstance(app.screen, ErrorScreen)
        assert "not recorded" in screen_text(app)

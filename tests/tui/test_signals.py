"""SIGINT, SIGTERM and SIGHUP end the TUI as `q` does (the driver restores the terminal), with the
status a shell expects (128 + the signal); Ctrl-C quits too."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest

from engine.log import read_log
from tui import entry
from tui.app import SlotlabApp

from .helpers import settle

AppFactory = Callable[..., SlotlabApp]


@pytest.fixture
def caught() -> Iterator[list[int]]:
    """A handler of the test's own for both signals, so a TUI that ignored them would fail
    this test instead of killing pytest; and it must be back once the app has gone."""
    seen: list[int] = []

    def record(signum: int, frame: object) -> None:
        seen.append(signum)

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {s: signal.signal(s, record) for s in signals}
    yield seen
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["INT", "TERM", "HUP"]
)
async def test_a_signal_ends_the_app_cleanly(
    app_factory: AppFactory, caught: list[int], sig: signal.Signals
) -> None:
    app = app_factory()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        os.kill(os.getpid(), sig)
        for _ in range(50):
            await pilot.pause()
            if not app.is_running:
                break
        assert not app.is_running
        assert caught == []  # the app took it
    assert app.return_code == 128 + sig
    assert not app.host.running  # trio finished before the loop stopped
    # The run's log ends as a headless run's does: an `interrupted` verdict, counters so far.
    log = read_log("sessions/test.jsonl")
    assert log.verdict is not None
    assert log.verdict.verdict == "interrupted"
    assert log.verdict.summary.events == len(log.event_lines)
    # The app's handler is gone again: the test's own is back.
    os.kill(os.getpid(), sig)
    assert caught == [sig]


@pytest.mark.asyncio
async def test_ctrl_c_quits(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app.is_running
    assert app.return_code == 0


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_while_slotlab_loads_ends_it_with_one_line(
    signum: signal.Signals,
    status: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The `slotlab` executable loads the engine and Textual first (a second or two on a busy
    machine); a Ctrl-C then is one line and the shell's status, and the command never runs."""
    ran: list[bool] = []

    def command() -> int:
        ran.append(True)
        return 0

    def load_while_signalled() -> Callable[[], int]:
        signal.raise_signal(signum)
        return command

    monkeypatch.setattr(entry, "_load", load_while_signalled)
    assert entry.main() == status
    assert capsys.readouterr().err == "slotlab: interrupted\n"
    assert ran == []

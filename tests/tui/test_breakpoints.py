"""Breakpoints in the TUI: the `b` form, the list on screen, --break, live and replayed runs.
The clock only moves when the test lets it (paused at boot, then resumed flat out)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input, OptionList

from engine.events import MemslotChange, SrcuGp
from tui.app import SlotlabApp
from tui.cli import main as cli_main
from tui.options import LaunchOptions
from tui.screens.breakpoints import BreakpointForm

from .helpers import finish, press, screen_text, settle

AppFactory = Callable[..., SlotlabApp]


async def _run(app: SlotlabApp, pilot: object) -> None:
    """Resume flat out (e), until a breakpoint holds the run or it ends."""
    await pilot.press("e")  # type: ignore[attr-defined]
    await settle(app, pilot)  # type: ignore[arg-type]


def _last_event(app: SlotlabApp) -> object:
    snap = app.host.snapshot()
    assert snap is not None
    return snap.events[-1]


@pytest.mark.asyncio
async def test_the_form_adds_lists_toggles_deletes_and_clears(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "b")
        assert isinstance(app.screen, BreakpointForm)
        await pilot.press(*"gp=half", "enter")
        await pilot.pause()
        assert "gp phase 'half'" in screen_text(app)
        box = app.screen.query_one("#bp-new", Input)
        box.value = ""
        for text in ("delete", "gp=flip", "gpa=0xa0000-0xbffff"):
            await pilot.press(*text, "enter")
        await pilot.pause()
        assert app.host.breakpoints.texts() == ["delete", "gp=flip", "gpa=0xa0000-0xbffff"]
        # To the list: t toggles, d deletes the highlighted one.
        await pilot.press("tab")
        await pilot.pause()
        assert isinstance(app.screen.focused, OptionList)
        await pilot.press("t")
        await pilot.pause()
        assert [e.enabled for e in app.host.breakpoints.entries] == [False, True, True]
        await pilot.press("down", "d")
        await pilot.pause()
        assert app.host.breakpoints.texts() == ["delete", "gpa=0xa0000-0xbffff"]
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, BreakpointForm)
        # Listed on the monitor, a disabled one in brackets.
        assert "breakpoints: (delete)  gpa=0xa0000-0xbffff" in screen_text(app)
        await press(app, pilot, "b")
        await pilot.press("tab", "x")
        await pilot.pause()
        assert app.host.breakpoints.entries == []
        await press(app, pilot, "escape")
        assert "breakpoints:" not in screen_text(app)


@pytest.mark.asyncio
async def test_a_live_run_stops_at_each_delete(app_factory: AppFactory) -> None:
    app = app_factory(scenario="pam-shadow", faults=[], breaks=["delete"])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        seen = []
        for _ in range(3):
            await _run(app, pilot)
            ev = _last_event(app)
            assert isinstance(ev, MemslotChange)
            assert ev.change == "DELETE"
            assert ev.step == "invalidate"
            seen.append(ev.seq)
            text = screen_text(app)
            assert f"stopped at delete at event #{ev.seq}" in text
            assert "PAUSED" in text
        assert seen == sorted(set(seen))
        # Space moves on one event from there; the stop line goes.
        await press(app, pilot, "space")
        assert _last_event(app).seq == seen[-1] + 1  # type: ignore[attr-defined]
        assert "stopped at" not in screen_text(app)


@pytest.mark.asyncio
async def test_a_verdict_breakpoint_stops_at_the_crash(app_factory: AppFactory) -> None:
    app = app_factory(breaks=["verdict"])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await _run(app, pilot)
        text = screen_text(app)
        assert "stopped at verdict ok -> crashed" in text
        # The picture is the instant of the crash, not the stopped VM after it.
        ev = _last_event(app)
        assert type(ev).__name__ in ("Exit", "UdInjected", "VmStopped", "Violation")


@pytest.mark.asyncio
async def test_breakpoints_stop_a_replay_too(app_factory: AppFactory, tmp_path: Path) -> None:
    log = str(tmp_path / "sessions" / "bp.jsonl")
    app = app_factory(scenario="pam-shadow", faults=[], log_path=log)
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await finish(app, pilot)
    replay = SlotlabApp(
        LaunchOptions(replay=log, paused=False, speed=float("inf"), breaks=["gp=flip"]),
        keymap={},
    )
    async with replay.run_test(size=(120, 40)) as pilot:
        await settle(replay, pilot)
        ev = _last_event(replay)
        assert isinstance(ev, SrcuGp)
        assert ev.phase == "flip"
        assert "stopped at gp=flip" in screen_text(replay)
        # p plays on to the next one.
        await press(replay, pilot, "p")
        nxt = _last_event(replay)
        assert isinstance(nxt, SrcuGp)
        assert nxt.phase == "flip"
        assert nxt.seq > ev.seq


@pytest.mark.parametrize(
    "argv",
    [
        ["--break", "nope"],
        ["tui", "--break", "gp=half"],
        ["tui", "--break=gpa=0x2000-0x1000"],
        ["replay", "x.jsonl", "--break", "delete=1"],
    ],
)
def test_a_bad_break_option_is_one_line_and_status_2(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        cli_main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "argument --break:" in err


def test_break_options_reach_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[LaunchOptions] = []

    def run_app(options: LaunchOptions, mouse: bool = True) -> int:
        started.append(options)
        return 0

    monkeypatch.setattr("tui.cli.run_app", run_app)
    assert cli_main(["--break", "delete", "--break", "exit=mmio"]) == 0
    assert cli_main(["tui", "--break", "gpa=0xA0000"]) == 0
    assert [o.breaks for o in started] == [["delete", "exit=mmio"], ["gpa=0xA0000"]]

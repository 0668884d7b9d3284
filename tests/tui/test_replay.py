"""Recorded live sessions replay byte for byte; the replay screen's timeline controls."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.widgets import Input

from engine.events import Command, Injected
from engine.log import read_log
from engine.runner import verify_log
from tui.app import SlotlabApp
from tui.cli import main as cli_main
from tui.options import LaunchOptions
from tui.screens.fault_form import FaultForm
from tui.screens.jump import JumpForm, parse_target
from tui.screens.replay import ReplayScreen
from tui.widgets.timeline import Timeline

from .helpers import finish, press, screen_text, session, settle

AppFactory = Callable[..., SlotlabApp]
ROOT = Path(__file__).resolve().parents[2]


async def _inject(app: SlotlabApp, pilot, key: str, **values: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.press(key)
    await pilot.pause()
    form = app.screen
    assert isinstance(form, FaultForm)
    for name, value in values.items():
        form.query_one(f"#param-{name}", Input).value = value
    await press(app, pilot, "enter")


async def record_session(app_factory: AppFactory, log: str) -> None:
    """A live session driven only by keys: steps, pause/resume, speed, five faults."""
    app = app_factory(log_path=log, faults=[], speed=1e-9)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "space", "space")
        await _inject(app, pilot, "s", duration="30us", vcpu="1")
        await press(app, pilot, "p", "p")  # resume (the clock barely moves), pause again
        await press(app, pilot, "space")
        await _inject(app, pilot, "g", delay="15us")
        await _inject(app, pilot, "d", delay="20us")
        await press(app, pilot, "plus", "minus", "minus")
        await press(app, pilot, "r")  # the race needs no form
        await press(app, pilot, "space", "space", "space")
        await finish(app, pilot)
        assert session(app).result is not None


_RECORDED: dict[str, bytes] = {}


async def recorded_session(app_factory: AppFactory, log: str) -> None:
    """record_session's log at `log`, recorded once per test process: the recording is
    deterministic (the next test replays it byte for byte), and the replay tests need its
    bytes, not the keys that made them again."""
    if "log" not in _RECORDED:
        await record_session(app_factory, log)
    _share(Path(log))


def _share(path: Path) -> None:
    """The first recording is kept; later ones are copies of it."""
    if "log" not in _RECORDED:
        _RECORDED["log"] = path.read_bytes()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_RECORDED["log"])


@pytest.mark.asyncio
async def test_live_session_with_key_faults_replays_to_identical_bytes(
    app_factory: AppFactory, tmp_path: Path
) -> None:
    log = str(tmp_path / "sessions" / "keys.jsonl")
    await record_session(app_factory, log)
    recorded = read_log(log)
    commands = [e for e in recorded.events if isinstance(e, Command)]
    assert [c.name for c in commands].count("inject") == 4
    # Space holds the pacing and records nothing; the rest are commands.
    assert {"pause", "resume", "speed"} <= {c.name for c in commands}
    assert "step" not in {c.name for c in commands}
    assert any(isinstance(e, Injected) and e.fault == "reader-stall" for e in recorded.events)
    assert recorded.verdict is not None
    assert verify_log(log).ok
    # The command a user types, in-process and in a fresh interpreter.
    assert cli_main(["replay", log, "--verify"]) == 0
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tui.cli", "replay", log, "--verify"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout
    assert "identical, byte for byte" in proc.stdout


def test_jump_targets() -> None:
    times = [0, 0, 10_000, 20_000, 45_000]
    assert parse_target("#3", 5, times) == 3
    assert parse_target("4", 5, times) == 4
    assert parse_target("99", 5, times) == 5
    assert parse_target("15us", 5, times) == 3
    assert parse_target("50%", 5, times) == 2
    with pytest.raises(ValueError, match="bad duration"):
        parse_target("soon", 5, times)


def _replay_app(log: str, paused: bool = True) -> SlotlabApp:
    return SlotlabApp(LaunchOptions(replay=log, paused=paused, speed=1e-5), keymap={})


def _position(app: SlotlabApp) -> int:
    """Events shown (a step or jump stops at its exact event, the engine a little later)."""
    live = app.host.live
    assert live is not None
    return live.position


@pytest.mark.asyncio
async def test_replay_controls(app_factory: AppFactory, tmp_path: Path) -> None:
    log = str(tmp_path / "sessions" / "rec.jsonl")
    await recorded_session(app_factory, log)
    total = len(read_log(log).event_lines)
    app = _replay_app(log)
    async with app.run_test(size=(110, 34)) as pilot:
        await settle(app, pilot)
        screen = app.monitor
        assert isinstance(screen, ReplayScreen)
        timeline = screen.query_one(Timeline)
        boot = _position(app)
        assert timeline.position == boot
        assert "REPLAY" in screen_text(app)
        assert "(not recorded)" in screen_text(app)

        await press(app, pilot, "space")
        assert _position(app) == boot + 1
        await press(app, pilot, "space", "space")
        assert _position(app) == boot + 3

        # Jump forward: runs flat out to the event and pauses there.
        await pilot.press("j")
        await pilot.pause()
        assert isinstance(app.screen, JumpForm)
        await pilot.press(*"#60", "enter")
        await settle(app, pilot)
        assert _position(app) == 60
        first_session = session(app)

        # Jump back: a new session, fast-forwarded.
        await press(app, pilot, "left_square_bracket")
        assert session(app) is not first_session
        assert _position(app) < 60
        back = _position(app)
        assert back >= 60 - total // 10 - 2

        await press(app, pilot, "B")
        assert _position(app) == boot

        # Speed: + and - change the replay's pacing, not the run.
        speed = app.monitor.driver.speed  # type: ignore[union-attr]
        await press(app, pilot, "plus")
        assert app.monitor.driver.speed > speed  # type: ignore[union-attr]
        await press(app, pilot, "minus", "minus")
        assert app.monitor.driver.speed < speed  # type: ignore[union-attr]

        # To the end: the replayed run matches the log, byte for byte.
        await pilot.press("e")
        await app.host.wait_done()
        app.refresh_now()
        await pilot.pause()
        assert _position(app) == total
        assert "identical to the log so far" in timeline.note
        assert timeline.state == "finished"
        assert "CRASHED" in screen_text(app) or "OK" in screen_text(app)

        # p on a finished replay plays it again from the start.
        await press(app, pilot, "p")
        assert app.host.running
        assert _position(app) < total


@pytest.mark.asyncio
async def test_timeline_click_seeks(app_factory: AppFactory, tmp_path: Path) -> None:
    log = str(tmp_path / "sessions" / "click.jsonl")
    await recorded_session(app_factory, log)
    total = len(read_log(log).event_lines)
    app = _replay_app(log)
    async with app.run_test(size=(110, 34)) as pilot:
        await settle(app, pilot)
        timeline = app.monitor.query_one(Timeline)  # type: ignore[union-attr]
        assert await pilot.click(timeline, offset=(2 + timeline._cols() // 2, 0))
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        assert abs(_position(app) - total // 2) <= total // 10 + 2


@pytest.mark.asyncio
async def test_replay_play_and_pause(app_factory: AppFactory, tmp_path: Path) -> None:
    log = str(tmp_path / "sessions" / "play.jsonl")
    await recorded_session(app_factory, log)
    app = _replay_app(log)
    async with app.run_test(size=(110, 34)) as pilot:
        await settle(app, pilot)
        screen = app.monitor
        assert isinstance(screen, ReplayScreen)
        # Play flat out (speed to inf), then the run is over and matches.
        for _ in range(30):
            await pilot.press("plus")
        await pilot.press("p")
        await app.host.wait_done()
        app.refresh_now()
        await pilot.pause()
        assert screen.driver.matcher is not None
        assert screen.driver.matcher.first_mismatch == -1
        assert screen.driver.matcher.count == len(read_log(log).event_lines)


@pytest.mark.asyncio
async def test_cut_short_log_stops_at_its_end(app_factory: AppFactory, tmp_path: Path) -> None:
    log = str(tmp_path / "sessions" / "cut.jsonl")
    app = app_factory(log_path=log)
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await press(app, pilot, "space", "space", "space")
    recorded = read_log(log)
    assert recorded.verdict is None  # quit mid-run: no verdict line
    total = len(recorded.event_lines)
    replay = _replay_app(log, paused=False)
    async with replay.run_test() as pilot:
        for _ in range(30):
            await pilot.press("plus")
        await settle(replay, pilot)
        assert _position(replay) == total
        assert replay.host.running  # held at the recording's last event, not run past it
        assert replay.monitor.driver.matcher.first_mismatch == -1  # type: ignore[union-attr]

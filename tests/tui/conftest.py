"""Fixtures for the TUI tests: a sessions folder of their own, and apps whose virtual clock
the test drives (paused at start, stepped or run flat out; never paced by wall time)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import textual.app
import textual.pilot
from textual.driver import Driver
from textual.notifications import Notification
from textual.widgets import Input

from tui.app import SlotlabApp
from tui.options import LaunchOptions

from .quiesce import post_now, until_quiet

NOTIFICATION_S = 3600.0
# How long the pilot waits for a screen's pending messages before it gives up: an hour, so a
# hang still ends the test, and no machine is ever that slow.
SCREEN_WAIT_S = 3600.0


@pytest.fixture(autouse=True)
def sessions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Logs go to a per-test folder; the working directory is the test's, so relative
    paths on screen are stable; no user keymap leaks in."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "sessions"
    monkeypatch.setenv("SLOTLAB_SESSIONS", str(folder))
    monkeypatch.delenv("SLOTLAB_KEYMAP", raising=False)
    monkeypatch.setenv("SLOTLAB_KEYMAP_FILE", "")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return folder


@pytest.fixture(autouse=True)
def pause_until_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    """`pilot.pause()` and every key wait for the app to handle what is pending and draw it,
    however loaded the machine is, and not a moment longer."""
    monkeypatch.setattr(textual.app, "wait_for_idle", until_quiet)
    monkeypatch.setattr(textual.pilot, "wait_for_idle", until_quiet)
    monkeypatch.setattr(Driver, "send_message", post_now)


@pytest.fixture(autouse=True)
def screens_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Textual's pilot gives up on a screen that has not handled its messages within 30
    wall-clock seconds (WaitForScreenTimeout), behind every key and pause. The key storm,
    starved at nice 19 beside two whole suites, took longer than that to get through five keys."""
    wait = textual.pilot.Pilot._wait_for_screen

    async def patient(self: textual.pilot.Pilot[Any]) -> bool:
        return await wait(self, SCREEN_WAIT_S)

    monkeypatch.setattr(textual.pilot.Pilot, "_wait_for_screen", patient)


@pytest.fixture(autouse=True)
def notifications_stay(monkeypatch: pytest.MonkeyPatch) -> None:
    """A notification lives for wall-clock seconds: on a loaded machine one settle() could
    outlast it, and a test that asserted it, or a screenshot that showed it, failed."""
    monkeypatch.setattr(Notification, "time_left", property(lambda _: NOTIFICATION_S))


@pytest.fixture(autouse=True)
def no_cursor_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    """A blinking cursor races screenshots."""
    monkeypatch.setattr(Input, "cursor_blink", False)


def make_app(**overrides: Any) -> SlotlabApp:
    """split under legacy with the race armed (a crash every run), paused at boot, recording
    to a fixed relative path."""
    compare_fn = overrides.pop("compare_fn", None)
    options = LaunchOptions(
        scenario="split", faults=["race"], paused=True, log_path="sessions/test.jsonl"
    )
    for key, value in overrides.items():
        setattr(options, key, value)
    if compare_fn is not None:
        return SlotlabApp(options, compare_fn=compare_fn, keymap={})
    return SlotlabApp(options, keymap={})


@pytest.fixture
def app_factory() -> Callable[..., SlotlabApp]:
    return make_app

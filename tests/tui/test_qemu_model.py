"""`slotlab qemu`'s model key: the traffic watched so far runs on the model as an ordinary live
session, and the watch view keeps following QEMU. A recorded QEMU 7.2 trace is written to
the trace file as if QEMU were writing it, so no QEMU is needed."""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

import tui.qemu_watch
from engine.importers import read_trace
from engine.importers.live import QemuProcess
from engine.scenarios import load_scenario
from tests.engine.helpers import ROOT
from tests.tui.helpers import commands, screen_text, settle
from tui.options import LaunchOptions
from tui.qemu_watch import QemuWatchApp
from tui.screens.help import HelpScreen
from tui.screens.live import LiveScreen
from tui.screens.qemu import QemuModelScreen, QemuWatchScreen

TRACE = ROOT / "engine" / "scenarios" / "captured" / "qemu72-pc-boot.qemu.log.gz"
FIRST_LINES = 2000  # the BIOS's PAM splits and the VGA BAR are in by then


class RecordedQemu(QemuProcess):
    """A QEMU that is a recorded trace, written out a chunk at a time."""

    def __init__(self, trace: Path) -> None:  # no process: nothing to start
        self.argv = ["qemu-system-x86_64", "-accel", "kvm", "-machine", "pc"]
        self.trace = trace
        with gzip.open(TRACE, "rt") as f:
            self.lines = f.read().splitlines(keepends=True)
        self.written = 0
        self.stopped = False
        trace.write_text("")

    def feed(self, upto: int) -> None:
        with self.trace.open("a") as f:
            f.writelines(self.lines[self.written : upto])
        self.written = max(self.written, upto)

    @property
    def pid(self) -> int:
        return 4242

    def exited(self) -> int | None:
        return 0 if self.stopped else None

    def stop(self, grace_s: float = 5.0) -> int:
        self.stopped = True
        return 0

    def last_error(self) -> str:
        return ""


def _status(app: QemuWatchApp) -> str:
    assert app.watch_screen is not None
    return str(app.watch_screen.query_one("#qstatus", Static).render())


async def _close_help(pilot: Pilot[int], app: QemuWatchApp) -> None:
    """Escape, then until the help screen is off the stack (keys before that go to it)."""
    await pilot.press("escape")
    for _ in range(200):
        if not any(isinstance(s, HelpScreen) for s in app.screen_stack):
            return
        await pilot.pause()
    raise AssertionError("the help screen did not close")


@pytest.mark.asyncio
async def test_m_runs_the_traffic_so_far_on_the_model_and_b_returns_to_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The model starts paused: paced on the wall clock, it could crash and end before the
    # test presses `r` on a slow enough machine.
    monkeypatch.setattr(
        tui.qemu_watch, "LaunchOptions", functools.partial(LaunchOptions, paused=True)
    )
    qemu = RecordedQemu(tmp_path / "vm.qemu.log")
    qemu.feed(FIRST_LINES)
    so_far = read_trace(str(qemu.trace))
    app = QemuWatchApp(qemu, tmp_path / "vm.toml", None, keymap={})
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, QemuWatchScreen)
        assert len(app.screen_stack) == 2  # Textual's default screen, then the watch
        assert f"{len(so_far.calls)} memslot calls" in _status(app)
        assert "memslot calls" in screen_text(app)
        await pilot.press("question_mark")  # help lists the key with the watch's own
        await pilot.pause()
        assert "Traffic so far on the model" in screen_text(app)
        await _close_help(pilot, app)

        await pilot.press("m")
        await settle(app, pilot)
        model = app.screen
        assert isinstance(model, QemuModelScreen)
        assert isinstance(model, LiveScreen)  # every key of the live monitor
        path = Path(model.options.scenario)
        assert path.parent == tmp_path
        # The importer's scenario of exactly the calls watched: boot, then one step each.
        sc = load_scenario(str(path))
        assert len(sc.sequence) == len(so_far.transactions) + 1
        assert model.options.strategy == "legacy"
        live = app.host.live
        assert live is not None
        assert live.session.config.scenario.name == sc.name
        assert app.host.running

        await pilot.press("question_mark")
        await pilot.pause()
        assert "Back to QEMU" in screen_text(app)
        await _close_help(pilot, app)
        await pilot.press("r")  # the race key, as in any live session
        await settle(app, pilot)
        assert [c.args for c in commands(app) if c.name == "inject"] == [
            {"fault": "race=window=2ms"}
        ]

        # QEMU goes on while the model runs; the app keeps reading its trace.
        qemu.feed(len(qemu.lines))
        app.poll_qemu()
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(app.screen, QemuWatchScreen)
        assert not app.host.running
        everything = read_trace(str(qemu.trace))
        assert len(everything.calls) > len(so_far.calls)
        assert f"{len(everything.calls)} memslot calls" in _status(app)

        await pilot.press("m")  # again: now with all of it
        await settle(app, pilot)
        assert isinstance(app.screen, QemuModelScreen)
        again = load_scenario(app.screen.options.scenario)
        assert len(again.sequence) == len(everything.transactions) + 1
        await pilot.press("b")
        await pilot.pause()
        await pilot.press("q")
    assert qemu.stopped
    assert app.result is not None
    assert app.result.calls == len(everything.calls)


@pytest.mark.asyncio
async def test_m_before_any_memslot_call_says_so(tmp_path: Path) -> None:
    qemu = RecordedQemu(tmp_path / "vm.qemu.log")
    qemu.feed(10)  # vCPU ioctls only
    app = QemuWatchApp(qemu, tmp_path / "vm.toml", None, keymap={})
    async with app.run_test(size=(140, 45)) as pilot:
        await pilot.pause()
        await pilot.press("m")
        await pilot.pause()
        assert isinstance(app.screen, QemuWatchScreen)
        assert any("no memslot call yet" in str(n.message) for n in app._notifications)
        await pilot.press("q")

"""How the main screens look (pytest-textual-snapshot): fixed sizes, fixed seeds, the
virtual clock paused and stepped, no cursor blink. Update with `pytest --snapshot-update`
after reviewing the diff report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input

from engine.runner import make_config, run_session
from tui.app import SlotlabApp
from tui.options import LaunchOptions
from tui.screens.compare import CompareScreen

from .helpers import session, step_until
from .test_compare import FakeCompare

SnapCompare = Callable[..., bool]
SIZE = (120, 36)


def _app(**overrides: Any) -> SlotlabApp:
    options = LaunchOptions(
        scenario="split", faults=["race"], paused=True, log_path="sessions/snapshot.jsonl"
    )
    compare_fn = overrides.pop("compare_fn", None)
    for key, value in overrides.items():
        setattr(options, key, value)
    if compare_fn is not None:
        return SlotlabApp(options, keymap={}, compare_fn=compare_fn)
    return SlotlabApp(options, keymap={})


def _into_the_window(app: SlotlabApp) -> Callable[[Pilot[int]], Any]:
    """Step until the legacy update has deleted the slot the vCPUs run from."""

    async def run_before(pilot: Pilot[int]) -> None:
        await app.settle()
        vm = session(app).vm
        await step_until(app, pilot, lambda: len(vm.active(0)) == 0)
        await app.settle()

    return run_before


def test_main_screen_mid_race(snap_compare: SnapCompare) -> None:
    app = _app()
    assert snap_compare(app, terminal_size=SIZE, run_before=_into_the_window(app))


def test_main_screen_at_80x24(snap_compare: SnapCompare) -> None:
    app = _app()
    assert snap_compare(app, terminal_size=(80, 24), run_before=_into_the_window(app))


def _to_the_verdict(app: SlotlabApp) -> Callable[[Pilot[int]], Any]:
    async def run_before(pilot: Pilot[int]) -> None:
        await app.settle()
        await pilot.press("e")
        await app.host.wait_done()
        app.refresh_now()

    return run_before


def test_crash_verdict(snap_compare: SnapCompare) -> None:
    app = _app()
    assert snap_compare(app, terminal_size=SIZE, run_before=_to_the_verdict(app))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_main_screen_mid_race_at(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    app = _app()
    assert snap_compare(app, terminal_size=size, run_before=_into_the_window(app))


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_crash_verdict_at(snap_compare: SnapCompare, size: tuple[int, int]) -> None:
    app = _app()
    assert snap_compare(app, terminal_size=size, run_before=_to_the_verdict(app))


def test_light_theme(snap_compare: SnapCompare) -> None:
    app = _app(theme="textual-light")
    assert snap_compare(app, terminal_size=SIZE, run_before=_into_the_window(app))


def test_slots_view(snap_compare: SnapCompare) -> None:
    app = _app()
    assert snap_compare(app, press=["2"], terminal_size=SIZE, run_before=_into_the_window(app))


def test_vcpus_view(snap_compare: SnapCompare) -> None:
    app = _app(strategy="inhibit", faults=[])

    async def run_before(pilot: Pilot[int]) -> None:
        await app.settle()
        model = session(app)
        await step_until(app, pilot, lambda: model.vmm.inhibited, limit=3000)

    assert snap_compare(app, press=["3"], terminal_size=SIZE, run_before=run_before)


def test_srcu_view_with_a_stalled_reader(snap_compare: SnapCompare) -> None:
    app = _app(faults=[])

    async def run_before(pilot: Pilot[int]) -> None:
        await app.settle()
        app.host.send("inject", fault="reader-stall=vcpu=0,duration=300us")
        await app.settle()
        srcu = session(app).vm.srcu

        def held_up() -> bool:
            gp = srcu.gp
            return gp is not None and gp.phase == "scan2" and bool(gp.waiting_on())

        await step_until(app, pilot, held_up, limit=3000)

    assert snap_compare(app, press=["4"], terminal_size=SIZE, run_before=run_before)


def test_events_view_filtered_with_details(snap_compare: SnapCompare) -> None:
    app = _app()

    async def run_before(pilot: Pilot[int]) -> None:
        await _into_the_window(app)(pilot)
        await pilot.press("slash", *"fault", "enter", "up")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_fault_form(snap_compare: SnapCompare) -> None:
    app = _app()

    async def run_before(pilot: Pilot[int]) -> None:
        await app.settle()
        await pilot.press("s")
        await pilot.pause()
        app.screen.query_one("#param-duration", Input).value = "1ms"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_replay_screen(snap_compare: SnapCompare) -> None:
    log = Path("sessions") / "replayed.jsonl"
    run_session(make_config("split", "legacy", faults=["race"]), str(log))
    app = SlotlabApp(LaunchOptions(replay=str(log), paused=True), keymap={})

    async def run_before(pilot: Pilot[int]) -> None:
        await app.settle()
        await pilot.press("j")
        await pilot.pause()
        await pilot.press(*"#40", "enter")
        await app.settle()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compare_screen(snap_compare: SnapCompare) -> None:
    app = _app(compare_fn=FakeCompare())

    async def run_before(pilot: Pilot[int]) -> None:
        await app.settle()
        await pilot.press("c")
        screen = app.screen
        assert isinstance(screen, CompareScreen)
        # The matrix arrives from a worker thread, then as a message: wait for the rows it
        # draws, in rounds of the app's own work, never in seconds.
        for _ in range(100):
            await app.workers.wait_for_complete()
            await pilot.pause()
            if screen.rows:
                break
        assert screen.rows, "the compare worker never delivered its matrix"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare: SnapCompare) -> None:
    app = _app()
    assert snap_compare(app, press=["question_mark"], terminal_size=SIZE)

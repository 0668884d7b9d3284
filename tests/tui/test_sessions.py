"""Switching strategy or scenario restarts the session; the verdict explains the crash;
every session is recorded where the footer says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.events import Event, MemslotChange, SwapDone, SwapPublish
from engine.log import read_log
from tui.app import SlotlabApp
from tui.screens.choose import ChoiceScreen
from tui.widgets.status import RecBar, VerdictBanner

from .helpers import (
    events,
    finish,
    live,
    press,
    screen_text,
    session,
    settle,
    step_until,
)

AppFactory = Callable[..., SlotlabApp]


def _files(folder: Path) -> list[Path]:
    return list(folder.iterdir()) if folder.exists() else []


def _rec_text(app: SlotlabApp) -> str:
    return str(live(app).query_one(RecBar).render())


@pytest.mark.asyncio
async def test_recording_is_on_and_the_footer_says_where(
    app_factory: AppFactory, sessions: Path
) -> None:
    app = app_factory(log_path=None)  # the default name, in SLOTLAB_SESSIONS
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        path = live(app).log_path
        assert path is not None
        assert Path(path).parent == sessions
        assert Path(path).name.endswith("-split-legacy.jsonl")
        assert path in _rec_text(app)
        await finish(app, pilot)
    log = read_log(path)
    assert log.header.scenario == "split"
    assert log.verdict is not None


@pytest.mark.asyncio
async def test_no_log_means_no_file(app_factory: AppFactory, sessions: Path) -> None:
    app = app_factory(record=False, log_path=None)
    async with app.run_test() as pilot:
        await settle(app, pilot)
        assert "not recording" in _rec_text(app)
    assert not _files(sessions)


@pytest.mark.asyncio
async def test_strategy_switch_restarts_under_the_new_strategy(
    app_factory: AppFactory, sessions: Path
) -> None:
    app = app_factory(log_path=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        first_log = live(app).log_path
        first = session(app)
        await pilot.press("S")
        await pilot.pause()
        chooser = app.screen
        assert isinstance(chooser, ChoiceScreen)
        names = [value for value, _ in chooser.choices]
        await pilot.press(*["down"] * (names.index("inhibit") - names.index("legacy")), "enter")
        await settle(app, pilot)
        assert session(app) is not first
        assert session(app).config.strategy == "inhibit"
        assert live(app).log_path != first_log
        assert "split·inhibit" in screen_text(app)
        await finish(app, pilot)
        assert session(app).result is not None
        assert session(app).result.verdict == "ok"  # type: ignore[union-attr]
    assert read_log(first_log).header.strategy == "legacy"  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_scenario_switch_from_the_palette(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"switch scenario: dirty-log")
        await pilot.pause()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await settle(app, pilot)
        assert session(app).config.scenario.name == "dirty-log"
        assert live(app).options.scenario == "dirty-log"


@pytest.mark.asyncio
async def test_crash_verdict_explains_in_kernel_terms(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        banner = live(app).query_one(VerdictBanner)
        assert not banner.display
        await finish(app, pilot)
        assert banner.display
        verdict = banner.verdict
        assert verdict is not None
        assert verdict.final
        assert verdict.verdict == "crashed"
        text = screen_text(app)
        assert "CRASHED" in text
        # Which vCPU, which GPA, which ioctl opened the window, how long.
        assert "vcpu1" in verdict.explanation
        # The loop is inc, the doorbell load, jmp: the fetch may fail at any of them.
        assert any(f"RIP {rip:#x}" in verdict.explanation for rip in (0x1000, 0x1004, 0x1008))
        assert "KVM_SET_USER_MEMORY_REGION(slot 0, memory_size 0)" in verdict.explanation
        assert "before the fault" in verdict.explanation
        assert "KVM_EXIT_INTERNAL_ERROR" in text


@pytest.mark.asyncio
async def test_ctrl_r_restarts_with_the_same_settings(app_factory: AppFactory) -> None:
    app = app_factory(log_path=None)
    async with app.run_test() as pilot:
        await settle(app, pilot)
        await finish(app, pilot)
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert app.host.running
        assert session(app).result is None
        assert not live(app).query_one(VerdictBanner).display


@pytest.mark.asyncio
async def test_step_into_the_window_shows_the_update_in_flight(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        # Into the window: slot 0's INVALID copy is published and its grace period pending.
        await step_until(app, pilot, lambda: _invalidating_slot_0(events(app)))
        text = screen_text(app)
        assert "txn 2->split" in text
        assert "DELETE slot 0" in text
        assert "bit63 UPDATE" in text
        await press(app, pilot, "space")


def _invalidating_slot_0(history: list[Event]) -> bool:
    deleting = any(
        isinstance(e, MemslotChange) and e.id == 0 and e.change == "DELETE" for e in history
    )
    swaps = [e for e in history if isinstance(e, SwapPublish | SwapDone)]
    return deleting and bool(swaps) and isinstance(swaps[-1], SwapPublish)

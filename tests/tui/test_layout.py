"""Layout that fits: at 80x24 the verdict wraps at a sentence, the log stays on screen after
a crash and the footer keeps the keys that matter; at 120x40 the events are whole; at 40x12
the screen asks for a larger terminal."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tui.app import SlotlabApp
from tui.widgets.event_log import EventLog
from tui.widgets.status import VerdictBanner, whole_sentences

from .helpers import finish, live, screen_text, settle

AppFactory = Callable[..., SlotlabApp]


def test_whole_sentences_never_cut_one() -> None:
    text = "One two three. Four five six seven. Eight."
    assert whole_sentences(text, 20, 1) == ("One two three.", True)
    assert whole_sentences(text, 20, 2) == ("One two three. Four five six seven.", True)
    assert whole_sentences(text, 80, 1) == (text, False)


@pytest.mark.asyncio
async def test_80x24_after_a_crash(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await finish(app, pilot)
        text = screen_text(app)
        lines = text.splitlines()
        banner = live(app).query_one(VerdictBanner)
        assert banner.verdict is not None
        assert banner.verdict.verdict == "crashed"
        # The verdict ends at a full stop, and says where the rest is.
        shown = " ".join(line.strip("█ ") for line in lines[1:5])
        assert "KVM_INTERNAL_ERROR_EMULATION)." in shown
        assert "(v: the whole verdict)" in shown
        # The event log is still there, with the crash in it.
        log = live(app).query_one("#ov-log", EventLog)
        assert log.size.height >= 3
        assert "vm_stopped" in text
        # The footer keeps the keys a presenter needs.
        footer = lines[-1]
        for key in ("q Quit", "? Help", "c Compare", "p Pause", "space Step", "r Race"):
            assert key in footer, footer
        # v shows all of it.
        await pilot.press("v")
        await pilot.pause()
        whole = banner.verdict.explanation
        assert whole.rstrip(".").split()[-1] in " ".join(screen_text(app).split())


@pytest.mark.asyncio
async def test_120x40_event_messages_are_whole(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await finish(app, pilot)
        await pilot.press("5")
        await pilot.pause()
        text = screen_text(app)
        # Which vCPU dies, and on which instruction of the loop, is the run's; the line is whole.
        assert re.search(r"fetch fault at 0x[0-9a-f]+: emulation_failure", text)
        assert re.search(
            r"VM stopped: KVM_EXIT_INTERNAL_ERROR on vcpu\d at RIP 0x[0-9a-f]+: QEMU stops the VM",
            text,
        )
        await pilot.press("1")
        await pilot.pause()
        assert "expedited" in screen_text(app)


@pytest.mark.asyncio
async def test_40x12_asks_for_a_larger_terminal(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(40, 12)) as pilot:
        await settle(app, pilot)
        await finish(app, pilot)
        text = screen_text(app)
        assert "enlarge the terminal" in text
        assert "CRASHED" not in text  # nothing half-drawn around it
        await pilot.resize_terminal(100, 30)
        await pilot.pause()
        text = screen_text(app)
        assert "enlarge the terminal" not in text
        assert "CRASHED" in text

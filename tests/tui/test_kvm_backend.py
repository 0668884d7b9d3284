"""`slotlab tui --backend kvm`: the same monitor on the machine's /dev/kvm, in real time.
Skipped, with the reason, where /dev/kvm is not usable."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.api import open_replay
from engine.backends.kvm.ioctl import kvm_usable
from engine.log import read_log
from tui import cli
from tui.app import SlotlabApp
from tui.options import LaunchOptions

from .helpers import screen_text

USABLE, REASON = kvm_usable()
pytestmark = pytest.mark.skipif(not USABLE, reason=f"/dev/kvm: {REASON}")
AppFactory = Callable[..., SlotlabApp]


@pytest.mark.asyncio
async def test_the_race_on_real_kvm(tmp_path: Path) -> None:
    log = tmp_path / "sessions" / "kvm.jsonl"
    app = SlotlabApp(
        LaunchOptions(backend="kvm", log_path=str(log), duration_ns=5_000_000_000), keymap={}
    )
    async with app.run_test(size=(120, 36)) as pilot:
        # Real time: the run ends by itself (the race usually crashes it within a second;
        # inhibit-free legacy can survive, then the duration ends it).
        outcome = await asyncio.wait_for(app.host.wait_done(), 30)
        assert outcome is not None
        app.refresh_now()
        await pilot.pause()
        text = screen_text(app)
        assert "REAL KVM" in text
        assert "not visible" in text  # SRCU and the kernel's sets are not shown as if known
        snap = app.host.snapshot()
        assert snap is not None
        assert snap.backend == "kvm"
        assert snap.finished
        assert snap.verdict is not None
        assert snap.verdict.verdict in ("crashed", "ok")
        # The clock keys do nothing on a real VM.
        await pilot.press("p", "space", "plus")
        await pilot.pause()
    recorded = read_log(log)
    assert recorded.header.host["backend"] == "kvm"
    with pytest.raises(ValueError, match="cannot be replayed"):
        open_replay(str(log))


def _recorder(seen: list[LaunchOptions]) -> Callable[..., int]:
    """A stand-in for cli.run_app that records the options it was given."""

    def run_app(options: LaunchOptions, mouse: bool = True) -> int:
        seen.append(options)
        return 0

    return run_app


def test_cli_accepts_the_kvm_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[LaunchOptions] = []
    monkeypatch.setattr(cli, "run_app", _recorder(seen))
    assert cli.main(["tui", "--backend", "kvm", "--strategy", "inhibit"]) == 0
    assert seen[0].backend == "kvm"
    # What real KVM cannot do is refused up front, in one line.
    assert cli.main(["tui", "--backend", "kvm", "--strategy", "atomic-list"]) == 2

"""The palette's Screenshot command saves an SVG without a ~/Downloads folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tui.app import SlotlabApp

from .helpers import settle

AppFactory = Callable[..., SlotlabApp]


@pytest.mark.asyncio
async def test_screenshot_is_saved_without_a_downloads_folder(
    app_factory: AppFactory,
    sessions: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DOWNLOAD_DIR", raising=False)
    app = app_factory(record=False)
    notes: list[str] = []
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        real_notify = app.notify

        def spy(message: str, **kwargs: object) -> None:
            notes.append(str(message))
            real_notify(message, **kwargs)  # type: ignore[arg-type]

        app.notify = spy  # type: ignore[method-assign]
        await pilot.press("ctrl+p", *"screenshot", "enter")
        for _ in range(100):
            await pilot.pause(0.01)
            if notes:
                break
    check_saved(home, sessions, notes)


def check_saved(home: Path, sessions: Path, notes: list[str]) -> None:
    assert not (home / "Downloads").exists()
    shots = list(sessions.glob("*.svg"))
    assert len(shots) == 1, notes
    assert shots[0].read_text().startswith("<svg")
    assert any("Saved screenshot" in n and str(sessions.name) in n for n in notes), notes

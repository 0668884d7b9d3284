"""A frame redraws what changed, and lays the screen out again only when a bar appears or
goes: a layout pass sizes and places every widget, and one per frame slowed every frame."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.widget import Widget

from tui.app import SlotlabApp

from .helpers import settle, step


@pytest.mark.asyncio
async def test_frames_of_a_running_session_lay_nothing_out(
    app_factory: Callable[..., SlotlabApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_factory()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        laid_out: list[str] = []
        refresh = Widget.refresh

        def spy(self: Widget, *regions: Any, layout: bool = False, **kw: Any) -> Widget:
            if layout:
                laid_out.append(f"{type(self).__name__}#{self.id}")
            return refresh(self, *regions, layout=layout, **kw)

        monkeypatch.setattr(Widget, "refresh", spy)
        for _ in range(5):
            await step(app, pilot, 20)
        snap = app.host.snapshot()
        assert snap is not None
        assert snap.verdict is None  # no banner came up meanwhile
        assert laid_out == []

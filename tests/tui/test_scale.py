"""64 vCPUs over 1,024 memslots: every view renders (the Line API keeps it cheap; how cheap
is a benchmark, tui.bench, not a test)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tui.app import SlotlabApp
from tui.scale import scale_scenario_text, write_scale_scenario
from tui.widgets.slot_map import SlotMap
from tui.widgets.slot_table import SlotTable
from tui.widgets.vcpu_panel import VcpuPanel

from .helpers import live, press, screen_text, settle, step

AppFactory = Callable[..., SlotlabApp]


def test_scale_scenario_loads() -> None:
    from engine.scenarios import parse_scenario

    sc = parse_scenario(scale_scenario_text(16, 4), "scale.toml")
    assert sc.vcpus == 4
    assert len(sc.layouts["plain"].regions) == 16


@pytest.mark.slow
@pytest.mark.asyncio
async def test_64_vcpus_by_1024_slots(app_factory: AppFactory, tmp_path: Path) -> None:
    path = write_scale_scenario(tmp_path)
    app = app_factory(scenario=str(path), faults=[], record=False)
    async with app.run_test(size=(160, 50)) as pilot:
        await settle(app, pilot)
        await step(app, pilot, 200)
        snap = app.host.snapshot()
        assert snap is not None
        assert len(snap.vcpus) == 64
        assert len(snap.spaces[0].active.slots) == 1024
        screen = live(app)
        assert len(screen.query_one("#ov-vcpus", VcpuPanel).rows) == 65
        for view in ("2", "3", "4", "5", "1"):
            await press(app, pilot, view)
            screen_text(app)
        table = screen.query_one("#table", SlotTable)
        assert len(table.rows) >= 1024
        # Zoomed in far enough, single slots get their own labels.
        await press(app, pilot, "z", "z", "z", "z", "z", "z")
        labels = next(
            m.render_row(k, 160).text
            for m in [screen.query_one("#ov-map", SlotMap)]
            for k in m.rows
            if k[0] == "labels"  # type: ignore[index]
        )
        assert ":ram" in labels

"""The vCPU panel (state, RIP, SRCU index, exits and rates) and the SRCU panel (counts per
index, the grace period's phase and duration, the readers holding it up)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tui.app import SlotlabApp
from tui.widgets.srcu_panel import SrcuPanel
from tui.widgets.vcpu_panel import ACTIVITY, VcpuPanel

from .helpers import live, press, session, settle, step_until

AppFactory = Callable[..., SlotlabApp]


def panel_text(panel: VcpuPanel | SrcuPanel, width: int = 120) -> list[str]:
    return [panel.render_row(key, width).text for key in panel.rows]


def activities(app: SlotlabApp) -> set[str]:
    snap = app.host.snapshot()
    assert snap is not None
    return {v.activity for v in snap.vcpus}


@pytest.mark.asyncio
async def test_vcpu_rows_show_state_rip_srcu_and_exits(app_factory: AppFactory) -> None:
    app = app_factory(scenario="bar-overlay", strategy="inhibit", faults=[])
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "3")
        panel = live(app).query_one("#vcpus-panel", VcpuPanel)
        vcpus = session(app).vcpus

        await step_until(app, pilot, lambda: any(v.exits["KVM_EXIT_MMIO"] for v in vcpus), 3000)
        await step_until(app, pilot, lambda: "mmio" in activities(app), 3000)
        text = panel_text(panel)
        assert text[0].split()[:4] == ["vCPU", "state", "RIP", "data"]
        mmio_rows = [t for t in text if ACTIVITY["mmio"][1] in t]
        assert mmio_rows
        assert "MMIO" in mmio_rows[0]
        assert "/ms" in text[0] or "(per ms)" in text[0]
        assert "(" in mmio_rows[0]  # a rate next to the count
        # RIP and the data GPA in hex.
        assert "0x48000" in " ".join(text)

        await step_until(app, pilot, lambda: any(v.srcu_idx >= 0 for v in vcpus), 3000)
        holder = next(v for v in vcpus if v.srcu_idx >= 0)
        row = panel_text(panel)[holder.index + 1]
        assert row.split()[0] == str(holder.index)
        assert f" {holder.srcu_idx} " in row


@pytest.mark.asyncio
async def test_dead_and_retrying_vcpus(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        await step_until(app, pilot, lambda: "retrying" in activities(app))
        text = " ".join(panel_text(live(app).query_one("#ov-vcpus", VcpuPanel)))
        assert "↻ retrying" in text
        await pilot.press("e")
        await app.host.wait_done()
        app.refresh_now()
        await pilot.pause()
        text = " ".join(panel_text(live(app).query_one("#ov-vcpus", VcpuPanel)))
        assert f"{ACTIVITY['dead'][0]} dead" in text
        assert "INTERNAL_ERROR 1" in text


@pytest.mark.asyncio
async def test_blocked_vcpus_under_inhibit(app_factory: AppFactory) -> None:
    app = app_factory(strategy="inhibit", faults=[])
    async with app.run_test(size=(130, 40)) as pilot:
        await settle(app, pilot)
        await step_until(app, pilot, lambda: "blocked" in activities(app), 3000)
        text = " ".join(panel_text(live(app).query_one("#ov-vcpus", VcpuPanel)))
        assert "‖ blocked" in text
        assert "vCPUs inhibited" in str(live(app).query_one("#status").render())


@pytest.mark.asyncio
async def test_srcu_panel_shows_a_stalled_reader_holding_up_the_grace_period(
    app_factory: AppFactory,
) -> None:
    # Under legacy the vCPUs stay in KVM_RUN through the update, so a stalled exit handler
    # holds kvm->srcu while the swap waits for its grace period.
    app = app_factory(faults=[])
    async with app.run_test(size=(130, 44)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "4")
        panel = live(app).query_one("#srcu-panel", SrcuPanel)
        text = panel_text(panel)
        assert text[0].startswith(" kvm->srcu srcu_idx")
        assert "locks" in text[1]
        assert "unlocks" in text[1]
        # A long stall on vcpu0, then wait for a grace period that has to wait for it.
        await pilot.press("s")
        await pilot.pause()
        from textual.widgets import Input

        app.screen.query_one("#param-duration", Input).value = "300us"
        await press(app, pilot, "enter")
        srcu = session(app).vm.srcu

        def held_up() -> bool:
            gp = srcu.gp
            return gp is not None and gp.phase == "scan2" and "vcpu0" in gp.waiting_on()

        await step_until(app, pilot, held_up, limit=5000)
        shown = "\n".join(panel_text(panel))
        assert "[✓SCAN1" in shown
        assert "[✓flip]" in shown
        assert "[▶SCAN2" in shown
        assert "held up by vcpu0 idx 1 40.9us" in shown  # since the stall began
        assert "holding up the grace period" in shown
        assert "so far" in shown
        # The counts: the old index still has a reader in it.
        snap = app.host.snapshot()
        assert snap is not None
        old = 1 - snap.srcu.current_index
        assert snap.srcu.lock_count[old] - snap.srcu.unlock_count[old] >= 1
        assert "draining" in shown

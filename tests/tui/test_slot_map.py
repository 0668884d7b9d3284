"""The slot map: states by glyph and colour, vCPU markers, zoom and pan, picking a GPA; the
table of both sets with generations and bit 63."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from engine.model import constants as c
from engine.snapshot import SlotView
from tui.app import SlotlabApp
from tui.widgets.slot_map import (
    ACTIVE,
    CLASS,
    GLYPH,
    HOLE,
    INVALID,
    MMIO,
    READONLY,
    SlotMap,
    paint,
    ruler_ticks,
    slot_code,
)
from tui.widgets.slot_table import SlotTable

from .helpers import live, press, session, settle, step_until

AppFactory = Callable[..., SlotlabApp]


def map_rows(m: SlotMap) -> dict[str, str]:
    """Row title -> the row's text (first address space)."""
    out: dict[str, str] = {}
    width = m.size.width
    for key in m.rows:
        assert isinstance(key, tuple)
        text = m.render_row(key, width).text
        title = text[:10].strip()
        if key[0] in ("head", "info", "legend"):
            title = key[0] if key[0] != "head" else text.split()[0]
            out.setdefault(title, text)
            continue
        out.setdefault(title, text[10:])
    return out


def test_paint_takes_the_most_alarming_state_per_column() -> None:
    spans = [(0, 100, ACTIVE), (100, 200, INVALID), (150, 160, HOLE)]
    cells = paint(4, 0, 200, spans)
    assert cells == [ACTIVE, ACTIVE, INVALID, HOLE]


def test_each_state_has_its_own_glyph_and_colour_class() -> None:
    assert len(set(GLYPH.values())) == len(GLYPH)
    assert len(set(CLASS.values())) == len(CLASS)


def test_slot_codes() -> None:
    base = SlotView(0, 0, 16, 0, 0)
    assert slot_code(base) == ACTIVE
    assert slot_code(base._replace(flags=c.KVM_MEM_READONLY)) == READONLY
    assert slot_code(base._replace(flags=c.KVM_MEMSLOT_INVALID)) == INVALID


def test_ruler_ticks_are_round() -> None:
    ticks = ruler_ticks(0, 0x20000, 64)
    assert ticks[0] == (0, "0x0")
    assert "0x10000" in [label for _, label in ticks]


@pytest.mark.asyncio
async def test_invalid_then_deleted_during_a_legacy_update(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(app, pilot)
        screen = live(app)
        m = screen.query_one("#ov-map", SlotMap)
        vm = session(app).vm

        def invalid_published() -> bool:
            return any(s.invalid for s in vm.active(0))

        await step_until(app, pilot, invalid_published)
        rows = map_rows(m)
        assert GLYPH[INVALID] in rows["active"]
        assert "INVALID" in rows["slots"]
        assert "bit63 UPDATE" in rows["as0"]

        def deleted() -> bool:
            return len(vm.active(0)) == 0

        await step_until(app, pilot, deleted)
        rows = map_rows(m)
        assert GLYPH[HOLE] * 10 in rows["active"]
        assert "no memslot" in rows["slots"]
        # The vCPUs' RIP (0x1000) sits in the hole: the race, on screen.
        rip_row = rows["rip ▲"]
        assert rip_row.strip() in ("*", "0", "1")
        assert rip_row.index(rip_row.strip()) < len(rip_row) // 8
        # The in-flight transaction's target layout has the read-only shadow range.
        assert GLYPH[READONLY] in rows["vmm next"]
        # Colour, not only the glyph: INVALID and a hole use different styles.
        assert m.style(CLASS[HOLE]) != m.style(CLASS[ACTIVE])


@pytest.mark.asyncio
async def test_mmio_in_the_vmm_view(app_factory: AppFactory) -> None:
    app = app_factory(scenario="smram-toggle", faults=[])
    async with app.run_test(size=(100, 40)) as pilot:
        await settle(app, pilot)
        rows = map_rows(live(app).query_one("#ov-map", SlotMap))
        assert GLYPH[MMIO] in rows["vmm"]


@pytest.mark.asyncio
async def test_dirty_logging_slot(app_factory: AppFactory) -> None:
    app = app_factory(scenario="dirty-log", faults=[])
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(app, pilot)
        vm = session(app).vm

        def logging() -> bool:
            return any(s.flags & c.KVM_MEM_LOG_DIRTY_PAGES for s in vm.active(0))

        await step_until(app, pilot, logging, limit=2000)
        rows = map_rows(live(app).query_one("#ov-map", SlotMap))
        assert "≈" in rows["active"]


@pytest.mark.asyncio
async def test_zoom_pan_and_reset(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(app, pilot)
        m = live(app).query_one("#ov-map", SlotMap)
        space = app.host.snapshot().spaces[0]  # type: ignore[union-attr]
        # split's RAM, and the device register its guest polls just above it
        span = 0x21000
        assert m.window_of(space) == (0, span)
        await press(app, pilot, "z", "z")
        lo, hi = m.window_of(space)
        assert hi - lo == span // 4
        assert "zoom x4" in map_rows(m)["as0"]
        await press(app, pilot, "greater_than_sign")
        assert m.window_of(space)[0] > lo
        await press(app, pilot, *["less_than_sign"] * 10)
        assert m.window_of(space)[0] == 0  # clamped at the start
        await press(app, pilot, "Z")
        assert m.window_of(space)[1] - m.window_of(space)[0] == span // 2
        await press(app, pilot, "0")
        assert m.window_of(space) == (0, span)


@pytest.mark.asyncio
async def test_click_inspects_a_gpa(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(100, 34)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "2")  # the Slots view: full map with inspector and legend
        m = live(app).query_one("#map", SlotMap)
        active_row = next(i for i, k in enumerate(m.rows) if k[1:3] == (0, "active"))  # type: ignore[index]
        assert await pilot.click(m, offset=(12, active_row))
        await pilot.pause()
        text = " ".join(map_rows(m).values())
        assert "slot 0 [0x0, 0x20000)" in text
        assert "VMM: pc.ram (ram)" in text
        assert "read-only" in text  # the legend


@pytest.mark.asyncio
async def test_table_shows_both_sets_generations_and_bit_63(app_factory: AppFactory) -> None:
    app = app_factory()
    async with app.run_test(size=(110, 34)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "2")
        table = live(app).query_one("#table", SlotTable)
        vm = session(app).vm

        def in_progress() -> bool:
            return bool(vm.active(0).generation & c.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS)

        await step_until(app, pilot, in_progress)
        texts = [table.render_row(k, 110).text for k in table.rows]
        assert any("as0 active" in t and "bit 63 SET: update in progress" in t for t in texts)
        assert any("as0 inactive" in t and "bit 63 clear" in t for t in texts)
        assert any("INVALID" in t for t in texts)


@pytest.mark.asyncio
async def test_a_slot_change_redraws_only_the_rows_drawn_from_what_changed(
    app_factory: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """split changes as0's slots only: as1's bars keep their keys and come from the cache."""
    drawn: list[tuple[object, ...]] = []
    render_row = SlotMap.render_row

    def spy(self: SlotMap, key: object, width: int) -> object:
        assert isinstance(key, tuple)
        drawn.append(key[:3])
        return render_row(self, key, width)

    monkeypatch.setattr(SlotMap, "render_row", spy)
    app = app_factory()
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(app, pilot)
        assert ("bar", 1, "active") in drawn  # as1 is on screen
        first = app.host.snapshot()
        assert first is not None
        drawn.clear()

        def slots_changed() -> bool:
            snap = app.host.snapshot()
            return snap is not None and snap.spaces is not first.spaces

        await step_until(app, pilot, slots_changed)
        await settle(app, pilot)
        spaces = {key[1] for key in drawn if key[0] == "bar"}
        assert spaces == {0}

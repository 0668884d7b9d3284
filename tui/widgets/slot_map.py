"""The slot map: each address space as a GPA ruler with its memslots as segments.

Per address space, from top to bottom: a header (layout, both sets' generations and bit 63),
a ruler, the active set, slot labels, the inactive set, the VMM's published FlatView, the
FlatView an in-flight transaction moves to, and markers for each vCPU's RIP and last data
access. Every state has its own glyph as well as its own colour, so the map reads the same
without colour.

A column covers a GPA range; when several slots share a column it shows the most alarming
of them (a hole beats INVALID beats anything mapped).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Hashable, Iterable, Sequence

from rich.style import Style
from textual import events
from textual.binding import Binding
from textual.strip import Strip

from engine.snapshot import AddressSpaceView, RangeView, SlotView, Snapshot, VcpuView
from tui.format import gpa
from tui.widgets.rows import RowView

NONE, ACTIVE, READONLY, DIRTY, INVALID, HOLE, MMIO = range(7)
GLYPH = {
    NONE: "·",
    ACTIVE: "█",
    READONLY: "▓",
    DIRTY: "≈",
    INVALID: "▒",
    HOLE: "\u00d7",  # multiplication sign: a hole, where the slot was
    MMIO: "░",
}
CLASS = {
    NONE: "slotmap--none",
    ACTIVE: "slotmap--active",
    READONLY: "slotmap--readonly",
    DIRTY: "slotmap--dirty",
    INVALID: "slotmap--invalid",
    HOLE: "slotmap--hole",
    MMIO: "slotmap--mmio",
}
LEGEND = (
    (ACTIVE, "active"),
    (READONLY, "read-only"),
    (DIRTY, "dirty-log"),
    (INVALID, "INVALID"),
    (HOLE, "deleted, no slot"),
    (MMIO, "MMIO (VMM)"),
)
# How a vCPU's marker is coloured, by what it is doing.
MARK_CLASS = {
    "guest": "slotmap--vcpu-ok",
    "mmio": "slotmap--vcpu-io",
    "userspace": "slotmap--vcpu-io",
    "dead": "slotmap--vcpu-bad",
    "fault": "slotmap--vcpu-bad",
}
GUTTER = 10
MAX_ZOOM = 1 << 20


def slot_code(slot: SlotView) -> int:
    if slot.invalid:
        return INVALID
    if slot.readonly:
        return READONLY
    if slot.logging:
        return DIRTY
    return ACTIVE


def range_code(r: RangeView) -> int:
    if r.kind == "mmio":
        return MMIO
    if r.kind == "rom":
        return READONLY
    return DIRTY if r.log_dirty else ACTIVE


class Spans:
    """One bar's non-overlapping [start, end) ranges and their codes, in GPA order.

    Built once per change of the slot sets; painting a bar is then two bisections and a
    C-level max per column, whatever the number of slots (1,024 slots in 100 columns would
    otherwise cost a Python loop over every slot for every bar of every frame)."""

    __slots__ = ("codes", "ends", "starts")

    def __init__(self, spans: Iterable[tuple[int, int, int]]) -> None:
        ordered = sorted(spans)
        self.starts = [s for s, _, _ in ordered]
        self.ends = [e for _, e, _ in ordered]
        self.codes = [code for _, _, code in ordered]

    def paint(self, cols: int, lo: int, hi: int) -> list[int]:
        """Columns' codes: each column covers (hi - lo) / cols bytes and takes the highest
        code of the spans touching it."""
        cells = [NONE] * max(cols, 0)
        if cols <= 0 or hi <= lo or not self.starts:
            return cells
        starts, ends, codes = self.starts, self.ends, self.codes
        span = hi - lo
        for c in range(cols):
            a = lo + span * c // cols
            b = max(a + 1, lo + span * (c + 1) // cols)
            i0 = bisect_right(ends, a)
            i1 = bisect_left(starts, b, i0)
            if i0 < i1:
                cells[c] = max(codes[i0:i1])
        return cells

    def between(self, lo: int, hi: int) -> range:
        """Indices of the spans that reach into [lo, hi)."""
        return range(bisect_right(self.ends, lo), bisect_left(self.starts, hi))


def paint(cols: int, lo: int, hi: int, spans: Iterable[tuple[int, int, int]]) -> list[int]:
    return Spans(spans).paint(cols, lo, hi)


class SlotMap(RowView):
    """GPA rulers with memslot segments, zoomable and pannable."""

    COMPONENT_CLASSES = {
        *CLASS.values(),
        "slotmap--title",
        "slotmap--label",
        "slotmap--gutter",
        "slotmap--ruler",
        "slotmap--flag",
        "slotmap--vcpu-ok",
        "slotmap--vcpu-warn",
        "slotmap--vcpu-io",
        "slotmap--vcpu-bad",
        "slotmap--info",
    }
    BINDINGS = [
        Binding("left", "pan(-1)", "Pan left", show=False, id="map-pan-left"),
        Binding("right", "pan(1)", "Pan right", show=False, id="map-pan-right"),
    ]

    def __init__(self, *, compact: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.compact = compact
        """No legend, and the inspector line only once something is picked."""
        self._snap: Snapshot | None = None
        self._spaces: tuple[AddressSpaceView, ...] = ()
        # Each object a row is drawn from (a set's slots, the VMM's ranges, the holes), with
        # a number that changes only when the snapshot replaces it: rows key on the numbers,
        # so only rows whose source changed are redrawn. Keeping the objects keeps their ids.
        self._stamps: dict[int, tuple[object, int]] = {}
        self._stamped = 0
        self._names: list[dict[int, str]] = []
        self._window = (0.0, 1.0)
        self._picked: tuple[int, int] | None = None
        self._row_targets: dict[int, int] = {}
        self._span_cache: dict[tuple[int, str], tuple[tuple[int, ...], Spans]] = {}

    # --- zoom and pan -------------------------------------------------------------------

    @property
    def zoom(self) -> float:
        f0, f1 = self._window
        return 1.0 / (f1 - f0)

    def zoom_by(self, factor: float) -> None:
        f0, f1 = self._window
        centre, half = (f0 + f1) / 2, (f1 - f0) / 2 / factor
        half = min(0.5, max(half, 0.5 / MAX_ZOOM))
        centre = min(max(centre, half), 1 - half)
        self._window = (centre - half, centre + half)
        self._redraw()

    def pan(self, steps: float) -> None:
        f0, f1 = self._window
        shift = (f1 - f0) * 0.25 * steps
        shift = max(-f0, min(shift, 1 - f1))
        self._window = (f0 + shift, f1 + shift)
        self._redraw()

    def reset_view(self) -> None:
        self._window = (0.0, 1.0)
        self._redraw()

    def action_pan(self, steps: int) -> None:
        self.pan(steps)

    def window_of(self, space: AddressSpaceView) -> tuple[int, int]:
        s0, s1 = space.span
        f0, f1 = self._window
        lo = s0 + int((s1 - s0) * f0)
        hi = max(lo + 1, s0 + int((s1 - s0) * f1))
        return lo, hi

    # --- data ---------------------------------------------------------------------------

    def update_snapshot(self, snap: Snapshot) -> None:
        self._snap = snap
        if snap.spaces is not self._spaces:
            self._spaces = snap.spaces
            self._stamp(snap.spaces)
            self._names = [_names(space) for space in snap.spaces]
        self._redraw()

    def _stamp(self, spaces: tuple[AddressSpaceView, ...]) -> None:
        stamps: dict[int, tuple[object, int]] = {}
        for space in spaces:
            for source in (
                space.active.slots,
                space.inactive.slots,
                space.holes,
                space.vmm,
                space.pending,
            ):
                hit = self._stamps.get(id(source))
                if hit is None or hit[0] is not source:
                    self._stamped += 1
                    hit = (source, self._stamped)
                stamps[id(source)] = hit
        self._stamps = stamps

    def _sources(self, as_id: int, which: str) -> tuple[int, ...]:
        """The stamps of what a bar (or the labels, "slots") is drawn from."""
        space = self._spaces[as_id]
        stamp = self._stamps
        if which == "active":
            return stamp[id(space.active.slots)][1], stamp[id(space.holes)][1]
        if which == "inactive":
            return (stamp[id(space.inactive.slots)][1],)
        if which == "vmm":
            return (stamp[id(space.vmm)][1],)
        if which == "next":
            return (stamp[id(space.pending)][1],)
        return (stamp[id(space.active.slots)][1],)

    def _redraw(self) -> None:
        snap = self._snap
        if snap is None:
            return
        rows: list[Hashable] = []
        targets: dict[int, int] = {}
        src = self._sources
        for space in snap.spaces:
            a = space.as_id
            lo, hi = self.window_of(space)
            rip, data = _marks(snap.vcpus, a)
            gens = (space.layout, space.active.generation, space.inactive.generation)
            rows.append(("head", a, gens, round(self.zoom, 2), snap.txn))
            rows.append(("ruler", a, lo, hi))
            targets[len(rows)] = a
            rows.append(("bar", a, "active", src(a, "active"), lo, hi))
            # The labels name slots by the VMM's ranges as well.
            names = (src(a, "slots"), src(a, "vmm"), src(a, "next"))
            rows.append(("labels", a, names, lo, hi))
            targets[len(rows)] = a
            rows.append(("bar", a, "inactive", src(a, "inactive"), lo, hi))
            targets[len(rows)] = a
            rows.append(("bar", a, "vmm", src(a, "vmm"), lo, hi))
            rows.append(("bar", a, "next", src(a, "next"), lo, hi))
            rows.append(("marks", a, "rip", rip, lo, hi))
            rows.append(("marks", a, "data", data, lo, hi))
        if not self.compact or self._picked is not None:
            rows.append(("info", self._info(snap)))
        if not self.compact:
            rows.append(("legend",))
        self._row_targets = targets
        self.set_rows(rows)

    # --- picking a slot with the mouse ----------------------------------------------------

    def on_click(self, event: events.Click) -> None:
        row = event.y + int(self.scroll_offset.y)
        as_id = self._row_targets.get(row)
        if as_id is None or as_id >= len(self._spaces):
            return
        cols = self.size.width - GUTTER
        col = event.x - GUTTER
        if not 0 <= col < cols:
            return
        lo, hi = self.window_of(self._spaces[as_id])
        self._picked = (as_id, lo + (hi - lo) * col // cols)
        self._redraw()

    def _info(self, snap: Snapshot) -> str:
        picked = self._picked
        if picked is None or picked[0] >= len(snap.spaces):
            return "click a bar to inspect a GPA   z/Z zoom  </> pan  0 reset"
        as_id, addr = picked
        space = snap.spaces[as_id]
        parts = [f"as{as_id} {gpa(addr)}:"]
        slot = _slot_at(space.active.slots, addr)
        if slot is None:
            hole = any(s <= addr < e for s, e in space.holes)
            parts.append("no memslot (deleted, not yet re-created)" if hole else "no memslot")
        else:
            flags = _flag_words(slot)
            parts.append(
                f"slot {slot.id} [{gpa(slot.start)}, {gpa(slot.end)}) {slot.npages} pages, "
                f"hva {gpa(slot.userspace_addr)}{', ' + flags if flags else ''}"
            )
        r = next((r for r in space.vmm if r.start <= addr < r.end), None)
        parts.append(f"| VMM: {r.name} ({r.kind})" if r is not None else "| VMM: unassigned")
        return " ".join(parts)

    # --- drawing --------------------------------------------------------------------------

    def render_row(self, key: Hashable, width: int) -> Strip:
        assert isinstance(key, tuple)
        kind = key[0]
        if kind == "bar":
            return self._bar(key[1], key[2], key[4], key[5], width)
        if kind == "marks":
            return self._marks_row(key[2], key[3], key[4], key[5], width)
        if kind == "labels":
            return self._labels(key[1], key[3], key[4], width)
        if kind == "ruler":
            return self._ruler(key[2], key[3], width)
        if kind == "head":
            return self._head(key[1])
        if kind == "info":
            return self.strip([(" " + key[1], self.style("slotmap--info"))])
        return self._legend()

    def _spans(self, as_id: int, which: str) -> Spans:
        key = (as_id, which)
        sources = self._sources(as_id, which)
        hit = self._span_cache.get(key)
        if hit is not None and hit[0] == sources:
            return hit[1]
        space = self._spaces[as_id]
        if which == "active":
            items = [(s.start, s.end, slot_code(s)) for s in space.active.slots]
            items += [(s, e, HOLE) for s, e in space.holes]
        elif which == "inactive":
            items = [(s.start, s.end, slot_code(s)) for s in space.inactive.slots]
        elif which == "vmm":
            items = [(r.start, r.end, range_code(r)) for r in space.vmm]
        elif which == "next":
            items = [(r.start, r.end, range_code(r)) for r in space.pending]
        else:  # "slots": the active set alone, for labels
            items = [(s.start, s.end, i) for i, s in enumerate(space.active.slots)]
        spans = Spans(items)
        self._span_cache[key] = (sources, spans)
        return spans

    def _gutter(self, title: str) -> tuple[str, Style]:
        return (f" {title:<{GUTTER - 2}} ", self.style("slotmap--gutter"))

    def _head(self, as_id: int) -> Strip:
        space = self._spaces[as_id]
        title, flag = self.style("slotmap--title"), self.style("slotmap--flag")
        parts: list[tuple[str, Style]] = [(f" as{as_id} ", title)]
        layout = space.layout or "-"
        snap = self._snap
        if snap is not None and snap.txn is not None and snap.txn.as_id == as_id:
            layout = f"{layout} -> {snap.txn.layout} (txn {snap.txn.id})"
        parts.append((f"layout {layout}  ", self.style("slotmap--label")))
        if snap is not None and snap.backend == "kvm":
            parts.append(("slots as the VMM set them (the kernel's sets are hidden)", flag))
            return self.strip(parts)
        for name, s in (("active", space.active), ("inactive", space.inactive)):
            parts.append(
                (f"{name} gen {s.generation & ~(1 << 63):#x}", self.style("slotmap--label"))
            )
            if s.update_in_progress:
                parts.append((" [bit63 UPDATE]", flag))
            parts.append(("  ", self.style("slotmap--label")))
        if self.zoom > 1.001:
            parts.append((f"zoom x{self.zoom:.3g}", self.style("slotmap--label")))
        return self.strip(parts)

    def _ruler(self, lo: int, hi: int, width: int) -> Strip:
        cols = width - GUTTER
        line = [" "] * cols
        for col, label in ruler_ticks(lo, hi, cols):
            start = min(col, cols - len(label))
            if start < 0 or any(c != " " for c in line[max(0, start - 1) : start + len(label)]):
                continue
            line[start : start + len(label)] = list(label)
        return self.strip([self._gutter("GPA"), ("".join(line), self.style("slotmap--ruler"))])

    def _bar(self, as_id: int, which: str, lo: int, hi: int, width: int) -> Strip:
        space = self._spaces[as_id]
        cols = width - GUTTER
        cells = self._spans(as_id, which).paint(cols, lo, hi)
        parts = [self._gutter(which if which != "next" else "vmm next")]
        snap = self._snap
        if which == "inactive" and snap is not None and snap.backend == "kvm":
            parts.append(("(inside the real kernel: not visible)", self.style("slotmap--none")))
            return self.strip(parts)
        if which == "next" and not space.pending:
            parts.append(("(no transaction in flight)", self.style("slotmap--none")))
            return self.strip(parts)
        run_start = 0
        for i in range(1, cols + 1):
            if i == cols or cells[i] != cells[run_start]:
                code = cells[run_start]
                parts.append((GLYPH[code] * (i - run_start), self.style(CLASS[code])))
                run_start = i
        return self.strip(parts)

    def _labels(self, as_id: int, lo: int, hi: int, width: int) -> Strip:
        space = self._spaces[as_id]
        names = self._names[as_id] if as_id < len(self._names) else {}
        cols = width - GUTTER
        line = [" "] * cols
        hot: list[tuple[int, int]] = []
        if hi <= lo or cols <= 0:
            return self.strip([self._gutter("slots")])
        scale = cols / (hi - lo)
        visible = self._spans(as_id, "slots").between(lo, hi)
        # Labels need two columns at least: with more slots than that in view, none fits.
        if len(visible) <= cols // 2:
            slots = space.active.slots
            for index in visible:
                slot = slots[index]
                c0 = max(0, int((slot.start - lo) * scale))
                c1 = min(cols, max(c0 + 1, math.ceil((slot.end - lo) * scale)))
                name = names.get(slot.start, "")
                text = f"{slot.id}{':' + name if name else ''}"
                if slot.invalid:
                    text = f"{slot.id} INVALID"
                room = c1 - c0 - 1
                if room < 1 or any(ch != " " for ch in line[c0:c1]):
                    continue
                text = text[:room]
                line[c0 : c0 + len(text)] = list(text)
                if slot.invalid:
                    hot.append((c0, c0 + len(text)))
        for h0, h1 in space.holes:
            if h1 <= lo or h0 >= hi:
                continue
            c0 = max(0, int((h0 - lo) * scale))
            c1 = min(cols, max(c0 + 1, math.ceil((h1 - lo) * scale)))
            text = "no memslot"[: c1 - c0 - 1]
            if len(text) < 2 or any(ch != " " for ch in line[c0:c1]):
                continue
            line[c0 : c0 + len(text)] = list(text)
            hot.append((c0, c0 + len(text)))
        hot.sort()
        parts = [self._gutter("slots")]
        label, flag = self.style("slotmap--label"), self.style("slotmap--flag")
        pos = 0
        for a, b in hot:
            parts.append(("".join(line[pos:a]), label))
            parts.append(("".join(line[a:b]), flag))
            pos = b
        parts.append(("".join(line[pos:]), label))
        return self.strip(parts)

    def _marks_row(
        self, which: str, marks: tuple[tuple[int, int, str], ...], lo: int, hi: int, width: int
    ) -> Strip:
        cols = width - GUTTER
        cells: list[tuple[str, str] | None] = [None] * cols
        glyph = "▲" if which == "rip" else "◆"
        if hi > lo and cols > 0:
            for addr, index, activity in marks:
                if not lo <= addr < hi:
                    continue
                col = min(cols - 1, (addr - lo) * cols // (hi - lo))
                cls = MARK_CLASS.get(activity, "slotmap--vcpu-warn")
                if cells[col] is None:
                    cells[col] = (str(index) if index < 10 else glyph, cls)
                else:
                    prev = cells[col]
                    assert prev is not None
                    worse = cls if cls == "slotmap--vcpu-bad" else prev[1]
                    cells[col] = ("*", worse)
        title = f"{which} {glyph}"
        parts = [self._gutter(title)]
        blank = self.style("slotmap--none")
        run = ""
        for cell in cells:
            if cell is None:
                run += " "
                continue
            if run:
                parts.append((run, blank))
                run = ""
            parts.append((cell[0], self.style(cell[1])))
        parts.append((run, blank))
        return self.strip(parts)

    def _legend(self) -> Strip:
        parts: list[tuple[str, Style]] = [(" ", self.style("slotmap--label"))]
        for code, text in LEGEND:
            parts.append((GLYPH[code], self.style(CLASS[code])))
            parts.append((f" {text}  ", self.style("slotmap--label")))
        parts.append(("0-9 vCPU  * several", self.style("slotmap--label")))
        return self.strip(parts)


def ruler_ticks(lo: int, hi: int, cols: int) -> list[tuple[int, str]]:
    """Labels at round GPAs (multiples of a power of two), about one per 16 columns; the
    window's start first so it always shows."""
    if cols <= 0 or hi <= lo:
        return []
    wanted = max(1, cols // 16)
    step = 1 << max(0, ((hi - lo) // wanted).bit_length() - 1)
    while (hi - lo) // step > wanted:
        step <<= 1
    ticks = [(0, gpa(lo))]
    first = -(-lo // step) * step
    for g in range(first, hi + 1, step):
        if g == lo:
            continue
        col = min(cols - 1, (g - lo) * cols // (hi - lo))
        ticks.append((col, gpa(g)))
    return ticks


def _marks(
    vcpus: Sequence[VcpuView], as_id: int
) -> tuple[tuple[tuple[int, int, str], ...], tuple[tuple[int, int, str], ...]]:
    rip = tuple((v.rip, v.index, v.activity) for v in vcpus if v.as_id == as_id)
    data = tuple(
        (v.last_data_gpa, v.index, v.activity)
        for v in vcpus
        if v.as_id == as_id and v.last_data_gpa >= 0
    )
    return rip, data


def _names(space: AddressSpaceView) -> dict[int, str]:
    """The VMM's name for the range a slot starts at (QEMU's MemoryRegion name)."""
    names = {r.start: r.name for r in space.pending}
    names.update({r.start: r.name for r in space.vmm})
    return names


def _slot_at(slots: Sequence[SlotView], addr: int) -> SlotView | None:
    for slot in slots:
        if slot.start <= addr < slot.end:
            return slot
    return None


def _flag_words(slot: SlotView) -> str:
    words = []
    if slot.invalid:
        words.append("KVM_MEMSLOT_INVALID")
    if slot.readonly:
        words.append("KVM_MEM_READONLY")
    if slot.logging:
        words.append("KVM_MEM_LOG_DIRTY_PAGES")
    return " ".join(words)

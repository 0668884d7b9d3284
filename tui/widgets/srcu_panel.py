"""kvm->srcu: lock and unlock counts per index, the grace period's phase and who holds it up.

Tree SRCU's grace period, as the model runs it: SCAN1 waits for the index new readers no
longer take to drain, the flip switches new readers to the other index, SCAN2 waits for the
old index to drain. A memslot swap's synchronize_srcu_expedited() returns only after SCAN2,
so a reader stuck in an exit handler with the old set keeps the update waiting.
"""

from __future__ import annotations

from collections.abc import Hashable

from rich.style import Style
from textual.strip import Strip

from engine.snapshot import GpView, Snapshot
from tui.format import format_ns
from tui.widgets.rows import RowView

PHASES = ("scan1", "flip", "scan2")


class SrcuPanel(RowView):
    COMPONENT_CLASSES = {
        "srcu--title",
        "srcu--text",
        "srcu--dim",
        "srcu--phase",
        "srcu--phase-done",
        "srcu--phase-pending",
        "srcu--blocking",
        "srcu--current",
    }

    def __init__(self, *, compact: bool = False, id: str | None = None) -> None:
        super().__init__(id=id)
        self.compact = compact

    def update_snapshot(self, snap: Snapshot) -> None:
        if snap.backend == "kvm":
            self.set_rows([("kvm",)])
            return
        s = snap.srcu
        now = snap.t_ns
        rows: list[Hashable] = [("title", s.srcu_idx, s.gp_seq, s.last_gp_ns)]
        rows.append(("counts-head",))
        rows.extend(
            ("counts", idx, s.lock_count[idx], s.unlock_count[idx], idx == s.current_index)
            for idx in (0, 1)
        )
        gp = s.current
        if gp is None:
            rows.append(("gp-idle", s.history[-1] if s.history else None))
            # Always as many rows: a panel that changes height re-lays out the screen.
            rows.append(("holdup", ()))
        else:
            rows.append(("gp", gp, gp.duration(now), gp.scan1_ns(now), gp.scan2_ns(now)))
            blocking = [r for r in s.readers if r.blocking]
            if blocking:
                rows.append(("holdup", tuple((r.name, r.idx, r.held_ns) for r in blocking)))
            else:
                rows.append(("holdup", ()))
        if not self.compact:
            rows.append(("blank",))
            rows.append(("readers-head", len(s.readers)))
            rows.extend(("reader", r.name, r.idx, r.held_ns, r.blocking) for r in s.readers)
            rows.append(("blank",))
            rows.append(("history-head",))
            rows.extend(("history", g) for g in reversed(s.history))
        self.set_rows(rows)

    def render_row(self, key: Hashable, width: int) -> Strip:
        assert isinstance(key, tuple)
        kind = key[0]
        text, dim, title = (
            self.style("srcu--text"),
            self.style("srcu--dim"),
            self.style("srcu--title"),
        )
        if kind == "kvm":
            return self.strip(
                [(" kvm->srcu lives in the real kernel: not visible from userspace", dim)]
            )
        if kind == "title":
            _, idx, gp_seq, last = key
            return self.strip(
                [
                    (" kvm->srcu ", title),
                    (f"srcu_idx {idx} (readers take {idx & 1})", text),
                    (f"  gp_seq {gp_seq}, last GP {format_ns(last)}", dim),
                ]
            )
        if kind == "counts-head":
            return self.strip([(" idx  locks unlocks in use", dim)])
        if kind == "counts":
            _, idx, locks, unlocks, current = key
            style = self.style("srcu--current") if current else text
            mark = " <- new readers" if current else " draining" if locks != unlocks else ""
            return self.strip(
                [(f" {idx:>3} {locks:>6} {unlocks:>7} {locks - unlocks:>6}", style), (mark, dim)]
            )
        if kind == "gp-idle":
            prev: GpView | None = key[1]
            if prev is None:
                return self.strip([(" no grace period yet", dim)])
            return self.strip(
                [
                    (" no grace period running", text),
                    (f"; #{prev.gp_seq} took {format_ns(prev.duration(prev.ended_ns))}", dim),
                ]
            )
        if kind == "gp":
            return self._gp(key[1], key[2], key[3], key[4])
        if kind == "holdup":
            readers = key[1]
            if not readers:
                return self.strip([(" no reader holds a grace period up", dim)])
            who = ", ".join(f"{n} idx {i} {format_ns(h)}" for n, i, h in readers)
            return self.strip([(" held up by ", dim), (who, self.style("srcu--blocking"))])
        if kind == "readers-head":
            return self.strip([(f" readers inside kvm->srcu: {key[1]}", title)])
        if kind == "reader":
            _, name, idx, held, blocking = key
            style = self.style("srcu--blocking") if blocking else text
            note = "  holding up the grace period" if blocking else ""
            return self.strip(
                [(f"   {name:<10} idx {idx}  for {format_ns(held):>8}", style), (note, dim)]
            )
        if kind == "history-head":
            return self.strip([(" recent grace periods (newest first)", title)])
        if kind == "history":
            g: GpView = key[1]
            end = g.ended_ns
            waited = ", ".join(g.waiting_on) or "-"
            return self.strip(
                [
                    (f"   #{g.gp_seq:<4}", text),
                    (
                        f"SCAN1 {format_ns(g.scan1_ns(end)):>7}  flip at {format_ns(g.flip_ns):>8}  "
                        f"SCAN2 {format_ns(g.scan2_ns(end)):>7}  total {format_ns(g.duration(end)):>7}",
                        text,
                    ),
                    (f"  waited on {waited}", dim),
                ]
            )
        return Strip([])

    def _gp(self, gp: GpView, total: int, scan1: int, scan2: int) -> Strip:
        parts: list[tuple[str, Style]] = [(f" GP #{gp.gp_seq} ", self.style("srcu--title"))]
        current = {"scan1": 0, "scan2": 2}.get(gp.phase, 3)
        labels = (f"SCAN1 {format_ns(scan1)}", "flip", f"SCAN2 {format_ns(scan2)}")
        for i, label in enumerate(labels):
            if i < current:
                style, mark = self.style("srcu--phase-done"), "✓"
            elif i == current:
                style, mark = self.style("srcu--phase"), "▶"
            else:
                style, mark = self.style("srcu--phase-pending"), "·"
            parts.append((f"[{mark}{label}]", style))
            if i < 2:
                parts.append(("─", self.style("srcu--dim")))
        kind = "expedited" if gp.expedited else "normal"
        parts.append((f" {kind}, {format_ns(total)} so far", self.style("srcu--text")))
        return self.strip(parts)

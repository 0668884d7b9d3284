"""The active and inactive memslot sets side by side, with generations and bit 63.

kvm_swap_active_memslots() publishes the inactive set with the update-in-progress bit (bit 63)
set in its generation; the bit clears when the swap's synchronize_srcu_expedited() returns.
Between the two, a vCPU that faults caches nothing against that generation.
"""

from __future__ import annotations

from collections.abc import Hashable

from rich.style import Style
from textual.strip import Strip

from engine.snapshot import SetView, SlotView, Snapshot
from tui.format import gpa
from tui.widgets.rows import RowView

COLUMNS = " slot   {active:<44} {inactive:<44}"


def _slot_text(slot: SlotView | None) -> str:
    if slot is None:
        return "-"
    flags = []
    if slot.invalid:
        flags.append("INVALID")
    if slot.readonly:
        flags.append("RO")
    if slot.logging:
        flags.append("LOG")
    return f"[{gpa(slot.start)}, {gpa(slot.end)}) {slot.npages:>6}p {' '.join(flags)}"


class SlotTable(RowView):
    COMPONENT_CLASSES = {
        "table--title",
        "table--head",
        "table--text",
        "table--flag",
        "table--diff",
        "table--dim",
    }

    def update_snapshot(self, snap: Snapshot) -> None:
        rows: list[Hashable] = []
        if snap.backend == "kvm":
            rows.append(("note",))
        for space in snap.spaces:
            a = space.as_id
            rows.append(
                (
                    "set",
                    a,
                    "active",
                    space.active.node,
                    space.active.generation,
                    space.active.version,
                    len(space.active.slots),
                )
            )
            rows.append(
                (
                    "set",
                    a,
                    "inactive",
                    space.inactive.node,
                    space.inactive.generation,
                    space.inactive.version,
                    len(space.inactive.slots),
                )
            )
            rows.append(("head", a))
            active = {s.id: s for s in space.active.slots}
            inactive = {s.id: s for s in space.inactive.slots}
            order = sorted(
                set(active) | set(inactive),
                key=lambda i: ((active.get(i) or inactive[i]).base_gfn, i),
            )
            rows.extend(("slot", a, i, active.get(i), inactive.get(i)) for i in order)
            rows.append(("blank", a))
        self.set_rows(rows, content_width=100)

    def render_row(self, key: Hashable, width: int) -> Strip:
        assert isinstance(key, tuple)
        kind = key[0]
        text = self.style("table--text")
        if kind == "set":
            _, as_id, which, node, generation, version, count = key
            parts: list[tuple[str, Style]] = [
                (f" as{as_id} {which:<8}", self.style("table--title")),
                (
                    f" node {node}  generation {generation:#018x}  version {version}  {count} slots",
                    text,
                ),
            ]
            if SetView(node, generation, version, ()).update_in_progress:
                parts.append(("  bit 63 SET: update in progress", self.style("table--flag")))
            else:
                parts.append(("  bit 63 clear", self.style("table--dim")))
            return self.strip(parts)
        if kind == "note":
            return self.strip(
                [
                    (
                        " real KVM: the active column is what the VMM set; the kernel's "
                        "inactive set and generations are not visible",
                        self.style("table--flag"),
                    )
                ]
            )
        if kind == "head":
            return self.strip(
                [
                    (
                        COLUMNS.format(active="active set", inactive="inactive set"),
                        self.style("table--head"),
                    )
                ]
            )
        if kind == "slot":
            _, _, sid, act, inact = key
            differs = act != inact
            a_style = self.style("table--flag") if act is not None and act.invalid else text
            i_style = self.style("table--diff") if differs else self.style("table--dim")
            return self.strip(
                [
                    (f" {sid:>4}   ", text),
                    (f"{_slot_text(act):<44} ", a_style),
                    (f"{_slot_text(inact):<44}", i_style),
                ]
            )
        return Strip([])

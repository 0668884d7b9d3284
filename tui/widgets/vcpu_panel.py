"""One row per vCPU: what it is doing, where, which SRCU index it holds, and its exits."""

from __future__ import annotations

from collections.abc import Hashable

from textual.strip import Strip

from engine.snapshot import Snapshot, VcpuView
from tui.format import gpa
from tui.widgets.rows import RowView

# activity -> (glyph, words, component class)
ACTIVITY = {
    "guest": ("▶", "in guest", "vcpu--ok"),
    "fault": ("!", "fault", "vcpu--busy"),
    "retrying": ("↻", "retrying", "vcpu--warn"),
    "kicked": ("↯", "kicked", "vcpu--warn"),
    "blocked": ("‖", "blocked", "vcpu--warn"),
    "stalled": ("≡", "SRCU stall", "vcpu--warn"),
    "mmio": ("⇄", "MMIO exit", "vcpu--io"),
    "userspace": ("↑", "userspace", "vcpu--io"),
    "halted": ("■", "halted", "vcpu--dim"),
    "dead": ("\u00d7", "dead", "vcpu--bad"),
    "idle": ("·", "idle", "vcpu--dim"),
}
SHORT_EXIT = {
    "KVM_EXIT_MMIO": "MMIO",
    "KVM_EXIT_INTR": "INTR",
    "KVM_EXIT_HLT": "HLT",
    "KVM_EXIT_INTERNAL_ERROR": "INTERNAL_ERROR",
    "KVM_EXIT_SHUTDOWN": "SHUTDOWN",
    "ud_injected": "#UD",
}
HEADER = ("header",)
# Below WIDE columns a row drops the data GPA and rates; from WIDER it adds the faults.
WIDE = 78
WIDER = 110


def vcpu_row(v: VcpuView) -> tuple[Hashable, ...]:
    """Everything the row shows, rates rounded to what is printed."""
    return (
        "vcpu",
        v.index,
        v.activity,
        v.rip,
        v.last_data_gpa,
        v.srcu_idx,
        v.exits,
        tuple((r, round(x, 1)) for r, x in v.exit_rates),
        v.faults[:3],
    )


class VcpuPanel(RowView):
    COMPONENT_CLASSES = {
        "vcpu--header",
        "vcpu--index",
        "vcpu--ok",
        "vcpu--busy",
        "vcpu--warn",
        "vcpu--io",
        "vcpu--bad",
        "vcpu--dim",
        "vcpu--text",
        "vcpu--srcu",
    }

    def update_snapshot(self, snap: Snapshot) -> None:
        rows: list[Hashable] = [HEADER]
        rows.extend(vcpu_row(v) for v in snap.vcpus)
        self.set_rows(rows)

    def render_row(self, key: Hashable, width: int) -> Strip:
        assert isinstance(key, tuple)
        text = self.style("vcpu--text")
        wide = width >= WIDE
        if key[0] == "header":
            head = " vCPU state        RIP       "
            head += "data GPA  SRCU  exits (per ms)" if wide else "SRCU exits"
            if width >= WIDER:
                head = f"{head:<{WIDE + 2}}faults"
            return self.strip([(head, self.style("vcpu--header"))])
        _, index, activity, rip, data, srcu, exits, rates, faults = key
        glyph, words, cls = ACTIVITY.get(activity, ("?", activity, "vcpu--text"))
        rate_of = dict(rates)
        exit_text = (
            " ".join(
                f"{SHORT_EXIT.get(r, r)} {n}"
                + (f" ({rate_of[r]:g})" if wide and rate_of.get(r) else "")
                for r, n in exits
            )
            or "-"
        )
        parts = [
            (f" {index:>4} ", self.style("vcpu--index")),
            (f"{glyph} {words:<11}", self.style(cls)),
            (f"{gpa(rip):<10}", text),
        ]
        if wide:
            parts.append((f"{gpa(data) if data >= 0 else '-':<10}", text))
        parts.append((f"{srcu if srcu >= 0 else '-':<5}", self.style("vcpu--srcu")))
        if width >= WIDER:
            parts.append((f"{exit_text:<{WIDE - 50}}  ", text))
            parts.append((" ".join(f"{k} {n}" for k, n in faults), self.style("vcpu--dim")))
        else:
            parts.append((exit_text, text))
        return self.strip(parts)

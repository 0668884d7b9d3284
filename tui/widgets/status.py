"""One-line bars: run state at the top, the verdict under it, recording at the bottom."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.snapshot import Snapshot, VerdictView
from tui.format import format_ns, speed_text

VERDICT_TITLE = {
    "ok": "OK",
    "crashed": "CRASHED",
    "livelock": "LIVELOCK",
    "violation": "VIOLATION",
}


def run_state(snap: Snapshot) -> str:
    if snap.finished:
        return "FINISHED"
    return "PAUSED" if snap.paused else "RUNNING"


class StatusBar(Static):
    """Virtual time, run state and speed, what the VMM is doing."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.mode = "live"
        self._last: tuple[object, ...] = ()

    def show(self, snap: Snapshot) -> None:
        key = (
            run_state(snap),
            snap.speed,
            snap.t_ns,
            snap.seq,
            snap.txn,
            snap.ioctl,
            snap.inhibited,
            snap.armed,
            snap.scenario,
            snap.strategy,
            snap.seed,
            snap.backend,
            self.mode,
        )
        if key == self._last:
            return
        self._last = key
        state = run_state(snap)
        text = Text(no_wrap=True, overflow="ellipsis")
        badge = {"RUNNING": "status--run", "PAUSED": "status--pause", "FINISHED": "status--done"}
        glyph = {"RUNNING": "▶", "PAUSED": "‖", "FINISHED": "■"}[state]
        label = f" {glyph} {'REPLAY ' if self.mode == 'replay' else ''}{state} "
        text.append(label, style=self.get_component_rich_style(badge[state]))
        if snap.backend == "kvm":
            text.append(" REAL KVM, real time ", style="bold reverse")
        else:
            text.append(f" {speed_text(snap.speed)} ", style="bold")
        text.append(f" t={format_ns(snap.t_ns)}/{format_ns(snap.end_ns)} #{snap.seq} ")
        text.append(f" {snap.scenario}·{snap.strategy}·seed {snap.seed} ", style="dim")
        if snap.armed:
            text.append(f" ⚑ {' '.join(snap.armed)} ", style="italic")
        busy = self.get_component_rich_style("status--txn")
        if snap.txn is not None:
            text.append(f" txn {snap.txn.id}->{snap.txn.layout} ", style=busy)
        if snap.ioctl is not None:
            io = snap.ioctl
            if io.memory_size == 0 and io.ioctl == "KVM_SET_USER_MEMORY_REGION":
                what = f"DELETE slot {io.slot & 0xFFFF}"
            else:
                what = f"{io.ioctl} slot {io.slot & 0xFFFF}"
            text.append(f" in {what} ", style=busy)
        if snap.inhibited:
            text.append(" vCPUs inhibited ", style=self.get_component_rich_style("status--pause"))
        # One line, always: no layout pass (a layout per frame would redo the whole screen).
        self.update(text, layout=False)

    COMPONENT_CLASSES = {"status--run", "status--pause", "status--done", "status--txn"}


class VerdictBanner(Static):
    """The checker's explanation, in the kernel's terms; hidden until there is one."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._last: VerdictView | None = None
        self.display = False

    def show_verdict(self, verdict: VerdictView | None) -> None:
        if verdict == self._last:
            return
        self._last = verdict
        for name in VERDICT_TITLE:
            self.set_class(verdict is not None and verdict.verdict == name, f"-{name}")
        if verdict is None:
            self.display = False
            return
        self.display = True
        title = VERDICT_TITLE.get(verdict.verdict, verdict.verdict.upper())
        text = Text()
        so_far = "" if verdict.final else " (so far; the run goes on)"
        text.append(f" {title}{so_far} ", style="bold reverse")
        text.append("  ")
        text.append(verdict.explanation)
        self.update(text)

    @property
    def verdict(self) -> VerdictView | None:
        return self._last


class RecBar(Static):
    """Where this session is recorded (or what is being replayed)."""

    def show_text(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.update(Text(text), layout=False)

    _text = ""

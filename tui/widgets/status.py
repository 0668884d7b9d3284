"""One-line bars: run state at the top, the verdict under it, recording at the bottom."""

from __future__ import annotations

import re

from rich.console import Console
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


def whole_sentences(text: str, width: int, lines: int) -> tuple[str, bool]:
    """As many whole sentences of text as fit in lines of width (wrapped at words), and
    whether any were left out. A verdict is never cut mid-sentence; the first sentence is
    kept even when it alone is too long (it then wraps past the limit)."""
    if width <= 0 or lines <= 0:
        return text, False
    sentences = re.split(r"(?<=[.])\s+(?=[A-Z])", text.strip())
    kept = ""
    for i, sentence in enumerate(sentences):
        candidate = f"{kept} {sentence}".strip()
        if i and len(Text(candidate).wrap(_CONSOLE, width)) > lines:
            return kept, True
        kept = candidate
    return kept, False


_CONSOLE = Console(width=1000)


class VerdictBanner(Static):
    """The checker's explanation, in the kernel's terms; hidden until there is one.

    It wraps, and on a short screen it shows the whole sentences that fit and says that `v`
    shows the rest (the log below it must stay on screen after a crash)."""

    expanded = False

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._last: VerdictView | None = None

    def show_verdict(self, verdict: VerdictView | None) -> None:
        if verdict == self._last:
            return
        self._last = verdict
        for name in VERDICT_TITLE:
            self.set_class(verdict is not None and verdict.verdict == name, f"-{name}")
        # A class, not self.display: an inline style would beat the stylesheet's -tiny rule.
        self.set_class(verdict is not None, "-shown")
        if verdict is not None:
            self._draw()

    def toggle(self) -> None:
        self.expanded = not self.expanded
        self.set_class(self.expanded, "-expanded")
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        verdict = self._last
        if verdict is None:
            return
        title = VERDICT_TITLE.get(verdict.verdict, verdict.verdict.upper())
        so_far = "" if verdict.final else " (so far; the run goes on)"
        head = f" {title}{so_far} "
        explanation, cut = verdict.explanation, False
        max_lines = self.styles.max_height
        if not self.expanded and max_lines is not None and self.size.width:
            width = self.size.width - len(head) - 2
            explanation, cut = whole_sentences(verdict.explanation, width, int(max_lines.value))
        text = Text()
        text.append(head, style="bold reverse")
        text.append("  ")
        text.append(explanation)
        if cut:
            text.append("  (v: the whole verdict)", style="italic")
        elif self.expanded:
            text.append("  (v: shorter)", style="italic")
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

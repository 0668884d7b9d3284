"""Where to jump in a replay: an event number, a virtual time or a percentage."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from engine.api import parse_duration
from tui.palette import dismiss_once


def parse_target(text: str, total: int, times: list[int]) -> int:
    """`#120` or `120` (event), `45us` (first event at or after), `50%` (of the events).
    ``times`` are the recorded events' virtual times, in log order."""
    text = text.strip()
    if not text:
        raise ValueError("type an event number, a time (45us) or a percentage (50%)")
    if text.endswith("%"):
        pct = float(text[:-1])
        if not 0 <= pct <= 100:
            raise ValueError("a percentage is 0..100")
        return round(total * pct / 100)
    if text.lstrip("#").isdigit():
        return min(int(text.lstrip("#")), total)
    t = parse_duration(text)
    return next((i for i, ti in enumerate(times) if ti >= t), total)


class JumpForm(ModalScreen[int | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog-cancel")]

    def __init__(self, total: int, times: list[int]) -> None:
        super().__init__()
        self.total = total
        self.times = times

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Jump to", classes="dialog-title")
            yield Static(
                f"event number (0..{self.total}), virtual time (45us) or percentage (50%)",
                classes="dialog-help",
            )
            yield Input(placeholder="#40, 45us, 50%", id="target")
            yield Static("", id="form-error", classes="form-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            target = parse_target(event.value, self.total, self.times)
        except ValueError as err:
            self.query_one("#form-error", Static).update(Text(str(err)))
            return
        dismiss_once(self, target)

    def action_cancel(self) -> None:
        dismiss_once(self, None)

"""Where to jump: an event number, a virtual time or a percentage; in a replay, of the
recording, and in a live run, of the run so far and beyond (the engine runs on to it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from engine.api import parse_duration
from tui.palette import dismiss_once


def _fraction(text: str) -> float | None:
    """A percentage as a fraction, else None (ValueError when empty)."""
    if not text:
        raise ValueError("type an event number, a time (45us) or a percentage (50%)")
    if not text.endswith("%"):
        return None
    pct = float(text[:-1])
    if not 0 <= pct <= 100:
        raise ValueError("a percentage is 0..100")
    return pct / 100


def parse_target(text: str, total: int, times: list[int]) -> int:
    """`#120` or `120` (event), `45us` (first event at or after), `50%` (of the events).
    ``times`` are the recorded events' virtual times, in log order."""
    text = text.strip()
    fraction = _fraction(text)
    if fraction is not None:
        return round(total * fraction)
    if text.lstrip("#").isdigit():
        return min(int(text.lstrip("#")), total)
    t = parse_duration(text)
    return next((i for i, ti in enumerate(times) if ti >= t), total)


LiveTarget = tuple[str, int]
"""("event", position) or ("time", ns)."""


def parse_live_target(text: str, end_ns: int) -> LiveTarget:
    """`#120` or `120` (that many events shown), `45us` (the first event at or after), `50%`
    (of the run's virtual duration): a live run may jump past what it has run so far."""
    text = text.strip()
    fraction = _fraction(text)
    if fraction is not None:
        return ("time", round(end_ns * fraction))
    if text.lstrip("#").isdigit():
        return ("event", int(text.lstrip("#")))
    t = parse_duration(text)
    if t > end_ns:
        raise ValueError(f"the run ends at {end_ns} ns")
    return ("time", t)


class JumpForm(ModalScreen[Any]):
    """Dismissed with what ``parse`` made of the text (None when cancelled)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog-cancel")]

    def __init__(self, parse: Callable[[str], Any], help_text: str) -> None:
        super().__init__()
        self.parse = parse
        self.help_text = help_text

    @classmethod
    def for_replay(cls, total: int, times: list[int]) -> JumpForm:
        return cls(
            lambda text: parse_target(text, total, times),
            f"event number (0..{total}), virtual time (45us) or percentage (50%)",
        )

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Jump to", classes="dialog-title")
            yield Static(self.help_text, classes="dialog-help")
            yield Input(placeholder="#40, 45us, 50%", id="target")
            yield Static("", id="form-error", classes="form-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            target = self.parse(event.value)
        except ValueError as err:
            self.query_one("#form-error", Static).update(Text(str(err)))
            return
        dismiss_once(self, target)

    def action_cancel(self) -> None:
        dismiss_once(self, None)

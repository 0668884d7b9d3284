"""A fault's parameters as a small form; Enter injects, Escape cancels.

The result is the fault as the engine spells it (``reader-stall=vcpu=0,duration=1ms``),
already validated by the engine's own parser, so the command cannot fail when it lands.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from engine.faults import FAULT_KINDS, FaultError, parse_fault
from tui.palette import dismiss_once


def fault_text(name: str, params: dict[str, str]) -> str:
    args = ",".join(f"{k}={v}" for k, v in params.items())
    return f"{name}={args}" if args else name


class FaultForm(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog-cancel")]

    def __init__(self, name: str, defaults: dict[str, str] | None = None) -> None:
        super().__init__()
        self.kind = FAULT_KINDS[name]
        self.values = {**self.kind.params, **(defaults or {})}

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="fault-form"):
            yield Label(f"Inject {self.kind.name}", classes="dialog-title")
            yield Static(self.kind.summary, classes="dialog-help")
            for key, value in self.values.items():
                with Horizontal(classes="form-row"):
                    yield Label(key, classes="form-label")
                    yield Input(value, id=f"param-{key}", classes="form-input")
            yield Static("", id="form-error", classes="form-error")
            with Horizontal(classes="form-buttons"):
                yield Button("Inject", variant="primary", id="ok")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        inputs = self.query(Input)
        if inputs:
            inputs.first().focus()

    def current_text(self) -> str:
        params = {key: self.query_one(f"#param-{key}", Input).value.strip() for key in self.values}
        return fault_text(self.kind.name, params)

    def submit(self) -> None:
        text = self.current_text()
        try:
            parse_fault(text)
        except FaultError as err:
            self.query_one("#form-error", Static).update(Text(str(err)))
            return
        dismiss_once(self, text)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self.submit()
        else:
            dismiss_once(self, None)

    def action_cancel(self) -> None:
        dismiss_once(self, None)

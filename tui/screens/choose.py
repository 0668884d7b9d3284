"""Pick one of a list (a strategy, a scenario, a fault): Enter chooses, Escape cancels."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from tui.palette import SafeOptionList, dismiss_once


class ChoiceScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="dialog-cancel")]

    def __init__(
        self, title: str, choices: list[tuple[str, str]], current: str | None = None
    ) -> None:
        super().__init__()
        self.title_text = title
        self.choices = choices
        self.current = current

    def compose(self) -> ComposeResult:
        options = []
        for value, summary in self.choices:
            label = Text()
            label.append(f"{value}", style="bold")
            if value == self.current:
                label.append(" (current)", style="italic")
            label.append(f"\n  {summary}", style="dim")
            options.append(Option(label, id=value))
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="dialog-title")
            yield SafeOptionList(*options, id="choices")

    def on_mount(self) -> None:
        choices = self.query_one(OptionList)
        if self.current is not None:
            for i, (value, _) in enumerate(self.choices):
                if value == self.current:
                    choices.highlighted = i
        choices.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        dismiss_once(self, event.option.id)

    def action_cancel(self) -> None:
        dismiss_once(self, None)

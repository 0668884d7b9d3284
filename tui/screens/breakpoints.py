"""The breakpoint form (`b`): add one as KIND[=ARG], toggle, delete or clear the list.

It edits the app's one Breakpoints list in place (engine.api), which every session the app
starts shares, live or replayed; the engine does the matching.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from engine.api import BREAKPOINT_KINDS, Breakpoints
from tui.palette import SafeOptionList, dismiss_once


def describe(bps: Breakpoints) -> str:
    """One line for the monitor: the list, disabled ones in brackets."""
    return "  ".join(e.bp.text() if e.enabled else f"({e.bp.text()})" for e in bps.entries)


class BreakpointForm(ModalScreen[None]):
    DEFAULT_CSS = """
    BreakpointForm { align: center middle; }
    BreakpointForm #bp-list { height: auto; max-height: 8; border: none; }
    BreakpointForm #bp-kinds { color: $text-muted; height: auto; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Close", id="dialog-cancel"),
        Binding("t", "toggle_entry", "Toggle", id="breakpoint-toggle"),
        Binding("delete,d", "remove", "Delete", id="breakpoint-delete"),
        Binding("x", "clear", "Clear all", id="breakpoint-clear"),
    ]

    def __init__(self, breakpoints: Breakpoints) -> None:
        super().__init__()
        self.breakpoints = breakpoints

    def compose(self) -> ComposeResult:
        kinds = "\n".join(f"{k:8} {v}" for k, v in BREAKPOINT_KINDS.items())
        with Vertical(classes="dialog", id="breakpoint-form"):
            yield Label("Breakpoints: stop the run at the next…", classes="dialog-title")
            yield Static(kinds, id="bp-kinds", markup=False)
            yield Input(
                placeholder="KIND[=ARG], e.g. delete, gp=flip, gpa=0xa0000-0xbffff", id="bp-new"
            )
            yield Static("", id="form-error", classes="form-error")
            yield SafeOptionList(id="bp-list")
            yield Static(
                "enter adds · tab to the list: t toggles, d deletes, x clears · esc closes",
                classes="dialog-help",
            )

    def on_mount(self) -> None:
        self._fill()
        self.query_one("#bp-new", Input).focus()

    def _fill(self) -> None:
        listing = self.query_one("#bp-list", OptionList)
        highlighted = listing.highlighted
        listing.clear_options()
        for entry in self.breakpoints.entries:
            label = Text("● " if entry.enabled else "○ ")
            label.append(entry.bp.text(), style="bold" if entry.enabled else "dim")
            listing.add_option(Option(label))
        if not self.breakpoints.entries:
            listing.add_option(Option(Text("no breakpoints", style="dim"), disabled=True))
        else:
            last = len(self.breakpoints.entries) - 1
            listing.highlighted = min(highlighted if highlighted is not None else 0, last)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        error = self.query_one("#form-error", Static)
        try:
            self.breakpoints.add(event.value)
        except ValueError as err:
            error.update(Text(str(err)))
            return
        error.update("")
        event.input.value = ""
        self._fill()

    def _chosen(self) -> int | None:
        listing = self.query_one("#bp-list", OptionList)
        index = listing.highlighted
        if self.focused is not listing or index is None:
            return None
        return index if index < len(self.breakpoints.entries) else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # t, d and x are letters of a breakpoint being typed while the input has focus.
        if action in ("toggle_entry", "remove", "clear"):
            return isinstance(self.focused, OptionList)
        return True

    def action_toggle_entry(self) -> None:
        index = self._chosen()
        if index is not None:
            self.breakpoints.toggle(index)
            self._fill()

    def action_remove(self) -> None:
        index = self._chosen()
        if index is not None:
            self.breakpoints.remove(index)
            self._fill()

    def action_clear(self) -> None:
        self.breakpoints.clear()
        self._fill()

    def action_cancel(self) -> None:
        dismiss_once(self, None)

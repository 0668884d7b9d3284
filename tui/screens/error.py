"""The engine failed: say what and where the log is, never a traceback on screen.

The traceback goes to a file next to the session log, for a bug report; the terminal stays
usable, and quitting from here exits with status 1.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Label, Static


class ErrorScreen(Screen[None]):
    BINDINGS = [
        Binding("q", "app.quit_with_error", "Quit", id="error-quit"),
        Binding("escape", "app.quit_with_error", "Quit", show=False, id="error-escape"),
    ]

    def __init__(self, message: str, log_path: str | None, traceback_path: str | None) -> None:
        super().__init__()
        self.message = message
        self.log_path = log_path
        self.traceback_path = traceback_path

    def compose(self) -> ComposeResult:
        text = Text()
        text.append("The engine stopped with an error:\n\n", style="bold")
        text.append(f"  {self.message}\n\n")
        if self.log_path:
            text.append("Session log (up to the failure): ", style="bold")
            text.append(f"{self.log_path}\n")
        else:
            text.append("This session was not recorded.\n")
        if self.traceback_path:
            text.append("Details for a bug report: ", style="bold")
            text.append(f"{self.traceback_path}\n")
        text.append("\nPress q to quit.")
        with Vertical(id="error-box"):
            yield Label(" slotlab: engine error ", id="error-title")
            yield Static(text, id="error-text")
        yield Footer()

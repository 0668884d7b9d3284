"""Textual's command palette and option list, guarded against keys that arrive too fast.

Three races in Textual 8.2.8, all found by the 10,000-random-keys test:

- OptionList pages (pageup/pagedown) through a line index it builds when it is laid out; a
  page key between the options changing and the next layout raises KeyError and takes the
  app down. Here such a key does nothing.
- Screen.dismiss pops the top screen, whichever it is, so a dialog dismissed twice in one
  burst of keys (two Enters) pops the screen under it. Here a second dismiss does nothing.
- The palette's search worker can finish after the palette has been dismissed and its
  widgets removed; its last update then looks the command list up and raises NoMatches,
  which takes the app down. Here that update is dropped: nobody can see the list.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from textual.await_complete import AwaitComplete
from textual.command import CommandPalette
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import OptionList


class Palette(CommandPalette):
    def dismiss(self, result: Any = None) -> AwaitComplete:
        # Screen.dismiss pops whatever screen is on top. A second Enter typed before the
        # palette is gone would dismiss it again and pop the monitor underneath.
        if self is not self.app.screen:
            return AwaitComplete()
        return super().dismiss(result)

    def _watch__list_visible(self) -> None:
        with contextlib.suppress(NoMatches):
            super()._watch__list_visible()

    def _action_command_list(self, action: str) -> None:
        with contextlib.suppress(KeyError):
            super()._action_command_list(action)


class SafeOptionList(OptionList):
    def _move_page(self, direction: Literal[-1, 1]) -> None:
        with contextlib.suppress(KeyError):
            super()._move_page(direction)


def dismiss_once(screen: Screen[Any], result: Any) -> None:
    """Dismiss a dialog unless it is already going: two Enter presses in one burst would
    otherwise dismiss it twice, and the second pops a screen that is not a dialog."""
    if getattr(screen, "_slotlab_dismissed", False) or screen is not screen.app.screen:
        return
    screen._slotlab_dismissed = True  # type: ignore[attr-defined]
    screen.dismiss(result)

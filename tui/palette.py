"""Textual's command palette and option list, guarded against keys that arrive too fast.

Three races in Textual 8.2.8, all found by the 10,000-random-keys test:

- OptionList pages (pageup/pagedown) through a line index it builds when it is laid out; a
  page key between the options changing and the next layout raises KeyError and takes the
  app down. Here such a key does nothing.
- Screen.dismiss pops the top screen, whichever it is, so a dialog dismissed twice in one
  burst of keys (two Enters) pops the screen under it. Here a second dismiss does nothing.
- The palette's search worker, and its timers ("no matches", busy), can finish after the
  palette has been dismissed and its widgets removed; their last update then looks the command
  list up and raises NoMatches, which takes the app down. Here that update is dropped: nobody
  can see the list. The same holds for every message, key binding and search the palette was
  sent before it closed (an Enter, a down arrow, letters typed in the same burst as Escape):
  a NoMatches from a palette that is no longer the open screen is dropped.

And one rule for the screen stack (``may_open``), found by the 2,000-random-keys test: a key
can reach the app's bindings before a dialog just pushed has focused its input, so `c` typed
right after ctrl+p pushed Compare over the palette, and the next ctrl+p (the palette no longer
on top, so Textual thought none was open) pushed a second palette with the same id. Now a
screen is never stacked twice, and nothing is pushed over an open dialog.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any, Literal

from textual import work
from textual.await_complete import AwaitComplete
from textual.command import CommandPalette
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.timer import Timer, TimerCallback
from textual.widgets import OptionList


class Palette(CommandPalette):
    @contextlib.contextmanager
    def _unless_open(self) -> Iterator[None]:
        """NoMatches from a palette that is no longer the open screen is dropped: its
        widgets are gone or going, and nobody can see the list any more."""
        try:
            yield
        except NoMatches:
            if self.is_attached and self is self.app.screen and not closing(self):
                raise

    async def _on_message(self, message: Message) -> None:
        # A key, an Enter (Input.Submitted) or a selection queued before the palette closed
        # is handled after its widgets went; each handler looks the command list up first.
        with self._unless_open():
            await super()._on_message(message)

    @work(exclusive=True, group=CommandPalette._GATHER_COMMANDS_GROUP)
    async def _gather_commands(self, search_value: str) -> None:
        # The search worker typed letters start can begin after an Escape in the same burst.
        gather = CommandPalette._gather_commands.__wrapped__  # type: ignore[attr-defined]
        with self._unless_open():
            await gather(self, search_value)

    def _action_cursor_down(self) -> None:
        with self._unless_open():
            super()._action_cursor_down()

    def dismiss(self, result: Any = None) -> AwaitComplete:
        # Screen.dismiss pops whatever screen is on top. A second Enter typed before the
        # palette is gone would dismiss it again and pop the monitor underneath.
        if self is not self.app.screen:
            return AwaitComplete()
        # Its command runs next (call_later): the palette is closing, not a dialog any more.
        self._slotlab_dismissed = True
        return super().dismiss(result)

    def _watch__list_visible(self) -> None:
        with contextlib.suppress(NoMatches):
            super()._watch__list_visible()

    async def _watch__show_busy(self) -> None:
        with contextlib.suppress(NoMatches):
            await super()._watch__show_busy()

    def set_timer(
        self,
        delay: float,
        callback: TimerCallback | None = None,
        *,
        name: str | None = None,
        pause: bool = False,
    ) -> Timer:
        # A timer hands its callback to call_next when it fires, so the callback runs later
        # still, maybe once the closing palette's widgets are gone: "No matches found" then
        # has no list to go into. The guard goes on the callback itself, not the hand-over.
        if callback is None:
            return super().set_timer(delay, name=name, pause=pause)
        fire = callback

        async def guarded() -> None:
            with self._unless_open():
                result = fire()
                if inspect.isawaitable(result):
                    await result

        return super().set_timer(delay, guarded, name=name, pause=pause)

    def _action_command_list(self, action: str) -> None:
        with contextlib.suppress(KeyError), self._unless_open():
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
    # A marker on this screen instance: Screen declares no such attribute.
    screen._slotlab_dismissed = True  # type: ignore[attr-defined]
    screen.dismiss(result)


def closing(screen: Screen[Any]) -> bool:
    """The screen has been dismissed and is on its way out."""
    return bool(getattr(screen, "_slotlab_dismissed", False))


def may_open(app: Any, kind: type[Screen[Any]]) -> bool:
    """Whether a screen of this kind may be pushed now: none is on the stack already, and
    the top screen is not an open dialog (a dialog owns the keys until it closes)."""
    stack: list[Screen[Any]] = app.screen_stack
    if any(isinstance(s, kind) and not closing(s) for s in stack):
        return False
    top = stack[-1] if stack else None
    return not (isinstance(top, ModalScreen) and not closing(top))

"""`Pilot.pause()` that counts pending work instead of guessing it from CPU time.

Textual's own pause ends with ``wait_for_idle``, which calls the app idle once its process
time stops keeping up with wall time, or after a second at most. On a loaded machine neither
tells whether the screen has been laid out: a test then reads a half-drawn screen (a header
and no footer). Here a pause lasts until no node of the screen has a message queued and the
screen has no layout, repaint, recompose or after-refresh callback pending: a fact about the app, not about the clock.
Textual is pinned exactly (pyproject.toml), so the private members read here cannot move under
us unnoticed.
"""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.pilot import Pilot
from textual.screen import Screen

# A frame timer ticks forever, so "quiet" is checked a bounded number of times; a screen
# settles in one or two.
ROUNDS = 20


def _quiet(app: App[Any], screen: Screen[Any]) -> bool:
    if (
        screen._layout_required
        or screen._scroll_required
        or screen._repaint_required
        or screen._recompose_required
        or screen._dirty_widgets
        or screen._callbacks
    ):
        return False
    return all(node._message_queue.empty() for node in (app, *screen.walk_children()))


async def counted_pause(pilot: Pilot[Any], delay: float | None = None) -> None:
    if delay is not None:  # an explicit sleep is the test's own choice
        await ORIGINAL_PAUSE(pilot, delay)
        return
    # Textual's pause, again until the screen is quiet: the screen's own timer and idle
    # handler do the drawing, in their order; only the decision to stop waiting is ours.
    for _ in range(ROUNDS):
        await ORIGINAL_PAUSE(pilot)
        if _quiet(pilot.app, pilot.app.screen):
            return


ORIGINAL_PAUSE = Pilot.pause

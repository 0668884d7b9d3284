"""Waiting for the app by counting its pending work, never by the clock.

Textual's pilot waits after every key and in every pause with ``wait_for_idle``: at least one
20 ms sleep, then more until the process's CPU time stops keeping up with wall time (a second
when the engine keeps it busy). That costs most of a TUI test's wall time, and on a loaded
machine it tells nothing: a test then reads a half-drawn screen (a header and no footer), or a
key lands before the previous one has moved the focus. Here a wait lasts until no node of the
screen has a message queued and the screen has no layout, repaint, recompose or after-refresh
callback pending: a fact about the app, not about the clock. Keys go straight into the app's
queue, so the pilot's barrier comes after them.

Textual is pinned exactly (pyproject.toml), so the private members read here cannot move under
us unnoticed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from textual._context import active_app
from textual.app import App
from textual.driver import Driver
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import DataTable

# A frame timer ticks forever, so "quiet" is checked a bounded number of times; a screen
# settles in one or two.
ROUNDS = 20


def _quiet(app: App[Any]) -> bool:
    if app._closing or app._closed or not app.is_running:
        return True  # an app on its way out has nothing more to draw
    screen = app.screen
    if (
        screen._layout_required
        or screen._scroll_required
        or screen._repaint_required
        or screen._recompose_required
        or screen._dirty_widgets
        or screen._callbacks
    ):
        return False
    nodes = (app, *screen.walk_children())
    return all(node._message_queue.empty() and not _idle_work(node) for node in nodes)


def _idle_work(node: object) -> bool:
    """A DataTable measures new rows and columns in its Idle handler, after its queue has
    emptied: a screen read before that drew the new rows under the old column widths."""
    return isinstance(node, DataTable) and bool(
        node._require_update_dimensions or node._updated_cells
    )


async def until_quiet(min_sleep: float = 0, max_sleep: float = 0) -> None:
    """Stands in for ``textual._wait.wait_for_idle``, behind every key and pause of the pilot
    (same signature; the times are unused). The screen's own update does the drawing; only
    the decision to stop waiting is ours."""
    try:
        app = active_app.get()
    except LookupError:
        await asyncio.sleep(0)
        return
    pilot = Pilot(app)
    for _ in range(ROUNDS):
        await asyncio.sleep(0)
        if app._resize_timer is not None:
            # Textual lets a burst of resizes settle for 1/120 s of wall time before the
            # screen hears of the last one: hand it over now, as that timer would.
            app._check_resize()
        if _quiet(app):
            return
        await pilot._wait_for_screen()
        app.screen._on_timer_update()


def post_now(driver: Driver, message: Message) -> None:
    """Stands in for ``Driver.send_message``, which posts a key some loop turns later."""
    driver._app.post_message(message)

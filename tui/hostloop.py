"""The asyncio loop the TUI runs on: uvloop's where it is installed.

The engine runs as trio's guest on Textual's asyncio loop, and guest mode costs one loop
iteration per trio task switch, that is, per hand-over of the sequencer's baton (33k in a
10 ms split at 8 vCPUs). A uvloop iteration costs a fraction of the standard loop's. The
engine's events per second with the TUI attached, over headless, rose from 0.43-0.49 to
0.54-0.60 (docs/performance.md). Where uvloop is missing, the standard loop runs the same app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the host loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)

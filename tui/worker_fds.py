"""Worker processes started from inside the TUI need real file descriptors.

Textual replaces ``sys.stderr`` with a capture object whose ``fileno()`` is -1 while the app
runs (``textual.app._PrintCapture``). multiprocessing's spawn start method launches its
resource tracker the first time a worker starts, passing ``sys.stderr.fileno()`` among the
fds the child keeps (``multiprocessing.resource_tracker.ResourceTracker.ensure_running``);
-1 makes ``_posixsubprocess`` refuse with "bad value(s) in fds_to_keep". Every worker after
that only passes the tracker's pipe, so starting the tracker with the real stderr once, on
the UI thread (the only thread writing through Textual's capture), is enough.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from multiprocessing import resource_tracker
from typing import TextIO


def _has_fd(stream: TextIO | None) -> bool:
    if stream is None:
        return False
    try:
        return stream.fileno() >= 0
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def _real_stderr() -> Iterator[None]:
    if _has_fd(sys.stderr):
        yield
        return
    saved = sys.stderr
    devnull: TextIO | None = None
    if _has_fd(sys.__stderr__):
        sys.stderr = sys.__stderr__
    else:
        devnull = open(os.devnull, "w")  # noqa: SIM115  (closed below, after the spawn)
        sys.stderr = devnull
    try:
        yield
    finally:
        sys.stderr = saved
        if devnull is not None:
            devnull.close()


def prepare_worker_processes() -> None:
    """Make sure multiprocessing's resource tracker runs (started with a usable stderr), so
    worker processes spawned later from a thread can start. Cheap when it already runs."""
    with _real_stderr():
        resource_tracker.ensure_running()

"""The `slotlab` executable. Loading the command line (the engine, trio, Textual) takes a
second or two on a busy machine; while it loads, SIGINT and SIGTERM are only noted, so a
Ctrl-C pressed right after the command still ends with one line and 130 (143), not a
traceback from whichever import it landed in. Standard library only, so that this much loads
at once."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from types import FrameType


def _load() -> Callable[[], int]:
    from tui.cli import main

    return main


def main() -> int:
    noted: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(signum)

    previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        command = _load()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if noted:
        print("slotlab: interrupted", file=sys.stderr)
        return 128 + noted[0]
    return command()


if __name__ == "__main__":
    sys.exit(main())

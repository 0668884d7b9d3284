"""A recording of the TUI replaying a session log, as an asciicast (v2 or v3).

The TUI runs headless at the chosen size, paused; each frame seeks the replay to the last
event at or before that frame's virtual time and records the screen. So a frame's content
depends only on the log, the size, the speed and the frame rate, never on how fast this
machine is, and two exports of one log are identical. A frame at or past the last event waits
for the run's end itself, since the verdict reaches the screen only then. The last frame is the finished run,
with its verdict on screen.

asciicast v2: a header line, then `[time, "o", data]` with absolute times. v3: the header
has `term: {cols, rows}`, and times are intervals since the previous event.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import io
import json
from typing import Any

from rich.console import Console

from engine.api import format_ns, read_log
from tui.app import SlotlabApp
from tui.options import LaunchOptions
from tui.screens.replay import ReplayScreen
from tui.widgets.event_log import EventLog

MAX_FRAMES = 5000
END_WAIT_S = 60.0
HOME = "\x1b[H"
HIDE_CURSOR = "\x1b[?25l"


def _frame(app: SlotlabApp) -> str:
    """The screen as ANSI text, drawn from the top-left corner over the previous frame."""
    width, height = app.size
    console = Console(
        width=width,
        height=height,
        file=io.StringIO(),
        force_terminal=True,
        record=True,
        color_system="truecolor",
        legacy_windows=False,
        safe_box=False,
    )
    console.print(app.screen._compositor.render_update(full=True))
    lines = console.export_text(styles=True).rstrip("\n").split("\n")
    return HOME + "\r\n".join(lines[:height])


async def _record(
    log_path: str, size: tuple[int, int], speed: float, fps: float
) -> list[tuple[float, str]]:
    log = read_log(log_path)
    times = [e.t for e in log.events]
    end_ns = times[-1] if times else 0
    step_ns = speed * 1e9 / fps
    frames_needed = int(end_ns / step_ns) + 2 if step_ns > 0 else 2
    if frames_needed > MAX_FRAMES:
        raise ValueError(
            f"--speed {speed:g} --fps {fps:g} needs {frames_needed} frames for "
            f"{format_ns(end_ns)} of virtual time (at most {MAX_FRAMES}): raise --speed"
        )
    app = SlotlabApp(LaunchOptions(replay=log_path, paused=True, speed=speed), keymap={})
    frames: list[tuple[float, str]] = []
    async with app.run_test(headless=True, size=size) as pilot:
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        for k in range(frames_needed):
            target = bisect.bisect_right(times, k * step_ns)
            last = k == frames_needed - 1
            await (screen.action_to_end() if last else screen.seek(target))
            if last or target == len(times):
                # Past its last event the run ends by itself, and its verdict reaches the
                # screen only once it has: settle() would return as soon as trio looks idle,
                # which under load can be before that.
                await _run_end(app)
            await app.settle()
            _event_logs_from_snapshot(app)
            await pilot.pause()
            frame = _frame(app)
            if not frames or frame != frames[-1][1] or last:
                frames.append((k / fps, frame))
        app.exit()
    return frames


def _event_logs_from_snapshot(app: SlotlabApp) -> None:
    """The event logs as the snapshot holds them (its recent events), not as the frame timer
    fed them tick by tick: when the run raced to its end between two ticks, how many events a
    log kept depended on the ticks (2,012 in one export under load, 2,248 in another of the
    same log), and so did the last frame."""
    for log in app.screen.query(EventLog):
        log.reset()
    app.refresh_now()


async def _run_end(app: SlotlabApp) -> None:
    """Until the replayed run has ended; bounded only so that a run that somehow never ends
    cannot hang the export (its frame is then taken as it stands)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(app.host.wait_done(), END_WAIT_S)


def encode(frames: list[tuple[float, str]], size: tuple[int, int], version: int, title: str) -> str:
    cols, rows = size
    header: dict[str, Any]
    if version == 2:
        header = {"version": 2, "width": cols, "height": rows, "title": title}
        header["env"] = {"TERM": "xterm-256color"}
    else:
        header = {"version": 3, "term": {"cols": cols, "rows": rows, "type": "xterm-256color"}}
        header["title"] = title
    lines = [json.dumps(header)]
    previous = 0.0
    for n, (t, data) in enumerate(frames):
        text = (HIDE_CURSOR if n == 0 else "") + data
        stamp = t if version == 2 else t - previous
        previous = t
        lines.append(json.dumps([round(stamp, 6), "o", text]))
    return "\n".join(lines) + "\n"


def export_asciicast(
    log_path: str, size: tuple[int, int], speed: float, fps: float, version: int
) -> bytes:
    if log_path == "-":
        raise ValueError(
            "export --format asciicast replays the log in the TUI and needs a file, not stdin"
        )
    log = read_log(log_path)
    h = log.header
    title = f"slotlab replay: {h.scenario} / {h.strategy} / seed {h.seed}"
    frames = asyncio.run(_record(log_path, size, speed, fps))
    return encode(frames, size, version, title).encode()

"""`slotlab export --format asciicast`: the TUI replaying a log, recorded headless. v2 is read
by asciinema itself (`asciinema cat`), v3 by a parser of the v3 spec; both end on the verdict."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from engine.log import read_log
from tui.app import SlotlabApp
from tui.asciicast import _event_logs_from_snapshot
from tui.cli import main as slotlab
from tui.engine_host import EngineHost
from tui.options import LaunchOptions
from tui.screens.replay import ReplayScreen
from tui.widgets.event_log import EventLog

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _export(log: Path, out: Path, *extra: str) -> None:
    argv = ["export", str(log), "--format", "asciicast", "-o", str(out), "--size", "120x40"]
    assert slotlab([*argv, *extra]) == 0


def parse_v3(text: str) -> tuple[dict[str, Any], list[tuple[float, str, str]]]:
    """asciicast v3: a header object with version 3 and term.cols/rows, then one event per
    line, [interval, code, data], intervals non-negative; '#' lines are comments."""
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    header = json.loads(lines[0])
    if header.get("version") != 3:
        raise ValueError(f"not v3: {header.get('version')!r}")
    term = header["term"]
    if not (isinstance(term["cols"], int) and isinstance(term["rows"], int)):
        raise ValueError("term.cols and term.rows must be integers")
    events = []
    for n, line in enumerate(lines[1:], 2):
        interval, code, data = json.loads(line)
        if not isinstance(interval, int | float) or interval < 0:
            raise ValueError(f"line {n}: bad interval {interval!r}")
        if code not in ("o", "i", "m", "r", "x") or not isinstance(data, str):
            raise ValueError(f"line {n}: bad event {code!r}")
        events.append((float(interval), code, data))
    return header, events


def test_v2_plays_in_asciinema_and_ends_on_the_verdict(
    verdict_logs: dict[str, Path], tmp_path: Path
) -> None:
    cast = tmp_path / "crash.cast"
    _export(verdict_logs["crash"], cast)
    lines = cast.read_text().splitlines()
    header = json.loads(lines[0])
    assert (header["version"], header["width"], header["height"]) == (2, 120, 40)
    times = [json.loads(ln)[0] for ln in lines[1:]]
    assert times == sorted(times)
    asciinema = shutil.which("asciinema") or str(Path(sys.executable).parent / "asciinema")
    done = subprocess.run(
        [asciinema, "cat", str(cast)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    last = ANSI.sub("", json.loads(lines[-1])[2])
    assert "CRASHED" in last
    n = len(read_log(verdict_logs["crash"]).events)
    assert f"event {n}/{n}" in last
    assert ANSI.sub("", done.stdout.decode()).endswith(last[-200:])


@pytest.mark.slow  # three full exports of a recording
def test_v3_parses_and_is_the_same_recording(verdict_logs: dict[str, Path], tmp_path: Path) -> None:
    v2, v3 = tmp_path / "ok.v2.cast", tmp_path / "ok.v3.cast"
    _export(verdict_logs["ok"], v2, "--speed", "1e-3")
    _export(verdict_logs["ok"], v3, "--speed", "1e-3", "--asciicast-version", "3")
    header, events = parse_v3(v3.read_text())
    assert header["term"] == {"cols": 120, "rows": 40, "type": "xterm-256color"}
    v2_events = [json.loads(ln) for ln in v2.read_text().splitlines()[1:]]
    # The same frames; v3 counts time between events, v2 from the start.
    assert [data for _, _, data in events] == [data for _, _, data in v2_events]
    elapsed = 0.0
    for (interval, _, _), (t, _, _) in zip(events, v2_events, strict=True):
        elapsed += interval
        assert elapsed == pytest.approx(t, abs=1e-5)
    assert "OK" in ANSI.sub("", events[-1][2])
    # Deterministic: a second export of the same log is the same file.
    again = tmp_path / "ok.v3.again.cast"
    _export(verdict_logs["ok"], again, "--speed", "1e-3", "--asciicast-version", "3")
    assert again.read_bytes() == v3.read_bytes()


@pytest.mark.slow  # a full export
def test_a_frame_at_the_end_waits_for_the_run_to_end(
    verdict_logs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """settle() returns once trio looks idle, which under load came before the finished run
    reached the screen: one export of two differed in a frame at the end. Here settle()
    returns at once, the worst case: the frames at the end still show the verdict."""

    async def at_once(self: EngineHost) -> None:
        return None

    monkeypatch.setattr(EngineHost, "settle", at_once)
    out = tmp_path / "ok.cast"
    _export(verdict_logs["ok"], out, "--speed", "1e-3")
    last = ANSI.sub("", json.loads(out.read_text().splitlines()[-1])[2])
    assert "REPLAY FINISHED" in last
    assert "OK" in last


def test_v3_parser_refuses_a_v2_file() -> None:
    with pytest.raises(ValueError, match="not v3"):
        parse_v3('{"version": 2, "width": 80, "height": 24}\n')


@pytest.mark.asyncio
async def test_a_frame_shows_the_snapshots_events_whatever_the_ticks_fed_the_log(
    verdict_logs: dict[str, Path],
) -> None:
    """The frame timer feeds the event log tick by tick; a log that kept events from an
    earlier tick (the run raced to its end between two) drew another count in one export of
    two. A frame's log is the snapshot's recent events, and only those."""
    app = SlotlabApp(LaunchOptions(replay=str(verdict_logs["ok"]), paused=True), keymap={})
    async with app.run_test(headless=True, size=(120, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, ReplayScreen)
        await screen.action_to_end()
        await app.settle()
        snap = app.host.snapshot()
        assert snap is not None
        assert snap.events
        log = screen.query_one("#ov-log", EventLog)
        assert snap.events[0].seq > 5  # the run outgrew the snapshot's window
        stale = [msgspec.structs.replace(e, seq=i) for i, e in enumerate(snap.events[:5])]
        log.reset()
        log.ingest(stale)  # what an earlier tick left there
        _event_logs_from_snapshot(app)
        await pilot.pause()
        assert f"of {len(snap.events)}," in "".join(
            s.text for s in log.render_line(log.size.height - 1)
        )

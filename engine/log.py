"""Session logs: JSON Lines, a header, the events, a verdict.

The writer encodes into one reused buffer and writes whole lines only, flushing at least every
100 ms of wall time, so a killed run leaves a log that reads cleanly up to its last flush. The
reader validates every line against the event union and says which line is wrong and why.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO, Any, Union

import msgspec

from engine import events as ev
from engine.events import SCHEMA_VERSION, Event

FLUSH_SECONDS = 0.1
FLUSH_BYTES = 1 << 16


class Header(msgspec.Struct, tag_field="kind", tag="header", kw_only=True):
    schema: int
    tool: str
    seed: int
    scenario: str
    strategy: str
    host: dict[str, Any]
    vcpus: int
    duration_ns: int
    faults: list[str]
    fault_script: list[list[Any]]
    naive: bool
    scenario_text: str
    """The scenario file itself, so a log replays without the file it came from."""


class VerdictLine(msgspec.Struct, tag_field="kind", tag="verdict", kw_only=True):
    verdict: str
    explanation: str
    summary: dict[str, Any]


def _event_types() -> tuple[type[Event], ...]:
    return tuple(
        cls
        for cls in vars(ev).values()
        if isinstance(cls, type) and issubclass(cls, Event) and cls is not Event
    )


EVENT_TYPES = _event_types()
LogLine = Union[Header, VerdictLine, *EVENT_TYPES]  # type: ignore[valid-type]


class LogError(ValueError):
    pass


class LogWriter:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self.path.open("wb")
        self._encoder = msgspec.json.Encoder()
        self._buf = bytearray()
        self._last_flush = time.monotonic()
        self.events = 0
        self.bytes = 0

    def write_header(self, header: Header) -> None:
        self._line(header)
        self.flush()

    def write_event(self, event: Event) -> None:
        self.events += 1
        self._line(event)

    def write_verdict(self, line: VerdictLine) -> None:
        self._line(line)
        self.close()

    def _line(self, obj: Any) -> None:
        buf = self._buf
        self._encoder.encode_into(obj, buf, len(buf))
        buf.append(0x0A)
        if len(buf) >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._buf and not self._file.closed:
            self._file.write(self._buf)
            self.bytes += len(self._buf)
            self._buf.clear()
            self._file.flush()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._file.closed:
            self.flush()
            self._file.close()


class SessionLog(msgspec.Struct):
    header: Header
    events: list[Event]
    verdict: VerdictLine | None
    event_lines: list[bytes]


_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(LogLine)


def read_log(path: str | Path) -> SessionLog:
    """Parse and validate a session log; LogError names the file, line and reason."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise LogError(f"{p}: cannot read: {err.strerror}") from None
    if not data:
        raise LogError(f"{p}:1: empty file, not a slotlab session log")
    lines = data.split(b"\n")
    truncated = lines[-1] != b""
    if not truncated:
        lines.pop()
    header: Header | None = None
    events: list[Event] = []
    raw: list[bytes] = []
    verdict: VerdictLine | None = None
    for no, line in enumerate(lines, 1):
        if truncated and no == len(lines):
            raise LogError(
                f"{p}:{no}: truncated line (the run was killed mid-write?); {no - 1} complete lines precede it"
            )
        try:
            obj = _decoder.decode(line)
        except msgspec.ValidationError as err:
            raise LogError(f"{p}:{no}: not a slotlab log line: {err}") from None
        except msgspec.DecodeError as err:
            raise LogError(f"{p}:{no}: corrupted line: {err}") from None
        if no == 1:
            if not isinstance(obj, Header):
                raise LogError(
                    f"{p}:1: the first line must be the header, found {type(obj).__name__}"
                )
            if obj.schema != SCHEMA_VERSION:
                raise LogError(
                    f"{p}:1: schema {obj.schema}, this slotlab reads schema {SCHEMA_VERSION}"
                )
            header = obj
        elif isinstance(obj, Header):
            raise LogError(f"{p}:{no}: a second header")
        elif isinstance(obj, VerdictLine):
            if no != len(lines):
                raise LogError(f"{p}:{no}: the verdict must be the last line")
            verdict = obj
        else:
            events.append(obj)
            raw.append(line)
    assert header is not None
    return SessionLog(header, events, verdict, raw)


def encode_event(event: Event) -> bytes:
    return msgspec.json.encode(event)

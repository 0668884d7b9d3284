"""Session logs: JSON Lines, a header, the events, a verdict.

The writer encodes into one reused buffer and writes whole lines only, flushing at least every
100 ms of wall time, so a killed run leaves a log that reads cleanly up to its last flush. The
reader validates every line against the event union and says which line is wrong and why.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Union

import msgspec

from engine import events as ev
from engine.events import SCHEMA_VERSION, Event
from engine.logio import LogIOError, display_name, log_lines, open_sink
from engine.sim.perturb import Perturb
from engine.summary import Summary

READABLE_SCHEMAS = (1, 2, 3, SCHEMA_VERSION)
"""Schema 1 differs from 2 only in its verdict line's summary, which recorded the log's path.
Schema 2 differs from 3 in what t is: the emitting actor's own clock, which could go backwards
along seq (3 stamps the log's order and keeps the actor's clock in actor_t), and in the verdict
line's update-latency percentiles (nearest rank from 3 on). Both read, report and export; only
schemas stamped as this engine stamps verify (engine/verify.py)."""
REPLAYABLE_SCHEMAS = (3, SCHEMA_VERSION)
"""The schemas whose times this engine writes again on replay (4 differs from 3 only in a
perturbed run's header)."""


def header_schema(perturb: Perturb | None) -> int:
    """The oldest schema that describes a run's log. Only a header with `perturb.steps` needs 4:
    a slotlab that reads 3 and not 4 would replay it on another schedule, so it must refuse it,
    while every other log stays byte for byte what schema 3 wrote."""
    return SCHEMA_VERSION if perturb is not None and perturb.at_gaps else 3


FLUSH_SECONDS = 0.1
FLUSH_BYTES = 1 << 16
FLUSH_EVENTS = 512  # about FLUSH_BYTES of encoded events (122 B each on a typical run)


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
    perturb: Perturb | msgspec.UnsetType = msgspec.UNSET
    """`slotlab hunt`'s schedule perturbation; absent (not null) from an unperturbed run's
    header, so those logs stay byte for byte what they were."""


class VerdictLine(msgspec.Struct, tag_field="kind", tag="verdict", kw_only=True):
    verdict: str
    explanation: str
    summary: Summary
    """The run's summary less `log` (schema 1 logs recorded it: it reads into summary.log)."""


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
        try:
            self._file = open_sink(self.path)
        except OSError as err:
            raise LogError(f"{path}: cannot write the session log: {err.strerror}") from None
        self._closed = False
        self._encoder = msgspec.json.Encoder()
        self._buf = bytearray()
        self._pending: list[Event] = []
        self._last_flush = time.monotonic()
        self.events = 0
        self.bytes = 0

    def write_header(self, header: Header) -> None:
        self._line(header)
        self.flush()

    def write_event(self, event: Event) -> None:
        # Events wait as objects and are encoded a batch at a time (encode_lines): one call
        # per batch instead of one per event keeps the encoder's per-call cost off the run.
        # The bus never changes an event once its subscribers have it, so the bytes are the
        # same as encoding each at once.
        self.events += 1
        pending = self._pending
        pending.append(event)
        if len(pending) >= FLUSH_EVENTS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def write_verdict(self, line: VerdictLine) -> None:
        # Where the log lives is not part of the run: the same run gives the same bytes.
        self._line(verdict_line(line.verdict, line.explanation, line.summary))
        self.close()

    def _encode_pending(self) -> None:
        if self._pending:
            self._buf += self._encoder.encode_lines(self._pending)
            self._pending.clear()

    def _line(self, obj: Any) -> None:
        self._encode_pending()  # what was emitted before goes first
        buf = self._buf
        self._encoder.encode_into(obj, buf, len(buf))
        buf.append(0x0A)
        if len(buf) >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        self._encode_pending()
        if self._buf and not self._closed:
            try:
                self._file.write(self._buf)
                self._file.flush()
            except OSError as err:
                # A full disk or /dev/full: one line, and no second try at close().
                self._closed = True
                with contextlib.suppress(OSError):
                    self._file.close()
                raise LogError(
                    f"{self.path}: cannot write the session log: {err.strerror}"
                ) from None
            self.bytes += len(self._buf)
            self._buf.clear()
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._closed = True
            self._file.close()


class SessionLog(msgspec.Struct):
    header: Header
    events: list[Event]
    verdict: VerdictLine | None
    event_lines: list[bytes]
    verdict_line: bytes = b""
    """The verdict line as written, so verification compares bytes, not a re-encoding."""


_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(LogLine)


class LogItem(msgspec.Struct):
    """One line of a log as iter_log yields it: its number, what it decoded to, its bytes."""

    no: int
    obj: Header | VerdictLine | Event
    line: bytes


def iter_log(path: str | Path) -> Iterator[LogItem]:
    """Every line of a log, validated, one at a time (plain, gzip, zstd, or `-` for stdin):
    readers that stream (check, replay --verify) hold one line, whatever the log's size.
    LogError names the file, line and reason. CRLF line ends read as LF."""
    p = display_name(path)
    no = 0
    seen_verdict = False
    try:
        for line in log_lines(path):
            no += 1
            if not line.endswith(b"\n"):
                raise LogError(
                    f"{p}:{no}: truncated line (the run was killed mid-write?); {no - 1} complete lines precede it"
                )
            line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if seen_verdict:
                raise LogError(f"{p}:{no - 1}: the verdict must be the last line")
            try:
                obj = _decoder.decode(line)
            except msgspec.ValidationError as err:
                raise LogError(f"{p}:{no}: not a slotlab log line: {_cut(str(err))}") from None
            except msgspec.DecodeError as err:
                raise LogError(f"{p}:{no}: corrupted line: {_cut(str(err))}") from None
            if no == 1:
                obj = check_header(obj, p)
            elif isinstance(obj, Header):
                raise LogError(f"{p}:{no}: a second header")
            seen_verdict = isinstance(obj, VerdictLine)
            yield LogItem(no, obj, line)
    except LogIOError as err:
        raise LogError(str(err)) from None
    if no == 0:
        raise LogError(f"{p}:1: empty file, not a slotlab session log")


def _cut(text: str, keep: int = 200) -> str:
    """One line of at most ``keep`` characters. msgspec's message quotes the value it refused
    as it was, and a crafted log can put a line break in it (`Invalid value 'a\\nb'`)."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= keep else f"{text[:keep]}..."


def read_log(path: str | Path) -> SessionLog:
    """Parse and validate a whole session log into memory (the TUI's replay wants it all)."""
    header: Header | None = None
    events: list[Event] = []
    raw: list[bytes] = []
    verdict: VerdictLine | None = None
    verdict_bytes = b""
    for item in iter_log(path):
        if isinstance(item.obj, Header):
            header = item.obj
        elif isinstance(item.obj, VerdictLine):
            verdict, verdict_bytes = item.obj, item.line
        else:
            events.append(item.obj)
            raw.append(item.line)
    assert header is not None
    return SessionLog(header, events, verdict, raw, verdict_bytes)


def check_header(obj: object, name: str) -> Header:
    """The first line of a log must be a header of a schema this slotlab reads."""
    if not isinstance(obj, Header):
        raise LogError(f"{name}:1: the first line must be the header, found {type(obj).__name__}")
    if obj.schema not in READABLE_SCHEMAS:
        raise LogError(
            f"{name}:1: schema {obj.schema}, this slotlab reads schemas "
            f"{', '.join(map(str, READABLE_SCHEMAS))}"
        )
    return obj


def verdict_line(verdict: str, explanation: str, summary: Summary) -> VerdictLine:
    """The verdict line a run writes: its summary less where the log lives."""
    kept = msgspec.structs.replace(summary, log=msgspec.UNSET)
    return VerdictLine(verdict=verdict, explanation=explanation, summary=kept)


def encode_event(event: Event) -> bytes:
    return msgspec.json.encode(event)

"""`check` and `replay --verify` in bounded memory, whatever the log's size.

Neither keeps the log's events. `check` feeds them to a checker as they are read. `verify`
reads the log twice: once for its outline (header, recorded commands, event count, verdict),
then again alongside the replay, comparing each replayed event with the next recorded line and
stopping the replay at the first difference, or where an interrupted or cut-short run ended.
So a crafted header (2^60 ns) cannot make a verification run forever, and a 1 GB log needs the
memory of one line. A log read from stdin cannot be read twice; its lines are kept instead.
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Callable, Iterator

import msgspec
import trio

from engine.checker import Verdict
from engine.events import Command, Event, Violation
from engine.log import (
    REPLAYABLE_SCHEMAS,
    Header,
    LogError,
    LogItem,
    SessionLog,
    VerdictLine,
    encode_event,
    iter_log,
    verdict_line,
)
from engine.logio import STDIN
from engine.runner import VerifyResult, checker_for, config_from_header, replay_session
from engine.session import Session
from engine.signals import INTERRUPTED, run_interruptible

MISMATCH_SHOWN = 300
"""Characters of a differing line shown in a MISMATCH (a crafted line may be megabytes)."""


@dataclasses.dataclass
class LogOutline:
    header: Header
    commands: list[Command]
    events: int
    verdict: VerdictLine | None
    verdict_line: bytes


def _cut(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    if len(text) <= MISMATCH_SHOWN:
        return text
    return f"{text[:MISMATCH_SHOWN]}... ({len(text) - MISMATCH_SHOWN} more characters)"


def _reader(path: str) -> Callable[[], Iterator[LogItem]]:
    """Something that reads the log from its start each time it is called."""
    if path != STDIN:
        return lambda: iter_log(path)
    kept = list(iter_log(path))
    return lambda: iter(kept)


def outline(items: Iterator[LogItem], path: str) -> LogOutline:
    header: Header | None = None
    commands: list[Command] = []
    events = 0
    verdict: VerdictLine | None = None
    verdict_bytes = b""
    for item in items:
        obj = item.obj
        if isinstance(obj, Header):
            header = obj
        elif isinstance(obj, VerdictLine):
            verdict, verdict_bytes = obj, item.line
        else:
            events += 1
            if isinstance(obj, Command):
                try:
                    Session.check_command(obj.name, obj.args)
                except ValueError as err:
                    raise LogError(
                        f"{path}:{item.no}: a command the run cannot apply: {err}"
                    ) from None
                commands.append(obj)
    assert header is not None  # iter_log refuses a log without one
    return LogOutline(header, commands, events, verdict, verdict_bytes)


def _signal_of(verdict: VerdictLine | None) -> int:
    """The signal an interrupted log names (`SIGTERM stopped the run ...`); 0 otherwise."""
    if verdict is None or verdict.verdict != INTERRUPTED:
        return 0
    name = verdict.explanation.partition(" ")[0]
    return int(signal.Signals[name]) if name in signal.Signals.__members__ else signal.SIGINT


class _Comparer:
    """Each replayed event against the next recorded one, as the replay produces them."""

    def __init__(self, recorded: Iterator[bytes], total: int, stop_after: bool, signum: int):
        self.recorded = recorded
        self.total = total
        self.stop_after = stop_after
        self.signum = signum
        self.count = 0
        self.differs: tuple[int, bytes, bytes | None] | None = None
        self.session: Session | None = None

    def __call__(self, event: Event) -> None:
        if self.differs is not None:
            return
        if self.stop_after and not self.signum and self.count >= self.total:
            return  # a log cut at any line: its run went on past it, until the next hand-over
        self.count += 1
        got = encode_event(event)
        want = next(self.recorded, None)
        session = self.session  # None while the boot layout is installed
        if want != got:
            self.differs = (self.count, got, want)
            if session is not None:
                session.seq.finish("mismatch")
        elif self.stop_after and self.count == self.total and session is not None:
            self.stop_here(session)

    def stop_here(self, session: Session) -> None:
        """The recorded run stopped at the hand-over after this event; so does its replay."""
        if self.signum:
            session.interrupt(self.signum)
        else:
            session.seq.finish("cut short")


def verify_streaming(path: str) -> VerifyResult:
    read = _reader(path)
    log = outline(read(), path)
    if log.header.host.get("backend") == "kvm":
        # A real /dev/kvm run follows the wall clock and the host's scheduler: nothing replays it.
        raise LogError(
            f"{path}:1: a --backend kvm run is wall-clock and nondeterministic and cannot be "
            f"replayed or verified; judge it with `slotlab check {path}`"
        )
    if log.header.schema not in REPLAYABLE_SCHEMAS:
        # Replay re-executes under this engine, which stamps t (and rounds percentiles) as
        # schema 3 does: an older log's bytes cannot come out again.
        raise LogError(
            f"{path}:1: a schema {log.header.schema} log, recorded by an older slotlab "
            f"({log.header.tool}): its replay here writes schema {REPLAYABLE_SCHEMAS[0]} times, "
            f"so it cannot verify byte for byte; `slotlab check {path}` re-judges its events"
        )
    try:
        config_from_header(log.header)
    except ValueError as err:
        raise LogError(f"{path}:1: the header cannot be replayed: {err}") from None
    signum = _signal_of(log.verdict)
    recorded = (item.line for item in read() if not isinstance(item.obj, Header | VerdictLine))
    cmp = _Comparer(recorded, log.events, bool(signum) or log.verdict is None, signum)
    # The replay needs the header and the commands only: a log outline with no events.
    skeleton = SessionLog(log.header, list(log.commands), None, [])
    session = replay_session(skeleton, observers=(cmp,))
    cmp.session = session
    if cmp.stop_after and cmp.count == log.events:
        cmp.stop_here(session)  # it stopped right after the boot layout
    if cmp.differs is None:
        trio.run(run_interruptible, session.run, session.interrupt)
    if cmp.differs is not None:
        n, got, want = cmp.differs
        if want is None:
            return VerifyResult(False, n, f"the log has {log.events} events, the replay more")
        return VerifyResult(
            False, n, f"event {n} differs:\n  log:    {_cut(want)}\n  replay: {_cut(got)}"
        )
    if cmp.count != log.events:
        return VerifyResult(
            False, cmp.count, f"the log has {log.events} events, the replay produced {cmp.count}"
        )
    if log.verdict is None:
        raise LogError(
            f"{path}:{log.events + 2}: no verdict line: the run was cut short; its "
            f"{log.events} events replay identically, but only a finished run verifies"
        )
    mismatch = verdict_mismatch(log, session)
    if mismatch:
        return VerifyResult(False, cmp.count, mismatch)
    upto = ", up to the interruption" if signum else ""
    return VerifyResult(
        True, cmp.count, f"{cmp.count} events and the verdict identical, byte for byte{upto}"
    )


def verdict_mismatch(log: LogOutline, session: Session) -> str:
    """The replay's own verdict line against the recorded one, byte for byte; '' when they
    agree."""
    verdict = session.result or session.checker.verdict()
    derived = verdict_line(verdict.verdict, verdict.explanation, session.summary())
    want = log.verdict_line
    got = msgspec.json.encode(derived)
    if want == got:
        return ""
    return f"the verdict line differs:\n  log:    {_cut(want)}\n  replay: {_cut(got)}"


def check_streaming(path: str) -> tuple[Verdict, LogOutline]:
    """The checker on a recorded log: re-judge its events without re-executing anything."""
    items = iter_log(path)
    first = next(items)
    assert isinstance(first.obj, Header)
    header = first.obj
    try:
        checker = checker_for(header)
    except ValueError as err:
        raise LogError(f"{path}:1: {err}") from None
    events = 0
    verdict: VerdictLine | None = None
    verdict_bytes = b""
    for item in items:
        obj = item.obj
        if isinstance(obj, VerdictLine):
            verdict, verdict_bytes = obj, item.line
        elif not isinstance(obj, Header):
            events += 1
            # Violations in the log are the online checker's own findings; judge afresh.
            if not isinstance(obj, Violation):
                checker.observe(obj)
    return checker.verdict(), LogOutline(header, [], events, verdict, verdict_bytes)

"""Running sessions headless: one run, a replay, a verification, a sweep over seeds."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path
from typing import Any

import msgspec
import trio

from engine.checker import Checker, Verdict
from engine.events import Command, Event, Subscriber, Violation
from engine.faults import parse_fault, parse_fault_file
from engine.log import Header, LogError, SessionLog, encode_event, read_log, verdict_line
from engine.scenarios import Scenario, load_scenario, parse_scenario
from engine.scenarios.loader import builtin_dir
from engine.session import RunConfig, Session
from engine.signals import INTERRUPTED, run_interruptible
from engine.sim.perturb import Perturb
from engine.sim.runtime import Pacing
from engine.vmm.strategies import get_strategy


def make_config(
    scenario: str,
    strategy: str,
    seed: int = 1,
    vcpus: int | None = None,
    duration_ns: int | None = None,
    faults: list[str] | None = None,
    faults_file: str | None = None,
    host: dict[str, Any] | None = None,
    naive: bool = False,
    perturb: Perturb | None = None,
) -> RunConfig:
    """Validate everything a run needs before it starts; raises ValueError with one line."""
    sc = load_scenario(scenario)
    text = _scenario_text(scenario, sc)
    for f in faults or []:
        parse_fault(f)
    script = [(t, spec.text()) for t, spec in parse_fault_file(faults_file)] if faults_file else []
    return RunConfig(
        scenario=sc,
        strategy=strategy,
        seed=seed,
        vcpus=vcpus,
        duration_ns=duration_ns,
        faults=list(faults or []),
        fault_script=script,
        host=dict(host or {}),
        naive=naive,
        scenario_text=text,
        perturb=perturb,
    )


def _scenario_text(name_or_path: str, sc: Scenario) -> str:
    path = Path(sc.source)
    if not path.is_absolute() and not path.exists():
        path = builtin_dir() / f"{sc.name}.toml"
    return path.read_text()


def new_session(config: RunConfig, log: str | None) -> Session:
    return Session(config, log_path=log)


def run_session(config: RunConfig, log: str | None = None) -> dict[str, Any]:
    """One run flat out; SIGINT/SIGTERM finish its log and raise engine.signals.Interrupted."""
    session = Session(config, log_path=log)
    trio.run(run_interruptible, session.run, session.interrupt)
    return session.summary()


def config_from_log(log: SessionLog) -> RunConfig:
    h = log.header
    sc = parse_scenario(h.scenario_text, f"{h.scenario}.toml (from the log header)")
    # A header that parses can still be nonsense: refuse it before anything runs.
    if h.vcpus < 1 or h.duration_ns < 1:
        raise ValueError(f"vcpus and duration_ns must be positive, not {h.vcpus}, {h.duration_ns}")
    get_strategy(h.strategy)
    for f in h.faults:
        parse_fault(f)
    for entry in h.fault_script:
        if not (
            len(entry) == 2
            and isinstance(entry[0], int)
            and entry[0] >= 0
            and isinstance(entry[1], str)
        ):
            raise ValueError(f"fault_script entry {entry!r} is not [time_ns, fault]")
        parse_fault(entry[1])
    return RunConfig(
        scenario=sc,
        strategy=h.strategy,
        seed=h.seed,
        vcpus=h.vcpus,
        duration_ns=h.duration_ns,
        faults=list(h.faults),
        fault_script=[(int(t), str(f)) for t, f in h.fault_script],
        host=dict(h.host.items()),
        naive=h.naive,
        scenario_text=h.scenario_text,
        perturb=None if isinstance(h.perturb, msgspec.UnsetType) else h.perturb,
    )


def replay_events(log: SessionLog) -> tuple[list[bytes], Session]:
    """Re-execute a log from its header and recorded commands; the events it produces."""
    produced: list[bytes] = []

    def record(event: Event) -> None:
        produced.append(encode_event(event))

    # Pacing commands replay as events; the replay itself always runs flat out.
    session = replay_session(log, observers=(record,))
    trio.run(session.run)
    return produced, session


def replay_session(
    log: SessionLog,
    pacing: Pacing | None = None,
    observers: tuple[Subscriber, ...] = (),
    keep_pacing: bool = False,
) -> Session:
    """A session that re-executes ``log``: its header's config, its recorded commands
    scheduled where they were applied (see ModelBackend.replay_commands)."""
    session = Session(config_from_log(log), pacing=pacing, observers=observers)
    commands = [ev for ev in log.events if isinstance(ev, Command)]
    session.backend.replay_commands(commands, keep_pacing)
    return session


@dataclasses.dataclass
class VerifyResult:
    ok: bool
    events: int
    message: str


MISMATCH_SHOWN = 300
"""Characters of a differing line shown in a MISMATCH (a crafted line may be megabytes)."""


def _cut(line: bytes) -> str:
    text = line.decode("utf-8", "replace")
    if len(text) <= MISMATCH_SHOWN:
        return text
    return f"{text[:MISMATCH_SHOWN]}... ({len(text) - MISMATCH_SHOWN} more characters)"


def _signal_of(log: SessionLog) -> int:
    """The signal an interrupted log names (`SIGTERM stopped the run ...`); 0 otherwise."""
    if log.verdict is None or log.verdict.verdict != INTERRUPTED:
        return 0
    name = log.verdict.explanation.partition(" ")[0]
    return int(signal.Signals[name]) if name in signal.Signals.__members__ else signal.SIGINT


class _Comparer:
    """Compares each replayed event with the log's as it is produced, keeping none, and
    stops the replay at the first difference, or where a cut-short or interrupted run's
    events end: a crafted duration cannot make a verification run forever."""

    def __init__(self, want: list[bytes], stop_after: bool, signum: int) -> None:
        self.want = want
        self.stop_after = stop_after
        self.signum = signum
        self.count = 0
        self.differs: tuple[int, bytes] | None = None
        self.session: Session | None = None

    def __call__(self, event: Event) -> None:
        if self.differs is not None:
            return
        i = self.count
        self.count += 1
        got = encode_event(event)
        session = self.session  # None while the boot layout is installed
        if i >= len(self.want) or self.want[i] != got:
            self.differs = (i, got)
            if session is not None:
                session.seq.finish("mismatch")
        elif self.stop_after and self.count == len(self.want) and session is not None:
            self.stop_here(session)

    def stop_here(self, session: Session) -> None:
        """The recorded run stopped at the hand-over after this event; so does its replay."""
        if self.signum:
            session.interrupt(self.signum)
        else:
            session.seq.finish("cut short")


def verify_log(path: str) -> VerifyResult:
    log = read_log(path)
    if log.header.host.get("backend") == "kvm":
        # A real /dev/kvm run follows the wall clock and the host's scheduler: nothing replays it.
        raise LogError(
            f"{path}:1: a --backend kvm run is wall-clock and nondeterministic and cannot be "
            f"replayed or verified; judge it with `slotlab check {path}`"
        )
    try:
        config_from_log(log)
    except ValueError as err:
        raise LogError(f"{path}:1: the header cannot be replayed: {err}") from None
    want = log.event_lines
    signum = _signal_of(log)
    cmp = _Comparer(want, stop_after=bool(signum) or log.verdict is None, signum=signum)
    session = replay_session(log, cmp)
    cmp.session = session
    if cmp.stop_after and cmp.count == len(want):
        cmp.stop_here(session)  # it stopped right after the boot layout
    if cmp.differs is None:
        trio.run(run_interruptible, session.run, session.interrupt)
    if cmp.differs is not None:
        i, got = cmp.differs
        if i >= len(want):
            return VerifyResult(
                False, i + 1, f"the log has {len(want)} events, the replay produced more"
            )
        return VerifyResult(
            False,
            i + 1,
            f"event {i + 1} differs:\n  log:    {_cut(want[i])}\n  replay: {_cut(got)}",
        )
    if cmp.count != len(want):
        return VerifyResult(
            False, cmp.count, f"the log has {len(want)} events, the replay produced {cmp.count}"
        )
    if log.verdict is None:
        raise LogError(
            f"{path}:{len(want) + 2}: no verdict line: the run was cut short; its "
            f"{len(want)} events replay identically, but only a finished run verifies"
        )
    mismatch = verdict_mismatch(log, session)
    if mismatch:
        return VerifyResult(False, cmp.count, mismatch)
    upto = ", up to the interruption" if signum else ""
    return VerifyResult(
        True, cmp.count, f"{cmp.count} events and the verdict identical, byte for byte{upto}"
    )


def verdict_mismatch(log: SessionLog, session: Session) -> str:
    """The replay's own verdict line against the recorded one; '' when they agree.

    Schema 1 logs recorded their own path in the summary, so for them the comparison is of
    the decoded line less that key; from schema 2 on it is of the bytes.
    """
    verdict = session.result or session.checker.verdict()
    derived = verdict_line(verdict.verdict, verdict.explanation, session.summary())
    want = log.verdict_line
    got = msgspec.json.encode(derived)
    if log.header.schema < 2 and log.verdict is not None:
        want = msgspec.json.encode(
            verdict_line(log.verdict.verdict, log.verdict.explanation, log.verdict.summary)
        )
    if want == got:
        return ""
    return f"the verdict line differs:\n  log:    {_cut(want)}\n  replay: {_cut(got)}"


def checker_for(header: Header) -> Checker:
    """A fresh checker that judges a recorded run as its own checker did online."""
    atomic = get_strategy(header.strategy).atomic
    if header.host.get("backend") == "kvm":
        # A real run has no swap times to judge against: its checker words crashes in terms
        # of the DELETE ioctl instead, as it did online.
        from engine.backends.kvm.session import KvmChecker

        return KvmChecker(atomic)
    return Checker(atomic)


def check_log(path: str) -> tuple[Verdict, SessionLog]:
    """The checker on a recorded log: re-judge its events without re-executing anything."""
    log = read_log(path)
    checker = checker_for(log.header)
    for event in log.events:
        # Violations in the log are the online checker's own findings; judge afresh.
        if not isinstance(event, Violation):
            checker.observe(event)
    return checker.verdict(), log


def summary_json(summary: dict[str, Any]) -> str:
    return msgspec.json.encode(summary).decode()

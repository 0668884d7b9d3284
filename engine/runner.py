"""Running sessions headless: one run, a replay, a verification, a sweep over seeds."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from engine import limits
from engine.checker import Checker, Verdict
from engine.events import Command, Event, Subscriber
from engine.faults import check_targets, parse_fault, parse_fault_file
from engine.log import Header, LogError, SessionLog, encode_event
from engine.scenarios import Scenario, load_scenario, parse_scenario
from engine.scenarios.loader import builtin_dir
from engine.session import RunConfig, Session
from engine.signals import run_interruptible
from engine.sim.pacing import Pacing
from engine.sim.perturb import Perturb
from engine.summary import Summary
from engine.vmm.flatview import FlatView
from engine.vmm.strategies import get_strategy

if TYPE_CHECKING:
    from engine.verify import LogOutline


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
    """Validate everything a run needs before it starts; raises ValueError with one line
    naming the option (engine.limits has the bounds)."""
    sc = load_scenario(scenario)
    text = _scenario_text(scenario, sc)
    limits.SEED.check(seed, "--seed")
    if vcpus is not None:
        limits.VCPUS.check(vcpus, "--vcpus")
    if duration_ns is not None:
        limits.DURATION_NS.check(duration_ns, "--duration")
    for key, value in (host or {}).items():
        limits.check_host_option(key, value, f"--host {key}")
    check_memslots(sc, (host or {}).get("nr_memslots", limits.HOST_INTS["nr_memslots"].hi))
    nr_vcpus = vcpus or sc.vcpus
    for f in faults or []:
        check_targets(parse_fault(f), nr_vcpus)
    timed = parse_fault_file(faults_file, nr_vcpus) if faults_file else []
    script = [(t, spec.text()) for t, spec in timed]
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


def check_memslots(sc: Scenario, nr_memslots: int) -> None:
    """Every layout must fit the host's memslots: QEMU gives up on a layout it cannot map
    (kvm_alloc_slot: "no free slot"), and so must a run, before it starts."""
    for layout in sc.layouts.values():
        for as_id in {a for a, _ in layout.regions}:
            need = len(FlatView.render(layout.for_as(as_id)).backed())
            if need > nr_memslots:
                raise ValueError(
                    f"layout {layout.name!r} needs {need} memslots in as_id {as_id}; "
                    f"the host has nr_memslots={nr_memslots}"
                )


def _scenario_text(name_or_path: str, sc: Scenario) -> str:
    path = Path(sc.source)
    if not path.is_absolute() and not path.exists():
        path = builtin_dir() / f"{sc.name}.toml"
    return path.read_text()


def new_session(config: RunConfig, log: str | None) -> Session:
    return Session(config, log_path=log)


def run_session(
    config: RunConfig, log: str | None = None, observers: tuple[Subscriber, ...] = ()
) -> Summary:
    """One run flat out; SIGINT/SIGTERM finish its log and raise engine.signals.Interrupted.
    Each observer sees every event as it is emitted."""
    session = Session(config, log_path=log, observers=observers)
    try:
        trio.run(run_interruptible, session.run, session.interrupt)
    except BaseExceptionGroup as group:
        # The log could not be written mid-run (a full disk): that one line, not a group.
        failed = group.subgroup(LogError)
        if failed is None:
            raise
        raise _first(failed) from None
    return session.summary()


def _first(group: BaseExceptionGroup[LogError]) -> LogError:
    leaf = group.exceptions[0]
    return _first(leaf) if isinstance(leaf, BaseExceptionGroup) else leaf


def config_from_log(log: SessionLog) -> RunConfig:
    return config_from_header(log.header)


def config_from_header(h: Header) -> RunConfig:
    sc = parse_scenario(h.scenario_text, f"{h.scenario}.toml (from the log header)")
    # A header that parses can still be nonsense, or crafted (a billion vCPUs, 2^60 ns):
    # the same bounds as the command line, before anything runs.
    limits.VCPUS.check(h.vcpus)
    limits.DURATION_NS.check(h.duration_ns)
    limits.SEED.check(h.seed)
    for key, value in h.host.items():
        if key not in limits.HOST_TEXT:
            limits.check_host_option(key, value, "host")
    check_memslots(sc, h.host.get("nr_memslots", limits.HOST_INTS["nr_memslots"].hi))
    get_strategy(h.strategy)
    for f in h.faults:
        check_targets(parse_fault(f), h.vcpus)
    for entry in h.fault_script:
        if not (len(entry) == 2 and isinstance(entry[1], str)):
            raise ValueError(f"fault_script entry {entry!r} is not [time_ns, fault]")
        limits.FAULT_TIME_NS.check(entry[0], "fault_script")
        check_targets(parse_fault(entry[1]), h.vcpus)
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


def verify_log(path: str) -> VerifyResult:
    """`replay --verify`: streams the log, whatever its size (engine.verify)."""
    from engine.verify import verify_streaming

    return verify_streaming(path)


def check_log(path: str) -> tuple[Verdict, LogOutline]:
    """`check`: the checker over a recorded log's events, streamed (engine.verify)."""
    from engine.verify import check_streaming

    return check_streaming(path)


def checker_for(header: Header) -> Checker:
    """A fresh checker that judges a recorded run as its own checker did online."""
    atomic = get_strategy(header.strategy).atomic
    if header.host.get("backend") == "kvm":
        # A real run has no swap times to judge against: its checker words crashes in terms
        # of the DELETE ioctl instead, as it did online.
        from engine.backends.kvm.session import KvmChecker

        return KvmChecker(atomic)
    return Checker(atomic)


def summary_json(summary: Summary) -> str:
    return msgspec.json.encode(summary).decode()

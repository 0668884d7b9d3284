"""What a report says, whatever it is rendered as: built once from a session log.

The window the timeline shows is, by default, the one that led to the verdict: from the
memory transaction in flight (or last begun) when the checker first reached the verdict, to
just past that event. For an `ok` run it is the first transaction after boot.
"""

from __future__ import annotations

import contextlib
import shlex

import msgspec

from engine import events as ev
from engine.events import Event, Violation
from engine.log import SessionLog
from engine.model.host import Host
from engine.report.lanes import Lane, Span, build_lanes
from engine.runner import checker_for
from engine.scenarios import ScenarioError, builtin_names, load_scenario, parse_scenario
from engine.units import format_ns
from engine.vmm.strategies import STRATEGIES

AROUND_EVENTS = 30
"""--around SEQ shows this many events either side of SEQ."""


class EventRow(msgspec.Struct, frozen=True):
    seq: int
    t: int
    actor: str
    text: str
    decisive: bool = False


class Report(msgspec.Struct):
    tool: str
    seed: int
    scenario: str
    scenario_summary: str
    strategy: str
    vcpus: int
    duration_ns: int
    host: list[tuple[str, str]]
    faults: list[str]
    command: list[str]
    verdict: str
    explanation: str
    finished: bool
    window_t0: int
    window_t1: int
    window_why: str
    lanes: list[Lane]
    spans: list[Span]
    events: list[EventRow]
    counters: list[tuple[str, str]]
    violations: list[str]


def reproduce_command(log: SessionLog) -> list[str]:
    """`slotlab run ...` with the options that differ from the defaults, so the run repeats."""
    h = log.header
    argv = ["slotlab", "run", "--scenario", h.scenario, "--strategy", h.strategy]
    argv += ["--seed", str(h.seed)]
    try:
        sc = parse_scenario(h.scenario_text, f"{h.scenario}.toml")
        builtin = h.scenario in builtin_names() and load_scenario(h.scenario).name == sc.name
    except ScenarioError:
        sc, builtin = None, False
    if not builtin:
        argv[3] = f"{h.scenario}.toml"  # the file itself is the header's scenario_text
    if sc is None or h.vcpus != sc.vcpus:
        argv += ["--vcpus", str(h.vcpus)]
    if sc is None or h.duration_ns != sc.duration_ns:
        argv += ["--duration", duration_arg(h.duration_ns)]
    for fault in h.faults:
        argv += ["--fault", fault]
    if h.host.get("backend") == "kvm":
        argv += ["--backend", "kvm"]
    else:
        defaults = Host.from_dict({}).to_dict()
        overrides = getattr(STRATEGIES.get(h.strategy), "host_overrides", {})
        for key, value in h.host.items():
            if defaults.get(key) != value and overrides.get(key) != value:
                argv += ["--host", f"{key}={_host_value(value)}"]
    if h.naive:
        argv.append("--naive")
    if not isinstance(h.perturb, msgspec.UnsetType):
        argv += ["--perturb", h.perturb.text()]
    return argv


def duration_arg(ns: int) -> str:
    """The shortest exact way to type a duration: 200ms, not 200000000ns."""
    for unit, scale in (("s", 10**9), ("ms", 10**6), ("us", 10**3)):
        if ns % scale == 0:
            return f"{ns // scale}{unit}"
    return f"{ns}ns"


def _host_value(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def host_profile(host: dict[str, object]) -> list[tuple[str, str]]:
    """The host options, a profile name first when the host has one."""
    keys = sorted(host, key=lambda k: (k not in ("backend", "profile"), k))
    return [(k, _host_value(host[k])) for k in keys]


def decisive_event(log: SessionLog, verdict: str) -> Event | None:
    """The event at which a fresh checker first reached this verdict."""
    if verdict == "ok":
        return None
    checker = checker_for(log.header)
    for event in log.events:
        if isinstance(event, Violation):
            continue
        checker.observe(event)
        reached = {
            "violation": bool(checker.violations),
            "crashed": bool(checker.crash),
            "livelock": bool(checker.livelock),
        }.get(verdict, False)
        if reached:
            return event
    return None


def default_window(log: SessionLog, decisive: Event | None, verdict: str) -> tuple[int, int, str]:
    events = log.events
    if decisive is not None and verdict == "livelock":
        # A livelock has no update in flight to blame: show the loop itself.
        i = next(k for k, e in enumerate(events) if e is decisive)
        t0 = events[max(0, i - AROUND_EVENTS)].t
        why = f"the retries before the checker called it a livelock (seq {decisive.seq})"
        return t0, _past(t0, decisive.t), why
    if decisive is not None:
        begins = [e for e in events if isinstance(e, ev.TxnBegin) and e.t <= decisive.t and e.t > 0]
        t0 = begins[-1].t if begins else max(0, decisive.t - 10_000)
        why = f"from transaction {begins[-1].txn} to" if begins else "up to"
        return t0, _past(t0, decisive.t), f"{why} the decisive event (seq {decisive.seq})"
    begins = [e for e in events if isinstance(e, ev.TxnBegin) and e.t > 0]
    if not begins:
        end = max((e.t for e in events), default=0)
        return 0, max(end, 1), "the whole run (no transaction after boot)"
    first = begins[0]
    commit = next((e.t for e in events if isinstance(e, ev.TxnCommit) and e.txn == first.txn), None)
    end = commit if commit is not None else max(e.t for e in events)
    return first.t, _past(first.t, end), f"the first transaction after boot (txn {first.txn})"


def _past(t0: int, t1: int) -> int:
    """A little room after the last thing shown, so it does not sit on the edge."""
    span = max(t1 - t0, 1)
    return t1 + max(span // 20, 1)


def around_window(log: SessionLog, seq: int) -> tuple[int, int, str]:
    by_seq = [e for e in log.events if abs(e.seq - seq) <= AROUND_EVENTS]
    if not any(e.seq == seq for e in by_seq):
        last = log.events[-1].seq if log.events else -1
        raise ValueError(f"--around {seq}: the log has no event with that seq (0..{last})")
    t0 = min(e.t for e in by_seq)
    t1 = max(e.t for e in by_seq)
    return t0, max(t1, t0 + 1), f"{AROUND_EVENTS} events either side of seq {seq}"


def describe(e: Event) -> tuple[str, str]:
    """Who did it, and what happened, in one short line."""
    if isinstance(e, ev.IoctlEnter):
        detail = f"slot {e.slot & 0xFFFF} gpa {e.guest_phys_addr:#x} size {e.memory_size:#x}"
        return e.actor, f"{e.ioctl}({detail})"
    if isinstance(e, ev.IoctlExit):
        rc = f"-{e.error}" if e.errno else "0"
        return e.actor, f"{e.ioctl} = {rc} {e.change}".rstrip()
    if isinstance(e, ev.MemslotChange):
        return "kvm", f"memslot {e.id} {e.change} {e.step} gfn {e.base_gfn:#x}+{e.npages}"
    if isinstance(e, ev.SwapPublish):
        return "kvm", f"swap published as_id {e.as_id} gen {e.generation}"
    if isinstance(e, ev.SwapDone):
        return "kvm", f"swap done as_id {e.as_id} gen {e.generation}"
    if isinstance(e, ev.Zap):
        return "kvm", f"zap gfn {e.start_gfn:#x}..{e.end_gfn:#x} ({e.sptes} SPTEs)"
    if isinstance(e, ev.SrcuGp):
        waiting = f" waiting on {','.join(e.waiting_on)}" if e.waiting_on else ""
        return "srcu-gp", f"gp {e.gp_seq} {e.phase} idx {e.srcu_idx}{waiting}"
    if isinstance(e, ev.SrcuLock):
        return e.reader, f"srcu_read_lock idx {e.idx}"
    if isinstance(e, ev.SrcuUnlock):
        return e.reader, f"srcu_read_unlock idx {e.idx} held {format_ns(e.held_ns)}"
    if isinstance(e, ev.Fault):
        slot = f"slot {e.slot}" if e.slot >= 0 else "no slot"
        return f"vcpu{e.vcpu}", f"{e.access} fault {e.gpa:#x} {slot}: {e.outcome}"
    if isinstance(e, ev.Exit):
        return f"vcpu{e.vcpu}", f"exit {e.reason} rip {e.rip:#x}"
    if isinstance(e, ev.TxnBegin):
        return "vmm", f"txn {e.txn} begins: layout {e.layout}"
    if isinstance(e, ev.TxnCommit):
        return "vmm", f"txn {e.txn} committed after {format_ns(e.latency_ns)}"
    if isinstance(e, ev.Violation):
        return "checker", f"{e.check}: {e.message}"
    if isinstance(e, ev.VmStopped):
        return "vmm", f"VM stopped: {e.reason}"
    if isinstance(e, ev.Inhibit):
        took = f" after {format_ns(e.latency_ns)}" if e.latency_ns else ""
        return "vmm", f"inhibit {e.phase}{took}"
    if isinstance(e, ev.MmioServed):
        op = "write" if e.is_write else "read"
        return "vmm", f"MMIO {op} {e.gpa:#x} served by {e.target} ({e.region})"
    if isinstance(e, ev.DirtyLog):
        return "vmm", f"KVM_GET_DIRTY_LOG slot {e.slot}: {len(e.pages)} dirty pages"
    if isinstance(e, ev.UdInjected):
        return f"vcpu{e.vcpu}", f"#UD injected at rip {e.rip:#x} (CPL {e.cpl})"
    if isinstance(e, ev.ReaderUseAfterFree):
        return e.reader, f"used memslot set v{e.version} retired {e.age} syncs ago"
    if isinstance(e, ev.SrcuUnlockMismatch):
        return e.reader, f"srcu_read_unlock idx {e.idx}, but the lock returned {e.held_idx}"
    if isinstance(e, ev.Note):
        return e.source, e.text
    if isinstance(e, ev.Command):
        args = " ".join(f"{k}={v}" for k, v in e.args.items())
        return "command", f"{e.name} {args}".rstrip()
    if isinstance(e, ev.Injected):
        return "injector", f"fault {e.fault} injected {e.target}".rstrip()
    fields = msgspec.structs.asdict(e)
    del fields["t"], fields["seq"], fields["actor_t"]
    kind = msgspec.inspect.type_info(type(e))
    tag = getattr(kind, "tag", type(e).__name__)
    return "-", f"{tag} " + " ".join(f"{k}={v}" for k, v in fields.items())


def counters(log: SessionLog) -> list[tuple[str, str]]:
    if log.verdict is None:
        return [("events", str(len(log.events))), ("finished", "no (no verdict line)")]
    s = log.verdict.summary
    lat = s.update_latency_ns
    latency = (
        f"p50 {format_ns(lat.p50)} p99 {format_ns(lat.p99)} max {format_ns(lat.max)}"
        if lat.max
        else "no update completed"
    )
    rows = [
        ("transactions", s.transactions),
        ("ioctls", s.ioctls),
        ("internal errors", s.internal_errors),
        ("MMIO exits", s.mmio_exits),
        ("fault retries", s.retries),
        ("#UD injected", s.ud_injected),
        ("update latency", latency),
        ("vCPU stall", format_ns(s.vcpu_stall_ns)),
        ("events", s.events),
        ("virtual time", format_ns(s.virtual_ns)),
    ]
    return [(k, str(v)) for k, v in rows]


def build_report(
    log: SessionLog, window: tuple[int, int] | None = None, around: int | None = None
) -> Report:
    h = log.header
    if log.verdict is not None:
        verdict, explanation, finished = log.verdict.verdict, log.verdict.explanation, True
        violations = [f"{v.kind}: {v.message}" for v in log.verdict.summary.violations]
    else:
        judged = checker_for(h)
        for e in log.events:
            if not isinstance(e, Violation):
                judged.observe(e)
        v = judged.verdict()
        verdict, explanation, finished = v.verdict, v.explanation, False
        violations = [f"{x.kind}: {x.message}" for x in v.violations]
    decisive = decisive_event(log, verdict)
    if window is not None:
        t0, t1 = window
        why = f"--window {format_ns(t0)}..{format_ns(t1)}"
    elif around is not None:
        t0, t1, why = around_window(log, around)
    else:
        t0, t1, why = default_window(log, decisive, verdict)
    lanes, spans = build_lanes(log.events)
    rows = []
    for e in log.events:
        if t0 <= e.t <= t1:
            actor, text = describe(e)
            rows.append(EventRow(e.seq, e.t, actor, text, e is decisive))
    summary = ""
    with contextlib.suppress(ScenarioError):
        summary = parse_scenario(h.scenario_text, f"{h.scenario}.toml").summary
    return Report(
        tool=h.tool,
        seed=h.seed,
        scenario=h.scenario,
        scenario_summary=summary,
        strategy=h.strategy,
        vcpus=h.vcpus,
        duration_ns=h.duration_ns,
        host=host_profile(h.host),
        faults=[*h.faults, *(f"{f} at {format_ns(t)}" for t, f in h.fault_script)],
        command=reproduce_command(log),
        verdict=verdict,
        explanation=explanation,
        finished=finished,
        window_t0=t0,
        window_t1=t1,
        window_why=why,
        lanes=lanes,
        spans=spans,
        events=rows,
        counters=counters(log),
        violations=violations,
    )


def command_text(argv: list[str]) -> str:
    return shlex.join(argv)

"""Named, parameterised faults, with the Linux fault-injection knobs.

A fault is armed from the command line (``--fault race``, ``--fault reader-stall=duration=1ms``),
scheduled at a virtual time by a fault file, or injected now through the API the TUI calls.
Each fault has opportunities (every ioctl gap, every transaction, every grace period); the
knobs decide which opportunities fire, as /sys/kernel/debug/fail*/ do:

    probability  percent of opportunities that fire (default 100)
    interval     only every Nth opportunity is considered (default 1)
    times        how many times it may fire in all; -1 for no limit

Every injection is an Injected event, whatever asked for it.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from pathlib import Path

from engine import limits
from engine.events import EventBus, Injected
from engine.units import NotText, decode_text, parse_duration

KNOBS = ("probability", "interval", "times")


@dataclasses.dataclass(frozen=True)
class FaultKind:
    name: str
    summary: str
    params: dict[str, str]
    opportunity: str
    default_times: int = -1


FAULT_KINDS: dict[str, FaultKind] = {
    k.name: k
    for k in (
        FaultKind(
            "ioctl-gap",
            "userspace pauses between the ioctls of a transaction",
            {"delay": "50us"},
            "each gap between two ioctls",
        ),
        FaultKind(
            "race",
            "start the next transaction when a vCPU is about to fetch from the range being changed, and hold the window open until a vCPU faults in it",
            {"window": "100us"},
            "each transaction",
        ),
        FaultKind(
            "reader-stall",
            "a vCPU holds its SRCU read lock in an exit handler",
            {"vcpu": "0", "duration": "200us"},
            "each transaction",
            1,
        ),
        FaultKind("gp-delay", "a slow SRCU grace period", {"delay": "200us"}, "each grace period"),
        FaultKind(
            "smi",
            "a System Management Interrupt: the vCPU enters SMM (as_id 1) until its handler executes rsm",
            {"vcpu": "0"},
            "each transaction",
            1,
        ),
        FaultKind(
            "weeds",
            "a vCPU jumps to a GPA no layout maps",
            {"vcpu": "0", "gpa": "0xdead0000"},
            "each transaction",
            1,
        ),
    )
}


class FaultError(ValueError):
    pass


@dataclasses.dataclass
class FaultSpec:
    kind: FaultKind
    params: dict[str, str]
    probability: float = 100.0
    interval: int = 1
    times: int = -1
    seen: int = 0

    def text(self) -> str:
        args = [f"{k}={v}" for k, v in self.params.items()]
        return self.kind.name + ("=" + ",".join(args) if args else "")

    def duration(self, key: str) -> int:
        return parse_duration(self.params[key])

    def integer(self, key: str) -> int:
        return int(self.params[key], 0)


def parse_fault(text: str) -> FaultSpec:
    """NAME or NAME=key=value,key=value (parameters and knobs)."""
    name, _, rest = text.strip().partition("=")
    kind = FAULT_KINDS.get(name)
    if kind is None:
        raise FaultError(f"unknown fault {name!r} (known: {', '.join(FAULT_KINDS)})")
    params = dict(kind.params)
    knobs: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise FaultError(f"fault {name}: {item!r} is not key=value")
        if key in KNOBS:
            knobs[key] = value
        elif key in params:
            params[key] = value
        else:
            known = ", ".join([*kind.params, *KNOBS])
            raise FaultError(f"fault {name}: unknown parameter {key!r} (known: {known})")
    spec = FaultSpec(kind, params, times=kind.default_times)
    try:
        for key in params:
            if key == "vcpu":
                limits.FAULT_VCPU.check(spec.integer(key))
            elif key == "gpa":
                limits.GPA.check(spec.integer(key))
            else:
                limits.FAULT_NS.check(spec.duration(key))
        spec.probability = float(knobs.get("probability", "100"))
        spec.interval = limits.INTERVAL.check(int(knobs.get("interval", "1"), 0))
        spec.times = limits.TIMES.check(int(knobs.get("times", str(spec.times)), 0))
    except ValueError as err:
        raise FaultError(f"fault {name}: {err}") from None
    if not 0 <= spec.probability <= 100:
        raise FaultError(f"fault {name}: probability must be 0..100, not {knobs['probability']}")
    return spec


def check_targets(spec: FaultSpec, vcpus: int) -> None:
    """A fault aimed at a vCPU the run does not have would never fire: refuse it."""
    if "vcpu" in spec.params and spec.integer("vcpu") >= vcpus:
        raise FaultError(
            f"fault {spec.kind.name}: vcpu {spec.integer('vcpu')} does not exist "
            f"(the run has {vcpus} vCPU{'s' if vcpus > 1 else ''}: 0..{vcpus - 1})"
        )


def parse_fault_file(path: str, vcpus: int | None = None) -> list[tuple[int, FaultSpec]]:
    """Lines of `TIME FAULT[=ARGS]`, e.g. `150us reader-stall=duration=1ms`; # comments.
    With ``vcpus``, a fault aimed at a vCPU the run does not have is refused at its line."""
    try:
        lines = decode_text(Path(path).read_bytes(), path).splitlines()
    except OSError as err:
        raise FaultError(f"{path}: cannot read: {err.strerror}") from None
    except NotText as err:
        raise FaultError(str(err)) from None
    script: list[tuple[int, FaultSpec]] = []
    for no, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        when, _, fault = line.partition(" ")
        try:
            t = limits.FAULT_TIME_NS.check(parse_duration(when))
            spec = parse_fault(fault)
            if vcpus is not None:
                check_targets(spec, vcpus)
        except ValueError as err:
            raise FaultError(f"{path}:{no}: {err}") from None
        spec.times = 1
        script.append((t, spec))
    return sorted(script, key=lambda e: e[0])


class Injector:
    """Decides, at each opportunity, whether an armed fault fires; applies it; logs it."""

    def __init__(self, bus: EventBus, rng: random.Random, armed: list[FaultSpec]) -> None:
        self.bus = bus
        self.rng = rng
        self.armed = list(armed)
        self.injections = 0
        # Set by the session: how to act on a vCPU (stall its SRCU reader, send it away).
        self.stall_vcpu: Callable[[int, int], bool] = lambda vcpu, ns: False
        self.jump_vcpu: Callable[[int, int], bool] = lambda vcpu, gpa: False
        self.smi_vcpu: Callable[[int], bool] = lambda vcpu: False

    def arm(self, spec: FaultSpec) -> None:
        self.armed.append(spec)

    def _fire(self, name: str) -> FaultSpec | None:
        for spec in self.armed:
            if spec.kind.name != name or spec.times == 0:
                continue
            spec.seen += 1
            if spec.seen % spec.interval:
                continue
            if spec.probability < 100 and self.rng.random() * 100 >= spec.probability:
                continue
            if spec.times > 0:
                spec.times -= 1
            return spec
        return None

    def _log(self, spec: FaultSpec, target: str = "") -> None:
        self.injections += 1
        self.bus.emit(Injected(fault=spec.kind.name, params=dict(spec.params), target=target))

    # Opportunities, as the VMM and the SRCU worker meet them.

    def ioctl_gap(self) -> int:
        spec = self._fire("ioctl-gap")
        if spec is None:
            return 0
        self._log(spec)
        return spec.duration("delay")

    def race_window(self) -> int:
        spec = self._fire("race")
        if spec is None:
            return 0
        self._log(spec)
        return spec.duration("window")

    def race_armed(self) -> bool:
        return any(s.kind.name == "race" and s.times != 0 for s in self.armed)

    def gp_delay(self) -> int:
        spec = self._fire("gp-delay")
        if spec is None:
            return 0
        self._log(spec)
        return spec.duration("delay")

    def on_transaction(self) -> None:
        for name in ("reader-stall", "weeds", "smi"):
            spec = self._fire(name)
            if spec is not None:
                self.apply_now(spec)

    def apply_now(self, spec: FaultSpec) -> None:
        """Inject immediately: vCPU faults act at once; the others arm for the next
        opportunity."""
        name = spec.kind.name
        if name == "reader-stall":
            vcpu = spec.integer("vcpu")
            if self.stall_vcpu(vcpu, spec.duration("duration")):
                self._log(spec, f"vcpu{vcpu}")
        elif name == "weeds":
            vcpu = spec.integer("vcpu")
            if self.jump_vcpu(vcpu, spec.integer("gpa")):
                self._log(spec, f"vcpu{vcpu}")
        elif name == "smi":
            vcpu = spec.integer("vcpu")
            if self.smi_vcpu(vcpu):
                self._log(spec, f"vcpu{vcpu}")
        else:
            one_shot = dataclasses.replace(spec, times=1, interval=1, probability=100.0, seen=0)
            self.arm(one_shot)

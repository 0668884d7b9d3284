"""What a TUI session starts with, and the speed ladder `+` and `-` move along."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from engine.api import RunConfig, default_log_path, make_config

DEFAULT_SPEED = 1e-5
"""Virtual seconds per wall second: a 20 us race window stays on screen for 2 s."""

# 1-2-5 steps from 0.1 us per second up to real time, then flat out.
SPEEDS: tuple[float, ...] = (
    *(m * 10.0**e for e in range(-7, 0) for m in (1, 2, 5)),
    1.0,
    math.inf,
)


def faster(speed: float) -> float:
    return next((s for s in SPEEDS if s > speed * 1.0001), math.inf)


def slower(speed: float) -> float:
    return next((s for s in reversed(SPEEDS) if s < speed / 1.0001), SPEEDS[0])


def speed_arg(speed: float) -> str:
    """The speed as the engine's speed command takes it."""
    return "inf" if math.isinf(speed) else repr(speed)


DEFAULT_SCENARIO = "pam-shadow"
"""The demo: legacy survives most updates, as QEMU 7.2 mostly did, until `r` arms the race."""


@dataclasses.dataclass
class LaunchOptions:
    scenario: str = DEFAULT_SCENARIO
    strategy: str = "legacy"
    seed: int = 1
    speed: float = DEFAULT_SPEED
    paused: bool = False
    faults: list[str] = dataclasses.field(default_factory=list)
    faults_file: str | None = None
    vcpus: int | None = None
    duration_ns: int | None = None
    host: dict[str, object] = dataclasses.field(default_factory=dict)
    record: bool = True
    log_path: str | None = None
    """The first session's log; later sessions (restarts) get default names."""
    replay: str | None = None
    """A session log to open in the replay screen instead of running live."""
    theme: str | None = None
    demo: bool = False
    """Start paused just before the first DELETE, with a one-line hint of what to press."""
    breaks: list[str] = dataclasses.field(default_factory=list)
    """Breakpoints (KIND[=ARG], engine.api.parse_breakpoint) every session starts with."""
    backend: str = "model"
    """model (virtual time, every kernel structure visible) or kvm (the machine's /dev/kvm,
    in real time: pause, step and speed do not apply, SRCU and the memslot sets are hidden)."""

    def config(self) -> RunConfig:
        return make_config(
            self.scenario,
            self.strategy,
            seed=self.seed,
            vcpus=self.vcpus,
            duration_ns=self.duration_ns,
            faults=self.faults,
            faults_file=self.faults_file,
            host=dict(self.host),
        )


def screenshots_dir() -> Path:
    """Where the screenshot command saves: the sessions folder (SLOTLAB_SESSIONS), beside
    the logs it shows."""
    return Path(os.environ.get("SLOTLAB_SESSIONS", "sessions"))


def unique_log_path(scenario: str, strategy: str) -> str:
    """default_log_path, made unique: two restarts in one second must not share a file."""
    path = Path(default_log_path(scenario, strategy))
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return str(candidate)

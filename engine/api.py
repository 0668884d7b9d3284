"""The engine's door for front ends: the TUI and the CLI reach the engine through here (and
read the snapshot views, events, faults and the strategy registry), an import contract keeps
the TUI to it (pyproject.toml, [tool.importlinter]).

    open_session(config, backend, log, pacing, observers) -> LiveSession
    open_replay(log) -> Replay        build() a LiveSession; pause, step, speed, seek
    Breakpoints, parse_breakpoint     what a run stops at (LiveSession.breakpoints)
    validate(config, backend)         every check a run makes, before anything starts
    default_log_path(scenario, strategy)

and, for a front end's own command line, the headless CLI it extends (``headless_cli``), and
for the live view of a real QEMU, what engine.importers offers to follow one (QemuProcess...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine import __version__ as VERSION
from engine import cli as headless_cli
from engine import limits
from engine.bench import Measure, format_table, suite
from engine.breakpoints import KINDS as BREAKPOINT_KINDS
from engine.breakpoints import Breakpoint, Breakpoints, Hit, parse_breakpoint
from engine.cli import default_log_path
from engine.compare import compare_matrix
from engine.core.config import RunConfig
from engine.export.cli import write_output
from engine.importers.calls import TraceError
from engine.importers.live import QemuError, QemuProcess, TraceFollower
from engine.importers.observe import VcpuThreads, qemu_snapshot
from engine.importers.watch import (
    WatchResult,
    closed_transactions,
    describe,
    finish,
    output_paths,
    qemu_command,
    scenario_so_far,
)
from engine.live import LiveSession
from engine.log import LogError, read_log
from engine.matrix import MatrixRow
from engine.replay import Replay
from engine.runner import make_config, run_session
from engine.scenarios import ScenarioError, builtin_names, load_scenario
from engine.sim.pacing import Pacing
from engine.snapshot import Tracker
from engine.units import format_ns, parse_duration
from engine.vmm.strategies import get_strategy

if TYPE_CHECKING:
    from engine.core.ports import Backend
    from engine.core.session import SessionCore
    from engine.events import Command, Subscriber

BACKENDS = ("model", "kvm")


def _core(
    config: RunConfig,
    backend: str,
    log: str | None,
    pacing: Pacing | None,
    observers: tuple[Subscriber, ...],
) -> SessionCore[Backend]:
    if backend == "model":
        from engine.session import Session

        return Session(config, log_path=log, pacing=pacing, observers=observers)
    if backend == "kvm":
        from engine.backends.kvm.session import KvmSession

        return KvmSession(config, log_path=log, observers=observers)
    raise ValueError(f"unknown backend {backend!r} (choose {' or '.join(BACKENDS)})")


def open_session(
    config: RunConfig,
    backend: str = "model",
    log: str | None = None,
    pacing: Pacing | None = None,
    observers: tuple[Subscriber, ...] = (),
) -> LiveSession:
    """A run ready to start (``await live.run()``), its tracker subscribed first. ``pacing``
    applies where the clock is virtual (the model); the wall clock ignores it. A model run
    can be re-executed to an earlier event (``LiveSession.rewound``)."""
    if backend != "model":
        tracker = Tracker()
        core = _core(config, backend, log, pacing, (tracker.observe, *observers))
        return LiveSession(core, tracker)
    from engine.session import Session

    def reopen(pacing: Pacing, commands: list[Command]) -> LiveSession:
        tracker = Tracker()
        session = Session(
            config, log_path=log, pacing=pacing, observers=(tracker.observe, *observers)
        )
        session.backend.replay_commands(commands, keep_pacing=True, fork=True)
        return LiveSession(session, tracker, reopen)

    tracker = Tracker()
    session = Session(config, log_path=log, pacing=pacing, observers=(tracker.observe, *observers))
    return LiveSession(session, tracker, reopen)


def open_replay(log: str) -> Replay:
    """A recorded model session opened for replay; LogError or ValueError (one line) for a
    log that cannot be replayed."""
    return Replay(log)


def validate(config: RunConfig, backend: str = "model") -> None:
    """Refuse, with one line, what ``backend`` cannot run: an unknown strategy; on kvm also
    no usable /dev/kvm, a strategy that needs a kernel change, a scenario or fault the real
    guest cannot express."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (choose {' or '.join(BACKENDS)})")
    get_strategy(config.strategy)
    if backend == "kvm":
        from engine.backends.kvm.run import check_kvm_run
        from engine.backends.kvm.session import check_faults

        check_faults(config)
        check_kvm_run(config.scenario, config.strategy)


def register_bench_group(name: str, module: str, function: str) -> None:
    """A front end's benchmark group joins `slotlab bench` (the engine cannot import it)."""
    suite.GROUPS.setdefault(name, (module, function))


__all__ = [
    "BACKENDS",
    "BREAKPOINT_KINDS",
    "VERSION",
    "Breakpoint",
    "Breakpoints",
    "Hit",
    "LiveSession",
    "LogError",
    "MatrixRow",
    "Measure",
    "Pacing",
    "QemuError",
    "QemuProcess",
    "Replay",
    "RunConfig",
    "ScenarioError",
    "TraceError",
    "TraceFollower",
    "VcpuThreads",
    "WatchResult",
    "builtin_names",
    "closed_transactions",
    "compare_matrix",
    "default_log_path",
    "describe",
    "finish",
    "format_ns",
    "format_table",
    "headless_cli",
    "limits",
    "load_scenario",
    "make_config",
    "open_replay",
    "open_session",
    "output_paths",
    "parse_breakpoint",
    "parse_duration",
    "qemu_command",
    "qemu_snapshot",
    "read_log",
    "register_bench_group",
    "run_session",
    "scenario_so_far",
    "validate",
    "write_output",
]

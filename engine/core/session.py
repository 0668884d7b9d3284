"""The session core: one run of a scenario under a strategy, from boot to verdict, on any
backend.

The core owns everything that is the same on every machine: the config, the event bus, the
fault injector, the checker, the recent-event ring, the log writer, the header, the verdict
and the summary, and the VMM's loop over the scenario's layouts (engine.core.driver). A
backend (engine.core.ports.Backend) brings what differs: the clock, the kernel side of the
memslot ioctls, the vCPU threads and how the tasks are scheduled.

Why the order of subscriptions is fixed: the checker emits a Violation while it observes the
event that caused it, so every subscriber after the checker (the writer among them) sees the
Violation before its cause. Logs record that order, and replays reproduce it byte for byte;
the VMM's fault watch, the ring, the checker, the writer and the observers subscribe in that
order on every backend.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from engine import __version__, limits
from engine.checker import Verdict
from engine.core.config import RunConfig, actor_rng
from engine.core.driver import ScenarioDriver
from engine.core.ports import Backend, Machine, RunContext, VcpuTotals
from engine.events import Event, Subscriber
from engine.faults import FaultError, Injector, check_targets, parse_fault
from engine.log import Header, LogWriter, VerdictLine, header_schema
from engine.signals import INTERRUPTED, explanation
from engine.summary import Summary, build_summary
from engine.vmm.flatview import FlatView
from engine.vmm.strategies import Strategy, get_strategy
from engine.vmm.vmm import Vmm

if TYPE_CHECKING:
    from engine.checker import Checker

B = TypeVar("B", bound=Backend, covariant=True)


class SessionCore(Generic[B]):
    def __init__(
        self,
        config: RunConfig,
        backend: B,
        log_path: str | None = None,
        observers: tuple[Subscriber, ...] = (),
        max_transactions: int | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        backend.check(config)
        self.strategy: Strategy = get_strategy(config.strategy)
        self.bus = backend.new_bus()
        self.duration_ns = backend.duration_ns(config)
        self.max_transactions = max_transactions
        armed = [parse_fault(f) for f in config.faults]
        self.injector = Injector(self.bus, actor_rng(config.seed, "injector"), armed)
        self.checker: Checker = backend.new_checker(self.strategy.atomic, self.bus)
        self.recent: deque[Event] = deque(maxlen=2000)
        self.log_path = log_path
        self.observers = observers
        self.writer: LogWriter | None = None
        self.machine: Machine | None = None
        self._vmm: Vmm | None = None
        self.result: Verdict | None = None
        self.error: BaseException | None = None
        self.interrupted_by = 0  # the signal that stopped the run, if one did
        backend.attach(
            RunContext(
                config, self.strategy, self.bus, self.injector, self.duration_ns, self._command
            )
        )
        if backend.opens_eagerly:
            self._open()

    @property
    def vmm(self) -> Vmm:
        if self._vmm is None:
            raise RuntimeError("the session has not opened its VM (call run())")
        return self._vmm

    @property
    def opened(self) -> bool:
        return self._vmm is not None

    # --- set-up -------------------------------------------------------------------------

    def header(self) -> Header:
        cfg = self.config
        return Header(
            schema=header_schema(cfg.perturb),
            tool=f"slotlab {__version__}",
            seed=cfg.seed,
            scenario=cfg.scenario.name,
            strategy=cfg.strategy,
            host=self.machine.host if self.machine is not None else {"backend": self.backend.name},
            vcpus=cfg.nr_vcpus,
            duration_ns=self.duration_ns,
            faults=list(cfg.faults),
            fault_script=[[t, f] for t, f in cfg.fault_script],
            naive=cfg.naive,
            scenario_text=cfg.scenario_text,
            perturb=msgspec.UNSET if cfg.perturb is None else cfg.perturb,
        )

    def _open(self) -> None:
        """The machine, the VMM, the log, the boot layout, then the vCPUs."""
        self.machine = machine = self.backend.open()
        self._vmm = vmm = Vmm(
            bus=self.bus,
            clock=self.backend.clock("vmm"),
            kernel=machine.kernel,
            vcpus=machine.vcpus,
            ram=machine.ram,
            injector=self.injector,
            strategy=self.strategy,
            halt=lambda: self.stop("vm stopped"),
            naive=self.config.naive,
        )
        self.bus.subscribe(self.recent.append)
        self.bus.subscribe(self.checker.observe)
        if self.log_path is not None:
            self.writer = LogWriter(self.log_path)
            self.writer.write_header(self.header())
            self.bus.subscribe(self.writer.write_event)
        for observer in self.observers:
            self.bus.subscribe(observer)
        self._boot(vmm)

    def _boot(self, vmm: Vmm) -> None:
        """Before any vCPU runs: the boot layout's slots, then the guest program and vCPUs."""
        sc = self.config.scenario
        boot = sc.layouts[sc.sequence[0]]
        kernel = vmm.kernel
        for as_id in range(kernel.nr_address_spaces):
            txn = vmm.begin(as_id, boot.name, FlatView.render(boot.for_as(as_id)))
            if txn is None:
                continue
            for op in txn.ops:
                kernel.ioctl_now(op.region)
            vmm.commit(txn)
        # Installing the boot layout is not an update: keep its zero out of the latencies.
        vmm.latencies.clear()
        self.backend.start_vcpus(vmm)

    # --- running ------------------------------------------------------------------------

    async def run(self) -> Verdict:
        try:
            if self._vmm is None:
                self._open()
            driver = ScenarioDriver(
                self.config,
                self.vmm,
                self.strategy,
                self.injector,
                sync_floor_ns=self.backend.sync_floor_ns,
                script_clock=self.backend.clock("injector"),
                stop=self.stop,
                max_transactions=self.max_transactions,
            )
            others = [("injector", driver.script)] if self.config.fault_script else []
            await self.backend.run(driver.vmm_loop, others)
        except BaseException as err:
            self.error = err
            self.close()
            raise
        try:
            return self.finish()
        finally:
            self.close()

    def stop(self, reason: str) -> None:
        """End the run (the VM stopped, a transaction limit, an outside request)."""
        self.backend.stop(reason)

    def interrupt(self, signum: int) -> None:
        """SIGINT/SIGTERM (engine.signals): stop as the duration would, at the next hand-over
        on the model, and log an `interrupted` verdict with the counters so far."""
        self.interrupted_by = signum
        self.stop(INTERRUPTED)

    @property
    def stop_reason(self) -> str:
        return self.backend.stop_reason

    def close(self) -> None:
        """Release the machine and the log; safe to call twice."""
        self.backend.close()
        if self.writer is not None:
            self.writer.close()

    def finish(self) -> Verdict:
        verdict = self.checker.verdict()
        if self.interrupted_by:
            # The run ends at its last event: a signal lands between hand-overs, and the clock
            # may already show the next actor's time, which its replay never reaches.
            if self.recent:
                self.bus.now = self.recent[-1].t
            verdict = Verdict(
                INTERRUPTED, explanation(self.interrupted_by, self.bus.now), verdict.violations
            )
        self.result = verdict
        if self.writer is not None:
            self.writer.write_verdict(
                VerdictLine(
                    verdict=verdict.verdict, explanation=verdict.explanation, summary=self.summary()
                )
            )
        return verdict

    # --- commands -----------------------------------------------------------------------

    def send(self, name: str, **args: str) -> None:
        """A command from outside: inject, pause, resume, speed, step. Raises FaultError for
        a bad injection, ValueError for a command the backend cannot take, before anything
        is queued."""
        self.check_command(name, args, self.config.nr_vcpus)
        if name == "inject":
            self.backend.check_fault(parse_fault(args["fault"]))
        self.backend.submit(name, dict(args))

    @staticmethod
    def check_command(name: str, args: dict[str, str], vcpus: int = limits.VCPUS.hi) -> None:
        """What a backend can apply; one line of ValueError otherwise (a crafted log's
        `speed` without a speed must not become a traceback mid-replay)."""
        if name == "inject":
            if "fault" not in args:
                raise FaultError("inject needs a fault")
            check_targets(parse_fault(args["fault"]), vcpus)
        elif name == "step":
            count = args.get("count", "1")
            if not count.isdigit():
                raise ValueError(f"step count must be a whole number, not {count!r}")
            limits.STEP.check(int(count), "step count")
        elif name == "speed":
            speed = args.get("speed", "")
            try:
                value = math.inf if speed == "inf" else float(speed)
            except ValueError:
                value = math.nan
            if not 0 < value < math.inf and speed != "inf":
                raise ValueError(f"speed must be a positive number or inf, not {speed!r}")
        elif name not in ("pause", "resume"):
            raise ValueError(f"unknown command {name!r}")

    def _command(self, name: str, args: dict[str, str]) -> None:
        """A queued command at the moment it applies (see Backend.submit)."""
        if name == "inject":
            self.injector.apply_now(parse_fault(args["fault"]))

    # --- results ------------------------------------------------------------------------

    def summary(self) -> Summary:
        vmm = self._vmm
        machine = self.machine
        totals = machine.vcpus.totals() if machine is not None else VcpuTotals()
        return build_summary(
            verdict=self.result or self.checker.verdict(),
            checker=self.checker,
            exits=totals.exits,
            faults=totals.faults,
            latencies=vmm.latencies if vmm is not None else [],
            transactions=vmm.txn_count if vmm is not None else 0,
            ioctls=vmm.ioctl_count if vmm is not None else 0,
            stall_ns=totals.stall_ns,
            injections=self.injector.injections,
            events=self.bus.seq,
            virtual_ns=self.bus.log_t(),
            seed=self.config.seed,
            scenario=self.config.scenario.name,
            strategy=self.config.strategy,
            log=str(self.writer.path) if self.writer is not None else None,
            clock="wall" if self.backend.wall_clock else None,
        )

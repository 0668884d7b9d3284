"""The live monitor: a session runs, and every key that changes it is a recorded command.

Pause, speed and injections go through ``LiveSession.send`` and land in the log as Command
events at the sequencer call they followed, so a live session replays byte for byte. Stepping
(one event, one scheduler step), breakpoints and jumps only hold the run's pacing, which
changes nothing it decides, so they are not commands. Going back re-executes the run from its
start to the earlier event (``LiveSession.rewound``) and says so. Switching strategy or
scenario ends this session (its log stays, unfinished) and starts a new one.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from engine.api import LiveSession, Pacing, builtin_names, load_scenario, open_session
from engine.events import IoctlEnter
from engine.faults import FAULT_KINDS, FaultError
from engine.vmm.strategies import STRATEGIES
from tui.options import LaunchOptions, faster, slower, speed_arg, unique_log_path
from tui.palette import may_open
from tui.screens.breakpoints import BreakpointForm
from tui.screens.choose import ChoiceScreen
from tui.screens.fault_form import FaultForm
from tui.screens.jump import JumpForm, LiveTarget, parse_live_target
from tui.screens.monitor import MonitorScreen, stop_bindings

if TYPE_CHECKING:
    from tui.app import SlotlabApp


class LiveScreen(MonitorScreen):
    BINDINGS = [
        Binding("p", "pause", "Pause", id="pause"),
        Binding("space", "step", "Step", id="step"),
        *stop_bindings(""),
        Binding("j", "jump", "Jump", show=False, id="jump"),
        Binding("plus,equals_sign", "faster", "Faster", show=False, key_display="+", id="faster"),
        Binding("minus", "slower", "Slower", show=False, key_display="-", id="slower"),
        Binding("e", "to_end", "Run to end", show=False, id="to-end"),
        Binding("i", "inject", "Inject", show=False, id="inject"),
        Binding("g", "fault('ioctl-gap')", "ioctl-gap", show=False, id="fault-ioctl-gap"),
        # The demo's key: no form, the race is armed at once (i chooses a fault with args). One
        # race, held open up to 2 ms rather than race's default 100us: the demo's guest calls
        # into the shadow range only every 1.5 ms, and the one update must outlast that.
        Binding("r", "inject('race=window=2ms')", "Race", id="fault-race"),
        Binding("s", "fault('reader-stall')", "reader-stall", show=False, id="fault-reader-stall"),
        Binding("d", "fault('gp-delay')", "gp-delay", show=False, id="fault-gp-delay"),
        Binding("w", "fault('weeds')", "weeds", show=False, id="fault-weeds"),
        Binding("m", "fault('smi')", "smi", show=False, id="fault-smi"),
        Binding("S", "strategy", "Strategy", id="strategy"),
        Binding("C", "scenario", "Scenario", show=False, id="scenario"),
        Binding("ctrl+r", "restart", "Restart", show=False, id="restart"),
    ]

    def __init__(self, options: LaunchOptions) -> None:
        super().__init__()
        self.options = options
        self.speed = options.speed
        self.paused = options.paused
        self._first = True
        self.log_path: str | None = None

    @property
    def slotlab(self) -> SlotlabApp:
        from tui.app import SlotlabApp

        return cast(SlotlabApp, self.app)

    DEMO_HINT = (
        "Paused just before the first DELETE: space steps one event, p plays, "
        "r arms the race, S switches strategy"
    )

    def compose_controls(self) -> ComposeResult:
        yield Static(self.DEMO_HINT, id="demo-hint")

    def on_mount(self) -> None:
        self.query_one("#demo-hint").display = False
        self.start_session()
        if self.options.demo:
            self.run_worker(self.to_first_delete(), group="demo", exclusive=True)

    async def to_first_delete(self, limit: int = 20_000) -> bool:
        """Step, one event at a time, until the last event is the first DELETE's ioctl
        entry: the memslot is still there, and the next event takes it away. Each step is a
        recorded command, so the session still replays byte for byte."""
        host = self.slotlab.host
        await host.settle()
        for _ in range(limit):
            live = host.live
            if live is None or not host.running:
                return False
            last = live.last_event()
            if (
                isinstance(last, IoctlEnter)
                and last.memory_size == 0
                and last.ioctl.endswith("USER_MEMORY_REGION")
            ):
                self.query_one("#demo-hint").display = True
                self.slotlab.refresh_now()
                return True
            host.send("step", count="1")
            await host.settle()
        return False

    # A real VM runs in real time: the clock's keys are shown disabled.
    CLOCK_ACTIONS = frozenset(
        {"pause", "step", "step_call", "back", "jump", "breakpoints", "faster", "slower", "to_end"}
    )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.options.backend == "kvm" and action in self.CLOCK_ACTIONS:
            return None
        return True

    # --- sessions -----------------------------------------------------------------------

    def start_session(self) -> None:
        opts = self.options
        config = opts.config()
        if not opts.record:
            log = None
        elif self._first and opts.log_path:
            log = opts.log_path
        else:
            log = unique_log_path(opts.scenario, opts.strategy)
        self._first = False
        live = open_session(
            config, opts.backend, log=log, pacing=Pacing(speed=self.speed, paused=self.paused)
        )
        self.log_path = log
        self.reset_views()
        self.slotlab.host.start(live)
        self.set_recording_text(f"● REC {log}" if log is not None else "○ not recording (--no-log)")
        self.slotlab.refresh_now()

    async def restart(self, **changes: str) -> None:
        for key, value in changes.items():
            setattr(self.options, key, value)
        if math.isinf(self.speed):
            # After "run to end" a new session would be over before it is seen.
            self.speed = self.options.speed
            self.paused = self.options.paused
        host = self.slotlab.host
        async with host.switching:
            await host.stop()
            try:
                self.start_session()
            except (ValueError, OSError) as err:
                self.notify(f"cannot start: {err}", severity="error", markup=False)

    def session_finished(self) -> None:
        """The verdict banner and the status bar say it; nothing else to do."""

    # --- commands -----------------------------------------------------------------------

    def _send(self, name: str, **args: str) -> bool:
        try:
            sent = self.slotlab.host.send(name, **args)
        except FaultError as err:
            self.notify(str(err), severity="error", markup=False)
            return False
        except ValueError:
            # A real VM runs in real time: its session takes injections only.
            self.notify(
                f"{name}: a real VM runs in real time (pause, step and speed need the model)",
                severity="warning",
                markup=False,
            )
            return False
        if not sent:
            self.notify("the run is over: ctrl+r starts a new one", timeout=3)
        return sent

    def _engine_paused(self) -> bool:
        """Paused as the engine will be once the commands sent apply (a breakpoint or a step
        pauses it without a command)."""
        live = self.slotlab.host.live
        pacing = live.pacing if live is not None else None
        return pacing.paused_ahead if pacing is not None else self.paused

    def action_pause(self) -> None:
        paused = self._engine_paused()
        if self._send("resume" if paused else "pause"):
            self.paused = not paused

    def _live(self) -> LiveSession | None:
        host = self.slotlab.host
        return host.live if host.live is not None and self.options.backend == "model" else None

    def _moved(self) -> None:
        self.paused = True
        self.query_one("#demo-hint").display = False
        self.slotlab.host.poke()
        self.slotlab.refresh_now()

    def action_step(self) -> None:
        """Exactly one event on (not a command: it only holds the pacing)."""
        live = self._live()
        if live is not None:
            live.step_event()
            self._moved()

    def action_step_call(self) -> None:
        """One scheduler step: the actor holding the baton runs to its next sleep or block."""
        live = self._live()
        if live is not None:
            live.step_call()
            self._moved()

    async def action_back(self) -> None:
        live = self._live()
        if live is not None:
            await self.travel(("event", max(live.position - 1, 0)))

    async def travel(self, target: LiveTarget) -> None:
        """To an event position or a virtual time: forward, the run goes on to it; backward,
        it is re-executed from its start (runs are deterministic), and the screen says so."""
        host = self.slotlab.host
        async with host.switching:
            live = self._live()
            if live is None:
                return
            kind, value = target
            back = live.seek(value) if kind == "event" else live.seek_time(value)
            if back is None:
                self._moved()
                return
            if not live.can_rewind:
                return
            await host.stop()
            again = live.rewound(back)
            self.reset_views()
            host.start(again)
            self._moved()
            rec = f"● REC {self.log_path}" if self.log_path is not None else "not recorded"
            self.set_recording_text(f"⟲ re-executed from the start to #{back}  {rec}")
            self.notify(
                f"re-executed the run from its start to event #{back} (runs are deterministic)",
                timeout=4,
                markup=False,
            )

    def action_jump(self) -> None:
        live = self._live()
        if live is None or not may_open(self.app, JumpForm):
            return
        end_ns = live.snapshot(events=False).end_ns

        async def chosen(target: LiveTarget | None) -> None:
            if target is not None:
                await self.travel(target)

        self.app.push_screen(
            JumpForm(
                lambda text: parse_live_target(text, end_ns),
                f"event number (now #{live.position}), virtual time (45us) or percentage of "
                "the run (50%); earlier ones re-execute the run from its start",
            ),
            chosen,
        )

    def action_breakpoints(self) -> None:
        if may_open(self.app, BreakpointForm):
            self.app.push_screen(BreakpointForm(self.slotlab.host.breakpoints))

    def _set_speed(self, speed: float) -> None:
        if self._send("speed", speed=speed_arg(speed)):
            self.speed = speed

    def action_faster(self) -> None:
        self._set_speed(faster(self.speed))

    def action_slower(self) -> None:
        self._set_speed(slower(self.speed) if not math.isinf(self.speed) else 1.0)

    def action_to_end(self) -> None:
        self._set_speed(math.inf)
        if self._engine_paused() and self._send("resume"):
            self.paused = False

    def inject(self, fault: str) -> None:
        if self._send("inject", fault=fault):
            self.notify(f"injected {fault}", timeout=3, markup=False)

    def action_fault(self, name: str) -> None:
        def done(result: str | None) -> None:
            if result:
                self.inject(result)

        if may_open(self.app, FaultForm):
            self.app.push_screen(FaultForm(name), done)

    def action_inject(self, fault: str = "") -> None:
        if fault:
            self.inject(fault)
            return

        def chosen(name: str | None) -> None:
            if name:
                self.action_fault(name)

        choices = [(k.name, k.summary) for k in FAULT_KINDS.values()]
        if may_open(self.app, ChoiceScreen):
            self.app.push_screen(ChoiceScreen("Inject which fault?", choices), chosen)

    def action_strategy(self) -> None:
        async def chosen(name: str | None) -> None:
            if name:
                await self.restart(strategy=name)

        choices = [(name, cls.summary) for name, cls in STRATEGIES.items()]
        if not may_open(self.app, ChoiceScreen):
            return
        self.app.push_screen(
            ChoiceScreen("Switch strategy (restarts the session)", choices, self.options.strategy),
            chosen,
        )

    def action_scenario(self) -> None:
        async def chosen(name: str | None) -> None:
            if name:
                await self.restart(scenario=name)

        choices = [(name, load_scenario(name).summary) for name in builtin_names()]
        if not may_open(self.app, ChoiceScreen):
            return
        self.app.push_screen(
            ChoiceScreen("Switch scenario (restarts the session)", choices, self.options.scenario),
            chosen,
        )

    async def action_restart(self) -> None:
        await self.restart()

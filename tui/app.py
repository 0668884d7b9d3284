"""The slotlab TUI: a monitor and fault injector for a session running in trio guest mode.

The app owns the EngineHost (the session's guest run) and a 20 Hz timer that hands the
current Snapshot to the monitor screen. Engine failures arrive through the guest run's
done-callback and replace the monitor with an error screen; they never leave stale data on
screen or a traceback in the terminal.
"""

from __future__ import annotations

import contextlib
import gc
import math
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import outcome
import trio
from textual.app import App, SystemCommand
from textual.await_complete import AwaitComplete
from textual.binding import Binding
from textual.command import CommandPalette
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.theme import ThemeProvider

from engine.api import builtin_names, compare_matrix
from engine.faults import FAULT_KINDS
from engine.vmm.strategies import STRATEGIES
from tui.bindings import binding_scopes
from tui.engine_host import EngineHost
from tui.keymap import KeymapError, load_keymap
from tui.options import LaunchOptions, screenshots_dir
from tui.palette import Palette, may_open
from tui.screens.breakpoints import describe
from tui.screens.compare import DEFAULT_SEEDS, CompareFn, CompareScreen
from tui.screens.error import ErrorScreen
from tui.screens.help import HelpScreen
from tui.screens.live import LiveScreen
from tui.screens.monitor import MonitorScreen
from tui.screens.replay import ReplayScreen
from tui.signals import ExitSignals

FRAME_HZ = 20
THEMES = ("textual-dark", "textual-light")


def _leaf(error: BaseException) -> BaseException:
    """The first real exception inside trio's exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class SlotlabApp(App[int]):
    CSS_PATH = "slotlab.tcss"
    TITLE = "slotlab"
    BINDINGS = [
        Binding("q", "quit", "Quit", show=False, id="quit"),
        # Textual's default only says "press ctrl+q"; a presenter's reflex must just work.
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="quit-ctrl-c"),
        Binding("question_mark,f1", "help", "Help", show=False, key_display="?", id="help"),
        Binding("c", "compare", "Compare", show=False, id="compare"),
        Binding("T", "toggle_theme", "Theme", show=False, id="theme"),
    ]

    def __init__(
        self,
        options: LaunchOptions | None = None,
        *,
        compare_fn: CompareFn = compare_matrix,
        keymap: dict[str, str] | None = None,
        compare_jobs: int | None = None,
    ) -> None:
        super().__init__()
        self.options = options or LaunchOptions()
        self.compare_fn = compare_fn
        self.compare_jobs = compare_jobs
        self.compare_seeds = DEFAULT_SEEDS
        self.host = EngineHost(self._engine_done)
        for text in self.options.breaks:
            self.host.breakpoints.add(text)
        self.engine_error: str | None = None
        self.error_log: str | None = None
        self._keymap_override = keymap
        self._ticks = 0
        self._signals = ExitSignals(self._exit_on_signal)
        self.interrupted_by = 0
        self._flat_out = False
        if self.options.theme:
            self.theme = self.options.theme

    # --- start and stop -----------------------------------------------------------------

    def on_mount(self) -> None:
        self._signals.install()
        try:
            keymap = self._keymap_override
            if keymap is None:
                keymap = load_keymap(scopes=binding_scopes(type(self)))
            self.set_keymap(keymap)
        except KeymapError as err:
            self.notify(f"keymap ignored: {err}", severity="warning", timeout=8, markup=False)
        self.push_screen(self.first_screen())
        self.set_interval(1 / FRAME_HZ, self._tick)
        # Everything built so far (modules, the DOM, the stylesheet) lives as long as the app.
        # Left to the collector, each full collection walks it all again: 40-60 ms pauses,
        # every few seconds at 64 vCPUs x 1,024 slots, which were the slowest frames.
        self.call_after_refresh(gc.freeze)

    def first_screen(self) -> Screen[Any]:
        """The bottom of the stack: a replay, a live session, or (tui.qemu_watch) a real VM."""
        if self.options.replay:
            return ReplayScreen(self.options.replay, self.options.speed, self.options.paused)
        return LiveScreen(self.options)

    def _exit_on_signal(self, signum: int) -> None:
        self.host.interrupt(signum)  # the log ends with an `interrupted` verdict line
        self.interrupted_by = signum
        self.exit(return_code=128 + signum)

    async def on_unmount(self) -> None:
        self._signals.remove()
        # Trio must finish before the loop stops: actors' finally-blocks, the log's close.
        await self.host.close()
        gc.unfreeze()  # what the app held may be collected again once it has gone

    # --- frames -------------------------------------------------------------------------

    @property
    def monitor(self) -> MonitorScreen | None:
        for screen in reversed(self.screen_stack):
            if isinstance(screen, MonitorScreen):
                return screen
        return None

    def _tick(self) -> None:
        # Flat out, the picture changes faster than anyone reads it: draw half as often and
        # leave the time to the engine (which shares this thread).
        self._ticks += 1
        if self._flat_out and self._ticks % 2:
            return
        self.refresh_now()

    def refresh_now(self) -> None:
        """Draw the current snapshot on the monitor (also when a dialog covers it)."""
        monitor = self.monitor
        if monitor is None or not monitor.is_mounted:
            return
        snap = self.host.snapshot()
        if snap is None:
            return
        self._flat_out = math.isinf(snap.speed) and not snap.paused and not snap.finished
        live = self.host.live
        hit = live.hit if live is not None else None
        # NoMatches: the screen is being torn down (the app is exiting).
        with contextlib.suppress(NoMatches):
            monitor.show(snap)
            monitor.show_stops(describe(self.host.breakpoints), hit.what if hit else "")

    async def settle(self) -> None:
        """Until the engine waits for the UI (paused, stepped, finished), then draw. Tests
        and screenshots use it instead of sleeping."""
        await self.host.settle()
        self.refresh_now()

    # --- the engine's end ---------------------------------------------------------------

    def _engine_done(self, host: EngineHost, result: outcome.Outcome[Any]) -> None:
        # Trio calls this from a host callback that does not carry the app's context
        # (no active_app): hand it to the app's own message loop.
        self.call_later(self._after_engine, result)

    def _after_engine(self, result: outcome.Outcome[Any]) -> None:
        if isinstance(result, outcome.Error):
            error = _leaf(result.error)
            if isinstance(error, trio.Cancelled):
                return
            self._show_engine_error(error)
            return
        self.refresh_now()
        monitor = self.monitor
        if isinstance(monitor, LiveScreen | ReplayScreen):
            monitor.session_finished()

    def _show_engine_error(self, error: BaseException) -> None:
        live = self.host.live
        log = live.log_path if live is not None else None
        trace_path = None
        if log is not None:
            trace = Path(log).with_suffix(".traceback.txt")
            try:
                trace.write_text(
                    "".join(traceback.format_exception(type(error), error, error.__traceback__))
                )
                trace_path = str(trace)
            except OSError:
                trace_path = None
        self.engine_error = f"{type(error).__name__}: {error}"
        self.error_log = log
        self.push_screen(ErrorScreen(self.engine_error, log, trace_path))

    def action_quit_with_error(self) -> None:
        self.exit(1, return_code=1)

    # --- app-wide actions ------------------------------------------------------------------

    def action_command_palette(self) -> None:
        if self.use_command_palette and may_open(self, CommandPalette):
            # No id (Textual gives its palette one): a palette dismissed in the same burst of
            # keys is still registered until it is removed, and a second with the same id
            # was DuplicateIds (the 2,000-key storm, seeds 300000 and 300008). Nothing looks
            # the palette up by id; CommandPalette.is_open goes by its class.
            self.push_screen(Palette())

    def search_themes(self) -> None:
        # Textual's own theme picker, as the guarded palette (see tui.palette).
        if may_open(self, CommandPalette):
            self.push_screen(Palette(providers=[ThemeProvider], placeholder="Search for themes…"))

    def pop_screen(self) -> AwaitComplete:
        """The monitor is the bottom of the stack for the app's life. A dialog dismissed
        twice in one burst of keys (Screen.dismiss pops whatever is on top) must not take
        it, and the stack, down with it."""
        if isinstance(self.screen, MonitorScreen):
            return AwaitComplete()
        return super().pop_screen()

    def action_help(self) -> None:
        if not may_open(self, HelpScreen):
            return
        sources: list[type] = [type(self)]
        monitor = self.monitor
        if monitor is not None:
            sources.insert(0, type(monitor))
        self.push_screen(HelpScreen(sources, dict(self._keymap)))

    def deliver_screenshot(
        self,
        filename: str | None = None,
        path: str | None = None,
        time_format: str | None = None,
    ) -> str | None:
        """Textual saves to ~/Downloads, which a server or a fresh account may not have
        ("Failed to save screenshot"): save next to the session logs instead, creating the
        folder. The palette's Screenshot command and the screenshot action both come here."""
        folder = Path(path) if path else screenshots_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            self.notify(
                f"cannot save a screenshot in {folder}: {err.strerror}",
                severity="error",
                markup=False,
            )
            return None
        return super().deliver_screenshot(filename, str(folder), time_format)

    def action_toggle_theme(self) -> None:
        self.theme = THEMES[1] if self.theme == THEMES[0] else THEMES[0]

    def action_compare(self) -> None:
        monitor = self.monitor
        if isinstance(monitor, ReplayScreen):
            scenario = monitor.driver.config.scenario.name
            faults = list(monitor.driver.config.faults)
        elif isinstance(monitor, LiveScreen):
            scenario, faults = monitor.options.scenario, list(monitor.options.faults)
        else:
            return
        if not may_open(self, CompareScreen):
            return
        self.push_screen(
            CompareScreen(
                scenario, faults, self.compare_fn, seeds=self.compare_seeds, jobs=self.compare_jobs
            )
        )

    # --- the command palette ---------------------------------------------------------------

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        monitor = self.monitor
        if isinstance(monitor, LiveScreen):
            live = monitor
            for kind in FAULT_KINDS.values():
                yield SystemCommand(
                    f"Inject fault: {kind.name}",
                    kind.summary,
                    lambda name=kind.name: live.action_fault(name),
                )
            for name, cls in STRATEGIES.items():
                yield SystemCommand(
                    f"Switch strategy: {name}",
                    f"restart the session under {name}: {cls.summary}",
                    lambda name=name: self.run_worker(live.restart(strategy=name)),
                )
            for name in builtin_names():
                yield SystemCommand(
                    f"Switch scenario: {name}",
                    "restart the session on this scenario",
                    lambda name=name: self.run_worker(live.restart(scenario=name)),
                )
            yield SystemCommand("Pause / resume", "the virtual clock", live.action_pause)
            yield SystemCommand("Step", "exactly one event, then pause", live.action_step)
            yield SystemCommand(
                "Scheduler step",
                "the running actor, to its next sleep or block",
                live.action_step_call,
            )
            yield SystemCommand(
                "Step back",
                "one event back: the run re-executed from its start",
                lambda: self.run_worker(live.action_back()),
            )
            yield SystemCommand("Jump…", "to an event or a virtual time", live.action_jump)
            yield SystemCommand(
                "Breakpoints…", "stop at a DELETE, a swap, a fault, ...", live.action_breakpoints
            )
            yield SystemCommand("Faster", "speed up the virtual clock", live.action_faster)
            yield SystemCommand("Slower", "slow motion", live.action_slower)
            yield SystemCommand("Run to end", "flat out until the verdict", live.action_to_end)
            yield SystemCommand(
                "Restart", "a new session, same settings", lambda: self.run_worker(live.restart())
            )
        elif isinstance(monitor, ReplayScreen):
            replay = monitor
            yield SystemCommand(
                "Replay: play / pause", "", lambda: self.run_worker(replay.action_play())
            )
            yield SystemCommand("Replay: step", "one event", replay.action_step)
            yield SystemCommand(
                "Replay: step back", "one event", lambda: self.run_worker(replay.action_back())
            )
            yield SystemCommand(
                "Breakpoints…", "stop at a DELETE, a swap, a fault, ...", replay.action_breakpoints
            )
            yield SystemCommand(
                "Replay: jump", "to an event, a time or a percentage", replay.action_jump
            )
        yield SystemCommand(
            "Compare strategies", "every strategy over N seeds", self.action_compare
        )
        yield SystemCommand("Toggle dark / light", "switch theme", self.action_toggle_theme)

"""`slotlab qemu -- QEMU...` in the terminal: a real VM's memslots, live, and one key from
the same traffic on the model.

The watch screen (tui.screens.qemu) shows the slots QEMU has set (a DELETE whose CREATE has
not come yet is a hole), each vCPU thread inside KVM_RUN or out of it with its exits, and one
line per memory transaction with the window its DELETE+CREATE left open. ``m`` imports the
traffic watched so far and runs it on the model as an ordinary live session; ``b`` comes back.
The trace is followed all along, whichever screen is up. q, Ctrl-C, SIGTERM or SIGHUP stop
QEMU; QEMU exiting (or --duration) ends the watch but leaves the app up until q. Either way
the trace and its scenario are written, and the command line that replays them is printed
when the terminal is back.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from textual.app import App
from textual.screen import Screen

from engine.api import (
    QemuError,
    QemuProcess,
    TraceError,
    TraceFollower,
    VcpuThreads,
    WatchResult,
    closed_transactions,
    describe,
    finish,
    format_ns,
    qemu_snapshot,
    scenario_so_far,
)
from tui.app import SlotlabApp
from tui.options import LaunchOptions
from tui.palette import may_open
from tui.screens.help import HelpScreen
from tui.screens.qemu import QemuModelScreen, QemuWatchScreen

POLL_S = 0.2


class QemuWatchApp(SlotlabApp):
    TITLE = "slotlab qemu"

    def __init__(
        self,
        qemu: QemuProcess,
        scenario: Path,
        duration_ns: int | None,
        *,
        keymap: dict[str, str] | None = None,
    ) -> None:
        super().__init__(LaunchOptions(), keymap=keymap)
        self.qemu = qemu
        self.scenario = scenario
        self.follower = TraceFollower(qemu.trace)
        self.vcpus = VcpuThreads()
        self.started = time.monotonic()
        self.deadline = self.started + duration_ns / 1e9 if duration_ns else None
        self.shown = 0
        self.models = 0
        self.stopped_by = ""
        self.result: WatchResult | None = None
        self.error: str = ""

    def first_screen(self) -> Screen[Any]:
        return QemuWatchScreen()

    # Textual calls every class's own on_mount/on_unmount along the MRO: SlotlabApp's run
    # too (it pushes first_screen(), and stops the model's session on the way out).

    def on_mount(self) -> None:
        self.set_interval(POLL_S, self.poll_qemu)
        self.call_after_refresh(self.poll_qemu)

    @property
    def watch_screen(self) -> QemuWatchScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, QemuWatchScreen)), None)

    async def action_quit(self) -> None:
        self._end("quit")
        self.exit(return_code=0)

    async def on_unmount(self) -> None:
        self._end("interrupted")

    def action_help(self) -> None:
        if isinstance(self.screen, QemuWatchScreen) and may_open(self, HelpScreen):
            self.push_screen(HelpScreen([QemuWatchScreen, type(self)], dict(self._keymap)))
        else:
            super().action_help()

    # --- following QEMU ---------------------------------------------------------------------

    def poll_qemu(self) -> None:
        """Read what QEMU has written since the last poll, and draw it on the watch screen
        (also while the model's screen covers it)."""
        if self.stopped_by:
            return
        try:
            new = self.follower.poll()
        except TraceError as err:
            self.error = str(err)
            self._end("trace error")
            return
        self.vcpus.feed(new)
        code = self.qemu.exited()
        if code is not None:
            self._end(f"qemu exited with status {code}")
        elif self.deadline is not None and time.monotonic() >= self.deadline:
            self._end("duration")
        self._draw()

    def _draw(self) -> None:
        screen = self.watch_screen
        if screen is None or not screen.is_mounted:
            return  # the first poll after it is up draws everything
        state = self.follower.state()
        t_ns = int((time.monotonic() - self.started) * 1e9)
        snap = qemu_snapshot(
            self.scenario.stem, state, self.vcpus, t_ns, bool(self.stopped_by), self.stopped_by
        )
        closed = closed_transactions(state, bool(self.stopped_by))
        lines = [describe(txn) for txn in closed[self.shown :]]
        self.shown = max(self.shown, len(closed))
        windows = [w for t in (state.transactions if state else []) for w in t.windows_us()]
        status = (
            f"QEMU pid {self.qemu.pid}  {format_ns(t_ns)}  {self.follower.calls} memslot calls, "
            f"{len(state.transactions) if state else 0} transactions, longest window "
            f"{format_ns(max(windows, default=0) * 1000)}"
        )
        if self.stopped_by:
            status += f"\nstopped: {self.stopped_by}" + (
                f"  scenario: {self.result.scenario}" if self.result else f"  {self.error}"
            )
        else:
            status += f"\ntrace: {self.qemu.trace}  (m: the traffic so far on the model)"
        screen.show(snap, status, lines)

    def _end(self, why: str) -> None:
        """Stop QEMU (once) and write the trace's scenario."""
        if self.stopped_by:
            return
        self.stopped_by = why
        try:
            self.result = finish(self.qemu, self.follower, self.scenario, why)
        except ValueError as err:
            self.qemu.stop()
            self.error = str(err)
        if self.is_running:
            self._draw()

    # --- the same traffic on the model ---------------------------------------------------------

    def action_open_on_model(self) -> None:
        """Import the calls watched so far and run them on the model, as `slotlab tui
        --scenario` would: legacy first, S switches strategy, r arms the race."""
        if not may_open(self, QemuModelScreen):
            return
        if not self.stopped_by:
            self.poll_qemu()
        try:
            path = scenario_so_far(self.follower, self.scenario, " ".join(self.qemu.argv))
        except (QemuError, TraceError, ValueError) as err:
            self.notify(f"cannot run it on the model: {err}", severity="warning", markup=False)
            return
        self.models += 1
        log = path.with_name(f"{path.stem}-model{self.models}.jsonl")
        options = LaunchOptions(scenario=str(path), log_path=str(log))
        self.push_screen(QemuModelScreen(options))

    async def back_to_watch(self) -> None:
        """End the model's session (its log stays) and show QEMU again."""
        async with self.host.switching:
            await self.host.stop()
        if isinstance(self.screen, QemuModelScreen):
            # SlotlabApp keeps a monitor on the stack for good; here the watch screen is the
            # bottom, and the model's monitor comes and goes.
            await App.pop_screen(self)
        self._draw()

"""`slotlab qemu -- QEMU...` in the terminal: a real VM's memslots, live.

The slot map shows the slots QEMU has set (a DELETE whose CREATE has not come yet is a hole),
the vCPU lines show each vCPU thread inside KVM_RUN or out of it with its exits, and the
transaction log gets one line per memory transaction, with the window its DELETE+CREATE left
open. q, Ctrl-C, SIGTERM or SIGHUP stop QEMU; QEMU exiting (or --duration) ends the watch but
leaves the screen up until q. Either way the trace and its scenario are written, and the
command line that replays them is printed when the terminal is back.

Built on engine.importers (the follower, the process, the Snapshot); it is not a session, so
none of the model's controls (pause, speed, inject) apply.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, RichLog, Static

from engine.api import (
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
)
from tui.signals import ExitSignals
from tui.widgets.slot_map import SlotMap

POLL_S = 0.2


class QemuWatchApp(App[int]):
    CSS_PATH = "slotlab.tcss"
    TITLE = "slotlab qemu"
    BINDINGS = [
        Binding("q", "quit", "Quit (stops QEMU)", id="quit"),
        Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="ctrl-c"),
    ]
    CSS = """
    #qstatus { height: 2; padding: 0 1; }
    #qmap { height: 14; }
    #qslots { height: auto; max-height: 4; padding: 0 1; }
    #qvcpus { height: auto; max-height: 10; padding: 0 1; }
    #qtxns { height: 1fr; border-top: solid $primary; }
    """

    def __init__(self, qemu: QemuProcess, scenario: Path, duration_ns: int | None) -> None:
        super().__init__()
        self.qemu = qemu
        self.scenario = scenario
        self.follower = TraceFollower(qemu.trace)
        self.vcpus = VcpuThreads()
        self.started = time.monotonic()
        self.deadline = self.started + duration_ns / 1e9 if duration_ns else None
        self.shown = 0
        self.stopped_by = ""
        self.result: WatchResult | None = None
        self.error: str = ""
        self._signals = ExitSignals(lambda signum: self.exit(return_code=128 + signum))

    def compose(self) -> ComposeResult:
        yield Static(id="qstatus")
        yield SlotMap(id="qmap", compact=True)
        yield Static(id="qslots")
        yield Static(id="qvcpus")
        yield RichLog(id="qtxns", markup=False, wrap=False, max_lines=2000)
        yield Footer()

    def on_mount(self) -> None:
        self._signals.install()
        self.set_interval(POLL_S, self._tick)
        self._tick()

    def action_quit(self) -> None:  # type: ignore[override]
        self._end("quit")
        self.exit(return_code=0)

    def on_unmount(self) -> None:
        self._signals.remove()
        self._end("interrupted")

    def _tick(self) -> None:
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
        state = self.follower.state()
        t_ns = int((time.monotonic() - self.started) * 1e9)
        snap = qemu_snapshot(
            self.scenario.stem, state, self.vcpus, t_ns, bool(self.stopped_by), self.stopped_by
        )
        self.query_one(SlotMap).update_snapshot(snap)
        closed = closed_transactions(state, bool(self.stopped_by))
        log = self.query_one(RichLog)
        for txn in closed[self.shown :]:
            log.write(describe(txn))
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
            status += f"\ntrace: {self.qemu.trace}"
        self.query_one("#qstatus", Static).update(status)
        self.query_one("#qslots", Static).update(
            "\n".join(
                f"slots as{space.as_id}: "
                + "  ".join(
                    f"s{v.id}@{v.start:#x}+{v.end - v.start:#x}{' ro' if v.readonly else ''}"
                    f"{' log' if v.logging else ''}"
                    for v in space.active.slots
                )
                for space in snap.spaces
            )
            or "no memslot yet"
        )
        self.query_one("#qvcpus", Static).update(
            "\n".join(
                f"vCPU {v.index}  {'in KVM_RUN' if v.state == 'guest' else 'userspace':10}  "
                + ", ".join(f"{name.removeprefix('KVM_EXIT_')} {n}" for name, n in v.exits[:4])
                for v in snap.vcpus
            )
            or "no vCPU has entered KVM_RUN yet"
        )

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

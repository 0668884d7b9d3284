"""The two screens of `slotlab qemu`: the real VM watched, and its traffic so far on the model.

``QemuWatchScreen`` is the bottom of the stack: the slot map of QEMU's memslots, its vCPU
threads, and one line per memory transaction. ``m`` imports what has been watched so far
(the same importer as ``slotlab import``) and opens it as an ordinary live session
(``QemuModelScreen``: legacy, with every key of the live monitor, S switching strategy, r
arming the race); ``b`` ends that session and comes back. The app follows the trace the whole
time, so the watch view has kept up when it is shown again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, RichLog, Static

from engine.snapshot import Snapshot
from tui.screens.live import LiveScreen
from tui.widgets.slot_map import SlotMap

if TYPE_CHECKING:
    from tui.qemu_watch import QemuWatchApp


class QemuWatchScreen(Screen[None]):
    BINDINGS = [
        Binding("q", "app.quit", "Quit (stops QEMU)", id="quit"),
        Binding("m", "app.open_on_model", "Traffic so far on the model", id="qemu-model"),
        Binding("question_mark,f1", "app.help", "Help", key_display="?", id="help"),
    ]
    DEFAULT_CSS = """
    #qstatus { height: 2; padding: 0 1; }
    #qmap { height: 14; }
    #qslots { height: auto; max-height: 4; padding: 0 1; }
    #qvcpus { height: auto; max-height: 10; padding: 0 1; }
    #qtxns { height: 1fr; border-top: solid $primary; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="qstatus")
        yield SlotMap(id="qmap", compact=True)
        yield Static(id="qslots")
        yield Static(id="qvcpus")
        yield RichLog(id="qtxns", markup=False, wrap=False, max_lines=2000)
        yield Footer()

    def show(self, snap: Snapshot, status: str, transactions: list[str]) -> None:
        """One frame: the status lines, QEMU's slots and vCPUs, and new transaction lines."""
        self.query_one(SlotMap).update_snapshot(snap)
        log = self.query_one(RichLog)
        for line in transactions:
            log.write(line)
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


class QemuModelScreen(LiveScreen):
    """The live monitor on a scenario imported from the watched traffic, one key from it."""

    BINDINGS = [Binding("b", "back_to_qemu", "Back to QEMU", id="qemu-back")]

    async def action_back_to_qemu(self) -> None:
        await cast("QemuWatchApp", self.app).back_to_watch()

"""`?`: the keys as they are bound now (keymap included), and how to read the panels."""

from __future__ import annotations

from collections.abc import Iterable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

from tui.keymap import bindings_of, key_names
from tui.palette import dismiss_once
from tui.widgets.slot_map import GLYPH, HOLE, LEGEND
from tui.widgets.vcpu_panel import ACTIVITY

READING = """
## Reading the panels

**Slot map** — each address space is a GPA ruler. `active` is the memslot set vCPUs use now,
`inactive` the other one (the next swap publishes it), `vmm` QEMU's FlatView, `vmm next` the
FlatView an in-flight transaction moves to. `rip ▲` and `data ◆` mark where each vCPU
fetches and last accessed data (a digit is the vCPU, `*` several). Click a bar to inspect a GPA.

**The race** — a legacy update deletes a slot and creates its replacement with two ioctls.
While the slot is `INVALID` a fault retries; once the deleting swap is published the range has
*no* slot (`{hole}`): an instruction fetch there cannot be emulated and KVM_RUN returns
KVM_EXIT_INTERNAL_ERROR.

**Generations** — a swap publishes the new set with bit 63 (update in progress) set; the bit
clears when synchronize_srcu_expedited() returns.

**SRCU** — SCAN1 waits for the index new readers no longer take, the flip moves new readers to
the other index, SCAN2 waits for the old one: a vCPU stuck in an exit handler holds the
update up.

**Stepping** — space shows exactly one more event, `.` one scheduler step (the actor running
now goes on to its next sleep or block). `,` goes one event back and `j` jumps to an event or a
virtual time: runs are deterministic, so an earlier moment is the run re-executed from its start
with the same commands, and the recording line says when that happened. None of these is
recorded: they hold the clock and change nothing the run decides.

**Breakpoints** — `b`: stop at the next DELETE, CREATE, swap, grace-period phase, fault, exit,
transaction, verdict change or access to a GPA range (`--break KIND[=ARG]` on the command line).
The line above the footer lists them and says where the run stopped; they work in replay too.

Keys can be remapped by binding id: `SLOTLAB_KEYMAP="pause=P;step=n"` or
`~/.config/slotlab/keymap.toml` with a `[keymap]` table.
"""


def help_markdown(sources: Iterable[type], keymap: dict[str, str]) -> str:
    lines = ["# slotlab", "", "## Keys", "", "| keys | action | binding id |", "|---|---|---|"]
    for b in bindings_of(sources):
        assert b.id is not None
        keys = key_names(keymap.get(b.id, b.key)).replace("|", "\\|")
        lines.append(f"| `{keys}` | {b.description or b.action} | `{b.id}` |")
    lines += ["| `ctrl+p` | command palette (faults, strategies, scenarios, ...) | |", ""]
    lines += ["## Glyphs", "", "| glyph | meaning |", "|---|---|"]
    lines += [f"| `{GLYPH[code]}` | {text} |" for code, text in LEGEND]
    lines += [f"| `{glyph}` | vCPU {words} |" for glyph, words, _ in ACTIVITY.values()]
    return "\n".join(lines) + "\n" + READING.replace("{hole}", GLYPH[HOLE])


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,q,question_mark,f1", "close", "Close", id="help-close"),
    ]

    def __init__(self, sources: Iterable[type], keymap: dict[str, str]) -> None:
        super().__init__()
        self.markdown = help_markdown(sources, keymap)

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Markdown(self.markdown)

    def action_close(self) -> None:
        dismiss_once(self, None)

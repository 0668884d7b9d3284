"""A log's events as lanes, one per actor: what every view of a run draws.

The VMM's ioctls, the memslot machinery's steps, the SRCU grace periods and each vCPU's
faults and exits become slices (something with a duration) and instants (something that
happened at one time). The text report, the html report and the trace exports all draw
from these, so they agree on what a run looked like.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from engine import events as ev
from engine.events import Event

# An instant's weight: when two share a column of a text timeline, the heavier one shows.
PLAIN, NOTABLE, FATAL = 1, 2, 3

FAULT_GLYPHS = {
    "mapped": (".", PLAIN),
    "dirty": (".", PLAIN),
    "retry": ("r", NOTABLE),
    "retry_invalidated": ("v", NOTABLE),
    "mmio": ("m", NOTABLE),
    "mmio_len0": ("0", NOTABLE),
    "emulation_failure": ("X", FATAL),
    "ud_injected": ("U", FATAL),
}
EXIT_GLYPHS = {
    "KVM_EXIT_MMIO": "M",
    "KVM_EXIT_INTERNAL_ERROR": "!",
    "KVM_EXIT_HLT": "H",
    "KVM_EXIT_SHUTDOWN": "S",
}
LEGEND = {
    ".": "fault resolved (mapped)",
    "r": "fault retried (memslot update in progress)",
    "v": "fault retried (SPTE invalidated)",
    "m": "fault: no memslot, emulated as MMIO",
    "0": "fault: no memslot, KVM_EXIT_MMIO len 0",
    "X": "fault: emulation failed",
    "U": "#UD injected",
    "M": "exit KVM_EXIT_MMIO",
    "!": "exit KVM_EXIT_INTERNAL_ERROR",
    "H": "exit KVM_EXIT_HLT",
    "S": "exit KVM_EXIT_SHUTDOWN",
    "x": "other exit",
    "*": "SRCU reader used a freed memslot set",
    "V": "checker violation",
    "#": "VM stopped",
    "I": "memslot INVALID copy published",
    "d": "memslot DELETE committed",
    "c": "memslot CREATE committed",
    "o": "memslot MOVE/FLAGS committed",
    "P": "swap published (update in progress)",
    "D": "swap done (generation final)",
    "z": "stage-2 zap",
    "F": "grace period: index flipped",
    "W": "grace period: waiting on readers",
    "K": "inhibit: kick vCPUs",
    "A": "inhibit: all vCPUs out",
    "E": "inhibit: end",
    "s": "MMIO served by the VMM",
}


class Slice(msgspec.Struct, frozen=True):
    t0: int
    t1: int
    label: str
    kind: str
    """ioctl, gp, srcu_read: how a view fills it."""
    open_end: bool = False
    """It had not ended when the log did."""


class Instant(msgspec.Struct, frozen=True):
    t: int
    seq: int
    glyph: str
    weight: int
    label: str


class Lane(msgspec.Struct):
    name: str
    slices: list[Slice] = msgspec.field(default_factory=list)
    instants: list[Instant] = msgspec.field(default_factory=list)


class Span(msgspec.Struct, frozen=True):
    """A DELETE ... CREATE window: from the DELETE ioctl's entry to the end of the CREATE
    that follows it, while the range had no memslot."""

    t0: int
    t1: int
    slot: int
    open_end: bool


def _memslot_glyph(e: ev.MemslotChange) -> str:
    if e.step == "invalidate":
        return "I"
    return {"DELETE": "d", "CREATE": "c"}.get(e.change, "o")


class LaneBuilder:
    """Feeds on events in log order; `lanes()` gives the lanes at the end."""

    def __init__(self) -> None:
        self.vmm = Lane("vmm")
        self.memslots = Lane("memslots")
        self.gp = Lane("srcu-gp")
        self.vcpus: dict[int, Lane] = {}
        self.spans: list[Span] = []
        self._ioctl: dict[str, ev.IoctlEnter] = {}
        self._gp_start: dict[int, int] = {}
        self._reads: dict[str, int] = {}
        self._delete: tuple[int, int] | None = None
        self.end_t = 0

    def vcpu(self, n: int) -> Lane:
        if n not in self.vcpus:
            self.vcpus[n] = Lane(f"vcpu{n}")
        return self.vcpus[n]

    def _reader_lane(self, reader: str) -> Lane | None:
        if reader.startswith("vcpu") and reader[4:].isdigit():
            return self.vcpu(int(reader[4:]))
        return None

    def feed(self, events: Iterable[Event]) -> None:
        for e in events:
            self.end_t = max(self.end_t, e.t)
            self._one(e)

    def _one(self, e: Event) -> None:
        if isinstance(e, ev.IoctlEnter):
            self._ioctl[e.actor] = e
            if e.ioctl == "KVM_SET_USER_MEMORY_REGION" and e.memory_size == 0:
                self._delete = (e.t, e.slot)
        elif isinstance(e, ev.IoctlExit):
            start = self._ioctl.pop(e.actor, None)
            t0 = start.t if start is not None else e.t
            what = e.change or e.ioctl.removeprefix("KVM_")
            label = f"{what} slot {e.slot & 0xFFFF}" + (f" {e.error}" if e.errno else "")
            self.vmm.slices.append(Slice(t0, e.t, label, "ioctl"))
            if e.change == "CREATE" and self._delete is not None:
                self.spans.append(Span(self._delete[0], e.t, self._delete[1] & 0xFFFF, False))
                self._delete = None
        elif isinstance(e, ev.MemslotChange):
            label = f"{e.step} {e.change} slot {e.id} gfn {e.base_gfn:#x}+{e.npages}"
            self.memslots.instants.append(Instant(e.t, e.seq, _memslot_glyph(e), NOTABLE, label))
        elif isinstance(e, ev.SwapPublish):
            label = f"swap published, as_id {e.as_id} generation {e.generation}"
            self.memslots.instants.append(Instant(e.t, e.seq, "P", NOTABLE, label))
        elif isinstance(e, ev.SwapDone):
            label = f"swap done, as_id {e.as_id} generation {e.generation}"
            self.memslots.instants.append(Instant(e.t, e.seq, "D", NOTABLE, label))
        elif isinstance(e, ev.Zap):
            label = f"zap gfn {e.start_gfn:#x}..{e.end_gfn:#x}, {e.sptes} SPTEs"
            self.memslots.instants.append(Instant(e.t, e.seq, "z", NOTABLE, label))
        elif isinstance(e, ev.SrcuGp):
            self._gp(e)
        elif isinstance(e, ev.SrcuLock):
            self._reads[e.reader] = e.t
        elif isinstance(e, ev.SrcuUnlock):
            t0 = self._reads.pop(e.reader, e.t - e.held_ns)
            lane = self._reader_lane(e.reader)
            if lane is not None:
                lane.slices.append(Slice(t0, e.t, f"srcu read idx {e.idx}", "srcu_read"))
        elif isinstance(e, ev.Fault):
            glyph, weight = FAULT_GLYPHS.get(e.outcome, ("f", NOTABLE))
            label = f"{e.access} fault at {e.gpa:#x}: {e.outcome}"
            self.vcpu(e.vcpu).instants.append(Instant(e.t, e.seq, glyph, weight, label))
        elif isinstance(e, ev.Exit):
            glyph = EXIT_GLYPHS.get(e.reason, "x")
            weight = FATAL if glyph == "!" else NOTABLE
            label = f"{e.reason} at RIP {e.rip:#x}"
            self.vcpu(e.vcpu).instants.append(Instant(e.t, e.seq, glyph, weight, label))
        elif isinstance(e, ev.UdInjected):
            label = f"#UD injected at RIP {e.rip:#x} (CPL {e.cpl})"
            self.vcpu(e.vcpu).instants.append(Instant(e.t, e.seq, "U", FATAL, label))
        elif isinstance(e, ev.ReaderUseAfterFree):
            lane = self._reader_lane(e.reader) or self.gp
            label = f"{e.reader} used memslot set v{e.version}, retired {e.age} syncs ago"
            lane.instants.append(Instant(e.t, e.seq, "*", FATAL, label))
        elif isinstance(e, ev.Violation):
            lane = self.vcpu(e.vcpu) if e.vcpu >= 0 else self.vmm
            lane.instants.append(Instant(e.t, e.seq, "V", FATAL, f"{e.check}: {e.message}"))
        elif isinstance(e, ev.VmStopped):
            # The VMM stops the VM: its lane, not the vCPU's whose exit it reacted to.
            self.vmm.instants.append(Instant(e.t, e.seq, "#", FATAL, f"VM stopped: {e.reason}"))
        elif isinstance(e, ev.Inhibit):
            glyph = {"begin": "K", "all_out": "A", "end": "E"}.get(e.phase, "K")
            label = f"inhibit {e.phase}"
            self.vmm.instants.append(Instant(e.t, e.seq, glyph, NOTABLE, label))
        elif isinstance(e, ev.MmioServed):
            label = f"MMIO {'write' if e.is_write else 'read'} {e.gpa:#x} -> {e.target}"
            self.vmm.instants.append(Instant(e.t, e.seq, "s", PLAIN, label))

    def _gp(self, e: ev.SrcuGp) -> None:
        if e.phase == "start":
            self._gp_start[e.gp_seq] = e.t
        elif e.phase == "end":
            # Every phase carries the start's number; logs written before that was fixed
            # gave the end the completed count, one past it (their start is not open).
            number = e.gp_seq if e.gp_seq in self._gp_start else e.gp_seq - 1
            t0 = self._gp_start.pop(number, e.t)
            kind = "expedited" if e.expedited else "normal"
            self.gp.slices.append(Slice(t0, e.t, f"grace period {number} ({kind})", "gp"))
        elif e.phase == "flip":
            label = f"grace period {e.gp_seq}: flip to index {e.srcu_idx}"
            self.gp.instants.append(Instant(e.t, e.seq, "F", PLAIN, label))
        elif e.phase == "scan2" and e.waiting_on:
            label = f"grace period {e.gp_seq}: waiting on {', '.join(e.waiting_on)}"
            self.gp.instants.append(Instant(e.t, e.seq, "W", NOTABLE, label))

    def lanes(self) -> tuple[list[Lane], list[Span]]:
        """The lanes, with what was still open when the log ended drawn up to its end."""
        for actor, start in self._ioctl.items():
            label = start.ioctl.removeprefix("KVM_")
            if start.memory_size == 0 and start.ioctl == "KVM_SET_USER_MEMORY_REGION":
                label = f"DELETE slot {start.slot & 0xFFFF}"
            del actor
            self.vmm.slices.append(Slice(start.t, self.end_t, label, "ioctl", True))
        for t0 in self._gp_start.values():
            self.gp.slices.append(Slice(t0, self.end_t, "grace period", "gp", True))
        for reader, t0 in self._reads.items():
            lane = self._reader_lane(reader)
            if lane is not None:
                lane.slices.append(Slice(t0, self.end_t, "srcu read", "srcu_read", True))
        spans = list(self.spans)
        if self._delete is not None:
            spans.append(Span(self._delete[0], self.end_t, self._delete[1] & 0xFFFF, True))
        vcpus = [self.vcpus[n] for n in sorted(self.vcpus)]
        return [self.vmm, self.memslots, self.gp, *vcpus], spans


def build_lanes(events: Iterable[Event]) -> tuple[list[Lane], list[Span]]:
    builder = LaneBuilder()
    builder.feed(events)
    return builder.lanes()

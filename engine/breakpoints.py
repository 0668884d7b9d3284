"""Breakpoints: which event a paused-on-arrival run should stop at.

A breakpoint names one kind of moment in a memslot update, in the kernel's words, with an
optional argument that narrows it:

    delete            kvm_set_memslot() DELETE: the INVALID copy published (the hole opens)
    create            kvm_set_memslot() CREATE committed (the hole closes)
    swap[=AS_ID]      kvm_swap_active_memslots() published a set
    gp[=PHASE]        a synchronize_srcu() phase: start, scan1, flip, scan2, end
    fault[=OUTCOME]   a stage-2 fault (kvm_faultin_pfn()), optionally with this outcome
    exit[=REASON]     KVM_RUN returned (KVM_EXIT_MMIO, or just mmio)
    txn               the VMM began a memory transaction (memory_region_transaction_commit())
    verdict           the checker's verdict changed (ok -> crashed, ...)
    gpa=START[-END]   a fault, MMIO exit or MMIO the VMM served inside [START, END]

This module only decides; pausing the run is engine.stepping's job. It is pure: an event and
the checker's current verdict in, the breakpoint that fired (or None) out.
"""

from __future__ import annotations

import msgspec

from engine.events import (
    Event,
    Exit,
    Fault,
    MemslotChange,
    MmioServed,
    SrcuGp,
    SwapPublish,
    TxnBegin,
)

KINDS: dict[str, str] = {
    "delete": "a memslot DELETE publishes its INVALID copy",
    "create": "a memslot CREATE commits",
    "swap": "a memslot set is swapped in (=AS_ID narrows)",
    "gp": "an SRCU grace-period phase (=start|scan1|flip|scan2|end)",
    "fault": "a stage-2 fault (=OUTCOME narrows, e.g. emulate)",
    "exit": "a vCPU exit to userspace (=REASON narrows, e.g. mmio)",
    "txn": "the VMM begins a memory transaction",
    "verdict": "the verdict changes",
    "gpa": "an access inside a GPA range (=0xa0000-0xbffff or =0xa0000)",
}
GP_PHASES = ("start", "scan1", "flip", "scan2", "end")


class Breakpoint(msgspec.Struct, frozen=True):
    kind: str
    arg: str = ""
    lo: int = 0
    """gpa: the range, inclusive."""
    hi: int = -1

    def text(self) -> str:
        return f"{self.kind}={self.arg}" if self.arg else self.kind


def _address(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"{text!r} is not an address (0xa0000 or 655360)") from None
    if value < 0:
        raise ValueError(f"{text!r}: an address is not negative")
    return value


def parse_breakpoint(text: str) -> Breakpoint:
    """``KIND[=ARG]``; ValueError (one line) for anything else."""
    kind, _, arg = text.strip().partition("=")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind not in KINDS:
        raise ValueError(f"unknown breakpoint {kind!r} (choose from {', '.join(KINDS)})")
    if kind in ("delete", "create", "txn", "verdict") and arg:
        raise ValueError(f"breakpoint {kind} takes no argument, got {arg!r}")
    if kind == "gp" and arg and arg.lower() not in GP_PHASES:
        raise ValueError(f"gp phase {arg!r} is not one of {', '.join(GP_PHASES)}")
    if kind == "swap" and arg and not arg.isdigit():
        raise ValueError(f"swap takes an address-space id (0 or 1), not {arg!r}")
    if kind == "gpa":
        if not arg:
            raise ValueError("gpa needs a range: gpa=0xa0000-0xbffff or gpa=0xa0000")
        start, dash, end = arg.partition("-")
        lo = _address(start.strip())
        hi = _address(end.strip()) if dash else lo
        if hi < lo:
            raise ValueError(f"gpa range {arg!r} ends before it starts")
        return Breakpoint(kind, arg, lo, hi)
    return Breakpoint(kind, arg.lower() if kind == "gp" else arg)


def _exit_reason(want: str, reason: str) -> bool:
    want = want.upper()
    return reason == want or reason == f"KVM_EXIT_{want}"


def matches(bp: Breakpoint, ev: Event) -> bool:
    """Whether ``ev`` is the moment ``bp`` names (the verdict kind is matches_verdict's)."""
    kind = bp.kind
    if kind == "delete":
        return isinstance(ev, MemslotChange) and ev.change == "DELETE" and ev.step == "invalidate"
    if kind == "create":
        return isinstance(ev, MemslotChange) and ev.change == "CREATE" and ev.step == "commit"
    if kind == "swap":
        return isinstance(ev, SwapPublish) and (not bp.arg or ev.as_id == int(bp.arg))
    if kind == "gp":
        return isinstance(ev, SrcuGp) and (not bp.arg or ev.phase == bp.arg)
    if kind == "fault":
        return isinstance(ev, Fault) and (not bp.arg or ev.outcome == bp.arg)
    if kind == "exit":
        return isinstance(ev, Exit) and (not bp.arg or _exit_reason(bp.arg, ev.reason))
    if kind == "txn":
        return isinstance(ev, TxnBegin)
    if kind == "gpa":
        gpa = _gpa_of(ev)
        return gpa is not None and bp.lo <= gpa <= bp.hi
    return False


def _gpa_of(ev: Event) -> int | None:
    if isinstance(ev, Fault | MmioServed):
        return ev.gpa
    if isinstance(ev, Exit) and ev.reason == "KVM_EXIT_MMIO":
        return ev.phys_addr
    return None


class Entry(msgspec.Struct):
    bp: Breakpoint
    enabled: bool = True


class Hit(msgspec.Struct, frozen=True):
    """Where a run stopped: the breakpoint and the event index that fired it."""

    bp: Breakpoint
    seq: int
    what: str


class Breakpoints:
    """The list a user edits (kept across restarts) and the check made on every event."""

    def __init__(self, texts: tuple[str, ...] | list[str] = ()) -> None:
        self.entries: list[Entry] = [Entry(parse_breakpoint(t)) for t in texts]

    def add(self, text: str) -> Breakpoint:
        bp = parse_breakpoint(text)
        if all(e.bp != bp for e in self.entries):
            self.entries.append(Entry(bp))
        return bp

    def toggle(self, index: int) -> None:
        entry = self.entries[index]
        entry.enabled = not entry.enabled

    def remove(self, index: int) -> None:
        del self.entries[index]

    def clear(self) -> None:
        self.entries.clear()

    @property
    def active(self) -> bool:
        # Asked at every event of a live run: with no breakpoints, no generator either.
        return bool(self.entries) and any(e.enabled for e in self.entries)

    def check(self, ev: Event, verdict_before: str, verdict_after: str) -> Hit | None:
        """The first enabled breakpoint ``ev`` fires, given the verdict before and after the
        checker saw it."""
        for entry in self.entries:
            if not entry.enabled:
                continue
            bp = entry.bp
            if bp.kind == "verdict":
                if verdict_before != verdict_after:
                    return Hit(bp, ev.seq, f"verdict {verdict_before} -> {verdict_after}")
            elif matches(bp, ev):
                return Hit(bp, ev.seq, f"{bp.text()} at event #{ev.seq}")
        return None

    def texts(self) -> list[str]:
        return [e.bp.text() for e in self.entries]

"""Numbers and events as the panels print them."""

from __future__ import annotations

import math
from typing import Any

import msgspec

from engine import events as ev
from engine.api import format_ns

__all__ = ["event_details", "event_summary", "format_ns", "gpa", "speed_text"]

_ADDRESS_FIELDS = frozenset(
    {"gpa", "rip", "phys_addr", "guest_phys_addr", "userspace_addr", "memory_size", "data"}
)


# Events whose slot field is the ioctl's argument: as_id in bits 16-31, the id below.
_SLOT_ARG_EVENTS = (ev.IoctlEnter, ev.IoctlExit, ev.DirtyLog)


def gpa(value: int) -> str:
    return f"{value:#x}"


def speed_text(speed: float) -> str:
    """Virtual time per wall second, as a person reads it: 'x1e-05' or 'flat out'."""
    if math.isinf(speed):
        return "flat out"
    if speed >= 1:
        return f"x{speed:g}"
    return f"x{speed:.0e}".replace("e-0", "e-")


def _slot(slot: int) -> str:
    as_id, sid = slot >> 16, slot & 0xFFFF
    return f"slot {sid}" if as_id == 0 else f"as{as_id} slot {sid}"


def event_summary(event: ev.Event) -> str:
    """One line for the log: what happened, in the kernel's words."""
    match event:
        case ev.IoctlEnter():
            if event.entries:
                return f"{event.actor} -> {event.ioctl} ({event.entries} entries)"
            what = "DELETE" if event.memory_size == 0 else f"size {event.memory_size:#x}"
            return (
                f"{event.actor} -> {event.ioctl}({_slot(event.slot)}, gpa "
                f"{event.guest_phys_addr:#x}, {what}, flags {event.flags:#x})"
            )
        case ev.IoctlExit():
            result = f"errno {event.error or event.errno}" if event.errno else "0"
            return f"{event.ioctl} returned {result} {event.change}".rstrip()
        case ev.MemslotChange():
            invalid = " INVALID" if event.flags & (1 << 16) else ""
            return (
                f"as{event.as_id} slot {event.id} {event.change} {event.step}: gfn "
                f"{event.base_gfn:#x}+{event.npages:#x} flags {event.flags & 0xFFFF:#x}{invalid}"
            )
        case ev.SwapPublish():
            return f"as{event.as_id} swap published (gen {event.generation:#x}, bit 63 set)"
        case ev.SwapDone():
            return f"as{event.as_id} swap done: generation {event.generation:#x}"
        case ev.Zap():
            where = "all" if event.zap_all else f"gfn {event.start_gfn:#x}-{event.end_gfn:#x}"
            return f"as{event.as_id} zap {where}: {event.sptes} SPTEs"
        case ev.SrcuLock():
            return f"{event.reader} srcu_read_lock -> idx {event.idx}"
        case ev.SrcuUnlock():
            return (
                f"{event.reader} srcu_read_unlock idx {event.idx} (held {format_ns(event.held_ns)})"
            )
        case ev.SrcuUnlockMismatch():
            return f"{event.reader} unlocked idx {event.idx} holding {event.held_idx}"
        case ev.SrcuGp():
            waiting = f" waiting on {', '.join(event.waiting_on)}" if event.waiting_on else ""
            kind = "expedited " if event.expedited else ""
            return (
                f"{kind}GP #{event.gp_seq} {event.phase.upper()} srcu_idx {event.srcu_idx}{waiting}"
            )
        case ev.Fault():
            return (
                f"vcpu{event.vcpu} {event.access} fault at {event.gpa:#x}: {event.outcome}"
                f"{'' if event.slot < 0 else f' (slot {event.slot})'}"
            )
        case ev.Exit():
            extra = ""
            if event.reason == "KVM_EXIT_MMIO":
                extra = (
                    f" gpa {event.phys_addr:#x} len {event.len}{' write' if event.is_write else ''}"
                )
            return f"vcpu{event.vcpu} {event.reason} at RIP {event.rip:#x}{extra}"
        case ev.UdInjected():
            return (
                f"vcpu{event.vcpu} {event.vector} injected at RIP {event.rip:#x} (CPL {event.cpl})"
            )
        case ev.SmmTransition():
            where = "entered SMM" if event.entered else "RSM"
            return f"vcpu{event.vcpu} {where}: as_id {event.as_id} at RIP {event.rip:#x}"
        case ev.DirtyLog():
            return f"KVM_GET_DIRTY_LOG {_slot(event.slot)}: {len(event.pages)} page(s)"
        case ev.ReaderUseAfterFree():
            return f"{event.reader} held set v{event.version} while {event.update or 'an update'} edited it"
        case ev.TxnBegin():
            return (
                f"txn {event.txn} -> {event.layout}: {len(event.dels)} del, {len(event.adds)} add"
                f"{' (overlapping)' if event.overlapping else ''}"
            )
        case ev.TxnCommit():
            return f"txn {event.txn} committed after {format_ns(event.latency_ns)}"
        case ev.MmioServed():
            rw = "write" if event.is_write else "read"
            return f"vcpu{event.vcpu} MMIO {rw} {event.gpa:#x} -> {event.target} {event.region}".rstrip()
        case ev.Inhibit():
            return f"inhibit {event.phase}" + (
                f" after {format_ns(event.latency_ns)}" if event.latency_ns else ""
            )
        case ev.Note():
            return f"{event.source}: {event.text}"
        case ev.VmStopped():
            return f"VM stopped: {event.reason}"
        case ev.Injected():
            params = ",".join(f"{k}={v}" for k, v in event.params.items())
            target = f" on {event.target}" if event.target else ""
            return f"injected {event.fault}={params}{target}"
        case ev.Command():
            args = " ".join(f"{k}={v}" for k, v in event.args.items())
            return f"command {event.name} {args}".rstrip()
        case ev.Violation():
            return f"VIOLATION {event.check}: {event.message}"
    return str(event)


def kind_of(event: ev.Event) -> str:
    """The event's tag, as written in the log."""
    return str(type(event).__struct_config__.tag)


def event_details(event: ev.Event) -> list[tuple[str, str]]:
    """Every field, addresses in hex, for the details pane."""
    data: dict[str, Any] = msgspec.to_builtins(event)
    rows = [("kind", kind_of(event)), ("t", f"{format_ns(event.t)} ({event.t} ns)")]
    for key, value in data.items():
        if key in ("kind", "t"):
            continue
        if key in _ADDRESS_FIELDS and isinstance(value, int):
            text = f"{value:#x}"
        elif key == "actor_t" and isinstance(value, int):
            text = f"{format_ns(value)} (the vCPU's own clock, behind t)"
        elif key == "generation" and isinstance(value, int):
            text = f"{value:#x}" + ("  (bit 63: update in progress)" if value >> 63 else "")
        elif key == "slot" and isinstance(event, _SLOT_ARG_EVENTS) and isinstance(value, int):
            text = f"{value} (as_id {value >> 16}, id {value & 0xFFFF})"
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value) or "-"
        elif isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        else:
            text = str(value)
        rows.append((key, text))
    if isinstance(event, ev.SwapPublish):
        rows.append(
            (
                "note",
                f"readers now see generation {event.generation | (1 << 63):#x}: bit 63 "
                "(update in progress) stays set until synchronize_srcu_expedited() returns",
            )
        )
    return rows

"""The checker: judges a run from its events, online or from a recorded log.

It watches for what the 2022 thread argued about, and says it in the kernel's terms:

- SRCU safety the rcutorture way: a reader that used a memslot set retired two or more
  synchronize calls ago read freed memory; an unlock with the wrong index corrupts the counts.
- atomicity: under a strategy that claims it, no vCPU may find no memslot for a GPA that the
  transaction maps both before and after.
- lost writes: a guest write the VMM dropped instead of landing it in RAM.
- lost dirty bits: pages the guest dirtied that no KVM_GET_DIRTY_LOG reported before the
  slot's bitmap was destroyed, each named with the write that set it and the sync and ioctl it
  fell between (engine.dirtycheck).
- liveness: a vCPU retrying the same fetch with no update in flight is livelocked.

Verdicts, most serious first: violation, crashed, livelock, ok.
"""

from __future__ import annotations

import dataclasses

import msgspec

from engine.dirtycheck import DirtyTracker
from engine.events import (
    DirtyLog,
    Event,
    Exit,
    Fault,
    IoctlEnter,
    IoctlExit,
    MemslotChange,
    MmioServed,
    ReaderUseAfterFree,
    SrcuGp,
    SrcuLock,
    SrcuUnlock,
    SrcuUnlockMismatch,
    SwapDone,
    SwapPublish,
    TxnBegin,
    TxnCommit,
    UdInjected,
    Violation,
    VmStopped,
)
from engine.events import (
    EventBus as _Bus,
)
from engine.model import constants as c
from engine.units import format_ns

LIVELOCK_RETRIES = 64
NO_SLOT = frozenset({"mmio", "emulation_failure", "mmio_len0", "ud_injected", "pabt_injected"})
# The most frequent events the checker has no rule for, let through before the chain of kinds.
_UNJUDGED: frozenset[type[Event]] = frozenset({SrcuLock, SrcuUnlock, SrcuGp, SwapDone})


class Finding(msgspec.Struct):
    """One violation as a verdict lists it: the check that failed and what it found."""

    kind: str
    message: str


@dataclasses.dataclass
class Verdict:
    verdict: str
    explanation: str
    violations: list[Finding]


class Checker:
    def __init__(self, atomic: bool, bus: _Bus | None = None) -> None:
        self.atomic = atomic
        self.bus = bus
        self.violations: list[Violation] = []
        self.crash: str = ""
        self.livelock: str = ""
        self._txn: TxnBegin | None = None
        self._last_delete: IoctlExit | None = None
        self._ioctl: IoctlEnter | None = None
        self._publish_t = 0
        self._len0: dict[int, tuple[int, int, int]] = {}  # vcpu -> (gpa, count, first t)
        self.dirty = DirtyTracker()
        self._seen_uaf: set[tuple[str, int]] = set()
        self.ud_injected = 0
        # KVM_EXIT_MMIO taken while a memory transaction was in flight.
        self.window_mmio_exits = 0

    # Online use: subscribe(checker.observe). Violations found are emitted back to the bus so
    # they land in the log next to what caused them.

    def observe(self, ev: Event) -> None:
        kind = type(ev)
        if kind is Fault:
            self._fault(ev)  # type: ignore[arg-type]
        elif kind in _UNJUDGED:
            return
        # The kinds of most events next: a run emits one of each per KVM_EXIT_MMIO.
        elif kind is Exit:
            reason = ev.reason  # type: ignore[attr-defined]
            if reason == "KVM_EXIT_MMIO":
                if self._txn is not None:
                    self.window_mmio_exits += 1
            elif reason == "KVM_EXIT_INTERNAL_ERROR" and not self.crash:
                self._internal_error(ev)  # type: ignore[arg-type]
        elif kind is MmioServed:
            assert isinstance(ev, MmioServed)
            if ev.target == "dropped" and ev.is_write:
                self._violate(
                    "lost_write",
                    f"vcpu{ev.vcpu} wrote {ev.data:#x} to GPA {ev.gpa:#x} (RAM region {ev.region}) through a "
                    "KVM_EXIT_MMIO taken in the update window, and the VMM dropped it instead of "
                    "dispatching it through its old FlatView",
                    ev.vcpu,
                    ev.gpa,
                )
        elif kind is TxnBegin:
            self._txn = ev  # type: ignore[assignment]
        elif kind is TxnCommit:
            self._txn = None
        elif kind is IoctlEnter:
            self._ioctl = ev  # type: ignore[assignment]
            self.dirty.ioctl(ev)  # type: ignore[arg-type]
        elif kind is SwapPublish:
            self._publish_t = ev.t
        elif kind is IoctlExit:
            assert isinstance(ev, IoctlExit)
            if ev.change == "DELETE":
                self._last_delete = ev
        elif kind is MemslotChange:
            self._memslot(ev)  # type: ignore[arg-type]
        elif kind is DirtyLog:
            self.dirty.harvest(ev)  # type: ignore[arg-type]
        elif kind is UdInjected:
            assert isinstance(ev, UdInjected)
            self.ud_injected += 1
            if not self.crash and ev.vector == "PABT":
                self.crash = (
                    f"vcpu{ev.vcpu} took an instruction abort at PC {ev.rip:#x} on an IPA with no usable "
                    "memslot: kvm_handle_guest_abort() injected a prefetch abort into the guest, whose "
                    "kernel dies on it"
                )
            elif not self.crash:
                self.crash = (
                    f"vcpu{ev.vcpu} fetched an instruction at RIP {ev.rip:#x} from a GPA with no memslot at "
                    f"CPL {ev.cpl}{' in L2' if ev.guest_mode else ''}: emulation failed and KVM injected #UD "
                    "into the guest, which is architecturally invalid; the guest task dies"
                )
        elif kind is VmStopped:
            assert isinstance(ev, VmStopped)
            if not self.crash:
                self.crash = f"the VMM stopped the VM: {ev.reason}"
        elif kind is ReaderUseAfterFree:
            assert isinstance(ev, ReaderUseAfterFree)
            key = (ev.reader, ev.version)
            if key not in self._seen_uaf:
                self._seen_uaf.add(key)
                self._violate(
                    "srcu_uaf",
                    f"{ev.reader} held kvm->srcu (index {ev.idx}) and the memslot set it "
                    f"dereferenced (as_id {ev.as_id}, version {ev.version}) while "
                    f"{ev.update or 'an update'} edited that set in place, {ev.age} grace "
                    "period(s) after retiring it: a use-after-free. The swap did not wait in "
                    "synchronize_srcu_expedited() for the readers of the set it replaced",
                )
        elif kind is SrcuUnlockMismatch:
            assert isinstance(ev, SrcuUnlockMismatch)
            self._violate(
                "srcu_unlock",
                f"{ev.reader} called srcu_read_unlock() with index {ev.idx} but holds index "
                f"{ev.held_idx}: the lock/unlock counts no longer balance",
            )

    def _violate(self, check: str, message: str, vcpu: int = -1, gpa: int = -1) -> None:
        v = Violation(check=check, message=message, vcpu=vcpu, gpa=gpa)
        self.violations.append(v)
        if self.bus is not None:
            self.bus.emit(v)

    def _fault(self, ev: Fault) -> None:
        if ev.outcome == "dirty":
            self.dirty.fault(ev)
        if ev.outcome not in NO_SLOT:
            self._len0.pop(ev.vcpu, None)
            return
        txn = self._txn
        if (
            self.atomic
            and txn is not None
            and txn.atomic
            and txn.as_id == ev.as_id
            and _inside(ev.gpa, txn.dels)
            and _inside(ev.gpa, txn.adds)
        ):
            self._violate(
                "atomicity",
                f"vcpu{ev.vcpu} found no memslot for GPA {ev.gpa:#x} ({ev.access}) during transaction "
                f"{txn.txn}, although the GPA is mapped both before and after it",
                ev.vcpu,
                ev.gpa,
            )
        if ev.outcome == "mmio_len0" and txn is None:
            gpa, count, first = self._len0.get(ev.vcpu, (ev.gpa, 0, ev.t))
            if gpa != ev.gpa:
                gpa, count, first = ev.gpa, 0, ev.t
            count += 1
            self._len0[ev.vcpu] = (gpa, count, first)
            if count == LIVELOCK_RETRIES and not self.livelock:
                self.livelock = (
                    f"vcpu{ev.vcpu} retried the instruction fetch at GPA {gpa:#x} {count} times over "
                    f"{format_ns(ev.t - first)} with no memory update in flight: KVM_EXIT_MMIO with len 0 "
                    "cannot tell a guest in the weeds from the update race, so the VMM re-enters forever"
                )

    def _memslot(self, ev: MemslotChange) -> None:
        for bit in self.dirty.memslot(ev):
            self._violate(
                "lost_dirty", bit.describe(), bit.write.vcpu, bit.write.gpa & ~(c.PAGE_SIZE - 1)
            )

    def _internal_error(self, ev: Exit) -> None:
        """The first KVM_EXIT_INTERNAL_ERROR: the crash, with the update window that led to it."""
        window = ""
        io = self._ioctl
        if io is not None and io.memory_size == 0 and io.ioctl == "KVM_SET_USER_MEMORY_REGION":
            window = (
                f" The window was opened by KVM_SET_USER_MEMORY_REGION(slot {io.slot & 0xFFFF}, "
                f"memory_size 0), a DELETE issued at t={format_ns(io.t)}: its last swap published a "
                f"memslot set without the slot at t={format_ns(self._publish_t)}, "
                f"{format_ns(ev.t - self._publish_t)} before the fault."
            )
        elif self._last_delete is not None:
            d = self._last_delete
            window = (
                f" KVM_SET_USER_MEMORY_REGION deleted slot {d.slot & 0xFFFF} at t={format_ns(d.t)}; "
                f"the slot was still missing {format_ns(ev.t - d.t)} later."
            )
        self.crash = (
            f"vcpu{ev.vcpu} fetched its next instruction at RIP {ev.rip:#x} while no memslot covered "
            f"that GPA: KVM could not emulate the fetch and KVM_RUN returned KVM_EXIT_INTERNAL_ERROR "
            f"(suberror {ev.suberror}, KVM_INTERNAL_ERROR_EMULATION).{window}"
        )

    def verdict(self) -> Verdict:
        violations = [Finding(v.check, v.message) for v in self.violations]
        if self.violations:
            first = self.violations[0]
            more = f" (+{len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
            return Verdict("violation", f"{first.check}: {first.message}{more}", violations)
        if self.crash:
            return Verdict("crashed", self.crash, violations)
        if self.livelock:
            return Verdict("livelock", self.livelock, violations)
        return Verdict("ok", "no vCPU met a hole in guest memory it could not survive", violations)


def _inside(gpa: int, spans: list[list[int]]) -> bool:
    return any(start <= gpa < start + size for start, size in spans)

"""Memslot calls read from a VMM's trace, the slot tables they build, and the memory
transactions they group into.

Both readers (QEMU's trace log, strace output) produce the same records: a memslot call
(KVM_SET_USER_MEMORY_REGION or ..._REGION2 with its fields and return value) or a vCPU thread
entering KVM_RUN. ``SlotTables.apply`` replays a call the way __kvm_set_memory_region() sorts it
(kvm_main.c): memory_size 0 is KVM_MR_DELETE, a new slot id KVM_MR_CREATE, an existing one with
only its flags changed KVM_MR_FLAGS_ONLY, with only its GPA changed KVM_MR_MOVE; anything else
the kernel refuses with EINVAL, and a CREATE overlapping another slot with EEXIST, so a trace
claiming either is inconsistent and rejected.

Transactions (``group``). QEMU 7.2's memory_region_transaction_commit() runs
address_space_update_topology_pass() twice per address space: first every region_del (a
DELETE per slot, in ascending GPA), then every region_add, log_start and log_stop (CREATEs and
flags-only calls, in ascending GPA). The listener issues one ioctl per call, from the thread
that committed. So a call ends the current transaction and starts a new one when
  1. another thread issued it;
  2. its thread entered KVM_RUN since the previous call (a vCPU thread commits a transaction
     while it handles one exit; only traces with vCPU lines show this);
  3. it targets another address space (each has its own pair of passes);
  4. it cannot follow the previous call inside one commit: a DELETE after a CREATE or
     flags-only call, or a GPA not above the previous call's in the same pass;
  5. more than ``txn_gap`` passed since the previous call (both stamps are taken after the
     ioctl returned, so the gap includes the next call's time in the kernel, which a loaded
     host stretches to tens of ms: hence a generous default).
Rule 4 also guarantees that a group is exactly what one diff of slot tables yields, so
slotlab's VMM, given the table after each group, issues the same calls in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
MODELLED_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY
DEFAULT_TXN_GAP_US = 100_000


class TraceError(ValueError):
    """`path:line: reason`, the one line a user needs."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path, self.line, self.reason = path, line, reason


class MemslotCall(msgspec.Struct, frozen=True, gc=False):
    """One KVM_SET_USER_MEMORY_REGION(2) as the trace recorded it."""

    line: int
    tid: int  # 0 when the trace does not say
    t_us: int | None  # wall-clock microseconds, None when the trace has no stamps
    slot: int  # as recorded: slot id | as_id << 16
    flags: int
    gpa: int
    size: int
    hva: int
    ret: int = 0

    @property
    def as_id(self) -> int:
        return self.slot >> 16

    @property
    def slot_id(self) -> int:
        return self.slot & 0xFFFF


class VcpuRun(msgspec.Struct, frozen=True, gc=False):
    """A vCPU thread entering KVM_RUN."""

    line: int
    tid: int
    t_us: int | None
    cpu: int


class VcpuExit(msgspec.Struct, frozen=True, gc=False):
    """KVM_RUN returning to userspace with an exit reason."""

    line: int
    tid: int
    t_us: int | None
    cpu: int
    reason: int


Record = MemslotCall | VcpuRun | VcpuExit


class Slot(msgspec.Struct, frozen=True, gc=False):
    as_id: int
    id: int
    flags: int
    gpa: int
    size: int
    hva: int

    @property
    def end(self) -> int:
        return self.gpa + self.size


SlotTable = dict[tuple[int, int], Slot]  # (as_id, slot id) -> slot


class AppliedCall(msgspec.Struct, frozen=True, gc=False):
    call: MemslotCall
    kind: str  # "create", "delete", "flags", "move"
    old: Slot | None  # the slot before the call (a DELETE line carries size 0)


class SlotTables:
    """Every address space's slots, rebuilt call by call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.slots: SlotTable = {}

    def apply(self, call: MemslotCall) -> str:
        """The call's kind, after applying it; a call the kernel would refuse is an error."""
        key = (call.as_id, call.slot_id)
        old = self.slots.get(key)
        where = f"slot {call.slot_id}" + (f" of as_id {call.as_id}" if call.as_id else "")
        if call.size == 0:
            if old is None:
                raise TraceError(
                    self.path, call.line, f"DELETE of {where}, which was never created"
                )
            del self.slots[key]
            return "delete"
        if call.flags & ~MODELLED_FLAGS:
            raise TraceError(
                self.path,
                call.line,
                f"flags {call.flags:#x}: only KVM_MEM_LOG_DIRTY_PAGES and KVM_MEM_READONLY are modelled",
            )
        if call.gpa % 4096 or call.size % 4096 or call.hva % 4096:
            raise TraceError(self.path, call.line, "gpa, size and ua must be page aligned")
        new = Slot(call.as_id, call.slot_id, call.flags, call.gpa, call.size, call.hva)
        if old is None:
            kind = "create"
        elif (old.gpa, old.size, old.hva) == (new.gpa, new.size, new.hva) and not (
            (old.flags ^ new.flags) & KVM_MEM_READONLY
        ):
            kind = "flags"
        elif old.size == new.size and old.hva == new.hva and old.flags == new.flags:
            kind = "move"
        else:
            raise TraceError(
                self.path,
                call.line,
                f"{where} exists at {old.gpa:#x}+{old.size:#x}: the kernel refuses this change (EINVAL)",
            )
        for other in self.slots.values():
            if (
                other.as_id == new.as_id
                and other.id != new.id
                and other.gpa < new.end
                and new.gpa < other.end
            ):
                raise TraceError(
                    self.path,
                    call.line,
                    f"{where} at {new.gpa:#x}+{new.size:#x} overlaps slot {other.id} (EEXIST)",
                )
        self.slots[key] = new
        return kind

    def snapshot(self) -> SlotTable:
        return dict(self.slots)


class Transaction(msgspec.Struct, gc=False):
    """One QEMU memory transaction as the trace shows it, and the slot table it left."""

    index: int
    calls: list[AppliedCall]
    table: SlotTable

    @property
    def as_id(self) -> int:
        return self.calls[0].call.as_id

    @property
    def tid(self) -> int:
        return self.calls[0].call.tid

    @property
    def start_us(self) -> int | None:
        return self.calls[0].call.t_us

    @property
    def end_us(self) -> int | None:
        return self.calls[-1].call.t_us

    def windows_us(self) -> list[int]:
        """For each DELETE a later CREATE of this transaction overlaps: the time from the
        DELETE to the last such CREATE, while that GPA range had no memslot."""
        out: list[int] = []
        calls = self.calls
        for i, a in enumerate(calls):
            if a.kind != "delete" or a.call.t_us is None or a.old is None:
                continue
            lo, hi = a.old.gpa, a.old.end
            last = None
            for b in calls[i + 1 :]:
                if b.kind == "create" and b.call.gpa < hi and lo < b.call.gpa + b.call.size:
                    last = b.call.t_us
            if last is not None:
                out.append(last - a.call.t_us)
        return out


class Imported(msgspec.Struct, gc=False):
    """A whole trace: the boot table, the transactions after it, and what it held."""

    path: str
    boot: SlotTable
    boot_calls: list[AppliedCall]
    transactions: list[Transaction]
    vcpus: int  # distinct vCPU indexes seen (0 when the trace has no vCPU lines)
    records: int
    failed: int  # calls that returned an error: they changed nothing
    first_us: int | None
    last_us: int | None

    @property
    def calls(self) -> list[AppliedCall]:
        return self.boot_calls + [c for t in self.transactions for c in t.calls]

    def count(self, kind: str) -> int:
        return sum(1 for c in self.calls if c.kind == kind)


def group(path: str, records: list[Record], txn_gap_us: int = DEFAULT_TXN_GAP_US) -> Imported:
    """Rebuild the slot tables and group the calls into transactions (module docstring)."""
    tables = SlotTables(path)
    boot_calls: list[AppliedCall] = []
    txns: list[Transaction] = []
    current: list[AppliedCall] = []
    ran_since: set[int] = set()  # tids that entered KVM_RUN since the last memslot call
    cpus: set[int] = set()
    failed = 0
    stamps = [r.t_us for r in records if r.t_us is not None]
    in_boot = True

    def close(table: SlotTable) -> None:
        if current:
            txns.append(Transaction(len(txns) + 1, list(current), table))
            current.clear()

    def before(call: MemslotCall, old: Slot | None) -> SlotTable:
        """The tables as they were before ``call`` (already applied) changed them."""
        table = tables.snapshot()
        table.pop((call.as_id, call.slot_id), None)
        if old is not None:
            table[(call.as_id, call.slot_id)] = old
        return table

    for rec in records:
        if isinstance(rec, VcpuRun | VcpuExit):
            cpus.add(rec.cpu)
            if isinstance(rec, VcpuRun):
                ran_since.add(rec.tid)
            continue
        if rec.ret != 0:
            failed += 1
            continue
        old = tables.slots.get((rec.as_id, rec.slot_id))
        kind = tables.apply(rec)
        applied = AppliedCall(rec, kind, old)
        if in_boot and kind == "create":
            boot_calls.append(applied)
            ran_since.clear()
            continue
        if in_boot:
            # The boot layout is the table before this first DELETE or flags change.
            in_boot = False
            boot = before(rec, old)
        if current and _ends_transaction(current[-1], applied, ran_since, txn_gap_us):
            close(before(rec, old))
        current.append(applied)
        ran_since.clear()
    if in_boot:
        boot = tables.snapshot()
    close(tables.snapshot())
    return Imported(
        path=path,
        boot=boot,
        boot_calls=boot_calls,
        transactions=txns,
        vcpus=len(cpus),
        records=len(records),
        failed=failed,
        first_us=min(stamps) if stamps else None,
        last_us=max(stamps) if stamps else None,
    )


def _ends_transaction(
    prev: AppliedCall, this: AppliedCall, ran_since: set[int], txn_gap_us: int
) -> bool:
    p, c = prev.call, this.call
    if c.tid != p.tid or c.tid in ran_since or c.as_id != p.as_id:
        return True
    if this.kind == "delete" and prev.kind != "delete":
        return True
    if (this.kind == "delete") == (prev.kind == "delete") and c.gpa <= p.gpa:
        return True
    return p.t_us is not None and c.t_us is not None and c.t_us - p.t_us > txn_gap_us


def clip(text: str, n: int = 60) -> str:
    """A bad line quoted in an error, cut short."""
    return repr(text if len(text) <= n else text[:n] + "...")


def parse_lines(
    path: str, lines: Iterable[tuple[int, str]], parse: Callable[[int, str], Record | None]
) -> list[Record]:
    """Every record of a trace; a bad last line without its newline is a truncated file."""
    out: list[Record] = []
    for no, text in lines:
        try:
            rec = parse(no, text)
        except TraceError as err:
            if not text.endswith("\n"):
                raise TraceError(path, no, f"truncated last line: {err.reason}") from None
            raise
        if rec is not None:
            out.append(rec)
    return out

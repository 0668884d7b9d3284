"""The guest an imported trace runs: where each vCPU fetches its code and writes its data.

The trace says what the VMM did to the layout, not what the guest was doing, so the importer
picks a guest that makes the layout changes matter:

- ``code-in-churn`` (the default): every vCPU executes code from the RAM the trace deletes and
  re-creates most often (the range with the most DELETE-then-CREATE windows), and writes data
  in the rest of RAM. A vCPU fetching in a window finds no memslot: the race of the README.
- ``data-in-churn``: code in the RAM that is never or least often re-created, data written in
  the most churned RAM: windows then show up as MMIO exits the VMM must serve from its old
  FlatView (lost writes if it does not), not as crashes.

Only ranges that are RAM in every layout at the same host address qualify (code there is the
same code before and after every update), and only below 4 GiB, where both backends' guests
can reach.
"""

from __future__ import annotations

import itertools

import msgspec

from engine.importers.calls import KVM_MEM_READONLY, Imported, SlotTable

WORKLOADS = ("code-in-churn", "data-in-churn")
ADDR_LIMIT = 1 << 32


class Span(msgspec.Struct, frozen=True, gc=False):
    start: int
    end: int
    offset: int  # hva - gpa, the same in every layout
    writable: bool
    windows: int  # transactions that deleted and re-created it


class Workload(msgspec.Struct, frozen=True, gc=False):
    name: str
    entry: int
    program: str
    code: Span
    data: list[int]


def _tables(imp: Imported) -> list[SlotTable]:
    return [imp.boot] + [t.table for t in imp.transactions]


def stable_spans(imp: Imported) -> list[Span]:
    """Elementary GPA ranges of as_id 0 that are RAM (at one hva) in every layout."""
    tables = _tables(imp)
    bounds = sorted(
        {b for tab in tables for s in tab.values() if s.as_id == 0 for b in (s.gpa, s.end)}
    )
    spans: list[Span] = []
    for lo, hi in itertools.pairwise(bounds):
        if lo >= ADDR_LIMIT:
            break
        hi = min(hi, ADDR_LIMIT)
        offsets, writable = set(), True
        for tab in tables:
            slot = next(
                (s for s in tab.values() if s.as_id == 0 and s.gpa <= lo and hi <= s.end), None
            )
            if slot is None:
                break
            offsets.add(slot.hva - slot.gpa)
            writable = writable and not slot.flags & KVM_MEM_READONLY
        else:
            if len(offsets) == 1:
                spans.append(Span(lo, hi, offsets.pop(), writable, _windows(imp, lo, hi)))
    return spans


def _windows(imp: Imported, lo: int, hi: int) -> int:
    n = 0
    for txn in imp.transactions:
        if txn.as_id != 0:
            continue
        deleted = any(
            c.kind == "delete" and c.old is not None and c.old.gpa < hi and lo < c.old.end
            for c in txn.calls
        )
        if deleted and any(
            c.kind == "create" and c.call.gpa < hi and lo < c.call.gpa + c.call.size
            for c in txn.calls
        ):
            n += 1
    return n


def choose(imp: Imported, name: str = "code-in-churn") -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    spans = [s for s in stable_spans(imp) if s.end - s.start >= 0x2000]
    if not spans:
        raise ValueError(
            f"{imp.path}: no RAM stays mapped at one host address in every layout: nowhere to put the guest's code"
        )
    churn = sorted(spans, key=lambda s: (-s.windows, -(s.end - s.start), s.start))
    calm = sorted(spans, key=lambda s: (s.windows, -(s.end - s.start), s.start))
    code = churn[0] if name == "code-in-churn" else calm[0]
    writable = [s for s in (calm if name == "code-in-churn" else churn) if s.writable and s != code]
    if writable:
        data = [s.start + 0x1000 if s.end - s.start > 0x1000 else s.start for s in writable[:2]]
    else:
        # Code fills the only RAM there is: the data lives in its upper half.
        data = [code.start + ((code.end - code.start) // 2 & ~0xFFF)]
    lines = ["top:", *(f"  inc [{d:#x}]" for d in data), f"  store [{data[0] + 8:#x}]", "  jmp top"]
    return Workload(name, code.start, "\n".join(lines) + "\n", code, data)

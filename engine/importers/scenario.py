"""An imported trace written as an ordinary slotlab scenario (engine/scenarios/loader.py).

- The boot layout is the slot table after the trace's initial run of CREATEs.
- Each later transaction is one step: the slot table it left. Identical tables share a layout
  (a reboot loop comes back to the same ones), so ``sequence`` names each step's table.
- ``gaps_ns`` keeps the real idle time before each step (from the previous transaction's last
  call to this one's first), capped at ``max_gap`` so a 40 s boot replays in milliseconds of
  virtual time; ``recorded_us`` keeps when each step really happened.
- Every region keeps its slot's GPA, size, hva and flags (READONLY as a ROM region,
  LOG_DIRTY_PAGES as log_dirty) and is named by slot and GPA, e.g. ``s4@0x100000``.
"""

from __future__ import annotations

import re
from pathlib import Path

import msgspec

from engine.importers.calls import (
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    Imported,
    Slot,
    SlotTable,
)
from engine.importers.workload import Workload
from engine.units import format_ns

DEFAULT_MAX_GAP_NS = 100_000
STEP_ALLOWANCE_NS = 2_000_000  # a generous bound on one transaction's virtual time
DEFAULT_VCPUS = 2


class ImportOptions(msgspec.Struct, kw_only=True):
    name: str
    source: str  # "qemu-trace" or "strace"
    trace: str  # as the file should cite it
    max_gap_ns: int = DEFAULT_MAX_GAP_NS
    txn_gap_us: int = 100_000
    vcpus: int | None = None
    command: str = ""
    vmm: str = ""
    captured: bool = True


def scenario_name(path: str) -> str:
    """A scenario name from a file name: lowercase, [a-z0-9_-], extensions dropped."""
    stem = Path(path).name.split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")
    return name if name and name[0].isalnum() else f"trace-{name}".rstrip("-")


def region_name(slot: Slot) -> str:
    prefix = f"as{slot.as_id}." if slot.as_id else ""
    return f"{prefix}s{slot.id}@{slot.gpa:#x}"


def _region(slot: Slot) -> str:
    kind = "rom" if slot.flags & KVM_MEM_READONLY else "ram"
    extra = ", log_dirty = true" if slot.flags & KVM_MEM_LOG_DIRTY_PAGES else ""
    if slot.as_id:
        extra += f", as_id = {slot.as_id}"
    return (
        f'  {{ name = "{region_name(slot)}", kind = "{kind}", gpa = {slot.gpa:#x}, '
        f"size = {slot.size:#x}, hva = {slot.hva:#x}{extra}, slot = {slot.id} }},"
    )


def _key(table: SlotTable) -> tuple[Slot, ...]:
    return tuple(sorted(table.values(), key=lambda s: (s.as_id, s.gpa)))


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def gaps_ns(imp: Imported, max_gap_ns: int) -> list[int]:
    """The idle time before each step: the real gap, capped; without stamps, the cap."""
    out: list[int] = []
    prev = imp.boot_calls[-1].call.t_us if imp.boot_calls else imp.first_us
    for txn in imp.transactions:
        start = txn.start_us
        real = (start - prev) * 1000 if start is not None and prev is not None else max_gap_ns
        out.append(max(0, min(real, max_gap_ns)))
        prev = txn.end_us
    return out


def write_scenario(imp: Imported, work: Workload, opts: ImportOptions) -> str:
    names: dict[tuple[Slot, ...], str] = {_key(imp.boot): "boot"}
    sequence = ["boot"]
    for txn in imp.transactions:
        key = _key(txn.table)
        if key not in names:
            names[key] = f"t{txn.index}"
        sequence.append(names[key])
    gaps = gaps_ns(imp, opts.max_gap_ns)
    first = imp.first_us
    recorded = [
        (t.start_us - first) if t.start_us is not None and first is not None else 0
        for t in imp.transactions
    ]
    vcpus = opts.vcpus or imp.vcpus or DEFAULT_VCPUS
    creates, deletes, flags = (imp.count(k) for k in ("create", "delete", "flags"))
    summary = (
        f"{opts.vmm or opts.source}: "
        f"{len(imp.calls)} memslot calls ({creates} CREATE, {deletes} DELETE, {flags} flags-only) "
        f"in {len(imp.transactions)} transactions after boot"
    )
    duration = sum(gaps) + STEP_ALLOWANCE_NS * (len(gaps) + 1)
    out = [
        f"# Written by `slotlab import {opts.source}` from {opts.trace}; regenerate rather than edit.",
        "# Transactions: a new one at another thread, its thread's KVM_RUN, another address space,",
        f"# a DELETE after a CREATE, a GPA not ascending, or a gap over {format_ns(opts.txn_gap_us * 1000)}.",
        f'name = "{opts.name}"',
        f"summary = {_toml_str(summary)}",
        f"vcpus = {vcpus}",
        f'duration = "{duration}ns"',
        f"entry = {work.entry:#x}",
        f"moves = {'true' if imp.count('move') else 'false'}",
        f'workload = "{work.name}"',
        f"sequence = [{', '.join(_toml_str(s) for s in sequence)}]",
        f"# idle before each step: the real gap, capped at {format_ns(opts.max_gap_ns)}",
        f"gaps_ns = [{', '.join(str(g) for g in gaps)}]",
        "# when each step began in the trace, us after its first line",
        f"recorded_us = [{', '.join(str(r) for r in recorded)}]",
        f"program = '''\n{work.program}'''",
        "",
        "[provenance]",
        f'source = "{opts.source}"',
        f"trace = {_toml_str(opts.trace)}",
        f"captured = {'true' if opts.captured else 'false'}",
    ]
    if opts.command:
        out.append(f"command = {_toml_str(opts.command)}")
    if opts.vmm:
        out.append(f"vmm = {_toml_str(opts.vmm)}")
    for key, name in names.items():
        out += ["", f"[layouts.{name}]", "regions = ["]
        out += [_region(s) for s in key]
        out.append("]")
    return "\n".join(out) + "\n"

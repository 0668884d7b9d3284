"""Real VMM traffic as slotlab scenarios: QEMU's trace log or strace output in, a scenario out.

``import_trace`` reads a trace (qemu_trace or strace), rebuilds every address space's slot
table call by call and groups the calls into memory transactions (calls), picks a guest
(workload) and writes the scenario (scenario).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from engine.importers.calls import (
    DEFAULT_TXN_GAP_US,
    Imported,
    MemslotCall,
    Record,
    TraceError,
    group,
)
from engine.importers.qemu_trace import parse_records, read_lines
from engine.importers.scenario import (
    DEFAULT_MAX_GAP_NS,
    ImportOptions,
    scenario_name,
    write_scenario,
)
from engine.importers.strace import parse_strace
from engine.importers.workload import WORKLOADS, Workload, choose

FORMATS = ("qemu-trace", "strace")

__all__ = [
    "DEFAULT_MAX_GAP_NS",
    "DEFAULT_TXN_GAP_US",
    "FORMATS",
    "WORKLOADS",
    "ImportResult",
    "Imported",
    "TraceError",
    "import_trace",
    "read_trace",
]


class ImportResult(msgspec.Struct, gc=False):
    imported: Imported
    workload: Workload
    text: str  # the scenario, as TOML


def read_trace(
    path: str, fmt: str = "qemu-trace", txn_gap_us: int = DEFAULT_TXN_GAP_US
) -> Imported:
    if fmt not in FORMATS:
        raise ValueError(f"unknown trace format {fmt!r} (known: {', '.join(FORMATS)})")
    lines = list(read_lines(path))
    records: list[Record] = (
        parse_records(path, lines) if fmt == "qemu-trace" else parse_strace(path, lines)
    )
    if not any(isinstance(r, MemslotCall) for r in records):
        hint = (
            "was QEMU started with -trace kvm_set_user_memory?"
            if fmt == "qemu-trace"
            else "was it strace -f -e trace=ioctl of a KVM VMM?"
        )
        raise TraceError(
            path, max(len(lines), 1), f"no KVM_SET_USER_MEMORY_REGION call in the trace ({hint})"
        )
    return group(path, records, txn_gap_us)


def import_trace(
    path: str,
    fmt: str = "qemu-trace",
    *,
    workload: str = "code-in-churn",
    max_gap_ns: int = DEFAULT_MAX_GAP_NS,
    txn_gap_us: int = DEFAULT_TXN_GAP_US,
    name: str | None = None,
    vcpus: int | None = None,
    command: str = "",
    vmm: str = "",
    captured: bool = True,
    cite: str | None = None,
    imported: Imported | None = None,
) -> ImportResult:
    """Read a trace and write it as a scenario; raises TraceError (file:line) or ValueError.
    ``imported``: the trace as already read (one being followed, up to now)."""
    if imported is None:
        imported = read_trace(path, fmt, txn_gap_us)
    work = choose(imported, workload)
    opts = ImportOptions(
        name=name or scenario_name(path),
        source=fmt,
        trace=cite or Path(path).name,
        max_gap_ns=max_gap_ns,
        txn_gap_us=txn_gap_us,
        vcpus=vcpus,
        command=command,
        vmm=vmm,
        captured=captured,
    )
    return ImportResult(imported, work, write_scenario(imported, work, opts))

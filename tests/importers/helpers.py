"""What the importer tests check against, rebuilt here without the importer's code: a trace's
slot table after each line, and the memslot calls a session issued."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import trio

from engine.events import Event, IoctlEnter, IoctlExit, TxnBegin
from engine.scenarios import Scenario
from engine.session import RunConfig, Session

CAPTURED = Path(__file__).resolve().parents[2] / "engine" / "scenarios" / "captured"
SET = re.compile(
    r"kvm_set_user_memory Slot#(\d+) flags=0x([0-9a-f]+) gpa=0x([0-9a-f]+) "
    r"size=0x([0-9a-f]+) ua=0x([0-9a-f]+) ret=(-?\d+)"
)

# (as_id, slot) -> (flags, gpa, size, hva)
Table = dict[tuple[int, int], tuple[int, int, int, int]]


def trace_lines(path: Path) -> list[str]:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.decode().splitlines()


def tables_by_line(path: Path) -> dict[int, Table]:
    """The slot table after every kvm_set_user_memory line, by line number."""
    table: Table = {}
    out: dict[int, Table] = {}
    for no, line in enumerate(trace_lines(path), start=1):
        m = SET.search(line)
        if m is None or int(m.group(6)) != 0:
            continue
        raw, flags, gpa, size, ua = (int(m.group(1)), *tuple(int(g, 16) for g in m.groups()[1:5]))
        key = (raw >> 16, raw & 0xFFFF)
        if size == 0:
            del table[key]
        else:
            table[key] = (flags, gpa, size, ua)
        out[no] = dict(table)
    return out


def layout_table(sc: Scenario, step: int) -> set[tuple[int, int, int, int, int]]:
    """(as_id, flags, gpa, size, hva) of every region of the scenario's step-th layout."""
    layout = sc.layouts[sc.sequence[step]]
    return {
        (as_id, (2 if r.kind == "rom" else 0) | (1 if r.log_dirty else 0), r.gpa, r.size, r.hva)
        for as_id, r in layout.regions
    }


def as_set(table: Table) -> set[tuple[int, int, int, int, int]]:
    return {(a, f, g, s, h) for (a, _), (f, g, s, h) in table.items()}


def run_calls(config: RunConfig) -> tuple[str, list[list[tuple[str, int, int, int]]]]:
    """Run a session; its verdict and the VMM's memslot calls per transaction:
    (KVM_MR_* change, GPA, size, flags); the GPA of a DELETE is the one it passed."""
    events: list[Event] = []
    session = Session(config, observers=(events.append,))
    verdict = trio.run(session.run)
    txns: list[list[tuple[str, int, int, int]]] = []
    entered: IoctlEnter | None = None
    for ev in events:
        if isinstance(ev, TxnBegin):
            txns.append([])
        elif isinstance(ev, IoctlEnter) and ev.actor == "vmm":
            entered = ev
        elif isinstance(ev, IoctlExit) and ev.actor == "vmm" and entered is not None:
            txns[-1].append(
                (ev.change, entered.guest_phys_addr, entered.memory_size, entered.flags)
            )
            entered = None
    return verdict.verdict, txns

"""Guest loops in closed form: many iterations of a stage-2-hitting cycle in one step.

kvm_run() interprets one instruction at a time, but between two yields nothing outside the
vCPU can change: no other actor runs, stage-2 and the memslots stay as they are, and kick and
stall requests cannot arrive. A guest spinning in a loop whose every fetch and data access hits
stage-2 therefore does the same thing on every iteration, and its effect over m iterations has
a closed form:

- incs of an address that no load or store in the cycle touches are independent counters:
  each adds its per-iteration count times m;
- everything else (acc and the memory the cycle loads or stores) is a deterministic function of
  its own previous value, so iterations are simulated one by one until that state repeats,
  after which further iterations leave it unchanged;
- rip ends where it started, rcx drops by m if the cycle closes with `loop` (never reaching 0:
  the iteration that falls through runs on the ordinary path), instructions grows by m times
  the cycle's length, and last_data_gpa is the cycle's last data access.

The result is exactly the state the interpreter would reach, so logs and replays are unchanged;
only wall time is saved. Anything outside that shape (a fault, halt, setc, self-modifying code,
a cycle longer than MAX_CYCLE) returns 0 and leaves the instruction to the interpreter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.model.guest import INSN_SIZE, Insn

if TYPE_CHECKING:
    from engine.model.vcpu import Vcpu

MAX_CYCLE = 64
_SIMPLE = frozenset({"nop", "mov", "jmp", "load", "store", "inc"})
Step = tuple[str, int, int]  # op, immediate or data gpa, data hva (-1 for none)


def _walk(
    start: int, pages: dict[int, int], writable: set[int], memory: dict[int, object], shift: int
) -> tuple[list[Step], bool] | None:
    """The cycle from start back to start, if every step of it hits stage-2; and whether it
    closes with `loop` (the only place a loop may be)."""
    steps: list[Step] = []
    rip = start
    code: set[int] = set()
    while len(steps) < MAX_CYCLE:
        spte = pages.get(rip >> shift)
        if spte is None:
            return None
        insn = memory.get(spte + rip)
        if not isinstance(insn, Insn):
            return None
        code.add(spte + rip)
        op, arg = insn.op, insn.arg
        if op == "loop":
            if arg != start:
                return None
            steps.append((op, arg, -1))
            return (steps, True) if not _writes_code(steps, code) else None
        if op not in _SIMPLE:
            return None
        hva = -1
        if op in ("load", "store", "inc"):
            dspte = pages.get(arg >> shift)
            if dspte is None or (op != "load" and arg >> shift not in writable):
                return None
            hva = dspte + arg
        steps.append((op, arg, hva))
        rip = arg if op == "jmp" else rip + INSN_SIZE
        if rip == start:
            return (steps, False) if not _writes_code(steps, code) else None
    return None


def _writes_code(steps: list[Step], code: set[int]) -> bool:
    return any(op in ("store", "inc") and hva in code for op, _, hva in steps)


def run_cycles(
    vcpu: Vcpu,
    pages: dict[int, int],
    writable: set[int],
    memory: dict[int, object],
    shift: int,
    budget: int,
) -> int:
    """Run whole iterations of the cycle at vcpu.rip, at most `budget` instructions' worth;
    return how many instructions that was: 0 when the budget is too small for two iterations,
    -1 when there is no cycle of the closed-form shape here."""
    found = _walk(vcpu.rip, pages, writable, memory, shift)
    if found is None:
        return -1
    steps, looped = found
    length = len(steps)
    m = budget // length
    if looped and vcpu.rcx > 0:
        m = min(m, vcpu.rcx - 1)
    if m < 2:
        return 0
    counters: dict[int, int] = {}
    touched: set[int] = set()
    for op, _, hva in steps:
        if op == "inc":
            counters[hva] = counters.get(hva, 0) + 1
        elif op in ("load", "store"):
            touched.add(hva)
    if touched & counters.keys():
        # An inc of an address the cycle also loads or stores: not a plain counter. The
        # interpreter does it instead.
        return -1
    last_gpa = next((arg for op, arg, hva in reversed(steps) if hva >= 0), None)
    acc = vcpu.acc
    done = 0
    seen: tuple[int, tuple[object, ...]] | None = None
    while done < m:
        for op, arg, hva in steps:
            if op == "mov":
                acc = arg
            elif op == "load":
                value = memory.get(hva)
                acc = value if isinstance(value, int) else 0
            elif op == "store":
                memory[hva] = acc
        done += 1
        state = (acc, tuple(memory.get(h) for h in sorted(touched)))
        if state == seen:
            break
        seen = state
    for hva, count in counters.items():
        value = memory.get(hva)
        memory[hva] = (value if isinstance(value, int) else 0) + count * m
    vcpu.acc = acc
    if looped:
        vcpu.rcx -= m
    if last_gpa is not None:
        vcpu.last_data_gpa = last_gpa
    vcpu.instructions += m * length
    return m * length

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

from engine.model.constants import PAGE_SHIFT
from engine.model.guest import INSN_SIZE, Insn

if TYPE_CHECKING:
    from engine.model.stage2 import Stage2
    from engine.model.vcpu import Vcpu

MAX_CYCLE = 64
_SIMPLE = frozenset({"nop", "mov", "jmp", "load", "store", "inc"})
_DATA = frozenset({"load", "store", "inc"})
_WRITES = frozenset({"store", "inc"})
Step = tuple[str, int, int]  # op, immediate or data gpa, data hva (-1 for none)


class Walk:
    """What the walk from one rip found under one stage-2 version: the cycle's steps (None:
    no cycle of the closed-form shape starts there), whether it closes with `loop`, and the
    instructions it fetched, which must still be in memory for the walk to be reused."""

    __slots__ = (
        "code", "counters", "insns", "last_gpa", "looped", "steps", "stores", "touched", "version"
    )  # fmt: skip

    def __init__(self, version: int) -> None:
        self.version = version
        self.steps: list[Step] | None = None
        self.looped = False
        self.code: list[int] = []
        self.insns: list[object] = []
        # inc'd hva -> incs per iteration; hvas loaded or stored; whether any store; the last
        # data gpa of an iteration.
        self.counters: dict[int, int] = {}
        self.touched: list[int] = []
        self.stores = False
        self.last_gpa: int | None = None

    def settle(self, steps: list[Step]) -> None:
        """Accept steps as a closed-form cycle, unless an inc shares its address with a load
        or store (then it is not a plain counter, and the interpreter runs it)."""
        touched: set[int] = set()
        for op, _, hva in steps:
            if op == "inc":
                self.counters[hva] = self.counters.get(hva, 0) + 1
            elif op in ("load", "store"):
                touched.add(hva)
                self.stores = self.stores or op == "store"
        if touched & self.counters.keys():
            return
        self.touched = sorted(touched)
        self.last_gpa = next((arg for _, arg, hva in reversed(steps) if hva >= 0), None)
        self.steps, self.looped = steps, steps[-1][0] == "loop"


Walks = dict[int, Walk]


def _walk(start: int, stage2: Stage2, memory: dict[int, object]) -> Walk:
    """The cycle from start back to start, if every step of it hits stage-2."""
    w = Walk(stage2.version)
    pages, writable, shift = stage2.pages, stage2.writable, PAGE_SHIFT
    get = pages.get
    steps: list[Step] = []
    rip = start
    while len(steps) < MAX_CYCLE:
        spte = get(rip >> shift)
        if spte is None:
            return w
        insn = memory.get(spte + rip)
        if not isinstance(insn, Insn):
            return w
        w.code.append(spte + rip)
        w.insns.append(insn)
        op, arg = insn.op, insn.arg
        if op == "loop":
            if arg != start:
                return w
            steps.append((op, arg, -1))
            break
        if op not in _SIMPLE:
            return w
        hva = -1
        if op in _DATA:
            dspte = get(arg >> shift)
            if dspte is None or (op != "load" and arg >> shift not in writable):
                return w
            hva = dspte + arg
        steps.append((op, arg, hva))
        rip = arg if op == "jmp" else rip + INSN_SIZE
        if rip == start:
            break
    else:
        return w
    if any(op in _WRITES and hva in w.code for op, _, hva in steps):
        return w  # the cycle writes its own code
    w.settle(steps)
    return w


def _find(start: int, stage2: Stage2, memory: dict[int, object], walks: Walks) -> Walk:
    """The walk from start, reused while stage-2 is unchanged and so is the code it read."""
    w = walks.get(start)
    if w is not None and w.version == stage2.version:
        # A loop, not any() over a generator: this runs at every loop closing.
        get = memory.get
        for h, i in zip(w.code, w.insns, strict=True):
            if get(h) is not i:
                break
        else:
            return w
    w = walks[start] = _walk(start, stage2, memory)
    return w


def run_cycles(
    vcpu: Vcpu, stage2: Stage2, memory: dict[int, object], budget: int, walks: Walks
) -> int:
    """Run whole iterations of the cycle at vcpu.rip, at most `budget` instructions' worth;
    return how many instructions that was (0: none, the interpreter goes on). `walks` is the
    caller's cache of cycles by start address."""
    w = _find(vcpu.rip, stage2, memory, walks)
    steps = w.steps
    if steps is None:
        return 0
    length = len(steps)
    m = budget // length
    if w.looped and vcpu.rcx > 0:
        m = min(m, vcpu.rcx - 1)
    if m < 2:
        return 0
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
        if not w.stores:
            # Loads read memory the cycle never changes: one iteration settles acc.
            break
        state = (acc, tuple(memory.get(h) for h in w.touched))
        if state == seen:
            break
        seen = state
    for hva, count in w.counters.items():
        value = memory.get(hva)
        memory[hva] = (value if isinstance(value, int) else 0) + count * m
    vcpu.acc = acc
    if w.looped:
        vcpu.rcx -= m
    if w.last_gpa is not None:
        vcpu.last_data_gpa = w.last_gpa
    vcpu.instructions += m * length
    return m * length

"""slotlab's guest ISA translated into 16-bit x86 for a real vCPU.

The vCPU runs in real mode with 4 GiB segment limits (see KvmVcpu.setup_flat_real_mode), so a
32-bit address-size prefix reaches any GPA below 4 GiB and a 32-bit operand-size prefix makes
jumps land anywhere below 4 GiB; that keeps every scenario's addresses as they are. Data words
are 16 bits wide (the model's are 8 bytes): counters wrap at 65,536, and MMIO exits have len 2.

    load ADDR    mov ax, [addr32]          67 8B 05 disp32
    store ADDR   mov [addr32], ax          67 89 05 disp32
    inc ADDR     inc word [addr32]         67 FF 05 disp32   (a read, then a write)
    mov IMM      mov ax, imm16             B8 imm16
    setc IMM     mov ecx, imm32            66 B9 imm32
    loop TARGET  dec ecx; jnz rel32        66 49 66 0F 85 rel32
    jmp TARGET   jmp rel32                 66 E9 rel32
    nop          nop                       90
    halt         hlt                       F4

x86 instructions are longer than the model's 4 bytes, so the code sits at the same entry GPA
but spreads further; ``X86Program`` maps addresses both ways, and events report the model's
addresses so that a crash at "RIP 0x1004" means the same instruction on both backends.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import struct

from engine.model import constants as c
from engine.model.guest import INSN_SIZE, Insn

ADDR_LIMIT = 1 << 32
WORD = 2


class TranslateError(ValueError):
    """A program this backend cannot run; one line saying why."""


def _size(insn: Insn) -> int:
    return {
        "load": 7,
        "store": 7,
        "inc": 7,
        "mov": 3,
        "setc": 6,
        "loop": 9,
        "jmp": 6,
        "nop": 1,
        "halt": 1,
        "rsm": 2,
    }[insn.op]


@dataclasses.dataclass(frozen=True)
class X86Program:
    base: int
    code: bytes
    starts: tuple[int, ...]
    """x86 address of each instruction, in program order."""
    model: tuple[int, ...]
    """the model's address of the same instruction."""

    def x86_of(self, model_gpa: int) -> int | None:
        try:
            return self.starts[self.model.index(model_gpa)]
        except ValueError:
            return None

    def model_of(self, rip: int) -> int:
        """The model's address of the instruction that holds rip; rip itself outside the code
        (a guest in the weeds is reported where it really is)."""
        if rip == self.end:
            return self.model[-1] + INSN_SIZE  # just past a final halt
        if not self.base <= rip < self.end:
            return rip
        return self.model[bisect.bisect_right(self.starts, rip) - 1]

    @property
    def end(self) -> int:
        return self.base + len(self.code)

    def describe(self) -> list[list[int]]:
        """[model address, x86 address] pairs, for the log header."""
        return [[m, x] for m, x in zip(self.model, self.starts, strict=True)]


def translate(program: dict[int, Insn], entry: int) -> X86Program:
    """Assemble a contiguous slotlab program starting at ``entry`` into x86 bytes."""
    if not program:
        raise TranslateError("the guest program is empty")
    order = sorted(program)
    if order[0] != entry or any(b - a != INSN_SIZE for a, b in itertools.pairwise(order)):
        raise TranslateError("the guest program must be one contiguous block starting at its entry")
    starts: list[int] = []
    at = entry
    for gpa in order:
        starts.append(at)
        at += _size(program[gpa])
    x86_of = dict(zip(order, starts, strict=True))
    code_end = at
    model_code = range(entry >> c.PAGE_SHIFT, ((order[-1] + INSN_SIZE - 1) >> c.PAGE_SHIFT) + 1)
    if (code_end - 1) >> c.PAGE_SHIFT not in model_code:
        raise TranslateError(
            f"the x86 translation ends at {code_end:#x}, beyond the pages the model's code "
            "occupies: the two backends would not run from the same memslots"
        )
    out = bytearray()
    for gpa, here in zip(order, starts, strict=True):
        insn = program[gpa]
        op, arg = insn.op, insn.arg
        nxt = here + _size(insn)
        if op in ("load", "store", "inc"):
            if arg + WORD > ADDR_LIMIT:
                raise TranslateError(
                    f"{op} {arg:#x}: a real-mode guest reaches GPAs below 4 GiB only"
                )
            if entry <= arg + WORD - 1 and arg < code_end:
                raise TranslateError(f"{op} {arg:#x} touches the guest's own code")
            opcode = {"load": 0x8B, "store": 0x89, "inc": 0xFF}[op]
            out += bytes((0x67, opcode, 0x05)) + struct.pack("<I", arg)
        elif op == "mov":
            if arg > 0xFFFF:
                raise TranslateError(f"mov {arg:#x}: data words are 16 bits on the kvm backend")
            out += b"\xb8" + struct.pack("<H", arg)
        elif op == "setc":
            if arg >= ADDR_LIMIT:
                raise TranslateError(f"setc {arg:#x}: the counter is 32 bits on the kvm backend")
            out += b"\x66\xb9" + struct.pack("<I", arg)
        elif op in ("jmp", "loop"):
            target = x86_of.get(arg, arg)
            if target >= ADDR_LIMIT:
                raise TranslateError(
                    f"{op} {arg:#x}: a real-mode guest reaches GPAs below 4 GiB only"
                )
            rel = (target - nxt) & 0xFFFFFFFF
            if op == "jmp":
                out += b"\x66\xe9" + struct.pack("<I", rel)
            else:
                out += b"\x66\x49\x66\x0f\x85" + struct.pack("<I", rel)
        elif op == "nop":
            out += b"\x90"
        elif op == "halt":
            out += b"\xf4"
        elif op == "rsm":
            out += b"\x0f\xaa"
        else:  # pragma: no cover - assemble() only produces the ops above
            raise TranslateError(f"unknown instruction {op!r}")
        assert len(out) == nxt - entry
    return X86Program(entry, bytes(out), tuple(starts), tuple(order))

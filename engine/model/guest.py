"""A tiny guest instruction set, enough to put code in one memslot and data in another.

Every instruction is INSN_SIZE bytes and lives in host memory at the HVA its GPA maps to, so
fetching it goes through the memslots exactly like a data access does. Data is 8-byte words.

    load ADDR      acc = [ADDR]
    store ADDR     [ADDR] = acc
    inc ADDR       [ADDR] += 1        (a read, then a write: it can tear across an update)
    mov IMM        acc = IMM
    setc IMM       rcx = IMM
    loop TARGET    rcx -= 1; if rcx != 0: jump to TARGET
    jmp TARGET     jump to TARGET
    nop
    halt           KVM_EXIT_HLT (no in-kernel irqchip)
    rsm            leave SMM: back to address space 0 at the RIP the SMI interrupted
"""

from __future__ import annotations

import dataclasses

INSN_SIZE = 4

OPS_WITH_ADDR = frozenset({"load", "store", "inc"})
OPS_WITH_TARGET = frozenset({"jmp", "loop"})
OPS_WITH_IMM = frozenset({"mov", "setc"})
OPS_BARE = frozenset({"nop", "halt", "rsm"})
OPS = OPS_WITH_ADDR | OPS_WITH_TARGET | OPS_WITH_IMM | OPS_BARE


@dataclasses.dataclass(frozen=True, slots=True)
class Insn:
    op: str
    arg: int = 0

    def __str__(self) -> str:
        if self.op in OPS_BARE:
            return self.op
        return f"{self.op} {self.arg:#x}"

    @property
    def data_access(self) -> str | None:
        """The kind of data access the instruction makes, if any."""
        if self.op == "load":
            return "read"
        if self.op in ("store", "inc"):
            return "write" if self.op == "store" else "read"
        return None


class AsmError(ValueError):
    """A guest program line that does not assemble; says which line and why."""

    def __init__(self, line_no: int, message: str) -> None:
        super().__init__(f"line {line_no}: {message}")
        self.line_no = line_no
        self.reason = message


def parse_int(text: str) -> int:
    return int(text.replace("_", ""), 0)


def assemble(base_gpa: int, lines: list[str], first_line_no: int = 1) -> dict[int, Insn]:
    """Assemble lines into {gpa: Insn}. Labels end with ':'; targets may be labels or
    numbers; ';' starts a comment."""
    labels: dict[str, int] = {}
    pending: list[tuple[int, int, str, str]] = []
    gpa = base_gpa
    for offset, raw in enumerate(lines):
        line_no = first_line_no + offset
        text = raw.split(";", 1)[0].strip()
        if not text:
            continue
        if text.endswith(":"):
            name = text[:-1].strip()
            if not name.isidentifier():
                raise AsmError(line_no, f"bad label {name!r}")
            if name in labels:
                raise AsmError(line_no, f"label {name!r} defined twice")
            labels[name] = gpa
            continue
        op, _, operand = text.partition(" ")
        op, operand = op.lower(), operand.strip()
        if op not in OPS:
            raise AsmError(line_no, f"unknown instruction {op!r} (known: {', '.join(sorted(OPS))})")
        if op in OPS_BARE and operand:
            raise AsmError(line_no, f"{op} takes no operand")
        if op not in OPS_BARE and not operand:
            raise AsmError(line_no, f"{op} needs an operand")
        pending.append((line_no, gpa, op, operand))
        gpa += INSN_SIZE
    program: dict[int, Insn] = {}
    for line_no, at, op, operand in pending:
        arg = 0
        if operand:
            operand = operand.strip("[]")
            if operand in labels:
                arg = labels[operand]
            else:
                try:
                    arg = parse_int(operand)
                except ValueError:
                    raise AsmError(
                        line_no, f"{operand!r} is neither a number nor a label"
                    ) from None
            if arg < 0:
                raise AsmError(line_no, f"negative operand {operand!r}")
        program[at] = Insn(op, arg)
    return program

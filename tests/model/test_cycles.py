"""Guest loops in closed form (engine/model/cycles.py) reach exactly the interpreter's state.

Random small programs run twice, once with the closed form and once instruction by
instruction; what KVM_RUN yields, how it exits, and every piece of vCPU and guest-memory state
must be the same.
"""

from __future__ import annotations

import contextlib
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import constants as c
from engine.model import cycles
from engine.model.guest import INSN_SIZE, assemble
from engine.model.vcpu import Vcpu
from engine.model.vm import VM

CODE, DATA, HOLE = 0x1000, 0x10_0000, 0x20_0000
DATA_ADDRS = [DATA, DATA + 8, DATA + 0x1000, CODE + 8, HOLE]


@st.composite
def programs(draw: st.DrawFn) -> list[str]:
    n = draw(st.integers(2, 10))
    lines = []
    for _ in range(n):
        op = draw(st.sampled_from(["nop", "mov", "setc", "load", "store", "inc", "jmp", "loop"]))
        if op in ("mov", "setc"):
            lines.append(f"{op} {draw(st.integers(0, 40))}")
        elif op in ("load", "store", "inc"):
            lines.append(f"{op} {draw(st.sampled_from(DATA_ADDRS)):#x}")
        elif op in ("jmp", "loop"):
            lines.append(f"{op} {CODE + INSN_SIZE * draw(st.integers(0, n - 1)):#x}")
        else:
            lines.append(op)
    return lines


def _run(lines: list[str], horizon: int, rcx: int, closed_form: bool) -> dict[str, Any]:
    vm = VM()
    vm.set_user_memory_region(0, 0, CODE & ~0xFFF, 0x4000, 0x7F00_0000_0000)
    vm.set_user_memory_region(1, 0, DATA, 0x8000, 0x7F00_0010_0000)
    for gpa, insn in assemble(CODE, lines).items():
        hva = vm.gpa_to_hva(gpa)
        assert hva is not None
        vm.memory[hva] = insn
    vcpu = Vcpu(vm, 0, CODE)
    vcpu.rcx = rcx
    vcpu.horizon_ns = horizon
    yields: list[int] = []
    exit = None
    run = vcpu.kvm_run()
    interpreter_only = mock.patch("engine.model.vcpu.run_cycles", return_value=0)
    with contextlib.nullcontext() if closed_form else interpreter_only:
        try:
            for _ in range(300):
                yields.append(next(run))  # noqa: PERF401 (StopIteration ends it)
        except StopIteration as stop:
            exit = (stop.value.reason, stop.value.rip)
    return {
        "yields": yields,
        "exit": exit,
        "state": (vcpu.rip, vcpu.acc, vcpu.rcx, vcpu.instructions, vcpu.last_data_gpa),
        "faults": dict(vcpu.faults),
        "memory": {k: v for k, v in vm.memory.items() if isinstance(v, int)},
        "code": {k: str(v) for k, v in vm.memory.items() if not isinstance(v, int)},
    }


@pytest.mark.parametrize("budget", [60, pytest.param(1_000, marks=pytest.mark.slow, id="long")])
def test_closed_form_equals_the_interpreter(budget: int) -> None:
    @settings(max_examples=budget, deadline=None)
    @given(programs(), st.integers(0, 3_000), st.integers(-2, 50))
    def same(lines: list[str], horizon: int, rcx: int) -> None:
        assert _run(lines, horizon, rcx, True) == _run(lines, horizon, rcx, False)

    same()


def test_a_spin_loop_runs_in_closed_form() -> None:
    """The case it exists for: `inc; loop` batched up to the horizon in one go."""
    lines = ["setc 1000", "top:", f"inc {DATA:#x}", "loop top", "halt"]
    calls: list[int] = []
    real = cycles.run_cycles

    def counting(*args: Any) -> int:
        done = real(*args)
        calls.append(done)
        return done

    with mock.patch("engine.model.vcpu.run_cycles", side_effect=counting):
        fast = _run(lines, 1_000, 0, True)
    assert fast == _run(lines, 1_000, 0, False)
    assert fast["exit"] == (c.KVM_EXIT_HLT, CODE + 4 * INSN_SIZE)
    assert sum(d for d in calls if d > 0) > 1_500  # most of the 2,000 loop instructions

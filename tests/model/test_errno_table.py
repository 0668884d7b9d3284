"""real-kvm.md section 1.2 and the guest-free dirty-log rows, on the model."""

from __future__ import annotations

import pytest

import engine
from tests.errno_cases import CASES, Case, check_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_errno_table(case: Case) -> None:
    with engine.open_vm("model") as vm:
        check_case(vm, case)

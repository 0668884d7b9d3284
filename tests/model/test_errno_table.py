"""The errno table of KVM_SET_USER_MEMORY_REGION and KVM_GET_DIRTY_LOG (tests/errno_cases.py,
measured on this host's /dev/kvm), on the model."""

from __future__ import annotations

import pytest

import engine
from tests.errno_cases import CASES, Case, check_case


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_errno_table(case: Case) -> None:
    # The table was measured on this machine's /dev/kvm: compare with its profile.
    with engine.open_vm("model", profile="x86-pvm") as vm:
        check_case(vm, case)

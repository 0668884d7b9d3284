"""The errno table of KVM_SET_USER_MEMORY_REGION and KVM_GET_DIRTY_LOG (tests/errno_cases.py),
on this machine's /dev/kvm."""

from __future__ import annotations

import os

import pytest

import engine
from engine.backends.kvm import KvmVM, open_kvm_vm
from tests.errno_cases import CASES, Case, check_case

pytestmark = pytest.mark.kvm


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_errno_table(case: Case) -> None:
    if case.kvm_skip:
        pytest.skip(case.kvm_skip)
    with engine.open_vm("kvm") as vm:
        check_case(vm, case)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_close_releases_both_fds() -> None:
    before = open_fds()
    vm = KvmVM()
    assert len(open_fds() - before) == 2
    vm.close()
    vm.close()
    assert open_fds() <= before


def test_failed_open_leaks_no_fd() -> None:
    before = open_fds()
    # /dev/null opens but answers KVM_GET_API_VERSION with ENOTTY, halfway through __init__.
    with pytest.raises(OSError, match="Inappropriate ioctl"):
        KvmVM("/dev/null")
    assert open_fds() <= before


def test_closed_vm_refuses_ioctls() -> None:
    vm = KvmVM()
    vm.close()
    with pytest.raises(OSError, match="closed"):
        vm.set_user_memory_region(0, 0, 0x100000, 0x10000, 0x7F0000000000)


def test_host_options_are_refused() -> None:
    with pytest.raises(ValueError, match="nr_address_spaces"):
        open_kvm_vm(nr_address_spaces=2)


def test_bad_arguments_fail_like_the_model() -> None:
    with engine.open_vm("kvm") as vm:
        with pytest.raises(OverflowError):
            vm.set_user_memory_region(1 << 32, 0, 0, 0x1000, 0)
        with pytest.raises(TypeError):
            vm.set_user_memory_region(0, True, 0, 0x1000, 0)
        assert vm.memslots() == []

"""Model against kernel: random memslot call sequences must give the same errno and slots.

SLOTLAB_DIFF_SEQUENCES (default 200) and SLOTLAB_DIFF_CALLS (default 40) scale the run. A
failure names the seed and prints the calls that reproduce it.
"""

from __future__ import annotations

import os
import random

import pytest

import engine
from engine.model.region import MemoryRegion
from tests.errno_cases import OK, SlotVM, outcome

pytestmark = pytest.mark.kvm

SEQUENCES = int(os.environ.get("SLOTLAB_DIFF_SEQUENCES", "200"))
CALLS = int(os.environ.get("SLOTLAB_DIFF_CALLS", "40"))

PAGE = 0x1000
A, B = 0x7F0000000000, 0x7F0000100000
TASK_SIZE_MAX = 0x7FFFFFFFF000
# Each pool is (mostly drawn, rarely drawn): the rare values are refused on their own, so
# drawing them often would hide the overlap and change-type checks behind early EINVALs.
# 32763 is the last user slot, 32764 the first internal one; as_id 1 does not exist here.
SLOTS = ((0, 1, 2, 3, 32763), (32764, 32767, 0x10000, 0x10001))
FLAGS = ((0, 0, 1, 2, 3), (1 << 2, 1 << 3, 1 << 16))
UADDRS = ((A, B, A + 0x8000, 0, TASK_SIZE_MAX - 0x10000), (TASK_SIZE_MAX, 0xFFFF888000000000))
# A crowded window (overlaps); the top of the 52-bit gfn space and of the u64 space.
GPA_BASES = ((0x100000,), ((1 << 52) - 0x10000, (1 << 64) - 0x30000))


def pick(rng: random.Random, pool: tuple[tuple[int, ...], tuple[int, ...]]) -> int:
    common, rare = pool
    return rng.choice(rare if rng.random() < 0.08 else common)


Call = tuple[str, tuple[int, ...]]


def fresh_call(rng: random.Random) -> Call:
    gpa = pick(rng, GPA_BASES) + rng.randrange(40) * PAGE
    size = rng.choice((0, *range(1, 17))) * PAGE
    uaddr = pick(rng, UADDRS)
    noise = rng.random()
    if noise < 0.05:
        gpa += 0x800
    elif noise < 0.10:
        size += 1
    elif noise < 0.13:
        uaddr += 1
    return "set", (pick(rng, SLOTS), pick(rng, FLAGS), gpa, size, uaddr)


def change_call(rng: random.Random, old: MemoryRegion) -> Call:
    """A call on an existing slot: mostly the legal changes, some that must be refused."""
    slot, flags, gpa, size, uaddr = old
    kind = rng.randrange(8)
    if kind == 0:  # move, often overlapping itself or a neighbour
        gpa = 0x100000 + rng.randrange(40) * PAGE
    elif kind == 1:  # flags: LOG toggles are legal, RO toggles are not
        flags = pick(rng, FLAGS)
    elif kind == 2:  # delete, with whatever gpa, uaddr and flags
        size = 0
        if rng.random() < 0.5:
            gpa, uaddr, flags = pick(rng, GPA_BASES), pick(rng, UADDRS), pick(rng, FLAGS)
    elif kind == 3:  # resize
        size = rng.randrange(1, 17) * PAGE
    elif kind == 4:  # re-map the host side
        uaddr = pick(rng, UADDRS)
    elif kind == 5:  # move and change flags at once
        gpa = pick(rng, GPA_BASES) + rng.randrange(40) * PAGE
        flags = pick(rng, FLAGS)
    # kind 6, 7: identical re-set
    return "set", (slot, flags, gpa, size, uaddr)


def draw_call(rng: random.Random, slots: list[MemoryRegion]) -> Call:
    r = rng.random()
    if r < 0.15:
        return "get_dirty_log", (pick(rng, SLOTS),)
    if r < 0.6 and slots:
        return change_call(rng, rng.choice(slots))
    return fresh_call(rng)


def apply(vm: SlotVM, call: Call) -> tuple[str, list[int]]:
    name, args = call
    try:
        if name == "set":
            vm.set_user_memory_region(*args)
            return OK, []
        return OK, vm.get_dirty_log(*args)
    except OSError as err:
        return outcome(err), []


def show(call: Call) -> str:
    name, args = call
    method = "set_user_memory_region" if name == "set" else name
    return f"vm.{method}({', '.join(hex(a) for a in args)})"


def run_sequence(seed: int, calls: int) -> None:
    rng = random.Random(seed)
    done: list[str] = []
    with engine.open_vm("model", profile="x86-pvm") as model, engine.open_vm("kvm") as kvm:
        for _ in range(calls):
            call = draw_call(rng, model.memslots())
            done.append(show(call))
            want, got = apply(kvm, call), apply(model, call)
            if got == want and model.memslots() == kvm.memslots():
                continue
            pytest.fail(
                f"seed {seed}, call {len(done)}: model {got} {model.memslots()}\n"
                f"kernel {want} {kvm.memslots()}\nfrom fresh VMs:\n  " + "\n  ".join(done)
            )


def test_random_sequences_match_the_kernel() -> None:
    for seed in range(SEQUENCES):
        run_sequence(seed, CALLS)


CAPS = (10, 118, 81, 136, 16, 3, 235, 233, 9999)
# The kernel has these; the model does not implement them, so it answers as a kernel
# without them would: 0 (USER_MEMORY2, MANUAL_DIRTY_LOG_PROTECT2, GUEST_MEMFD,
# EXIT_ON_EMULATION_FAILURE).
NOT_MODELLED = (231, 168, 234, 204)


@pytest.mark.parametrize("cap", CAPS)
def test_check_extension_matches_the_kernel(cap: int) -> None:
    with engine.open_vm("model", profile="x86-pvm") as model, engine.open_vm("kvm") as kvm:
        assert model.check_extension(cap) == kvm.check_extension(cap)


@pytest.mark.parametrize("cap", NOT_MODELLED)
def test_check_extension_denies_what_the_model_lacks(cap: int) -> None:
    with engine.open_vm("model", profile="x86-pvm") as model, engine.open_vm("kvm") as kvm:
        assert kvm.check_extension(cap) != 0
        assert model.check_extension(cap) == 0


def test_only_address_space_0_exists_on_either() -> None:
    with engine.open_vm("model", profile="x86-pvm") as model, engine.open_vm("kvm") as kvm:
        for vm in (model, kvm):
            assert vm.memslots(0) == []
            with pytest.raises(ValueError, match="as_id 1"):
                vm.memslots(1)

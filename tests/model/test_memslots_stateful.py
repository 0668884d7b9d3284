"""Stateful properties of memslot updates: random ioctl sequences against a VM, and random
replace() sequences against a single memslot set large enough to split its leaves.

The VM machine carries its own reading of the ioctl (the order of checks and the decision
between CREATE, DELETE, MOVE and FLAGS_ONLY in virt/kvm/kvm_main.c: __kvm_set_memory_region()) and checks the model against it call by call: which
calls fail and with what errno, what the slots are afterwards, and how far each address space's
generation moves.
"""

from __future__ import annotations

import bisect
import errno
import itertools
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings, target
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from engine.events import Event, IoctlExit
from engine.model import constants as c
from engine.model.host import Host
from engine.model.memslots import LEAF_MAX, Memslot, MemslotSet
from engine.model.region import MemoryRegion
from engine.model.vm import VM

PAGE = c.PAGE_SIZE
GFN_SPACE = 48  # small, so that random regions overlap often
MAX_PAGES = 8
IDS = 6
BAD_IDS = [c.KVM_USER_MEM_SLOTS, c.KVM_MEM_SLOTS_NUM - 1, c.KVM_MEM_SLOTS_NUM, 0xFFFF]
UADDRS = [0x7F00_0000_0000 + i * 0x10_0000 for i in range(4)]

# Swaps per change: DELETE and MOVE publish an INVALID copy first (virt/kvm/kvm_main.c:
# kvm_invalidate_memslot()).
SWAPS = {"CREATE": 1, "FLAGS_ONLY": 1, "DELETE": 2, "MOVE": 2, "NONE": 0}

Key = tuple[int, int]  # (as_id, id)


def expected_outcome(host: Host, slots: dict[Key, MemoryRegion], r: MemoryRegion) -> str | int:
    """The change kind, or the errno, the kernel gives for this call given the current slots."""
    slot, flags, gpa, size, uaddr = r
    as_id, id = slot >> 16, slot & 0xFFFF
    einval = (
        flags & ~c.KVM_SET_USER_MEMORY_REGION_V1_FLAGS
        or id >= host.nr_memslots
        or (flags & c.KVM_MEM_READONLY and not host.readonly_mem)
        or size % PAGE
        or gpa % PAGE
        or uaddr % PAGE
        or uaddr + size > host.task_size_max
        or as_id >= host.nr_address_spaces
        or gpa + size >= 1 << 64
        or size // PAGE > c.KVM_MEM_MAX_NR_PAGES
    )
    if einval:
        return errno.EINVAL
    old = slots.get((as_id, id))
    if size == 0:
        return "DELETE" if old is not None else errno.EINVAL
    if old is None:
        kind = "CREATE"
    elif (
        uaddr != old.userspace_addr
        or size != old.memory_size
        or (flags ^ old.flags) & c.KVM_MEM_READONLY
    ):
        # No resize, no remap, no READONLY toggle (__kvm_set_memory_region()).
        return errno.EINVAL
    elif gpa != old.guest_phys_addr:
        kind = "MOVE"
    elif flags != old.flags:
        kind = "FLAGS_ONLY"
    else:
        return "NONE"
    for (other_as, other_id), other in slots.items():
        if other_as != as_id or other_id == id:
            continue
        if gpa < other.guest_phys_addr + other.memory_size and other.guest_phys_addr < gpa + size:
            return errno.EEXIST
    if (gpa + size) // PAGE - 1 > host.max_gfn:
        return errno.EINVAL
    return kind


def brute_lookup(regions: list[MemoryRegion], gfn: int) -> int | None:
    """The id of the region covering gfn, by looking at every region."""
    hits = [
        r.id
        for r in regions
        if r.guest_phys_addr // PAGE <= gfn < (r.guest_phys_addr + r.memory_size) // PAGE
    ]
    assert len(hits) <= 1, f"gfn {gfn} covered by slots {hits}"
    return hits[0] if hits else None


addresses = st.one_of(
    st.integers(0, GFN_SPACE).map(lambda p: p * PAGE),
    st.integers(0, GFN_SPACE * PAGE),  # mostly misaligned
    st.sampled_from([1 << 52, (1 << 52) - PAGE, 1 << 63, (1 << 64) - PAGE]),
)
sizes = st.one_of(
    st.integers(0, MAX_PAGES).map(lambda p: p * PAGE),
    st.integers(0, MAX_PAGES * PAGE),
    st.sampled_from([(1 << 31) * PAGE, (1 << 64) - PAGE]),
)
flag_values = st.one_of(
    st.sampled_from([0, 1, 2, 3]),
    st.sampled_from([1 << 2, 1 << 3, 1 << 15, c.KVM_MEMSLOT_INVALID, 0xFFFF_FFFF]),
)


class VmMemslots(RuleBasedStateMachine):
    """Random KVM_SET_USER_MEMORY_REGION calls against the model and an oracle."""

    def __init__(self) -> None:
        super().__init__()
        self.vm = VM()
        self.events: list[Event] = []
        self.slots: dict[Key, MemoryRegion] = {}
        self.gens: list[int] = [0]
        self.calls = 0

    @initialize(
        nr_as=st.sampled_from([1, 2]),
        zap_all=st.booleans(),
        readonly=st.booleans(),
    )
    def make_vm(self, nr_as: int, zap_all: bool, readonly: bool) -> None:
        host = Host(nr_address_spaces=nr_as, slot_zap_all=zap_all, readonly_mem=readonly)
        self.vm = VM(host)
        self.vm.bus.subscribe(self.events.append)
        self.gens = [self.vm.active(a).generation for a in range(nr_as)]
        assert self.gens == list(range(nr_as))

    @property
    def nr_as(self) -> int:
        return self.vm.host.nr_address_spaces

    def _as_ids(self) -> st.SearchStrategy[int]:
        return st.integers(0, self.nr_as - 1)

    # --- the one place calls are made ----------------------------------------------------

    def call(self, slot: int, flags: int, gpa: int, size: int, uaddr: int) -> None:
        region = MemoryRegion(slot, flags, gpa, size, uaddr)
        want = expected_outcome(self.vm.host, self.slots, region)
        event(f"{self.nr_as} AS: {want if isinstance(want, str) else errno.errorcode[want]}")
        before = self._observable()
        self.events.clear()
        self.calls += 1
        failure: OSError | None = None
        try:
            self.vm.set_user_memory_region(slot, flags, gpa, size, uaddr)
        except OSError as err:
            failure = err
        if failure is not None:
            assert want == failure.errno, f"{region}: model errno {failure.errno}, expected {want}"
            # A failed call changes nothing (__kvm_set_memory_region(): every check runs
            # before the first swap).
            assert self._observable() == before
            exits = [e for e in self.events if isinstance(e, IoctlExit)]
            assert [e.errno for e in exits] == [failure.errno]
            return
        assert isinstance(want, str), f"{region}: model succeeded, expected errno {want}"
        exits = [e for e in self.events if isinstance(e, IoctlExit)]
        assert [(e.errno, e.change) for e in exits] == [(0, want)]
        as_id, id = slot >> 16, slot & 0xFFFF
        key = (as_id, id)
        if want == "DELETE":
            del self.slots[key]
        elif want != "NONE":
            self.slots[key] = MemoryRegion(slot, flags, gpa, size, uaddr)
        gens = [self.vm.active(a).generation for a in range(self.nr_as)]
        moved = [new - old for new, old in zip(gens, self.gens, strict=True)]
        expected = [0] * self.nr_as
        expected[as_id] = SWAPS[want] * self.nr_as
        assert moved == expected, f"{want}: generations moved by {moved}"
        self.gens = gens

    def _observable(self) -> tuple[Any, ...]:
        spaces = range(self.nr_as)
        return (
            [self.vm.memslots(a) for a in spaces],
            [self.vm.active(a).generation for a in spaces],
            [self.vm.active(a).version for a in spaces],
            self.vm.nr_memslot_pages,
            self.vm.srcu.gp_seq,
        )

    # --- rules -------------------------------------------------------------------------

    @rule(
        data=st.data(),
        id=st.integers(0, IDS - 1),
        page=st.integers(0, GFN_SPACE),
        npages=st.integers(1, MAX_PAGES),
        flags=st.sampled_from([0, 1, 2, 3]),
        uaddr=st.sampled_from(UADDRS),
    )
    def create_or_overlap(
        self, data: st.DataObject, id: int, page: int, npages: int, flags: int, uaddr: int
    ) -> None:
        as_id = data.draw(self._as_ids())
        self.call((as_id << 16) | id, flags, page * PAGE, npages * PAGE, uaddr)

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), garbage=st.booleans())
    def delete(self, data: st.DataObject, garbage: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.slots)))
        old = self.slots[key]
        gpa, uaddr, flags = 0, 0, 0
        if garbage:
            # gpa, uaddr and flags are ignored by a delete, but still sanity-checked
            # (tests/errno_cases.py rows 68-75).
            gpa = data.draw(addresses)
            uaddr = data.draw(st.sampled_from([0, 0x5000, UADDRS[0] + 1, 0xFFFF_8880_0000_0000]))
            flags = data.draw(flag_values)
        self.call(old.slot, flags, gpa, 0, uaddr)

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), page=st.integers(0, GFN_SPACE), log=st.booleans())
    def move(self, data: st.DataObject, page: int, log: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.slots)))
        old = self.slots[key]
        flags = (old.flags & ~c.KVM_MEM_LOG_DIRTY_PAGES) | (c.KVM_MEM_LOG_DIRTY_PAGES * log)
        self.call(old.slot, flags, page * PAGE, old.memory_size, old.userspace_addr)

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), toggle=st.sampled_from([0, 1, 2, 3]))
    def change_flags(self, data: st.DataObject, toggle: int) -> None:
        key = data.draw(st.sampled_from(sorted(self.slots)))
        old = self.slots[key]
        self.call(
            old.slot, old.flags ^ toggle, old.guest_phys_addr, old.memory_size, old.userspace_addr
        )

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), pages=st.sampled_from([-2, -1, 1, 2]), new_uaddr=st.booleans())
    def resize_or_remap(self, data: st.DataObject, pages: int, new_uaddr: bool) -> None:
        key = data.draw(st.sampled_from(sorted(self.slots)))
        old = self.slots[key]
        size = max(old.memory_size + pages * PAGE, PAGE)
        uaddr = old.userspace_addr + PAGE * new_uaddr
        self.call(old.slot, old.flags, old.guest_phys_addr, size, uaddr)

    @rule(
        data=st.data(),
        id=st.one_of(st.integers(0, IDS - 1), st.sampled_from(BAD_IDS)),
        as_id=st.integers(0, 3),
        flags=flag_values,
        gpa=addresses,
        size=sizes,
        uaddr=st.one_of(
            st.sampled_from(UADDRS),
            st.sampled_from([0, 0x7FFF_FFFF_E000, 0x7FFF_FFFF_F000, 0xFFFF_8880_0000_0000]),
            st.integers(0, 1 << 47),
        ),
    )
    def anything(
        self, data: st.DataObject, id: int, as_id: int, flags: int, gpa: int, size: int, uaddr: int
    ) -> None:
        self.call((as_id << 16) | id, flags, gpa, size, uaddr)

    @rule(data=st.data())
    def check_in_range(self, data: st.DataObject) -> None:
        as_id = data.draw(self._as_ids())
        start = data.draw(st.integers(0, GFN_SPACE + MAX_PAGES))
        end = data.draw(st.integers(start, GFN_SPACE + MAX_PAGES + 1))
        got = [s.id for s in self.vm.active(as_id).in_range(start, end)]
        want = sorted(
            (r.guest_phys_addr, r.id)
            for (a, _), r in self.slots.items()
            if a == as_id
            and r.guest_phys_addr // PAGE < end
            and start < (r.guest_phys_addr + r.memory_size) // PAGE
        )
        assert got == [id for _, id in want]

    @rule(data=st.data())
    def check_first_overlap(self, data: st.DataObject) -> None:
        as_id = data.draw(self._as_ids())
        base = data.draw(st.integers(0, GFN_SPACE))
        npages = data.draw(st.integers(1, MAX_PAGES))
        ignore = data.draw(st.integers(-1, IDS - 1))
        found = self.vm.active(as_id).first_overlap(base, npages, ignore)
        clashing = {
            r.id
            for (a, _), r in self.slots.items()
            if a == as_id
            and r.id != ignore
            and r.guest_phys_addr // PAGE < base + npages
            and base < (r.guest_phys_addr + r.memory_size) // PAGE
        }
        if clashing:
            assert found is not None
            assert found.id in clashing
        else:
            assert found is None

    # --- invariants --------------------------------------------------------------------

    @invariant()
    def slots_match_the_oracle(self) -> None:
        for a in range(self.nr_as):
            want = sorted((r for (ra, _), r in self.slots.items() if ra == a), key=lambda r: r.id)
            got = self.vm.memslots(a)
            assert got == want
            ids = [r.id for r in got]
            assert len(ids) == len(set(ids))

    @invariant()
    def no_overlap_within_an_address_space(self) -> None:
        for a in range(self.nr_as):
            ranges = sorted(
                (r.guest_phys_addr, r.guest_phys_addr + r.memory_size) for r in self.vm.memslots(a)
            )
            for (_, end), (start, _) in itertools.pairwise(ranges):
                assert end <= start

    @invariant()
    def both_sets_agree_and_are_well_formed(self) -> None:
        for a in range(self.nr_as):
            active, inactive = self.vm.active(a), self.vm.inactive(a)
            active.check_invariants()
            inactive.check_invariants()
            # Between updates both sets hold the very same slot objects (virt/kvm/kvm_main.c:
            # kvm_swap_active_memslots() then kvm_copy_memslot_set()), and nothing published
            # is INVALID.
            assert list(active) == list(inactive)
            assert all(x is y for x, y in zip(active, inactive, strict=True))
            assert not any(s.invalid for s in active)

    @invariant()
    def generations_interleave_and_only_grow(self) -> None:
        for a in range(self.nr_as):
            gen = self.vm.active(a).generation
            assert not gen & c.KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS
            assert gen % self.nr_as == a
            assert gen >= self.gens[a]

    @invariant()
    def lookup_matches_a_scan_of_every_slot(self) -> None:
        for a in range(self.nr_as):
            regions = self.vm.memslots(a)
            active = self.vm.active(a)
            for gfn in range(GFN_SPACE + MAX_PAGES + 2):
                slot = active.lookup(gfn)
                assert (None if slot is None else slot.id) == brute_lookup(regions, gfn)

    @invariant()
    def nothing_left_in_flight(self) -> None:
        vm = self.vm
        assert not vm.update_in_progress
        assert vm.srcu.gp is None
        assert not vm.srcu.holders
        assert vm.nr_memslot_pages == sum(r.memory_size for r in self.slots.values()) // PAGE


TestVmMemslots = VmMemslots.TestCase
TestVmMemslots.settings = settings(
    deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


# --- MemslotSet on its own, at scale ------------------------------------------------------

SET_SPACE = 1 << 22
SET_MAX_PAGES = 64


def _bucket(n: int) -> int:
    return max((b for b in (0, 128, 1024, 2048, 4096) if n >= b), default=0)


class SetReplace(RuleBasedStateMachine):
    """Random replace() calls against one MemslotSet, growing it to thousands of slots."""

    def __init__(self) -> None:
        super().__init__()
        self.set = MemslotSet(0, 0)
        self.ref: dict[int, Memslot] = {}
        # Sorted (base_gfn, id) of ref: the oracle's own index for finding free space.
        self.starts: list[tuple[int, int]] = []
        self.next_id = 0
        self.peak = 0

    def _fits(self, base: int, npages: int, ignore: int = -1) -> bool:
        if base < 0 or base + npages > SET_SPACE:
            return False
        i = bisect.bisect_left(self.starts, (base + npages, -1))
        for start, id in reversed(self.starts[max(i - 2, 0) : i]):
            if id == ignore:
                continue
            if start + self.ref[id].npages > base:
                return False
        return True

    def _new(self, base: int, npages: int, flags: int = 0, id: int | None = None) -> Memslot:
        if id is None:
            id, self.next_id = self.next_id, self.next_id + 1
        return Memslot(0, id, base, npages, 0x7F00_0000_0000 + (base << 12), flags)

    def _add(self, slot: Memslot) -> None:
        self.set.replace(None, slot)
        self.ref[slot.id] = slot
        bisect.insort(self.starts, (slot.base_gfn, slot.id))

    def _drop(self, slot: Memslot) -> None:
        self.set.replace(slot, None)
        del self.ref[slot.id]
        self.starts.remove((slot.base_gfn, slot.id))

    @rule(n=st.integers(1, 700), seed=st.integers(0, 2**32 - 1))
    def insert_many(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(n):
            npages = rng.randint(1, SET_MAX_PAGES)
            base = rng.randrange(SET_SPACE - npages)
            if self._fits(base, npages):
                self._add(self._new(base, npages))

    @rule(n=st.integers(1, 200), seed=st.integers(0, 2**32 - 1), lowest=st.booleans())
    def insert_packed(self, n: int, seed: int, lowest: bool) -> None:
        """Slots touching each other (end == next base), below or above everything else."""
        rng = random.Random(seed)
        if lowest:
            base = 0 if not self.starts else self.starts[0][0] - 1
            for _ in range(n):
                npages = rng.randint(1, 4)
                if base - npages < 0 or not self._fits(base - npages, npages):
                    break
                base -= npages
                self._add(self._new(base, npages))
        else:
            base = 0 if not self.starts else self.ref[self.starts[-1][1]].end_gfn
            for _ in range(n):
                npages = rng.randint(1, 4)
                if not self._fits(base, npages):
                    break
                self._add(self._new(base, npages))
                base += npages

    @precondition(lambda self: self.ref)
    @rule(n=st.integers(1, 400), seed=st.integers(0, 2**32 - 1))
    def remove_many(self, n: int, seed: int) -> None:
        rng = random.Random(seed)
        for id in rng.sample(sorted(self.ref), min(n, len(self.ref))):
            self._drop(self.ref[id])

    @precondition(lambda self: self.ref)
    @rule(data=st.data())
    def remove_a_run(self, data: st.DataObject) -> None:
        """A run of neighbours in gfn order: empties whole leaves."""
        start = data.draw(st.integers(0, len(self.starts) - 1))
        count = data.draw(st.integers(1, 2 * LEAF_MAX + 1))
        for _, id in self.starts[start : start + count]:
            self.set.replace(self.ref.pop(id), None)
        del self.starts[start : start + count]

    @precondition(lambda self: self.ref)
    @rule(data=st.data(), n=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
    def move_some(self, data: st.DataObject, n: int, seed: int) -> None:
        rng = random.Random(seed)
        for id in rng.sample(sorted(self.ref), min(n, len(self.ref))):
            old = self.ref[id]
            near = rng.random() < 0.5
            base = old.base_gfn + rng.randint(-3, 3) if near else rng.randrange(SET_SPACE)
            if base == old.base_gfn or not self._fits(base, old.npages, ignore=id):
                continue
            new = self._new(base, old.npages, old.flags, id=id)
            # A MOVE replaces the old slot with the new one in a single call.
            self.set.replace(old, new)
            self.ref[id] = new
            self.starts.remove((old.base_gfn, id))
            bisect.insort(self.starts, (base, id))

    @precondition(lambda self: self.ref)
    @rule(data=st.data())
    def replace_in_place(self, data: st.DataObject) -> None:
        id = data.draw(st.sampled_from(sorted(self.ref)))
        old = self.ref[id]
        new = (
            old.invalid_copy()
            if data.draw(st.booleans())
            else self._new(old.base_gfn, old.npages, old.flags ^ c.KVM_MEM_LOG_DIRTY_PAGES, id=id)
        )
        self.set.replace(old, new)
        self.ref[id] = new
        assert self.set.lookup(old.base_gfn) is new

    @rule(gfns=st.lists(st.integers(0, SET_SPACE + 1), min_size=1, max_size=16))
    def lookup_matches_a_scan(self, gfns: list[int]) -> None:
        # Also probe slot edges, where off-by-ones live.
        if self.starts:
            base, id = self.starts[len(self.starts) // 2]
            end = self.ref[id].end_gfn
            gfns = [*gfns, base - 1, base, end - 1, end]
        want: dict[int, int | None] = dict.fromkeys(gfns)
        ordered = sorted(set(gfns))
        for slot in self.ref.values():
            i = bisect.bisect_left(ordered, slot.base_gfn)
            while i < len(ordered) and ordered[i] < slot.end_gfn:
                assert want[ordered[i]] is None, "the oracle has overlapping slots"
                want[ordered[i]] = slot.id
                i += 1
        for gfn in gfns:
            found = self.set.lookup(gfn)
            assert (None if found is None else found.id) == want[gfn], gfn

    @rule(start=st.integers(0, SET_SPACE), span=st.integers(1, 1 << 16))
    def in_range_matches_a_scan(self, start: int, span: int) -> None:
        end = start + span
        got = [s.id for s in self.set.in_range(start, end)]
        want = sorted(
            (s.base_gfn, s.id) for s in self.ref.values() if s.base_gfn < end and start < s.end_gfn
        )
        assert got == [id for _, id in want]

    @invariant()
    def well_formed(self) -> None:
        self.set.check_invariants()
        assert len(self.set) == len(self.ref)
        assert self.set.by_id == self.ref
        self.peak = max(self.peak, len(self.ref))
        # Leaves split at LEAF_MAX and never grow past it.
        assert all(len(leaf) <= LEAF_MAX for leaf in self.set._leaves)

    def teardown(self) -> None:
        # Steer generation toward big sets: splits and leaf removals only happen there.
        target(float(self.peak), label="peak slots")
        event(f"peak slots >= {_bucket(self.peak)}")


# The default suite explores 20 programs of up to 50 steps (each builds sets of hundreds of
# slots); `make test-slow` explores 400.
TestSetReplace = SetReplace.TestCase
TestSetReplace.settings = settings(deadline=None, max_examples=20)


class TestSetReplaceLong(SetReplace.TestCase):  # type: ignore[misc,valid-type]
    pytestmark = pytest.mark.slow
    settings = settings(deadline=None, max_examples=400)


def test_overlap_across_address_spaces_is_allowed() -> None:
    vm = VM(Host(nr_address_spaces=2))
    vm.set_user_memory_region(0, 0, 0x10_0000, 0x1_0000, UADDRS[0])
    vm.set_user_memory_region(1 << 16, 0, 0x10_0000, 0x1_0000, UADDRS[0])
    assert vm.active(0).lookup(0x100) is not vm.active(1).lookup(0x100)
    assert [r.slot for r in vm.memslots(1)] == [1 << 16]
    # ...but not within one.
    with pytest.raises(OSError, match="overlaps") as err:
        vm.set_user_memory_region(1, 0, 0x10_8000, 0x1_0000, UADDRS[1])
    assert err.value.errno == errno.EEXIST


def test_generations_interleave_per_address_space() -> None:
    vm = VM(Host(nr_address_spaces=2))
    vm.set_user_memory_region(0, 0, 0, PAGE, UADDRS[0])  # AS0 CREATE: 0 -> 2
    vm.set_user_memory_region(1 << 16, 0, 0, PAGE, UADDRS[0])  # AS1 CREATE: 1 -> 3
    vm.set_user_memory_region(0, 0, 0, 0, 0)  # AS0 DELETE: 2 -> 6
    vm.set_user_memory_region(1 << 16, 0, PAGE, PAGE, UADDRS[0])  # AS1 MOVE: 3 -> 7
    vm.set_user_memory_region(1 << 16, 1, PAGE, PAGE, UADDRS[0])  # AS1 FLAGS_ONLY: 7 -> 9
    vm.set_user_memory_region(1 << 16, 1, PAGE, PAGE, UADDRS[0])  # no-op
    assert (vm.active(0).generation, vm.active(1).generation) == (6, 9)

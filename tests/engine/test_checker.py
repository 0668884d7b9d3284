"""The checker on synthetic event streams: each check can fire, each has its exemptions, and
the verdict takes the most serious finding (violation > crashed > livelock > ok)."""

from __future__ import annotations

import itertools

import pytest

from engine.checker import LIVELOCK_RETRIES, Checker
from engine.events import (
    DirtyLog,
    Event,
    EventBus,
    Exit,
    Fault,
    IoctlEnter,
    MemslotChange,
    MmioServed,
    ReaderUseAfterFree,
    SrcuUnlockMismatch,
    TxnBegin,
    TxnCommit,
    UdInjected,
    Violation,
    VmStopped,
)
from engine.model import constants as c


def feed(checker: Checker, events: list[Event]) -> Checker:
    for t, ev in enumerate(events):
        ev.t, ev.seq = t * 10, t
        checker.observe(ev)
    return checker


def crash() -> list[Event]:
    return [
        IoctlEnter(actor="vmm", ioctl="KVM_SET_USER_MEMORY_REGION", slot=0, memory_size=0),
        Exit(vcpu=1, reason="KVM_EXIT_INTERNAL_ERROR", rip=0x1000, suberror=1),
    ]


def livelock(gpa: int = 0xDEAD0000, n: int = LIVELOCK_RETRIES) -> list[Event]:
    return [Fault(vcpu=0, gpa=gpa, access="fetch", outcome="mmio_len0") for _ in range(n)]


def lost_write() -> list[Event]:
    return [
        MmioServed(vcpu=0, gpa=0x3000, is_write=True, data=7, target="dropped", region="pc.ram")
    ]


def uaf() -> list[Event]:
    return [ReaderUseAfterFree(reader="vcpu0", as_id=0, version=3, age=2)]


FINDINGS = {"violation": lost_write, "crashed": crash, "livelock": livelock}
ORDER = ["violation", "crashed", "livelock"]


def test_nothing_found_is_ok() -> None:
    v = feed(Checker(atomic=False), []).verdict()
    assert (v.verdict, v.violations) == ("ok", [])


@pytest.mark.parametrize(
    "found",
    [set(combo) for n in range(1, 4) for combo in itertools.combinations(ORDER, n)],
    ids=lambda s: "+".join(sorted(s)),
)
@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "reversed"])
def test_verdict_precedence(found: set[str], reverse: bool) -> None:
    streams = [FINDINGS[name]() for name in ORDER if name in found]
    if reverse:
        streams.reverse()
    checker = feed(Checker(atomic=False), [ev for s in streams for ev in s])
    expected = next(name for name in ORDER if name in found)
    assert checker.verdict().verdict == expected


def test_crash_explains_the_window() -> None:
    v = feed(Checker(atomic=False), crash()).verdict()
    assert v.verdict == "crashed"
    assert "KVM_EXIT_INTERNAL_ERROR" in v.explanation
    assert "RIP 0x1000" in v.explanation
    assert "memory_size 0" in v.explanation


def test_first_crash_wins() -> None:
    stream = [
        VmStopped(reason="the guest jumped into the weeds", vcpu=0),
        *crash(),
    ]
    v = feed(Checker(atomic=False), stream).verdict()
    assert v.verdict == "crashed"
    assert "weeds" in v.explanation


def test_ud_injection_is_a_crash() -> None:
    v = feed(Checker(atomic=False), [UdInjected(vcpu=0, rip=0x1000, cpl=3, guest_mode=False)])
    assert v.ud_injected == 1
    assert v.verdict().verdict == "crashed"
    assert "#UD" in v.verdict().explanation


def test_livelock_needs_enough_retries_of_the_same_fetch() -> None:
    assert feed(Checker(atomic=False), livelock(n=LIVELOCK_RETRIES - 1)).verdict().verdict == "ok"
    # A different GPA starts the count again.
    mixed = livelock(0x1000, LIVELOCK_RETRIES - 1) + livelock(0x2000, LIVELOCK_RETRIES - 1)
    assert feed(Checker(atomic=False), mixed).verdict().verdict == "ok"
    # A fetch that succeeds in between resets it.
    reset = [
        *livelock(n=LIVELOCK_RETRIES - 1),
        Fault(vcpu=0, gpa=0x1000, access="fetch", outcome="mapped"),
        *livelock(n=LIVELOCK_RETRIES - 1),
    ]
    assert feed(Checker(atomic=False), reset).verdict().verdict == "ok"
    assert feed(Checker(atomic=False), livelock()).verdict().verdict == "livelock"


def test_retries_during_an_update_are_not_a_livelock() -> None:
    txn = TxnBegin(txn=1, as_id=0, layout="x", dels=[[0, 0x20000]], adds=[], overlapping=False)
    v = feed(Checker(atomic=False), [txn, *livelock(n=3 * LIVELOCK_RETRIES)]).verdict()
    assert v.verdict == "ok"


def _window(outcome: str, gpa: int, atomic: bool = True) -> list[Event]:
    return [
        TxnBegin(
            txn=4,
            as_id=0,
            layout="split",
            dels=[[0, 0x20000]],
            adds=[[0, 0x10000], [0x10000, 0x10000]],
            overlapping=True,
            atomic=atomic,
        ),
        Fault(vcpu=1, gpa=gpa, access="fetch", outcome=outcome),
        TxnCommit(txn=4, as_id=0, latency_ns=100),
    ]


def test_atomicity_violation_only_for_strategies_that_claim_it() -> None:
    v = feed(Checker(atomic=True), _window("emulation_failure", 0x1000)).verdict()
    assert v.verdict == "violation"
    assert v.violations[0].kind == "atomicity"
    assert (
        feed(Checker(atomic=False), _window("emulation_failure", 0x1000)).verdict().verdict == "ok"
    )
    # A transaction the strategy announced as non-atomic (convert falling back to
    # DELETE+CREATE) crashes honestly rather than breaking a promise it never made.
    fallback = _window("emulation_failure", 0x1000, atomic=False)
    assert feed(Checker(atomic=True), fallback).verdict().verdict == "ok"


def test_atomicity_exemptions() -> None:
    # A GPA outside what the transaction maps before and after is no broken promise.
    assert feed(Checker(atomic=True), _window("mmio", 0x30000)).verdict().verdict == "ok"
    # A fault that found its memslot is fine.
    assert feed(Checker(atomic=True), _window("mapped", 0x1000)).verdict().verdict == "ok"
    # Outside any transaction, there is nothing to be atomic about.
    lone: list[Event] = [Fault(vcpu=0, gpa=0x1000, access="fetch", outcome="emulation_failure")]
    assert feed(Checker(atomic=True), lone).verdict().verdict == "ok"
    # A transaction of the other address space (SMM's as_id 1) promises nothing for as_id 0.
    smm = _window("mmio", 0x1000)
    assert isinstance(smm[0], TxnBegin)
    smm[0].as_id = 1
    assert feed(Checker(atomic=True), smm).verdict().verdict == "ok"


def test_lost_write_only_when_dropped() -> None:
    assert feed(Checker(atomic=False), lost_write()).verdict().violations[0].kind == "lost_write"
    served = MmioServed(vcpu=0, gpa=0x3000, is_write=True, data=7, target="ram", region="pc.ram")
    dropped_read = MmioServed(
        vcpu=0, gpa=0x3000, is_write=False, data=0, target="dropped", region="pc.ram"
    )
    assert feed(Checker(atomic=False), [served, dropped_read]).verdict().verdict == "ok"


def _slot(change: str, flags: int = c.KVM_MEM_LOG_DIRTY_PAGES, base: int = 0x10) -> MemslotChange:
    return MemslotChange(
        as_id=0, id=1, change=change, step="commit", base_gfn=base, npages=16, flags=flags
    )


def _dirty(page: int) -> Fault:
    return Fault(vcpu=0, gpa=(0x10 + page) << c.PAGE_SHIFT, access="write", outcome="dirty", slot=1)


@pytest.mark.parametrize(
    ("destroy", "lost"),
    [
        (_slot("DELETE"), True),
        # log_stop destroys the bitmap, but it ends the migration: nothing is lost that matters
        (_slot("FLAGS_ONLY", flags=0), False),
        (_slot("FLAGS_ONLY"), False),  # a flags change that keeps logging keeps it
        (_slot("MOVE", base=0x40), False),  # MOVE keeps the bitmap
    ],
    ids=["delete", "log-stop", "flags-keep-logging", "move"],
)
def test_lost_dirty_bits(destroy: MemslotChange, lost: bool) -> None:
    stream: list[Event] = [_slot("CREATE"), _dirty(2), _dirty(5), destroy]
    v = feed(Checker(atomic=False), stream).verdict()
    assert (v.verdict == "violation") is lost
    if lost:
        assert [x.kind for x in v.violations] == ["lost_dirty", "lost_dirty"]
        assert "page 2)" in v.violations[0].message
        assert "page 5)" in v.violations[1].message


def test_harvested_dirty_bits_are_not_lost() -> None:
    stream: list[Event] = [
        _slot("CREATE"),
        _dirty(2),
        _dirty(5),
        DirtyLog(slot=1, pages=[2, 5]),
        _slot("DELETE"),
    ]
    assert feed(Checker(atomic=False), stream).verdict().verdict == "ok"
    partly: list[Event] = [
        _slot("CREATE"),
        _dirty(2),
        _dirty(5),
        DirtyLog(slot=1, pages=[2]),
        _slot("DELETE"),
    ]
    v = feed(Checker(atomic=False), partly).verdict()
    assert len(v.violations) == 1
    assert "GPA 0x15000 (as_id 0 slot 1 page 5)" in v.violations[0].message


def test_each_lost_dirty_bit_names_its_write_sync_and_ioctl() -> None:
    delete = IoctlEnter(actor="vmm", ioctl="KVM_SET_USER_MEMORY_REGION", slot=1, memory_size=0)
    stream: list[Event] = [
        _slot("CREATE"),  # t=0
        _dirty(2),  # t=10: harvested below
        DirtyLog(slot=1, pages=[2]),  # t=20: the last sync
        Fault(vcpu=1, gpa=0x13008, access="write", outcome="dirty", slot=1),  # t=30
        delete,  # t=40
        _slot("DELETE"),  # t=50
    ]
    checker = feed(Checker(atomic=False), stream)
    (v,) = checker.violations
    assert (v.check, v.vcpu, v.gpa) == ("lost_dirty", 1, 0x13000)
    assert v.message == (
        "dirty bit of GPA 0x13000 (as_id 0 slot 1 page 3) lost: vcpu1 set it by writing "
        "0x13008 at t=30ns, after the slot's last KVM_GET_DIRTY_LOG at t=20ns, and "
        "KVM_SET_USER_MEMORY_REGION entered at t=40ns freed the bitmap with DELETE"
    )


def test_use_after_free_reported_once_per_reader_and_set() -> None:
    stream = [*uaf(), *uaf(), ReaderUseAfterFree(reader="vcpu0", as_id=0, version=4, age=2)]
    v = feed(Checker(atomic=True), stream).verdict()
    assert v.verdict == "violation"
    assert [x.kind for x in v.violations] == ["srcu_uaf", "srcu_uaf"]
    assert "(+1 more)" in v.explanation


def test_unbalanced_srcu_unlock() -> None:
    v = feed(Checker(atomic=False), [SrcuUnlockMismatch(reader="vcpu1", held_idx=0, idx=1)])
    assert v.verdict().violations[0].kind == "srcu_unlock"


def test_violations_are_emitted_back_to_the_bus() -> None:
    bus = EventBus()
    seen: list[Event] = []
    bus.subscribe(seen.append)
    checker = Checker(atomic=False, bus=bus)
    bus.subscribe(checker.observe)
    for ev in lost_write():
        bus.emit(ev)
    kinds = [type(e).__name__ for e in seen]
    assert kinds == ["MmioServed", "Violation"]
    violation = seen[1]
    assert isinstance(violation, Violation)
    assert (violation.check, violation.vcpu, violation.gpa) == ("lost_write", 0, 0x3000)

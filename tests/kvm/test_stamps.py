"""Real-KVM events carry kernel-side time: each ioctl is stamped in the thread that makes it,
just before and just after the syscall; each exit the instant KVM_RUN returned in its vCPU's
thread; update and pause latency come from those stamps (``own_t``). The log's ``t`` still never
decreases along seq. Orderings only, never durations."""

from __future__ import annotations

import itertools

import trio

from engine.backends.kvm.session import KvmSession
from engine.events import (
    Event,
    Exit,
    Fault,
    Inhibit,
    IoctlEnter,
    IoctlExit,
    MemslotChange,
    TxnBegin,
    TxnCommit,
)
from engine.runner import make_config


def _run(strategy: str, duration_ns: int, transactions: int | None = None) -> list[Event]:
    events: list[Event] = []
    config = make_config("split", strategy, vcpus=2, duration_ns=duration_ns)
    session = KvmSession(config, observers=(events.append,), max_transactions=transactions)
    trio.run(session.run)
    return events


def _ioctls(events: list[Event]) -> list[tuple[IoctlEnter, list[Event]]]:
    """Each memslot ioctl with what it reported (MemslotChange, IoctlExit), in seq order."""
    out: list[tuple[IoctlEnter, list[Event]]] = []
    for e in events:
        if isinstance(e, IoctlEnter):
            out.append((e, []))
        elif isinstance(e, MemslotChange | IoctlExit):
            out[-1][1].append(e)
    return out


def test_each_ioctl_is_stamped_around_its_syscall_and_the_vmm_thread_is_monotonic() -> None:
    events = _run("inhibit", 5_000_000_000, transactions=6)
    ioctls = _ioctls(events)
    assert len(ioctls) > 6
    for enter, results in ioctls:
        assert isinstance(results[-1], IoctlExit), enter
        # One stamp after the syscall: the change and the return share it.
        assert {r.own_t for r in results} == {results[-1].own_t}
        assert enter.own_t <= results[-1].own_t
    stamps = [t for enter, results in ioctls for t in (enter.own_t, results[-1].own_t)]
    assert stamps == sorted(stamps)


def test_exits_carry_kernel_fields_and_each_vcpu_thread_is_monotonic() -> None:
    events = _run("legacy", 300_000_000)
    exits = [e for e in events if isinstance(e, Exit)]
    for _, own in itertools.groupby(sorted(exits, key=lambda e: e.vcpu), key=lambda e: e.vcpu):
        ts = [e.own_t for e in own]
        assert ts == sorted(ts)
    crash = [e for e in exits if e.reason == "KVM_EXIT_INTERNAL_ERROR"]
    assert crash, "a legacy split on real KVM crashes"
    assert crash[0].suberror == 1
    assert crash[0].internal_data
    assert crash[0].internal == "emulation failure (instruction fetch failed)"
    # The fault an exit implies happened at the same instant.
    fault = next(e for e in events if isinstance(e, Fault) and e.outcome == "emulation_failure")
    assert fault.own_t == crash[0].own_t


def test_update_and_pause_latency_come_from_the_stamps() -> None:
    events = _run("inhibit", 5_000_000_000, transactions=6)
    begin: Inhibit | None = None
    first: int | None = None
    last = 0
    seen = 0
    for e in events:
        if isinstance(e, TxnBegin):
            first, begin = None, None
        elif isinstance(e, Inhibit) and e.phase == "begin":
            begin = e
        elif isinstance(e, Inhibit) and e.phase == "all_out":
            assert begin is not None
            # begin is emitted before the kick, all_out after every vCPU is out.
            assert 0 <= e.latency_ns <= e.own_t - begin.own_t
            first = begin.own_t if first is None else first
        elif isinstance(e, IoctlEnter):
            first = e.own_t if first is None else first
        elif isinstance(e, IoctlExit):
            last = e.own_t
        elif isinstance(e, TxnCommit) and e.txn > 1 and first is not None:
            # From the kick (after `begin` was stamped) to the last ioctl's return.
            assert 0 <= e.latency_ns <= last - first
            seen += 1
    assert seen >= 3


def test_the_logs_t_never_decreases_and_a_late_event_keeps_its_stamp() -> None:
    """Exits reach the event loop after later-stamped events: ``t`` is when each entered the
    log, ``actor_t`` (``own_t``) when it happened in its thread."""
    events = _run("legacy", 300_000_000)
    ts = [e.t for e in events]
    assert ts == sorted(ts)
    assert all(e.own_t <= e.t for e in events)

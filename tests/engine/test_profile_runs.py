"""Host profiles on whole runs of `move` (KVM_MR_MOVE of a data slot the guest uses): on an
EPT host faults on the INVALID slot retry, so no access to a GPA mapped before and after the
MOVE ever exits; on this machine's kvm_pvm, where the guest is emulated, such accesses exit as
MMIO while the MOVE ioctl is in flight (what `slotlab run --backend kvm --scenario move` shows)."""

from __future__ import annotations

import trio

from engine.events import Event, Exit, IoctlEnter, IoctlExit
from engine.runner import make_config
from engine.session import Session

DATA = range(0x1F000, 0x2F000)  # mapped in both layouts


def _run(profile: str, seed: int) -> list[Event]:
    events: list[Event] = []
    config = make_config("move", "legacy", seed=seed, host={"profile": profile})
    session = Session(config, observers=(events.append,))
    trio.run(session.run)
    return events


def _mmio_exits_and_windows(events: list[Event]) -> tuple[list[Exit], list[tuple[int, int]]]:
    exits = [e for e in events if isinstance(e, Exit) and e.reason == "KVM_EXIT_MMIO"]
    windows: list[tuple[int, int]] = []
    start = -1
    for e in events:
        if isinstance(e, IoctlEnter) and e.ioctl == "KVM_SET_USER_MEMORY_REGION":
            start = e.seq
        elif isinstance(e, IoctlExit) and e.change == "MOVE":
            windows.append((start, e.seq))
    return exits, windows


def test_x86_tdp_move_never_exits_for_a_gpa_mapped_before_and_after() -> None:
    for seed in range(1, 6):
        exits, windows = _mmio_exits_and_windows(_run("x86-tdp", seed))
        assert len(windows) > 5
        assert [e for e in exits if e.phys_addr in DATA] == [], seed


def test_x86_pvm_move_exits_as_mmio_inside_the_move_window() -> None:
    for seed in range(1, 6):
        exits, windows = _mmio_exits_and_windows(_run("x86-pvm", seed))
        assert exits, seed
        for e in exits:
            assert e.phys_addr in (0x20000, 0x20008), (seed, e)
            assert any(lo < e.seq < hi for lo, hi in windows), (seed, e)

"""Sleepable RCU the way Tree SRCU behaves, reduced to what a memslot update can observe.

Readers count a lock on the current index (srcu_idx & 1) and later an unlock on the index the
lock returned. A grace period is a state machine driven by polls: SCAN1 waits for the inactive
index to drain (readers that picked it up before the previous flip), the flip makes new readers
use the other index, SCAN2 waits for the old index to drain. Expedited and normal grace periods
run the same machine; only the caller's pacing between polls differs.
"""

from __future__ import annotations

from engine.events import EventBus, SrcuGp, SrcuLock, SrcuUnlock, SrcuUnlockMismatch


class SrcuWouldBlock(RuntimeError):
    """A synchronous caller asked for a grace period that readers are holding up."""


class GracePeriod:
    """One synchronize_srcu(): poll() until it reports done."""

    __slots__ = ("_old_idx", "expedited", "number", "phase", "srcu", "started_at")

    def __init__(self, srcu: Srcu, expedited: bool) -> None:
        self.srcu = srcu
        self.expedited = expedited
        # Every event of this grace period carries one number: how many had completed when
        # it started (srcu.gp_seq moves on at its end, as the kernel's srcu_gp_seq does).
        self.number = srcu.gp_seq
        self.phase = "scan1"
        self.started_at = srcu.bus.now
        self._old_idx = -1

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def waiting_on(self) -> list[str]:
        """The readers holding this grace period up, in the order they locked."""
        srcu = self.srcu
        if self.phase == "scan1":
            return srcu.holders_of(1 ^ (srcu.srcu_idx & 1))
        if self.phase == "scan2":
            return srcu.holders_of(self._old_idx)
        return []

    def poll(self) -> bool:
        """One srcu_advance_state() step: run every drain check that passes now."""
        srcu = self.srcu
        if self.phase == "scan1":
            if srcu.readers_active(1 ^ (srcu.srcu_idx & 1)):
                return False
            self._old_idx = srcu.srcu_idx & 1
            srcu.srcu_idx += 1
            srcu.emit_gp(self, "flip")
            self.phase = "scan2"
            srcu.emit_gp(self, "scan2")
        if self.phase == "scan2":
            if srcu.readers_active(self._old_idx):
                return False
            self.phase = "done"
            srcu.gp_seq += 1
            srcu.gp = None
            srcu.last_gp_ns = srcu.bus.now - self.started_at
            srcu.emit_gp(self, "end")
        return True


class Srcu:
    """struct srcu_struct: kvm->srcu."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self.srcu_idx = 0
        self.lock_count = [0, 0]
        self.unlock_count = [0, 0]
        self.gp_seq = 0
        self.gp: GracePeriod | None = None
        self.last_gp_ns = 0
        # reader -> (index it locked, virtual time it locked at); dict order is lock order.
        self.holders: dict[str, tuple[int, int]] = {}

    def readers_active(self, idx: int) -> bool:
        """srcu_readers_active_idx_check(), with the per-CPU sums already added up."""
        return self.lock_count[idx] != self.unlock_count[idx]

    def holders_of(self, idx: int) -> list[str]:
        return [reader for reader, (held, _) in self.holders.items() if held == idx]

    def read_lock(self, reader: str) -> int:
        bus = self.bus
        idx = self.srcu_idx & 1
        self.lock_count[idx] += 1
        self.holders[reader] = (idx, bus.now)
        bus.emit(SrcuLock(reader=reader, idx=idx))
        return idx

    def read_unlock(self, reader: str, idx: int) -> None:
        held = self.holders.pop(reader, None)
        if held is None or held[0] != idx:
            # Counted anyway, as the kernel would: the counters go wrong, which is the point
            # of reporting it.
            self.bus.emit(
                SrcuUnlockMismatch(reader=reader, held_idx=-1 if held is None else held[0], idx=idx)
            )
        self.unlock_count[idx] += 1
        now = self.bus.now
        self.bus.emit(
            SrcuUnlock(reader=reader, idx=idx, held_ns=0 if held is None else now - held[1])
        )

    def start_gp(self, expedited: bool = True) -> GracePeriod:
        if self.gp is not None:
            raise RuntimeError("a grace period is already in progress")
        gp = GracePeriod(self, expedited)
        self.gp = gp
        self.emit_gp(gp, "start")
        self.emit_gp(gp, "scan1")
        return gp

    def synchronize_now(self, expedited: bool = True) -> None:
        """A grace period for callers with no clock: completes at once or raises."""
        gp = self.start_gp(expedited)
        if not gp.poll():
            waiting = ", ".join(gp.waiting_on())
            # Leave no half-finished grace period behind for the next caller.
            self.gp = None
            raise SrcuWouldBlock(f"synchronize_srcu would wait for readers: {waiting}")

    def emit_gp(self, gp: GracePeriod, phase: str) -> None:
        self.bus.emit(
            SrcuGp(
                gp_seq=gp.number,
                phase=phase,
                expedited=gp.expedited,
                srcu_idx=self.srcu_idx,
                waiting_on=gp.waiting_on() if phase in ("scan1", "scan2") else [],
            )
        )

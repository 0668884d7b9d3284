"""Lost dirty bits, one by one: which write set each bit, and between which KVM_GET_DIRTY_LOG and
which memslot ioctl the kernel destroyed the bitmap that held it.

The kernel keeps one bitmap per logging slot (kvm_prepare_memory_region() allocates it, a MOVE
or a FLAGS_ONLY change that keeps logging reuses it, kvm_commit_memory_region() frees it with a
DELETE). A bit is lost when the guest set it after userspace last harvested the bitmap and the
bitmap was then freed: nothing can report that page again, so a migration would send a stale
copy of it.
"""

from __future__ import annotations

import dataclasses

from engine.events import DirtyLog, Fault, IoctlEnter, MemslotChange
from engine.model import constants as c
from engine.units import format_ns

# Changes whose commit frees the slot's bitmap.
_DESTROYS = frozenset({"DELETE", "REPLACE", "CONVERT_OUT"})
_REBASES = frozenset({"CREATE", "MOVE", "REPLACE", "CONVERT_IN"})


@dataclasses.dataclass(frozen=True, slots=True)
class LostBit:
    """One dirty bit freed before any KVM_GET_DIRTY_LOG reported it."""

    as_id: int
    slot: int
    page: int
    write: Fault
    sync: DirtyLog | None
    ioctl: IoctlEnter | None
    change: str

    def describe(self) -> str:
        w = self.write
        since = (
            f"after the slot's last KVM_GET_DIRTY_LOG at t={format_ns(self.sync.t)}"
            if self.sync is not None
            else "with no KVM_GET_DIRTY_LOG of the slot since its bitmap was allocated"
        )
        if self.ioctl is not None:
            io = self.ioctl
            until = f"{io.ioctl} entered at t={format_ns(io.t)}"
        else:
            until = "an ioctl"
        return (
            f"dirty bit of GPA {w.gpa & ~(c.PAGE_SIZE - 1):#x} (as_id {self.as_id} slot "
            f"{self.slot} page {self.page}) lost: vcpu{w.vcpu} set it by writing {w.gpa:#x} at "
            f"t={format_ns(w.t)}, {since}, and {until} freed the bitmap with {self.change}"
        )


class DirtyTracker:
    """Follows every logging slot's bitmap through the event stream."""

    def __init__(self) -> None:
        # (as_id, id) -> page offset -> the write that set the bit since the last harvest
        self._bits: dict[tuple[int, int], dict[int, Fault]] = {}
        self._bases: dict[tuple[int, int], int] = {}
        self._syncs: dict[tuple[int, int], DirtyLog] = {}
        self._ioctl: IoctlEnter | None = None

    def ioctl(self, ev: IoctlEnter) -> None:
        self._ioctl = ev

    def fault(self, ev: Fault) -> None:
        """A fault that set a dirty bit (outcome "dirty"; the checker passes no other)."""
        key = (ev.as_id, ev.slot)
        page = (ev.gpa >> c.PAGE_SHIFT) - self._bases.get(key, 0)
        self._bits.setdefault(key, {}).setdefault(page, ev)

    def harvest(self, ev: DirtyLog) -> None:
        key = (ev.slot >> 16, ev.slot & 0xFFFF)
        self._syncs[key] = ev
        bits = self._bits.get(key)
        if bits:
            for page in ev.pages:
                bits.pop(page, None)

    def memslot(self, ev: MemslotChange) -> list[LostBit]:
        """A committed change; returns the bits it lost."""
        key = (ev.as_id, ev.id)
        if ev.step != "commit":
            return []
        # Switching logging off ends the migration (its last sync runs with the VM stopped),
        # so only a bitmap destroyed while logging goes on loses anything that matters.
        log_off = ev.change == "FLAGS_ONLY" and not ev.flags & c.KVM_MEM_LOG_DIRTY_PAGES
        lost: list[LostBit] = []
        if ev.change in _DESTROYS:
            sync = self._syncs.get(key)
            for page, write in sorted(self._bits.get(key, {}).items()):
                lost.append(LostBit(ev.as_id, ev.id, page, write, sync, self._ioctl, ev.change))
        if log_off or ev.change in _DESTROYS:
            self._bits.pop(key, None)
            self._syncs.pop(key, None)
        if ev.change in _REBASES:
            self._bases[key] = ev.base_gfn
            if ev.change != "MOVE":
                self._bits.pop(key, None)
                self._syncs.pop(key, None)
        return lost

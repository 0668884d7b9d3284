"""Real memory behind a scenario's host virtual addresses.

Scenarios name HVAs like 0x7f0000000000: labels that say which RAM regions share backing
(an alias maps the same HVA range twice). Here every maximal run of overlapping or touching
HVA ranges, over all layouts, becomes one anonymous mapping, so aliases stay aliases; events
and logs keep the scenario's HVAs, and only the ioctl sees the real address.
"""

from __future__ import annotations

import bisect

from engine.backends.kvm.vm import GuestMemory, KvmVM
from engine.scenarios import Scenario


class ScenarioMemory:
    def __init__(self, vm: KvmVM, scenario: Scenario) -> None:
        spans = sorted(
            (r.hva, r.hva + r.size)
            for layout in scenario.layouts.values()
            for _, r in layout.regions
            if r.kind != "mmio"
        )
        merged: list[list[int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._starts = [lo for lo, _ in merged]
        self._blocks: list[tuple[int, int, GuestMemory]] = [
            (lo, hi, vm.map_memory(hi - lo)) for lo, hi in merged
        ]

    def _find(self, hva: int, size: int) -> tuple[GuestMemory, int]:
        i = bisect.bisect_right(self._starts, hva) - 1
        if i >= 0:
            lo, hi, mem = self._blocks[i]
            if hva + size <= hi:
                return mem, hva - lo
        raise ValueError(f"HVA {hva:#x}+{size:#x} is outside every RAM region of the scenario")

    def real(self, hva: int) -> int:
        """The address in this process that stands for the scenario's HVA."""
        mem, offset = self._find(hva, 0)
        return mem.addr + offset

    def read(self, hva: int, size: int) -> bytes:
        mem, offset = self._find(hva, size)
        return mem.read(offset, size)

    def write(self, hva: int, data: bytes) -> None:
        mem, offset = self._find(hva, len(data))
        mem.write(offset, data)

    def blocks(self) -> list[list[int]]:
        """[scenario HVA, size] of every mapping, for the log header."""
        return [[lo, hi - lo] for lo, hi, _ in self._blocks]

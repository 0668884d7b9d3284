"""Loading big scenarios: an imported QEMU trace may carry thousands of slots, and loading was
quadratic in them (a line search per region, a scan of every region per FlatView piece, a
scan for the lowest free slot id per added range). Target: 40,000 regions load, render and
get their slot ids in under 2 s."""

from __future__ import annotations

import time

from engine.bench import Measure
from engine.scenarios.loader import parse_scenario
from engine.vmm.flatview import FlatView, diff

TARGET_REGIONS = 40_000
TARGET_S = 2.0


def many_regions_scenario(n: int, bad_at: int | None = None) -> str:
    """A scenario whose one layout has ``n`` one-page RAM regions with a page hole between
    each; region ``bad_at`` (if any) is misaligned, so its line must be named."""
    rows = []
    for i in range(n):
        gpa = i * 0x2000 + (0x10 if i == bad_at else 0)
        rows.append(
            f'  {{ name = "r{i}", kind = "ram", gpa = {gpa:#x}, size = 0x1000, '
            f"hva = {0x7F0000000000 + i * 0x1000:#x} }},"
        )
    body = "\n".join(rows)
    return (
        f'name = "many"\nvcpus = 1\nentry = 0x0\nprogram = """\ntop:\n  jmp top\n"""\n'
        f'sequence = ["none", "all"]\n[layouts.none]\nregions = []\n'
        f"[layouts.all]\nregions = [\n{body}\n]\n"
    )


def load_seconds(n: int) -> float:
    """Parse, render, and diff against an empty view (what a first transaction does)."""
    text = many_regions_scenario(n)
    start = time.perf_counter()
    sc = parse_scenario(text, "many.toml")
    view = FlatView.render(sc.layouts["all"].for_as(0))
    changes = diff(FlatView([]), view)
    assert len(changes.adds) == n
    assert not changes.overlapping
    return time.perf_counter() - start


def run_load_benchmarks(quick: bool) -> list[Measure]:
    out = []
    for n in (4_000,) if quick else (4_000, TARGET_REGIONS):
        seconds = min(load_seconds(n) for _ in range(1 if quick else 3))
        target = f"<= {TARGET_S:g} s" if n == TARGET_REGIONS else ""
        out.append(
            Measure(f"load.regions.{n}", seconds, "s", target=target, ratio=seconds, limit=TARGET_S)
        )
    return out

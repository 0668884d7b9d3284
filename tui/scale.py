"""A scenario at scale, written on the fly: many vCPUs over a thousand small RAM regions.

The built-in scenarios have a handful of slots; the benchmark and the scale tests need the
map, the table and the vCPU panel under 64 vCPUs and 1,024 memslots. Every other layout
splits one region in the middle of the range, so updates keep coming.
"""

from __future__ import annotations

from pathlib import Path

REGION = 0x10000
HVA = 0x7F0000000000


def scale_scenario_text(regions: int = 1024, vcpus: int = 64, duration: str = "2ms") -> str:
    """A scenario TOML: ``regions`` RAM regions of 64 KiB each, the guest looping in the
    first one and touching data in the last."""
    top = regions * REGION
    ram = [
        f'  {{ name = "ram{i}", kind = "ram", gpa = {i * REGION:#x}, size = {REGION:#x}, '
        f"hva = {HVA + i * REGION:#x} }},"
        for i in range(regions)
    ]
    middle = (regions // 2) * REGION
    overlay = (
        f'  {{ name = "bar", kind = "mmio", gpa = {middle:#x}, size = {REGION // 2:#x}, '
        "priority = 1 },"
    )
    lines = [
        'name = "scale"',
        f'summary = "{vcpus} vCPUs over {regions} RAM regions; a BAR comes and goes mid-range"',
        f"vcpus = {vcpus}",
        'period = "50us"',
        f'duration = "{duration}"',
        "entry = 0x1000",
        'sequence = ["plain", "bar"]',
        "program = '''",
        "top:",
        f"  inc [{top - 0x1000:#x}]",
        "  load [0x3000]",
        "  jmp top",
        "'''",
        "",
        "[layouts.plain]",
        "regions = [",
        *ram,
        "]",
        "",
        "[layouts.bar]",
        "regions = [",
        *ram,
        overlay,
        "]",
    ]
    return "\n".join(lines) + "\n"


def write_scale_scenario(directory: Path, regions: int = 1024, vcpus: int = 64) -> Path:
    path = directory / f"scale-{vcpus}x{regions}.toml"
    path.write_text(scale_scenario_text(regions, vcpus))
    return path

"""`slotlab bench`: the whole suite, as a Rich table or one JSON object.

Groups import lazily. The engine never imports the TUI, so the TUI group is not listed here:
`tui.cli` registers it in GROUPS before it hands `bench` to the engine's CLI. The kvm group needs
a usable /dev/kvm and is skipped with its reason otherwise.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine.bench import Measure

GROUPS: dict[str, tuple[str, str]] = {
    "model": ("engine.bench.model", "run_model_benchmarks"),
    "engine": ("engine.bench.engine_bench", "run_engine_benchmarks"),
    "compare": ("engine.bench.compare_bench", "run_compare_benchmarks"),
    "load": ("engine.bench.load_bench", "run_load_benchmarks"),
    "kvm": ("engine.backends.kvm.bench", "run_kvm_benchmarks"),
}


def run_suite(quick: bool, only: str | None) -> tuple[list[Measure], list[str]]:
    measures: list[Measure] = []
    skipped: list[str] = []
    for group, (module, func) in GROUPS.items():
        if only and not (group == only or only.startswith(group + ".")):
            continue
        try:
            fn: Callable[[bool], list[Measure]] = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as err:
            skipped.append(f"{group}: not available ({err})")
            continue
        try:
            results = fn(quick)
        except OSError as err:
            skipped.append(f"{group}: {err}")
            continue
        measures.extend(m for m in results if not only or m.name.startswith(only))
    return measures, skipped


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
    }


def cmd_bench(args: argparse.Namespace) -> int:
    if args.only and args.only.partition(".")[0] not in GROUPS:
        raise ValueError(
            f"--only {args.only}: no such group (groups: {', '.join(GROUPS)}; "
            "or a measure name that starts with one)"
        )
    start = time.perf_counter()
    measures, skipped = run_suite(args.quick, args.only)
    if args.only and not measures and not skipped:
        raise ValueError(f"--only {args.only}: no measure of that name")
    wall = time.perf_counter() - start
    if args.json:
        print(
            msgspec.json.encode(
                {
                    "machine": machine(),
                    "quick": args.quick,
                    "seconds": round(wall, 1),
                    "measures": [m.as_dict() for m in measures],
                    "skipped": skipped,
                }
            ).decode()
        )
        return _status(measures)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"slotlab bench{' --quick' if args.quick else ''} ({wall:.0f} s)")
    table.add_column("measure", no_wrap=True)
    table.add_column("figure", justify="right")
    table.add_column("target")
    table.add_column("met", justify="center")
    for m in measures:
        met = {True: "[green]yes[/]", False: "[red]NO[/]", None: "[dim]-[/]"}[m.met]
        table.add_row(m.name, m.figure(), m.target, met)
    console = Console()
    console.print(table)
    for line in skipped:
        console.print(f"[yellow]skipped[/] {line}", highlight=False)
    return _status(measures)


def _status(measures: list[Measure]) -> int:
    """1 when any measure missed its target, so CI and scripts can act on a regression."""
    return 1 if any(m.met is False for m in measures) else 0
